"""The README's quick start runs exactly as printed and prints what it says."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("index", [0, 1], ids=["quick-start", "governance"])
def test_program_prints_the_documented_output(tmp_path: Path, index: int) -> None:
    """Each complete README program runs in a fresh interpreter and prints its text block."""
    script = tmp_path / "readme_program.py"
    script.write_text(_blocks("python")[index])
    completed = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == _blocks("text")[index].strip()


def test_setup_commands_are_install_then_test() -> None:
    """The set-up section holds exactly the install and the test command."""
    commands = [line for line in _blocks("bash")[0].splitlines() if line.strip()]
    assert commands == ['python -m pip install -e ".[dev]"', "python -m pytest"]


_HEX_ID = re.compile(r"\b[0-9a-f]{32}\b")


def _seed_durable_sqlite_requests(url: str) -> None:
    """The state of the CLI transcript: dev submitted req-1 and req-2 (finance approves)."""
    import anyio

    from examples.durable_sqlite import FinanceApproves, Quota, RaiseQuota, make_registry
    from mutator import MutationContext
    from mutator_governance import Governance

    async def seed() -> None:
        async with Governance.open(url, registry=make_registry()) as gov:
            gov.engine.register_policy(FinanceApproves())
            await gov.states.put("quota:acme", Quota(100))
            dev = MutationContext.user("dev", reason="launch needs headroom")
            for request_id, by in (("req-1", 50), ("req-2", 25)):
                await gov.submit(
                    RaiseQuota(by), state_id="quota:acme", context=dev, request_id=request_id
                )

    anyio.run(seed)


def test_cli_transcript_is_real(tmp_path: Path) -> None:
    """Each ``$ mutator ...`` of the "Operating it" transcript prints what the README shows.

    Approval ids are random, so 32-hex ids are masked on both sides; everything else,
    including column alignment and the exit code, must match.
    """
    (transcript,) = _blocks("console")
    root = README.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUTATOR_")}
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    script = Path(sys.executable).with_name("mutator")
    program = [str(script)] if script.exists() else [sys.executable, "-m", "mutator_governance"]
    steps: list[tuple[str, list[str]]] = []
    for line in transcript.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    exported, *commands = steps
    assert exported[0].startswith("export ")
    for assignment in exported[0].split()[1:]:
        name, _, value = assignment.partition("=")
        env[name] = value
    _seed_durable_sqlite_requests(env["MUTATOR_URL"].replace("///", f"///{tmp_path}/"))
    last_code = 0
    for command, expected in commands:
        if command == "echo $?":
            assert expected == [str(last_code)]
            continue
        assert command.startswith("mutator ")
        done = subprocess.run(
            [*program, *shlex.split(command)[1:]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        last_code = done.returncode
        printed = (done.stdout + done.stderr).strip()
        assert _HEX_ID.sub("<id>", printed) == _HEX_ID.sub("<id>", "\n".join(expected)), command
