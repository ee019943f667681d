"""Tests and benchmarks touch PostgreSQL and Redis only when someone names a server (#11).

Both run in a child process whose environment names no server: the store tests must skip
with a one-line reason naming the variable, and the benchmark scenarios must report
themselves unavailable for the same reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER_VARIABLES = (
    "MUTATOR_TEST_POSTGRES_URL",
    "MUTATOR_TEST_REDIS_URL",
    "MUTATOR_REQUIRE_SERVICES",
)


def unnamed_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVER_VARIABLES}
    env["PYTHONPATH"] = str(ROOT)
    return env


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=unnamed_environment(),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_server_store_tests_skip_with_the_variable_to_set() -> None:
    done = run(
        "-m",
        "pytest",
        "-q",
        "-rs",
        "-p",
        "no:cacheprovider",
        "tests/stores/test_postgres_commit.py::test_state_version_that_is_not_a_counter_is_refused_on_read",
        "tests/stores/test_redis_commit.py::test_a_version_that_is_not_a_counter_is_stored_data_error",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PostgreSQL tests need MUTATOR_TEST_POSTGRES_URL (no server was named)" in done.stdout
    assert "Redis tests need MUTATOR_TEST_REDIS_URL (no server was named)" in done.stdout
    assert "5 skipped" in done.stdout
    assert "passed" not in done.stdout


def test_server_benchmarks_are_unavailable_with_the_variable_to_set() -> None:
    program = (
        "from benchmarks import backend_postgres, backend_redis\n"
        "print(backend_postgres.unavailable())\n"
        "print(backend_redis._unavailable())\n"
    )
    done = run("-c", program)
    assert done.returncode == 0, done.stderr
    postgres, redis = done.stdout.strip().splitlines()
    assert "MUTATOR_TEST_POSTGRES_URL" in postgres
    assert "MUTATOR_TEST_REDIS_URL" in redis


def test_the_benchmarks_readme_shows_the_message_the_run_prints() -> None:
    """The documented skip line is the one the Postgres scenarios report (no aiosqlite)."""
    text = (ROOT / "benchmarks" / "README.md").read_text()
    assert "no Postgres server named (set MUTATOR_TEST_POSTGRES_URL)" in text
    assert "--postgres URL" in text
    assert "aiosqlite" not in text
