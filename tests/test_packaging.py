"""The distribution as a user installs it: the built wheel and sdist, their metadata, the
single-sourced version, the console script, and imports that pull in no optional dependency.

The wheel and the sdist are built once per session (``python -m build --no-isolation``, with
the ``build`` and ``hatchling`` of the ``dev`` extra); without them those tests skip.
"""

from __future__ import annotations

import configparser
import email.parser
import os
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.message import Message
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import mutator
import mutator_governance

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGES = ("mutator", "mutator_governance")
# What the extras install: never imported by ``import mutator`` / ``mutator_governance``.
OPTIONAL = ("psycopg", "psycopg_pool", "redis", "hiredis", "opentelemetry")
DEV_ONLY = ("pytest", "hypothesis", "trio", "build", "hatchling")


def _source_version() -> str:
    """``__version__`` as written in ``mutator/__init__.py`` (the one place it is written)."""
    text = (ROOT / "mutator" / "__init__.py").read_text()
    (version,) = re.findall(r'^__version__ = "([^"]+)"$', text, flags=re.MULTILINE)
    return version


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that imports this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUTATOR_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=ROOT.parent,
    )


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder holding this checkout's sdist and the wheel built from that sdist."""
    pytest.importorskip("build", reason="the build frontend is not installed (extra dev)")
    pytest.importorskip("hatchling", reason="the build backend is not installed (extra dev)")
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.fixture(scope="session")
def wheel(dist: Path) -> zipfile.ZipFile:
    (path,) = dist.glob("*.whl")
    return zipfile.ZipFile(path)


@pytest.fixture(scope="session")
def wheel_metadata(wheel: zipfile.ZipFile) -> Message:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return email.parser.Parser().parsestr(wheel.read(name).decode())


def _dist_info() -> str:
    """The wheel's ``.dist-info`` folder, named by the source's version."""
    return f"mutator-{_source_version()}.dist-info"


def test_wheel_holds_every_module_and_nothing_but_the_packages(wheel: zipfile.ZipFile) -> None:
    """Every module and ``py.typed`` of both packages; no tests, examples, benchmarks, docs."""
    names = set(wheel.namelist())
    expected = {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.suffix == ".py" or path.name == "py.typed"
        if "__pycache__" not in path.parts
    }
    assert expected - names == set()
    assert {f"{package}/py.typed" for package in PACKAGES} <= names
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {*PACKAGES, _dist_info()}
    stray = {n for n in names if not n.endswith((".py", "py.typed")) and ".dist-info/" not in n}
    assert stray == set()


def test_wheel_metadata(wheel: zipfile.ZipFile, wheel_metadata: Message) -> None:
    """Name, the source's version, Python floor, classifiers, license file, extras."""
    meta = wheel_metadata
    assert meta["Name"] == "mutator"
    assert meta["Version"] == _source_version()
    assert meta["Requires-Python"] == ">=3.11"
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert f"{_dist_info()}/licenses/LICENSE" in wheel.namelist()
    assert meta["Description-Content-Type"] == "text/markdown"
    assert "## Quick start" in meta.get_payload()
    classifiers = set(meta.get_all("Classifier"))
    assert {"Framework :: AnyIO", "Typing :: Typed", "Framework :: Trio"} <= classifiers
    assert {"postgres", "redis", "fast", "otel", "dev"} <= set(meta.get_all("Provides-Extra"))
    runtime = [Requirement(r) for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    assert sorted(r.name for r in runtime) == ["anyio", "attrs", "cattrs"]


def test_console_script_is_the_cli(wheel: zipfile.ZipFile) -> None:
    """The wheel declares ``mutator = mutator_governance._cli:main``, and it is a function."""
    entry_points = configparser.ConfigParser()
    entry_points.read_string(wheel.read(f"{_dist_info()}/entry_points.txt").decode())
    assert dict(entry_points["console_scripts"]) == {"mutator": "mutator_governance._cli:main"}
    from mutator_governance._cli import main

    assert callable(main)


def test_sdist_holds_sources_tests_license_and_changelog(dist: Path) -> None:
    (path,) = dist.glob("*.tar.gz")
    with tarfile.open(path) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE", "PKG-INFO"} <= names
    assert {"mutator/py.typed", "mutator_governance/py.typed", "tests/conftest.py"} <= names


def test_version_is_written_once_and_exposed_by_both_packages() -> None:
    """``pyproject.toml`` reads the version from ``mutator/__init__.py``; both packages
    expose it as ``__version__``."""
    project = PYPROJECT["project"]
    assert "version" not in project
    assert "version" in project["dynamic"]
    assert PYPROJECT["tool"]["hatch"]["version"] == {"path": "mutator/__init__.py"}
    assert mutator.__version__ == mutator_governance.__version__
    Version(_source_version())  # a valid PEP 440 version


def test_dev_extra_can_build_and_bounds_are_the_verified_ones() -> None:
    """The dev extra brings the build tools these tests need; the lower bounds are at least
    the oldest versions the suite was run against (see the CHANGELOG)."""
    project = PYPROJECT["project"]
    backend = Requirement(PYPROJECT["build-system"]["requires"][0])
    assert backend.name == "hatchling"
    assert Version("1.27") in backend.specifier  # PEP 639 license-files
    dev = {Requirement(r).name for r in project["optional-dependencies"]["dev"]}
    assert {"build", "hatchling"} <= dev
    floors = {
        "anyio": "4.7",
        "psycopg": "3.2.1",
        "psycopg-pool": "3.2",
        "redis": "6.0",
        "opentelemetry-api": "1.30",
    }
    requirements = [*project["dependencies"]]
    for extra in ("postgres", "redis", "otel"):
        requirements += project["optional-dependencies"][extra]
    seen = set()
    for requirement in map(Requirement, requirements):
        floor = floors.get(requirement.name)
        if floor is not None:
            seen.add(requirement.name)
            assert Version(floor) in requirement.specifier, requirement
            assert _just_below(floor) not in requirement.specifier, requirement
    assert seen == set(floors)


def _just_below(version: str) -> Version:
    """A version just older than ``version`` (``3.2.1`` → ``3.2.0``, ``6.0`` → ``5.999``)."""
    parts = [int(p) for p in Version(version).release]
    for index in range(len(parts) - 1, -1, -1):
        if parts[index]:
            parts[index] -= 1
            return Version(".".join(map(str, [*parts[: index + 1], 999])))
    raise ValueError(version)


_MODULES_AFTER = """
import sys
{prelude}
print(" ".join(sorted({{m.split(".")[0] for m in sys.modules}})))
"""


@pytest.mark.parametrize(
    "prelude",
    [
        "import mutator",
        "import mutator_governance, mutator_governance.stores",
        "import runpy\nsys.argv = ['mutator', '--help']\n"
        "try:\n    runpy.run_module('mutator_governance', run_name='__main__')\n"
        "except SystemExit:\n    pass",
    ],
    ids=["mutator", "mutator_governance", "cli-help"],
)
def test_imports_pull_in_no_optional_dependency(prelude: str) -> None:
    """Importing the packages (or asking the command line for help) loads no database
    driver, no OpenTelemetry and no test tool, whether or not they are installed."""
    done = _python(_MODULES_AFTER.format(prelude=prelude))
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.splitlines()[-1].split())
    assert loaded & {*OPTIONAL, *DEV_ONLY} == set()


_OPEN_WITHOUT_EXTRAS = """
import sys
for name in ("psycopg", "psycopg_pool", "redis"):
    sys.modules[name] = None  # as if the extra were not installed
import anyio
from mutator import ConfigurationError
from mutator_governance import MutationRegistry
from mutator_governance.stores import open_store

async def main():
    for url in sys.argv[1:]:
        try:
            await open_store(url, registry=MutationRegistry())
        except ConfigurationError as error:
            print(error)

anyio.run(main)
"""


def test_a_backend_without_its_extra_names_the_extra_to_install() -> None:
    """Opening PostgreSQL or Redis without the driver is a ``ConfigurationError`` that says
    which ``pip install`` brings it, not a ModuleNotFoundError from inside the store."""
    done = _python(
        _OPEN_WITHOUT_EXTRAS,
        "postgresql://app@127.0.0.1:1/db?schema=s",
        "redis://127.0.0.1:1/0?prefix=p",
    )
    assert done.returncode == 0, done.stderr
    postgres, redis = done.stdout.splitlines()
    assert postgres.startswith("the PostgreSQL store needs the 'postgres' extra")
    assert 'pip install "mutator[postgres]"' in postgres
    assert 'pip install "mutator[redis]"' in redis


def test_the_command_line_without_an_extra_is_a_usage_error_not_a_traceback() -> None:
    done = _python(
        "import sys\nsys.modules['psycopg'] = None\n"
        "from mutator_governance._cli import main\nsys.exit(main(sys.argv[1:]))",
        "--registry",
        "mutator_governance:MutationRegistry",
        "--url",
        "postgresql://app@127.0.0.1:1/db",
        "requests",
        "list",
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert 'pip install "mutator[postgres]"' in done.stderr
