"""The README's quick start runs exactly as printed and prints what it says."""

from __future__ import annotations

import re
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
