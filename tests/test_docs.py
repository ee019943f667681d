"""The documentation's code runs as printed, and its generated pages match the code.

Each page in ``docs/`` is a session: its ``python`` blocks run in order in one namespace in
a fresh interpreter (working directory: a temporary folder), and a ``text`` block right after
a ``python`` block is exactly what that block prints. A ``python`` block with no ``text``
block after it must print nothing, so every shown output is complete.
"""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mutator
import mutator_governance
from mutator_governance._transitions import ALLOWED_TRANSITIONS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import mutator_docs  # noqa: E402

_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.DOTALL | re.MULTILINE)
_SETUP = ['python -m pip install -e ".[dev]"', "python -m pytest"]
_QUIET = {"mermaid", "{mermaid}", "{eval-rst}", "{include}", "{toctree}"}

_DRIVER = """
import contextlib, io, json, sys
blocks = json.loads(open(sys.argv[1]).read())
namespace = {"__name__": "__main__"}
printed = []
for index, code in enumerate(blocks):
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(compile(code, f"<{sys.argv[3]} block {index + 1}>", "exec"), namespace)
    printed.append(buffer.getvalue())
open(sys.argv[2], "w").write(json.dumps(printed))
"""


def pages() -> list[Path]:
    return sorted(
        path
        for path in DOCS.rglob("*.md")
        if not {"_build", "_generated"} & set(path.relative_to(DOCS).parts)
    )


def fences(page: Path) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in order."""
    return [(m[1].strip().split(" ")[0], m[2]) for m in _FENCE.finditer(page.read_text())]


def programs(page: Path) -> list[tuple[str, str | None]]:
    """(python code, expected output or None) for each python block of ``page``."""
    blocks = fences(page)
    found: list[tuple[str, str | None]] = []
    for index, (language, body) in enumerate(blocks):
        if language != "python":
            continue
        after = blocks[index + 1] if index + 1 < len(blocks) else None
        found.append((body, after[1] if after and after[0] == "text" else None))
    return found


def _page_id(page: Path) -> str:
    return str(page.relative_to(DOCS))


RUNNABLE = [page for page in pages() if programs(page)]


def test_docs_have_pages_with_programs() -> None:
    """The collection below is not vacuous."""
    assert len(RUNNABLE) >= 8


@pytest.mark.parametrize("page", RUNNABLE, ids=_page_id)
def test_page_programs_print_what_the_page_shows(tmp_path: Path, page: Path) -> None:
    """Every python block runs, in order, and prints exactly the text block after it."""
    found = programs(page)
    source = tmp_path / "blocks.json"
    source.write_text(json.dumps([code for code, _ in found]))
    result = tmp_path / "printed.json"
    completed = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(source), str(result), _page_id(page)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={**_env(), "PYTHONPATH": str(ROOT)},
    )
    assert completed.returncode == 0, completed.stderr
    printed = json.loads(result.read_text())
    for index, ((_, expected), actual) in enumerate(zip(found, printed, strict=True), 1):
        where = f"{_page_id(page)} python block {index}"
        if expected is None:
            assert actual == "", f"{where} printed output the page does not show:\n{actual}"
        else:
            assert actual.strip() == expected.strip(), where


def _env() -> dict[str, str]:
    import os

    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def test_page_programs_are_lint_clean(tmp_path: Path) -> None:
    """Each page's program has no unused import, undefined name or over-long line, and is
    formatted as the project's code is (ruff, line length 100)."""
    for page in RUNNABLE:
        name = _page_id(page).replace("/", "__").replace("-", "_").removesuffix(".md")
        (tmp_path / f"{name}.py").write_text("\n\n".join(code for code, _ in programs(page)))
    for command in (
        ["check", "--select", "E,F,W", "--ignore", "E402"],
        ["format", "--check"],
    ):
        completed = subprocess.run(
            [sys.executable, "-m", "ruff", *command, "--isolated", "--line-length", "100", "."],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.parametrize("page", pages(), ids=_page_id)
def test_every_block_is_runnable_output_or_setup(page: Path) -> None:
    """Blocks are python (run), text (checked output), the set-up commands, or directives."""
    blocks = fences(page)
    for index, (language, body) in enumerate(blocks):
        if language == "text":
            previous = blocks[index - 1][0] if index else None
            assert previous == "python", (
                f"{_page_id(page)}: a text block must show the output of the python block before it"
            )
        elif language == "bash":
            assert [line for line in body.splitlines() if line.strip()] == _SETUP
        else:
            assert language == "python" or language in _QUIET, (
                f"{_page_id(page)}: unexpected block language {language!r}"
            )


def test_quick_start_is_the_readme_quick_start() -> None:
    """The tutorial shows the README's quick start program and output, unchanged."""
    readme = fences(ROOT / "README.md")
    tutorial = fences(DOCS / "tutorials" / "quickstart.md")
    assert [body for language, body in tutorial if language == "bash"] == [
        body for language, body in readme if language == "bash"
    ][:1]
    first_program = next(i for i, (language, _) in enumerate(readme) if language == "python")
    assert readme[first_program : first_program + 2] == [
        block for block in tutorial if block[0] in ("python", "text")
    ]


def test_state_machine_diagram_has_every_transition() -> None:
    """The generated diagram draws exactly the edges of ALLOWED_TRANSITIONS."""
    text = mutator_docs.request_states_markdown()
    drawn = set(re.findall(r"^    ([A-Z]+) --> ([A-Z]+)$", text, flags=re.MULTILINE))
    expected = {
        (source.name, target.name)
        for source, targets in ALLOWED_TRANSITIONS.items()
        for target in targets
    }
    assert drawn == expected
    terminal = {s.name for s, targets in ALLOWED_TRANSITIONS.items() if not targets}
    shaded = re.search(r"^    class ([A-Z, ]+) terminal$", text, flags=re.MULTILINE)
    assert shaded is not None
    assert set(shaded[1].split(", ")) == terminal


def test_error_hierarchy_lists_every_public_error() -> None:
    """Every exception class in the packages' __all__ appears once in the generated tree."""
    text = mutator_docs.error_hierarchy_markdown()
    errors = {
        f"{package.__name__}.{name}"
        for package in (mutator, mutator_governance)
        for name in package.__all__
        if inspect.isclass(getattr(package, name))
        and issubclass(getattr(package, name), BaseException)
    }
    listed = re.findall(r"\{py:class\}`~([\w.]+)`", text)
    assert sorted(listed) == sorted(errors)
    assert text.startswith("- {py:class}`~mutator.MutatorError`")
