"""The ``mutator`` command line, run as a real process against a SQLite file.

The command is the installed ``mutator`` console script when the environment has it, else
``python -m mutator_governance`` (the same ``_cli.main``); either way the code under test
is this checkout's (``PYTHONPATH``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from mutator import MutationContext
from mutator_governance import Governance
from mutator_governance.stores import redact_url
from tests.cli_domain import (
    BreakQuota,
    FinanceApproves,
    Quota,
    RaiseQuota,
    make_registry,
    submit,
)
from tests.stores.conftest import (
    POSTGRES_URL,
    REDIS_URL,
    _need,
    private_redis,  # noqa: F401  (fixture)
)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).with_name("mutator")


def command() -> list[str]:
    """How to run ``mutator`` here: the console script, or the package's ``__main__``."""
    if SCRIPT.exists():
        return [str(SCRIPT)]
    return [sys.executable, "-m", "mutator_governance"]


def environment(url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUTATOR_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["MUTATOR_REGISTRY"] = "tests.cli_domain:registry"
    if url is not None:
        env["MUTATOR_URL"] = url
    return env


def mutator(url: str | None, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command(), *args],
        cwd=cwd,
        env=environment(url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(url: str, *args: str) -> str:
    done = mutator(url, *args)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def rows(table: str) -> list[list[str]]:
    """The cells of a printed table, without its header."""
    return [line.split() for line in table.strip().splitlines()[1:]]


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A SQLite store where alice submitted req-1 and req-2 (each needs a finance approval)."""
    location = f"sqlite:///{tmp_path / 'gov.db'}"
    anyio.run(submit, location, "req-1", "req-2")
    return location


def test_the_console_script_is_declared() -> None:
    """``pip install`` creates ``mutator`` from the entry point that the tests run."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"] == {"mutator": "mutator_governance._cli:main"}


def test_an_approver_works_through_the_whole_story(url: str) -> None:
    """inbox, a refused self-approval, approve, show, worker and a JSON listing."""
    inbox = rows(ok(url, "inbox", "--as", "fiona", "--role", "finance"))
    assert [(r[0], r[2], r[3]) for r in inbox] == [
        ("req-1", "1", "role:finance"),
        ("req-2", "1", "role:finance"),
    ]
    assert "nothing to approve for alice" in ok(url, "inbox", "--as", "alice", "--role", "finance")

    refused = mutator(url, "approve", "req-1", "--as", "alice", "--role", "finance")
    assert refused.returncode == 1
    assert "four-eyes" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert refused.stdout == ""

    approval_id = inbox[0][1]
    approved = ok(
        url, "approve", "req-1", "--as", "fiona", "--role", "finance", "--approval", approval_id
    )
    assert approved.strip() == "req-1: approved"

    shown = ok(url, "requests", "show", "req-1")
    assert "status    approved" in shown
    assert f"1     {approval_id}  role:finance  approved  fiona" in shown
    assert "lifecycle/SUBMITTED  alice" in shown
    assert "approval/GRANTED     fiona" in shown

    worker = ok(url, "worker", "--until-idle")
    assert worker.splitlines() == [
        "req-1: executed (version 2)",
        "worker stopped: 1 executed, 0 not executed, 0 failed, 0 skipped, 0 errors, 0 retried; "
        "0 recovered, 0 expired, 0 purged, 0 quarantined, 0 outages",
    ]

    listed = json.loads(ok(url, "--json", "requests", "list"))
    assert listed["next_cursor"] is None
    assert [(r["request_id"], r["status"], r["pending_reason"]) for r in listed["items"]] == [
        ("req-1", "executed", None),
        ("req-2", "pending", "approval"),
    ]
    assert listed["items"][0]["mutation_type"] == "quota.raise"
    assert listed["items"][0]["requester"] == "alice"


def test_requests_list_filters_and_pages(url: str) -> None:
    """Filters narrow the table; --limit and the printed cursor walk the pages."""
    first = json.loads(ok(url, "--json", "requests", "list", "--limit", "1"))
    assert [r["request_id"] for r in first["items"]] == ["req-1"]
    rest = json.loads(
        ok(url, "--json", "requests", "list", "--limit", "1", "--cursor", first["next_cursor"])
    )
    assert [r["request_id"] for r in rest["items"]] == ["req-2"]
    assert rest["next_cursor"] is None
    human = ok(url, "requests", "list", "--limit", "1")
    assert human.splitlines()[0].split() == [
        "ID",
        "STATUS",
        "OPERATION",
        "STATE",
        "REQUESTER",
        "AGE",
    ]
    assert f"next page: --cursor {first['next_cursor']}" in human
    table = ok(
        url, "requests", "list", "--status", "pending", "--reason", "approval", "--actor", "alice"
    )
    assert [r[:2] for r in rows(table)] == [
        ["req-1", "pending/approval"],
        ["req-2", "pending/approval"],
    ]
    assert ok(url, "requests", "list", "--state-id", "elsewhere").strip() == "no requests"


def test_requests_list_filters_by_mutation_type_and_time(url: str) -> None:
    """The indexed filters of a listing, from the command line: mutation types and
    created/updated bounds as ISO 8601 times with an offset or durations ago."""

    def listed(*args: str) -> list[str]:
        return [
            r["request_id"]
            for r in json.loads(ok(url, "--json", "requests", "list", *args))["items"]
        ]

    both = ["req-1", "req-2"]
    assert listed("--mutation-type", "quota.raise") == both
    assert listed("--mutation-type", "quota.break") == []
    assert listed("--mutation-type", "quota.break", "--mutation-type", "quota.raise") == both
    assert listed("--created-from", "1h", "--updated-from", "90m") == both
    assert listed("--created-to", "2000-01-01T00:00:00Z") == []
    assert listed("--updated-from", "2999-01-01T00:00:00+01:00") == []
    assert listed("--created-from", "2w", "--created-to", "2999-01-01T00:00:00Z") == both

    for bad, reason in (
        ("2026-12-04T10:00:00", "has no UTC offset"),
        ("yesterday", "not a time"),
        ("99999999w", "reaches before year 1"),
    ):
        done = mutator(url, "requests", "list", "--created-from", bad)
        assert done.returncode == 2, done.stdout
        assert reason in done.stderr, done.stderr


def test_reject_cancel_execute_and_sweeps(url: str) -> None:
    """reject and cancel print the new status; execute refuses an unapproved request."""
    assert ok(
        url, "reject", "req-1", "--as", "fiona", "--role", "finance", "--reason", "no"
    ).strip() == ("req-1: rejected")
    assert ok(url, "cancel", "req-2", "--as", "alice").strip() == "req-2: canceled"
    refused = mutator(url, "execute", "req-2")
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    assert refused.stderr.startswith("mutator: ")
    missing = mutator(url, "requests", "show", "nope")
    assert missing.returncode == 1
    assert "nope" in missing.stderr
    assert json.loads(ok(url, "--json", "expire")) == {"expired": [], "skipped": []}
    assert json.loads(ok(url, "--json", "recover"))["repaired_decisions"] == 0
    assert ok(url, "quarantine").strip() == "no quarantined rows"


def test_a_damaged_row_is_listed_in_quarantine_and_skipped(url: str) -> None:
    """One unreadable row: listings go on without it and ``quarantine`` shows it."""
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as damage:
        damage.execute("UPDATE requests SET document = 'not json' WHERE request_id = 'req-1'")
    first = mutator(url, "requests", "list")
    assert first.returncode == 0
    assert [row[0] for row in rows(first.stdout)] == ["req-2"]
    assert first.stderr.startswith("mutator: warning: quarantined request req-1: [sqlite]")
    shown = ok(url, "quarantine")
    assert rows(shown)[0][:3] == ["req-1", "sqlite", "-"]
    assert "not a JSON document" in shown
    (item,) = json.loads(ok(url, "--json", "quarantine"))["items"]
    assert (item["request_id"], item["backend"]) == ("req-1", "sqlite")


@pytest.mark.parametrize(
    ("url_given", "args", "message"),
    [
        (False, ["inbox", "--as", "x"], "--url (or MUTATOR_URL) is required"),
        (True, ["frobnicate"], "invalid choice"),
        (True, ["approve"], "the following arguments are required"),
        (True, ["requests", "list", "--limit", "0"], "must be >= 1"),
        (True, ["requests", "list", "--cursor", "bogus"], "not a request cursor"),
        (True, ["--registry", "tests.cli_domain:nothing", "recover"], "has no attribute"),
        (True, ["--registry", "tests.cli_domain", "recover"], "MODULE:ATTRIBUTE"),
        (True, ["--registry", "tests.cli_domain:submit", "recover"], "without arguments"),
        (True, ["--registry", "tests.cli_domain:registry_later", "recover"], "async function"),
        (True, ["--policies", "tests.cli_domain:registry", "recover"], "not a MutationPolicy"),
        (True, ["--policies", "tests.cli_domain:Quota", "recover"], "without arguments"),
        (True, ["requests", "list", "--state-id", ""], "--state-id: must not be blank"),
        (True, ["requests", "list", "--actor", " "], "--actor: must not be blank"),
        (True, ["reject", "req-1", "--as", "fiona", "--reason", " "], "must not be blank"),
        (True, ["requests", "list", "--limit", "10001"], "--limit: must be <= 10000"),
        (True, ["requests", "list", "--limit", "9" * 20], "--limit: must be <= 10000"),
        (True, ["inbox", "--as", "x", "--limit", "9" * 20], "--limit: must be <= 10000"),
        (True, ["purge", "--older-than", "1d", "--batch-size", "9" * 20], "must be <= 10000"),
        (True, ["worker", "--concurrency", "9" * 20], "--concurrency: must be <= 1000"),
        (
            True,
            ["--registry", "tests.cli_domain:registry_broken", "recover"],
            "--registry tests.cli_domain:registry_broken raised KeyError: 'billing'",
        ),
        (
            True,
            ["--policies", "tests.cli_domain:registry_broken", "recover"],
            "--policies tests.cli_domain:registry_broken raised KeyError: 'billing'",
        ),
    ],
)
def test_usage_errors_exit_2(url: str, url_given: bool, args: Sequence[str], message: str) -> None:
    """Bad arguments, registries or cursors are usage errors: exit 2, no traceback."""
    done = mutator(url if url_given else None, *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("raise RuntimeError('no config file')\n", "RuntimeError: no config file"),
        ("registry = (\n", "SyntaxError: '(' was never closed (broken_registry.py, line 1)"),
    ],
    ids=["raises", "syntax error"],
)
def test_a_registry_module_that_fails_to_import_is_a_usage_error(
    url: str, tmp_path: Path, source: str, error: str
) -> None:
    """The application's module raising on import is named with its error (exit 2), not
    a traceback out of the command line's loading code."""
    (tmp_path / "broken_registry.py").write_text(source)
    done = mutator(url, "--registry", "broken_registry:registry", "recover", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"mutator: error: importing 'broken_registry' for --registry raised {error}"
    )
    assert "Traceback" not in done.stderr


def test_a_sqlite_url_naming_no_file_is_refused(tmp_path: Path) -> None:
    """``sqlite:///$UNSET`` would open a private in-memory database: an empty store where
    every request "does not exist". Only ``sqlite:///:memory:`` asks for one."""
    for location in ("sqlite:///", "sqlite://", "sqlite:///?busy_timeout=1"):
        done = mutator(location, "requests", "list", cwd=tmp_path)
        assert done.returncode == 2, done.stdout
        assert f"--url {location!r} names no SQLite database file" in done.stderr
    assert files_in(tmp_path) == []
    assert ok("sqlite:///:memory:", "requests", "list").strip() == "no requests"


def test_a_missing_sqlite_file_is_refused_not_created(tmp_path: Path) -> None:
    """A mistyped path is an error (exit 2), not a new empty database listing nothing."""
    missing = tmp_path / "typo.db"
    for args in (["requests", "list"], ["worker", "--until-idle"], ["quarantine"]):
        done = mutator(f"sqlite:///{missing}", *args)
        assert done.returncode == 2, done.stdout
        assert f"no SQLite database at '{missing}'" in done.stderr
        assert "Traceback" not in done.stderr
    assert files_in(tmp_path) == []
    assert ok("sqlite:///:memory:", "requests", "list").strip() == "no requests"


def test_a_sqlite_file_without_a_store_is_refused_not_changed(tmp_path: Path) -> None:
    """Another application's database (or an empty file) gets no governance tables."""
    other = tmp_path / "app.db"
    with sqlite3.connect(other) as app:
        app.execute("CREATE TABLE users (id INTEGER)")
    (tmp_path / "empty.db").touch()
    for name, tables in (("app.db", ["users"]), ("empty.db", [])):
        done = mutator(f"sqlite:///{tmp_path / name}", "requests", "list")
        assert done.returncode == 2, done.stdout
        assert "holds no governance store" in done.stderr
        with sqlite3.connect(tmp_path / name) as check:
            found = check.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            assert [row[0] for row in found] == tables


@pytest.fixture
def postgres_schema() -> Iterator[tuple[str, str]]:
    """A PostgreSQL server URL and a fresh schema name, the schema dropped afterwards."""
    import psycopg

    server = _need("PostgreSQL", POSTGRES_URL, 5432, "MUTATOR_TEST_POSTGRES_URL")
    schema = f"cli_typo_{uuid.uuid4().hex[:12]}"
    try:
        yield server, schema
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def redis_prefix() -> Iterator[tuple[str, str]]:
    """A Redis server URL and a fresh key prefix, its keys deleted afterwards."""
    server = _need("Redis", REDIS_URL, 6379, "MUTATOR_TEST_REDIS_URL")
    prefix = f"cli-typo-{uuid.uuid4().hex[:12]}"
    try:
        yield server, prefix
    finally:
        keys = redis_keys(server, prefix)
        if keys:
            import redis

            with redis.Redis.from_url(server) as client:
                client.delete(*keys)


def with_query(server: str, name: str, value: str) -> str:
    return f"{server}{'&' if '?' in server else '?'}{name}={value}"


def postgres_schemas(server: str, schema: str) -> list[str]:
    import psycopg

    with psycopg.connect(server, autocommit=True) as conn:
        found = conn.execute(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name = %s",
            (schema,),
        ).fetchall()
    return [row[0] for row in found]


def redis_keys(server: str, prefix: str) -> list[bytes]:
    import redis

    with redis.Redis.from_url(server) as client:
        return sorted(client.scan_iter(match=f"{prefix}:*"))


def assert_refused(done: subprocess.CompletedProcess[str], where: str, url: str) -> None:
    assert done.returncode == 2, done.stdout
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("mutator: error: no governance store"), done.stderr
    assert repr(where) in error, error
    assert redact_url(url) in error, error
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("place", "parameter", "residue"),
    [("postgres_schema", "schema", postgres_schemas), ("redis_prefix", "prefix", redis_keys)],
)
def test_a_server_store_that_does_not_exist_is_refused_not_created(
    request: pytest.FixtureRequest,
    place: str,
    parameter: str,
    residue: Callable[[str, str], list[Any]],
) -> None:
    """A mistyped ``?schema=`` (PostgreSQL) or ``?prefix=`` (Redis) is an error (exit 2)
    that writes nothing, not a new store listing nothing; a real store there is listed."""
    server, where = request.getfixturevalue(place)
    location = with_query(server, parameter, where)
    for args in (["requests", "list"], ["worker", "--until-idle"], ["quarantine"]):
        assert_refused(mutator(location, *args), where, location)
    assert residue(server, where) == []

    anyio.run(submit, location, "req-1", backend="asyncio")
    assert [row[0] for row in rows(ok(location, "requests", "list"))] == ["req-1"]


def test_version_prints_the_installed_version() -> None:
    """``mutator --version`` answers without a store or a registry."""
    from mutator import __version__

    done = mutator(None, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"mutator {__version__}"


def test_a_redis_socket_holding_no_store_is_refused_not_created(
    request: pytest.FixtureRequest,
) -> None:
    """``unix://`` is a server URL like the others: no store there is exit 2, no keys."""
    import redis

    server = request.getfixturevalue("private_redis")()
    location = f"unix://{server['socket']}?db=4&prefix=typo"
    assert_refused(mutator(location, "requests", "list"), "typo", location)
    assert redis.Redis(unix_socket_path=server["socket"], db=4).keys("*") == []


def files_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_a_repaired_row_is_released_from_quarantine(url: str) -> None:
    """``quarantine --release`` puts a repaired row back; a still-damaged one stays."""
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as damage:
        (document,) = damage.execute(
            "SELECT document FROM requests WHERE request_id = 'req-1'"
        ).fetchone()
        damage.execute("UPDATE requests SET document = 'not json' WHERE request_id = 'req-1'")
    assert [row[0] for row in rows(mutator(url, "requests", "list").stdout)] == ["req-2"]

    still = mutator(url, "quarantine", "--release", "req-1")
    assert still.returncode == 1
    assert still.stderr.startswith("mutator: [sqlite] at 'req-1': not a JSON document")
    assert rows(ok(url, "quarantine"))[0][0] == "req-1"

    with sqlite3.connect(path) as repair:
        repair.execute("UPDATE requests SET document = ? WHERE request_id = 'req-1'", (document,))
    released = ok(url, "quarantine", "--release", "req-1")
    assert released.startswith("req-1: released (pending/approval)")
    assert ok(url, "quarantine").strip() == "no quarantined rows"
    assert [row[0] for row in rows(ok(url, "requests", "list"))] == ["req-1", "req-2"]

    again = mutator(url, "--json", "quarantine", "--release", "req-2")
    assert again.returncode == 1
    assert again.stderr.strip() == "mutator: request 'req-2' is not quarantined"
    missing = mutator(url, "quarantine", "--release", "req-9")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "mutator: request 'req-9' is not quarantined"

    with sqlite3.connect(path) as damage:  # damaged again, then deleted instead of repaired
        damage.execute("UPDATE requests SET document = 'not json' WHERE request_id = 'req-1'")
    mutator(url, "requests", "list")
    with sqlite3.connect(path) as delete:
        delete.execute("DELETE FROM requests WHERE request_id = 'req-1'")
    assert ok(url, "quarantine", "--release", "req-1").strip() == (
        "req-1: released (the row is gone)"
    )
    assert ok(url, "quarantine").strip() == "no quarantined rows"


def test_release_readable_puts_back_every_row_that_reads_and_keeps_the_rest(url: str) -> None:
    """After a fix (here: repaired rows), one command releases what reads; exit 3 while
    some row still does not, and that row stays quarantined."""
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as damage:
        documents = dict(damage.execute("SELECT request_id, document FROM requests").fetchall())
        damage.execute("UPDATE requests SET document = 'not json'")
    assert mutator(url, "requests", "list").returncode == 0
    assert sorted(row[0] for row in rows(ok(url, "quarantine"))) == ["req-1", "req-2"]

    with sqlite3.connect(path) as repair:
        repair.execute(
            "UPDATE requests SET document = ? WHERE request_id = 'req-2'", (documents["req-2"],)
        )
    partly = mutator(url, "quarantine", "--release-readable")
    assert partly.returncode == 3, partly.stderr
    assert partly.stdout.splitlines()[:2] == [
        "released 1, still unreadable 1",
        "  released req-2",
    ]
    assert partly.stdout.splitlines()[2].startswith(
        "  unreadable req-1: [sqlite] at 'req-1': not a JSON document"
    )
    assert [row[0] for row in rows(ok(url, "quarantine"))] == ["req-1"]
    assert [row[0] for row in rows(ok(url, "requests", "list"))] == ["req-2"]

    with sqlite3.connect(path) as repair:
        repair.execute(
            "UPDATE requests SET document = ? WHERE request_id = 'req-1'", (documents["req-1"],)
        )
    done = json.loads(ok(url, "--json", "quarantine", "--release-readable"))
    assert done == {"released": ["req-1"], "unreadable": []}
    assert ok(url, "quarantine").strip() == "no quarantined rows"
    assert ok(url, "quarantine", "--release-readable").strip() == ("released 0, still unreadable 0")
    both = mutator(url, "quarantine", "--release", "req-1", "--release-readable")
    assert both.returncode == 2


def test_requester_text_cannot_forge_lines_an_approver_reads(tmp_path: Path) -> None:
    """Ids, reasons and actor ids are the requester's: their newlines and escape sequences
    are printed escaped, so no forged decision or row reaches the table."""
    location = f"sqlite:///{tmp_path / 'gov.db'}"
    forged = "launch\n2026-01-01T00:00:00+00:00  approval/GRANTED  cfo  fine"

    async def seed() -> None:
        async with Governance.open(location, registry=make_registry()) as gov:
            gov.engine.register_policy(FinanceApproves())
            await gov.states.put("quota:acme", Quota(100))
            await gov.submit(
                RaiseQuota(10),
                state_id="quota:acme",
                context=MutationContext.user("mallory\x1b[8m", reason=forged),
                request_id="req-1\nreq-9  executed",
            )

    anyio.run(seed)
    shown = ok(location, "requests", "show", "req-1\nreq-9  executed")
    assert "launch\\n2026-01-01T00:00:00+00:00  approval/GRANTED" in shown
    assert not any(line.startswith("2026-01-01") for line in shown.splitlines())
    assert "\x1b" not in shown
    (row,) = rows(ok(location, "requests", "list"))
    assert row[0] == "req-1\\nreq-9"
    assert "mallory\\x1b[8m" in row
    for args in (["inbox", "--as", "fiona", "--role", "finance"], ["expire"]):
        assert "\x1b" not in ok(location, *args)


def test_execute_and_the_worker_evaluate_the_given_policies_again(url: str) -> None:
    """Revalidated on the latest state, req-2 would take the limit past 115: with
    ``--policies`` it is rejected as the application would; without, a warning says that
    no policy is evaluated (and it executes)."""
    for request_id in ("req-1", "req-2"):
        ok(url, "approve", request_id, "--as", "fiona", "--role", "finance")
    assert ok(url, "execute", "req-1").strip() == "req-1: executed (version 2)"
    checked = mutator(
        url,
        "--policies",
        "tests.cli_domain:policies",
        "execute",
        "req-2",
        "--strategy",
        "revalidate",
    )
    assert (checked.returncode, checked.stderr) == (3, "")
    assert checked.stdout.strip() == "req-2: rejected: AtMost115: the limit would pass 115"

    submit_more = anyio.run(submit, url, "req-3")
    assert submit_more[0].request_id == "req-3"
    ok(url, "approve", "req-3", "--as", "fiona", "--role", "finance")
    unchecked = mutator(url, "worker", "--until-idle", "--strategy", "revalidate")
    assert unchecked.returncode == 0
    assert unchecked.stdout.splitlines()[0] == "req-3: executed (version 3)"
    assert "warning: revalidating without --policies" in unchecked.stderr


def approve_all(url: str, *ids: str) -> None:
    for request_id in ids:
        ok(url, "approve", request_id, "--as", "fiona", "--role", "finance")


def test_execute_exits_3_when_the_request_did_not_end_executed(url: str) -> None:
    """A script tells the outcomes apart: 0 executed; 3 (outcome still on stdout, nothing
    on stderr) rejected as stale, pending a renewed approval, or failed; 1 refused."""
    anyio.run(submit, url, "req-3")  # req-1 to req-3 all expect version 1
    approve_all(url, "req-1", "req-2", "req-3")
    assert ok(url, "execute", "req-1").strip() == "req-1: executed (version 2)"

    stale = mutator(url, "execute", "req-2")
    assert (stale.returncode, stale.stderr) == (3, "")
    assert stale.stdout.strip() == "req-2: rejected (rejected_as_stale)"

    renew = mutator(url, "--json", "execute", "req-3", "--strategy", "renew")
    assert (renew.returncode, renew.stderr) == (3, "")
    outcome = json.loads(renew.stdout)
    assert (outcome["executed"], outcome["status"], outcome["pending_reason"]) == (
        False,
        "pending",
        "approval",
    )
    assert outcome["resolution"] == "requires_renewed_approval"

    anyio.run(functools.partial(submit, url, "req-4", mutation=BreakQuota()))
    approve_all(url, "req-4")
    failed = mutator(url, "execute", "req-4")
    assert (failed.returncode, failed.stderr) == (3, "")
    assert failed.stdout.strip() == (
        "req-4: failed: mutation 'quota.break' failed: RuntimeError: the quota service is down"
    )

    refused = mutator(url, "execute", "req-4")  # FAILED is final: a refusal, not an outcome
    assert refused.returncode == 1
    assert refused.stdout == ""


def test_worker_until_idle_exits_3_when_an_attempt_did_not_end_executed(url: str) -> None:
    """A drain that left a request unexecuted says so like ``execute``: req-2 goes stale
    once req-1 ran, so the worker prints both outcomes and its summary and exits 3."""
    approve_all(url, "req-1", "req-2")
    done = mutator(url, "worker", "--until-idle", "--concurrency", "1")
    assert (done.returncode, done.stderr) == (3, "")
    assert done.stdout.splitlines() == [
        "req-1: executed (version 2)",
        "req-2: rejected (rejected_as_stale)",
        "worker stopped: 1 executed, 1 not executed, 0 failed, 0 skipped, 0 errors, 0 retried; "
        "0 recovered, 0 expired, 0 purged, 0 quarantined, 0 outages",
    ]
    again = mutator(url, "--json", "worker", "--until-idle")  # nothing left: a clean drain
    assert (again.returncode, again.stderr) == (0, "")
    assert json.loads(again.stdout)["summary"]["executed"] == 0


def test_json_may_follow_the_command(url: str) -> None:
    """``mutator requests list --json`` is what people type; it was a usage error."""
    assert ok(url, "requests", "list", "--json") == ok(url, "--json", "requests", "list")
    assert json.loads(ok(url, "requests", "show", "req-1", "--json"))["request"]["status"] == (
        "pending"
    )
    assert json.loads(ok(url, "quarantine", "--json")) == {"items": []}
    assert not ok(url, "requests", "list").startswith("{")


def test_a_bad_store_url_is_a_usage_error(tmp_path: Path) -> None:
    """An unsupported URL scheme is reported before anything runs."""
    done = mutator("ftp://nowhere/x", "recover")
    assert done.returncode == 2
    assert "unsupported store URL" in done.stderr


def test_ctrl_c_stops_the_worker_cleanly(url: str) -> None:
    """SIGINT stops a long-running worker with its summary and exit code 0."""
    process = subprocess.Popen(
        [*command(), "worker", "--poll-interval", "0.1"],
        cwd=ROOT,
        env=environment(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        started = process.stdout.readline()  # printed once Ctrl-C is handled
        assert started.startswith("worker started: concurrency 4"), started
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert out.strip().splitlines()[-1].startswith("worker stopped: 0 executed")
    assert "Traceback" not in err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["requests", "list"], ["--json", "requests", "show", "req-1"]])
def test_output_that_cannot_be_written_is_one_line_on_stderr(url: str, args: list[str]) -> None:
    """A full disk under stdout is exit 1 with the reason, not a traceback."""
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [*command(), *args],
            cwd=ROOT,
            env=environment(url),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert done.stderr == "mutator: cannot write the output: [Errno 28] No space left on device\n"


def test_a_worker_whose_reader_went_away_stops(url: str) -> None:
    """``mutator worker | head`` with the reader gone: the worker stops quietly as on a
    signal, the requests it did not start stay approved and claimable, instead of running
    them all unseen with an error line for each lost outcome."""
    anyio.run(submit, url, *(f"req-{n}" for n in range(3, 21)))
    approve_all(url, *(f"req-{n}" for n in range(1, 21)))
    process = subprocess.Popen(
        [*command(), "worker", "--until-idle", "--concurrency", "1"],
        cwd=ROOT,
        env=environment(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        process.stdout.close()  # the reader is gone before the first line
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert (process.returncode, err) == (1, "")
    listed = json.loads(ok(url, "--json", "requests", "list", "--status", "approved"))
    assert len(listed["items"]) >= 15
    assert ok(url, "--json", "requests", "list", "--status", "executing") == (
        '{"items": [], "next_cursor": null}\n'
    )


def test_a_drain_stopped_by_a_signal_exits_with_it(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``worker --until-idle`` stopped by SIGTERM did not drain: it prints its summary and
    exits 128 + 15, as a shell reports a signal, not 0 as if it had reached idle."""
    from mutator_governance._cli import main

    async def stopped(self: Governance, **options: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # the command's receiver is listening
        await anyio.sleep_forever()

    monkeypatch.setattr(Governance, "run_worker", stopped)
    code = main(["--url", url, "--registry", "tests.cli_domain:registry", "worker", "--until-idle"])
    captured = capsys.readouterr()
    assert code == 128 + signal.SIGTERM
    assert captured.out.startswith("worker stopped: 0 executed")
    assert captured.err == ""


def test_a_store_failure_inside_the_worker_is_reported_without_traceback(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An error that stops the worker's task group exits 1 with its own message."""
    from mutator_governance import Governance, StoreUnavailableError
    from mutator_governance._cli import main

    async def broken(self: Governance, **options: object) -> None:
        raise StoreUnavailableError("connection lost", url="sqlite:///gov.db")

    monkeypatch.setattr(Governance, "run_worker", broken)
    code = main(["--url", url, "--registry", "tests.cli_domain:registry", "worker", "--until-idle"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.strip() == "mutator: connection lost (sqlite:///gov.db)"
    assert "worker stopped" not in captured.out


# -- what the library logs -------------------------------------------------------------------

GONE = (
    "(StateNotFoundError: state 'quota:acme' is not in the state store; create it with "
    "`await gov.states.put(state_id, state)` first)"
)
"""How the line of a worker's parked attempt ends: the exception, summarized."""


def approve_then_lose_the_state(url: str, request_id: str = "req-1") -> None:
    """The request approved, then its state deleted: the worker's attempt raises
    StateNotFoundError, which the worker logs at WARNING with the exception and parks."""
    approve_all(url, request_id)
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db, db:
        db.execute("DELETE FROM states WHERE state_id = 'quota:acme'")


def drain(url: str, *handlers: logging.Handler) -> int:
    """``mutator worker --until-idle`` run by ``main`` with only ``handlers`` on the root."""
    from mutator_governance._cli import main

    with root_handlers(*handlers):
        return main(
            ["--url", url, "--registry", "tests.cli_domain:registry", "worker", "--until-idle"]
        )


@contextlib.contextmanager
def root_handlers(*handlers: logging.Handler) -> Iterator[None]:
    """The root logger holds only ``handlers`` in the block: none is a process with no
    logging configured, as ``mutator`` runs (pytest's capture handlers put back after)."""
    root = logging.getLogger()
    saved = root.handlers
    root.handlers = list(handlers)
    try:
        yield
    finally:
        root.handlers = saved


def test_a_logged_warning_is_one_line_with_the_error_not_a_traceback(url: str) -> None:
    """The worker logs a request that raised with the exception attached: the command
    prints it as one ``mutator: warning:`` line summarizing the error, no traceback."""
    approve_then_lose_the_state(url)
    done = mutator(url, "worker", "--until-idle")
    assert done.returncode == 3
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("mutator: warning: request req-1 raised StateNotFoundError; parked")
    assert line.endswith(GONE)
    assert done.stdout.splitlines()[0].startswith("req-1: errors: state 'quota:acme'")


def test_every_worker_json_line_says_its_request_and_outcome(url: str) -> None:
    """A script reads ``outcome`` on every line: executions and an attempt that raised
    (whose message was only under a key named after its kind) alike."""
    anyio.run(submit, url, "req-3")
    approve_all(url, "req-1", "req-2")
    ran = mutator(url, "--json", "worker", "--until-idle", "--concurrency", "1")
    assert ran.returncode == 3, ran.stderr
    *lines, summary = [json.loads(line) for line in ran.stdout.splitlines()]
    assert [(line["request_id"], line["outcome"], line["status"]) for line in lines] == [
        ("req-1", "executed", "executed"),
        ("req-2", "not_executed", "rejected"),
    ]
    assert summary["summary"]["executed"] == 1

    approve_then_lose_the_state(url, "req-3")
    raised = mutator(url, "--json", "worker", "--until-idle")
    assert raised.returncode == 3, raised.stderr
    (line, _) = [json.loads(line) for line in raised.stdout.splitlines()]
    assert (line["request_id"], line["outcome"]) == ("req-3", "errors")
    assert line["error"].startswith("state 'quota:acme' is not in the state store")
    assert line["errors"] == line["error"]


def test_a_logged_line_escapes_the_requester_s_text(url: str) -> None:
    """A request id holding a newline and an escape sequence is logged escaped: it cannot
    forge a second stderr line nor hide text from the operator."""
    forged = "req-9\x1b[8m\nmutator: warning: all clear"
    anyio.run(submit, url, forged)
    approve_then_lose_the_state(url, forged)
    done = mutator(url, "worker", "--until-idle")
    assert done.returncode == 3
    (line,) = done.stderr.splitlines()
    assert line.startswith(
        "mutator: warning: request req-9\\x1b[8m\\nmutator: warning: all clear raised "
        "StateNotFoundError"
    )
    assert "\x1b" not in done.stderr


def test_mutator_log_level_debug_shows_the_traceback_and_info(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The opt-in for a bug report: each traceback after its line, and the INFO records."""
    approve_then_lose_the_state(url)
    monkeypatch.setenv("MUTATOR_LOG_LEVEL", "DEBUG")
    assert drain(url) == 3
    err = capsys.readouterr().err
    warning = next(line for line in err.splitlines() if line.startswith("mutator: warning:"))
    assert warning.endswith(GONE)
    assert "Traceback (most recent call last):" in err
    assert "raise StateNotFoundError(claimed.state_id)" in err
    assert "mutator: info: req-1 errors in " in err


@pytest.mark.parametrize("value", ["loud", "warn ing", "30"])
def test_a_bad_mutator_log_level_is_a_usage_error(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    """A level the command does not know is refused (exit 2) before anything runs."""
    from mutator_governance._cli import main

    monkeypatch.setenv("MUTATOR_LOG_LEVEL", value)
    with pytest.raises(SystemExit) as exited:
        main(["--url", url, "--registry", "tests.cli_domain:registry", "requests", "list"])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        "mutator: error: MUTATOR_LOG_LEVEL must be one of debug, info, warning, error, "
        f"got {value!r}"
    ) in captured.err


def test_repeated_runs_leave_no_handler_behind(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each run prints its warning once and takes its handler (and level) away after."""
    monkeypatch.delenv("MUTATOR_LOG_LEVEL", raising=False)
    library = logging.getLogger("mutator")
    before = (list(library.handlers), library.level)
    approve_then_lose_the_state(url)
    for _ in range(3):
        assert drain(url) == 3
        warnings = [
            line for line in capsys.readouterr().err.splitlines() if line.startswith("mutator:")
        ]
        assert len(warnings) == 1
        assert warnings[0].endswith(GONE)
        assert (library.handlers, library.level) == before
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db, db:
            # the parked attempt keeps req-1 reserved: let the reservation run out
            db.execute("UPDATE requests SET reserved_by = NULL, reserved_until = NULL")


def test_a_process_with_its_own_logging_keeps_it(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An application that configured logging (a root handler) gets the record, with its
    exception, in its own handler; the command line adds no handler and prints no line."""
    seen: list[tuple[logging.LogRecord, list[logging.Handler]]] = []

    class Application(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((record, list(logging.getLogger("mutator").handlers)))

    monkeypatch.setenv("MUTATOR_LOG_LEVEL", "debug")  # the application's level stays
    approve_then_lose_the_state(url)
    assert drain(url, Application(logging.WARNING)) == 3
    assert "mutator:" not in capsys.readouterr().err
    ((record, handlers),) = [(r, h) for r, h in seen if r.name == "mutator.governance.worker"]
    assert record.levelno == logging.WARNING
    assert record.exc_info is not None
    assert type(record.exc_info[1]).__name__ == "StateNotFoundError"
    assert handlers == []


def test_purge_deletes_old_terminal_requests_with_their_decisions(url: str) -> None:
    """Only terminal requests last updated before the age go; pending ones stay."""
    ok(url, "cancel", "req-1", "--as", "alice")
    decided = "SELECT count(*) FROM decisions WHERE request_id = 'req-1'"
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as raw:
        (decisions,) = raw.execute(decided).fetchone()
    time.sleep(1.2)
    only_executed = ok(url, "--json", "purge", "--older-than", "1s", "--status", "executed")
    assert json.loads(only_executed)["requests"] == 0
    assert ok(url, "purge", "--older-than", "1s").strip() == (
        f"purge: 1 request(s) and {decisions} decision(s) deleted in 1 batch(es)"
    )
    assert mutator(url, "requests", "show", "req-1").returncode == 1
    assert [row[0] for row in rows(ok(url, "requests", "list"))] == ["req-2"]
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as raw:
        assert raw.execute(decided).fetchone() == (0,)


def test_a_worker_with_retention_purges_and_counts_it(url: str) -> None:
    ok(url, "cancel", "req-1", "--as", "alice")
    time.sleep(1.2)
    summary = json.loads(ok(url, "--json", "worker", "--until-idle", "--retention", "1s"))
    assert summary["summary"]["purged"] == 1
    assert [row[0] for row in rows(ok(url, "requests", "list"))] == ["req-2"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["purge"], "the following arguments are required: --older-than"),
        (["purge", "--older-than", "7"], "not a duration: '7'"),
        (["purge", "--older-than", "0d"], "must be longer than 0"),
        (["purge", "--older-than", "7d", "--status", "pending"], "invalid choice: 'pending'"),
        (["worker", "--retention", "soon"], "not a duration: 'soon'"),
    ],
    ids=["no age", "no unit", "zero", "not terminal", "worker retention"],
)
def test_a_malformed_purge_is_a_usage_error_that_deletes_nothing(
    url: str, args: list[str], message: str
) -> None:
    ok(url, "cancel", "req-1", "--as", "alice")
    refused = mutator(url, *args)
    assert refused.returncode == 2
    assert message in refused.stderr
    assert [row[0] for row in rows(ok(url, "requests", "list"))] == ["req-1", "req-2"]


def test_history_shows_who_changed_a_state_through_which_request(url: str) -> None:
    ok(url, "approve", "req-1", "--as", "fiona", "--role", "finance")
    ok(url, "execute", "req-1")
    anyio.run(submit, url, "req-3")  # evaluated on version 2, so it is not stale
    ok(url, "approve", "req-3", "--as", "fiona", "--role", "finance")
    ok(url, "execute", "req-3")
    table = rows(ok(url, "history", "quota:acme"))
    assert [row[1:] for row in table] == [
        ["req-1", "alice", "quota.raise", "limit:", "100", "->", "110"],
        ["req-3", "alice", "quota.raise", "limit:", "110", "->", "120"],
    ]
    newest = ok(url, "history", "quota:acme", "--limit", "1").splitlines()
    assert newest[0] == "1 older commit(s) not shown (--limit)"
    assert newest[2].split()[1] == "req-3"
    document = json.loads(ok(url, "--json", "history", "quota:acme", "--limit", "1"))
    assert document["total"] == 2
    (entry,) = document["entries"]
    assert (entry["request_id"], entry["actor"], entry["operation"]) == (
        "req-3",
        "alice",
        "quota.raise",
    )
    assert entry["changes"] == [
        {"path": "limit", "type": "modified", "old_value": 110, "new_value": 120}
    ]
    assert ok(url, "history", "quota:other").strip() == "no commits of state quota:other"


def test_state_shows_the_stored_version_and_value(url: str) -> None:
    assert ok(url, "state", "quota:acme").splitlines() == [
        "state quota:acme at version 1",
        "{",
        '  "limit": 100',
        "}",
    ]
    ok(url, "approve", "req-1", "--as", "fiona", "--role", "finance")
    ok(url, "execute", "req-1")
    assert json.loads(ok(url, "--json", "state", "quota:acme")) == {
        "state_id": "quota:acme",
        "version": "2",
        "request_id": "req-1",
        "type": "Quota",
        "state": {"limit": 110},
    }
    missing = mutator(url, "state", "quota:other")
    assert missing.returncode == 1
    assert missing.stderr == "mutator: no state 'quota:other' is stored\n"
