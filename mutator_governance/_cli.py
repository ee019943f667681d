"""The ``mutator`` command line: what operators and approvers run against a store.

Global options (before the command): ``--url URL`` (or ``MUTATOR_URL``), ``--registry
MODULE:ATTRIBUTE`` (or ``MUTATOR_REGISTRY``; a :class:`MutationRegistry`, or a callable
returning one, that knows the stored mutation and state types), ``--policies
MODULE:ATTRIBUTE`` (or ``MUTATOR_POLICIES``; the application's policies, which ``execute``
and ``worker`` evaluate again when they run a request: without them a request revalidated
on the latest state is checked by no policy) and ``--json``.

Exit codes: 0 success; 1 the operation was refused or failed (a governance error such as
a self-approval or an invalid transition; its message goes to stderr, never a
traceback; also output that cannot be written, quietly when its reader went away); 2 a
usage error (bad arguments, URL, registry or cursor; a URL naming no existing
governance store too — a missing SQLite file, ``sqlite:///`` naming none, a PostgreSQL
schema or Redis key prefix holding no store: the command line never creates one); 3
``execute`` ran but the request did not end executed (rejected as stale or by a policy,
back to pending for approvals, or failed), or ``worker --until-idle`` had an attempt
that did not (not executed, failed or an error) — the outcome lines on stdout say which;
128 + the signal: a ``worker --until-idle`` stopped by SIGINT or SIGTERM before it
drained.

What the library logs (loggers under ``mutator``, such as a worker attempt that raised)
goes to stderr too, one line a record and never a traceback: ``mutator: warning:
<message>``, an attached exception summarized on the same line as ``(<ExceptionType>:
<message>)``, unprintable characters escaped. ``MUTATOR_LOG_LEVEL`` (``debug``, ``info``,
``warning`` — the default — or ``error``) shows more or less; at ``debug`` the traceback
follows the line. The command line attaches this handler only while it runs, and only in
a process with no logging configured (no handler on the root logger, nor on ``mutator``):
an application that runs :func:`main` with its own logging configuration keeps it, and
``MUTATOR_LOG_LEVEL`` then changes nothing (a bad value is still a usage error).

``--json`` output is stable: one JSON document per command (the worker prints one JSON
object per outcome line, each with ``request_id`` and ``outcome``: ``executed``,
``not_executed``, ``failed``, ``skipped``, ``retried`` or ``errors``, then the execution's
keys or ``error``; and a final ``{"summary": ...}`` line). A request is
``{"request_id", "status", "pending_reason", "mutation_type", "operation", "category",
"state_id", "requester", "created_at", "updated_at", "active_step"}`` (times ISO 8601,
enums lower-case values); listings are ``{"items": [...], "next_cursor": str | null}``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import inspect
import json
import logging
import os
import pathlib
import re
import signal
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn
from urllib.parse import urlsplit

import anyio
import attrs
from anyio.abc import TaskStatus

from mutator import ConfigurationError, MutationContext, MutationPolicy, MutatorError, __version__

from ._cli_output import (
    Output,
    OutputLostError,
    age,
    approval_json,
    change_text,
    clean,
    data,
    decision_json,
    governed_request,
    history_json,
    inbox_json,
    operation,
    outcome_json,
    outcome_line,
    request_json,
    status,
    table,
)
from ._enums import PendingReason, RequestStatus, ResolutionStrategy
from ._errors import (
    GovernanceError,
    RequestNotFoundError,
    StoredDataError,
    StoreNotFoundError,
)
from ._governance import Governance
from ._query import RequestQuery
from ._registry import MutationRegistry
from ._request import MutationRequest
from ._retention import TERMINAL_STATUSES
from ._worker import WorkerOutcome, WorkerProgress
from .protocols import QuarantineLog
from .stores._sqlite_options import MEMORY, sqlite_path

__all__ = ["main"]

PROG = "mutator"

_STRATEGIES = {
    "reject-stale": ResolutionStrategy.REJECT_STALE,
    "renew": ResolutionStrategy.REQUIRE_RENEWED_APPROVAL,
    "revalidate": ResolutionStrategy.REVALIDATE_ON_LATEST_STATE,
}


EXIT_NOT_EXECUTED = 3
"""The exit code of an ``execute`` whose request did not end EXECUTED (and of a
``worker --until-idle`` with such an attempt); 0 is success, 1 a refusal, 2 a usage error."""

EPILOG = """\
exit codes:
  0  success
  1  the operation was refused or failed (the message on stderr), or stdout
     could not be written (quietly when its reader went away)
  2  a usage error (arguments, URL, registry, cursor, or no store at the URL)
  3  execute: the request ran but did not end executed (rejected, pending again,
     failed); worker --until-idle: some attempt did not end executed (not executed,
     failed, errors); quarantine --release-readable: some requests still do not read.
     The outcome is still printed on stdout.
  130, 143  worker --until-idle stopped by SIGINT (Ctrl-C) or SIGTERM before it drained
     (the summary is printed; a worker without --until-idle exits 0)

logging:
  What the library logs goes to stderr one line a record, never a traceback:
  "mutator: warning: MESSAGE (ErrorType: error message)". MUTATOR_LOG_LEVEL=debug,
  info, warning (the default) or error shows more or less; debug adds tracebacks.
  A process that configured logging itself (a root handler) keeps its own.
"""

LOGGER = "mutator"
"""The logger namespace of the library, where the command line attaches its handler."""

LOG_LEVEL_VARIABLE = "MUTATOR_LOG_LEVEL"
"""The environment variable naming the level of what the library logs to stderr."""

_LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class UsageError(Exception):
    """Bad command-line input found after parsing (exit code 2)."""


# -- parsing -------------------------------------------------------------------------------


MAX_PAGE = 10_000
"""The largest ``--limit`` of a listing and ``--batch-size`` of a purge: a page is read and
printed whole (``--cursor`` walks further), and the stores take no count past 64 bits."""

MAX_CONCURRENCY = 1_000
"""The largest ``worker --concurrency``: also the size of the batch it reserves at once."""


def _positive(text: str, *, most: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    if most is not None and value > most:
        raise argparse.ArgumentTypeError(f"must be <= {most}, got {value}")
    return value


_page_size = functools.partial(_positive, most=MAX_PAGE)
_concurrency = functools.partial(_positive, most=MAX_CONCURRENCY)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _span(text: str) -> timedelta | None:
    """A duration (``90m``, ``6h``, ``7d``, ``2w``), None when ``text`` is not one."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        return None
    try:
        return timedelta(seconds=float(found[1]) * _UNIT_SECONDS[found[2]])
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} is too long a duration") from None


def _age(text: str) -> timedelta:
    """A positive duration: how old a request must be to be purged."""
    age = _span(text)
    if age is None:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (a number and a unit: 90m, 6h, 7d, 2w)"
        )
    if age <= timedelta(0):
        raise argparse.ArgumentTypeError(f"must be longer than 0, got {text!r}")
    return age


def _moment(text: str) -> datetime:
    """An ISO 8601 time with its offset (``2026-12-04T10:00:00Z``), or a duration ago
    (``90m``, ``6h``, ``7d``, ``2w``): the bounds of ``requests list``'s time filters."""
    ago = _span(text)
    if ago is not None:
        try:
            return datetime.now(UTC) - ago
        except OverflowError:
            raise argparse.ArgumentTypeError(f"{text!r} reaches before year 1") from None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (an ISO 8601 time with its offset, e.g. "
            "2026-12-04T10:00:00Z, or a duration ago such as 90m, 6h, 7d, 2w)"
        ) from None
    if moment.utcoffset() is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no UTC offset; add one (Z, +01:00) so it names one moment"
        )
    return moment


def _text(text: str) -> str:
    """A non-blank argument: an empty ``--state-id "$UNSET"`` must not mean "every state"."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be blank")
    return text


def _actor_options(parser: argparse.ArgumentParser, *, approval: bool) -> None:
    parser.add_argument("--as", dest="actor", required=True, metavar="ACTOR", help="actor id")
    if approval:
        parser.add_argument(
            "--role", action="append", default=[], metavar="R", help="a role of the actor"
        )
        parser.add_argument(
            "--group", action="append", default=[], metavar="G", help="a group of the actor"
        )


def _paging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit",
        type=_page_size,
        default=50,
        metavar="N",
        help=f"at most N a page (default 50, at most {MAX_PAGE}; --cursor walks further)",
    )
    parser.add_argument("--cursor", metavar="C", help="the next cursor of a previous page")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``mutator`` (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Operate governed mutation requests in a store.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    parser.add_argument("--url", default=os.environ.get("MUTATOR_URL"), help="store URL")
    parser.add_argument(
        "--registry",
        default=os.environ.get("MUTATOR_REGISTRY"),
        metavar="MODULE:ATTRIBUTE",
        help="the MutationRegistry (or a callable returning one)",
    )
    parser.add_argument(
        "--policies",
        default=os.environ.get("MUTATOR_POLICIES"),
        metavar="MODULE:ATTRIBUTE",
        help="the application's policies (a MutationPolicy, a list of them, or a callable "
        "returning either), which execute and worker evaluate again; without it they "
        "run with none",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    requests = commands.add_parser("requests", help="list or show requests")
    which = requests.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = which.add_parser("list", help="a page of requests, oldest first")
    listing.add_argument(
        "--status",
        action="append",
        default=[],
        choices=[s.value for s in RequestStatus],
        metavar="S",
        help="status (repeatable): " + ", ".join(s.value for s in RequestStatus),
    )
    listing.add_argument(
        "--reason",
        choices=[r.value for r in PendingReason],
        metavar="R",
        help="pending reason: " + ", ".join(r.value for r in PendingReason),
    )
    listing.add_argument("--state-id", type=_text, metavar="ID")
    listing.add_argument("--actor", type=_text, metavar="ID", help="the requester's actor id")
    listing.add_argument(
        "--mutation-type",
        action="append",
        default=[],
        type=_text,
        metavar="NAME",
        help="registered mutation name (repeatable)",
    )
    for field in ("created", "updated"):
        for edge, word in (("from", "at or after"), ("to", "at or before")):
            listing.add_argument(
                f"--{field}-{edge}",
                type=_moment,
                metavar="TIME",
                help=f"{field} {word} TIME: ISO 8601 with offset, or a duration ago (6h, 7d)",
            )
    _paging(listing)
    show = which.add_parser("show", help="a request, its approval slots and decisions")
    show.add_argument("request_id", metavar="ID")

    inbox = commands.add_parser("inbox", help="what an actor may approve now")
    _actor_options(inbox, approval=True)
    _paging(inbox)

    approve = commands.add_parser("approve", help="approve a request (one approval slot)")
    approve.add_argument("request_id", metavar="ID")
    _actor_options(approve, approval=True)
    approve.add_argument("--approval", metavar="APPROVAL_ID")
    approve.add_argument("--reason", metavar="TEXT")

    reject = commands.add_parser("reject", help="reject a request")
    reject.add_argument("request_id", metavar="ID")
    _actor_options(reject, approval=True)
    reject.add_argument("--approval", metavar="APPROVAL_ID")
    reject.add_argument("--reason", required=True, type=_text, metavar="TEXT")

    cancel = commands.add_parser("cancel", help="cancel a request that has not run")
    cancel.add_argument("request_id", metavar="ID")
    _actor_options(cancel, approval=False)
    cancel.add_argument("--reason", metavar="TEXT")

    execute = commands.add_parser(
        "execute",
        help="execute one approved request",
        description="Execute one approved request and print its outcome. Exits 0 when it "
        "was executed, 3 when it ran but did not end executed (rejected as stale or by a "
        "policy, pending approvals again, or failed), 1 when it was refused (not "
        "executable, unknown) and 2 on a usage error.",
    )
    execute.add_argument("request_id", metavar="ID")
    execute.add_argument("--strategy", choices=list(_STRATEGIES), default="reject-stale")

    worker = commands.add_parser(
        "worker",
        help="execute approved requests as they appear",
        description="Execute approved requests as they appear, one line per outcome and a "
        "summary when it stops (Ctrl-C or SIGTERM; exit 0). With --until-idle it stops "
        "when no approved request is left and exits 3 when some attempt did not end "
        "executed (not executed, failed or errors; skipped ones, taken by another "
        "executor, do not count), else 0; stopped by a signal before that, 128 + the "
        "signal (130 for Ctrl-C, 143 for SIGTERM).",
    )
    worker.add_argument(
        "--concurrency",
        type=_concurrency,
        default=4,
        metavar="N",
        help=f"executions at once (default 4, at most {MAX_CONCURRENCY})",
    )
    worker.add_argument(
        "--until-idle",
        action="store_true",
        help="stop when no approved request is left; exit 3 if some attempt did not end executed",
    )
    worker.add_argument("--strategy", choices=list(_STRATEGIES), default="reject-stale")
    worker.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how long an idle worker waits before looking again (default 1.0; 0 means "
        "as often as allowed: at least 10 ms between polls)",
    )

    worker.add_argument(
        "--retention",
        type=_age,
        metavar="AGE",
        help="also purge terminal requests older than AGE (7d, 12w), as the purge command "
        "does, every --purge-every seconds (default: keep everything)",
    )
    worker.add_argument(
        "--purge-every",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="how often a worker with --retention purges (default 3600)",
    )

    state = commands.add_parser(
        "state",
        help="a state as stored now: its version and value",
        description="A state as stored now: its version, the request whose execution "
        "wrote it, and its value as JSON. Exit 1 when no state is stored under the id.",
    )
    state.add_argument("state_id", type=_text, metavar="STATE")
    history = commands.add_parser(
        "history",
        help="what changed a state: who, when, through which request",
        description="The committed mutations of a state, oldest first: when, the request "
        "that ran it (- for a plain engine commit), the actor, the operation and each "
        "changed path with its old and new value (shortened; --json has them whole).",
    )
    history.add_argument("state_id", type=_text, metavar="STATE")
    history.add_argument(
        "--limit", type=_positive, default=50, metavar="N", help="the newest N (default 50)"
    )
    commands.add_parser("recover", help="one recovery sweep (stale claims, decision log)")
    commands.add_parser("expire", help="one expiry sweep")
    purge = commands.add_parser(
        "purge",
        help="delete old terminal requests with their decisions",
        description="Delete terminal requests last updated more than AGE ago, with their "
        "decisions, in batches, oldest first; never an executed request whose compensation "
        "has not ended. State, history and audit stay.",
    )
    purge.add_argument(
        "--older-than", type=_age, required=True, metavar="AGE", help="e.g. 90d, 12w, 36h"
    )
    terminal = [s.value for s in RequestStatus if s.is_terminal]
    purge.add_argument(
        "--status",
        action="append",
        default=[],
        choices=terminal,
        metavar="S",
        help="only this terminal status (repeatable; default all): " + ", ".join(terminal),
    )
    purge.add_argument(
        "--batch-size",
        type=_page_size,
        default=500,
        metavar="N",
        help=f"requests deleted a batch (default 500, at most {MAX_PAGE})",
    )
    quarantine = commands.add_parser("quarantine", help="list unreadable stored rows")
    releasing = quarantine.add_mutually_exclusive_group()
    releasing.add_argument(
        "--release",
        type=_text,
        metavar="ID",
        help="take a repaired request out of quarantine (it must read back first)",
    )
    releasing.add_argument(
        "--release-readable",
        action="store_true",
        help="take out every quarantined request that reads back now (after a deploy "
        "that registers its class again or upgrades it); exit 3 when some still do not",
    )
    for group in (commands, which):
        for name, command in group.choices.items():
            if name != "requests":  # ``mutator requests list --json`` works too
                command.add_argument(
                    "--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
                )
    return parser


# -- loading -------------------------------------------------------------------------------


def _load(spec: str, option: str, wanted: Callable[[object], bool], kind: str) -> Any:
    """What ``MODULE:ATTRIBUTE`` names, called when it is a factory (UsageError when it
    names nothing, needs arguments or is an ``async def``, and when importing the module
    or calling the factory raises: the application's code, not a refusal)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"{option} must be MODULE:ATTRIBUTE, got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # like ``python -m``: modules of the current project
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise UsageError(f"cannot import {module_name!r} for {option}: {error}") from None
    except Exception as error:  # the module's own code failed (a SyntaxError included)
        raise UsageError(
            f"importing {module_name!r} for {option} raised {_summary(error)}"
        ) from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise UsageError(f"{module_name!r} has no attribute {attribute!r}") from None
    if not wanted(found) and callable(found):
        try:
            inspect.signature(found).bind()
        except TypeError:
            raise UsageError(f"{spec} cannot be called without arguments") from None
        except ValueError:  # no signature to inspect (a builtin): let the call decide
            pass
        try:
            found = found()
        except Exception as error:
            raise UsageError(f"{option} {spec} raised {_summary(error)}") from None
    if inspect.iscoroutine(found):
        found.close()  # an ``async def``: never awaited, so say so instead of warning
        raise UsageError(f"{spec} is an async function; it must return {kind}")
    if not wanted(found):
        raise UsageError(f"{spec} is a {type(found).__name__}, not {kind}")
    return found


def load_registry(spec: str) -> MutationRegistry:
    """The registry named by ``MODULE:ATTRIBUTE`` (UsageError when it is not one)."""
    found: MutationRegistry = _load(
        spec, "--registry", lambda o: isinstance(o, MutationRegistry), "a MutationRegistry"
    )
    return found


def _policies(found: object) -> bool:
    if isinstance(found, MutationPolicy):
        return True
    return isinstance(found, list | tuple) and all(isinstance(p, MutationPolicy) for p in found)


def load_policies(spec: str) -> tuple[MutationPolicy[Any], ...]:
    """The policies named by ``MODULE:ATTRIBUTE``: a policy, a list or tuple of them, or a
    callable (a policy class included) returning either (UsageError otherwise)."""
    found = _load(spec, "--policies", _policies, "a MutationPolicy or a list of them")
    return (found,) if isinstance(found, MutationPolicy) else tuple(found)


# -- logging -------------------------------------------------------------------------------


def log_level() -> int:
    """The level ``MUTATOR_LOG_LEVEL`` names (WARNING when unset or blank; UsageError when
    it names none of ``debug``, ``info``, ``warning``, ``error``, in any case)."""
    text = os.environ.get(LOG_LEVEL_VARIABLE, "")
    if not text.strip():
        return logging.WARNING
    try:
        return _LOG_LEVELS[text.strip().lower()]
    except KeyError:
        raise UsageError(
            f"{LOG_LEVEL_VARIABLE} must be one of {', '.join(_LOG_LEVELS)}, got {text!r}"
        ) from None


def _summary(error: BaseException) -> str:
    """``Type: message`` (``Type`` alone for an empty message)."""
    try:
        text = str(error)
    except Exception:  # a broken __str__ must not lose the record
        text = ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class _LineFormatter(logging.Formatter):
    """``mutator: warning: <message> (<Type>: <message>)``: one line a record, the level
    lower-case, an attached exception summarized on the line and every unprintable
    character escaped (:func:`clean`, as in the human output: a requester's id holding a
    newline must not forge a line). With ``tracebacks`` the traceback (and any stack)
    follows on the next lines, each line escaped."""

    def __init__(self, *, tracebacks: bool) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        line = f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"
        exc_info = record.exc_info
        if exc_info is not None and exc_info[1] is not None:
            line += f" ({_summary(exc_info[1])})"
        lines = [clean(line)]
        if self.tracebacks:
            if exc_info is not None and exc_info[1] is not None:
                lines += [clean(text) for text in self.formatException(exc_info).splitlines()]
            if record.stack_info:
                lines += [clean(text) for text in self.formatStack(record.stack_info).splitlines()]
        return "\n".join(lines)


@contextlib.contextmanager
def _stderr_logging(level: int) -> Iterator[None]:
    """While the command runs, print the records of the ``mutator`` loggers at ``level``
    and above to stderr (:class:`_LineFormatter`), instead of :data:`logging.lastResort`'s
    tracebacks.

    Only when the process has no logging configured (no handler on the root logger nor on
    ``mutator``): an application embedding :func:`main` keeps its own. The handler is
    removed and the logger's level restored when the command ends, so that calling
    :func:`main` again adds no second handler.
    """
    logger = logging.getLogger(LOGGER)
    if logging.getLogger().handlers or logger.handlers:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)
    handler.setFormatter(_LineFormatter(tracebacks=level <= logging.DEBUG))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()


# -- commands ------------------------------------------------------------------------------


def _context(args: argparse.Namespace) -> MutationContext:
    actor = args.actor.strip()
    if not actor:
        raise UsageError("--as needs a non-blank actor id")
    return MutationContext.user(
        actor,
        reason=getattr(args, "reason", None),
        roles=tuple(getattr(args, "role", ())),
        groups=tuple(getattr(args, "group", ())),
    )


def _next_page(cursor: str | None) -> str:
    return f"\nnext page: --cursor {cursor}" if cursor else ""


async def _requests_list(gov: Governance, args: argparse.Namespace, out: Output) -> None:
    query = RequestQuery(
        statuses={RequestStatus(s) for s in args.status},
        pending_reasons={PendingReason(args.reason)} if args.reason else (),
        state_ids={args.state_id} if args.state_id else (),
        actor_ids={args.actor} if args.actor else (),
        mutation_types=set(args.mutation_type),
        created_from=args.created_from,
        created_to=args.created_to,
        updated_from=args.updated_from,
        updated_to=args.updated_to,
    )
    page = await gov.list(query, limit=args.limit, cursor=args.cursor)
    now = datetime.now(UTC)
    rows = [
        [
            r.request_id,
            status(r),
            r.mutation_type,
            r.state_id,
            r.requester or "-",
            age(r.created_at, now),
        ]
        for r in page.items
    ]
    headers = ["ID", "STATUS", "OPERATION", "STATE", "REQUESTER", "AGE"]
    human = table(headers, rows) if rows else "no requests"
    out.emit(
        human + _next_page(page.next_cursor),
        {"items": [request_json(r) for r in page.items], "next_cursor": page.next_cursor},
    )


async def _requests_show(gov: Governance, args: argparse.Namespace, out: Output) -> None:
    request = await gov.get(args.request_id)
    fields = [
        ("request", request.request_id),
        ("status", status(request)),
        ("operation", operation(request)),
        ("state", f"{request.state_id} (expects version {request.expected_state_version})"),
        ("requester", request.requester or "-"),
        ("created", request.created_at.isoformat()),
        ("updated", request.updated_at.isoformat()),
    ]
    lines = [f"{name:<10}{clean(value)}" for name, value in fields]
    if request.approval_requirements:
        rows = [
            [str(a.step), a.approval_id, a.target, a.status.value, a.decided_by or "-"]
            for a in sorted(request.approval_requirements, key=lambda a: a.step)
        ]
        slots = table(["STEP", "APPROVAL", "TARGET", "STATUS", "DECIDED BY"], rows)
        lines += ["", "approvals (by step)", slots]
    rows = [
        [
            d.timestamp.isoformat(timespec="seconds"),
            f"{d.category.value}/{d.code.name}",
            d.context.actor_id or d.context.actor_type.value,
            d.reason or "",
        ]
        for d in request.decisions
    ]
    lines += ["", "decisions", table(["TIME", "DECISION", "ACTOR", "REASON"], rows)]
    out.emit(
        "\n".join(lines),
        {
            "request": request_json(request),
            "approvals": [approval_json(a) for a in request.approval_requirements],
            "decisions": [decision_json(d) for d in request.decisions],
        },
    )


async def _inbox(gov: Governance, args: argparse.Namespace, out: Output) -> None:
    page = await gov.inbox(_context(args), limit=args.limit, cursor=args.cursor)
    now = datetime.now(UTC)
    rows = [
        [
            v.request.request_id,
            v.approval.approval_id,
            str(v.approval.step),
            v.approval.target,
            v.request.mutation_type,
            v.request.state_id,
            v.request.requester or "-",
            age(v.request.created_at, now),
        ]
        for v in page.items
    ]
    headers = ["REQUEST", "APPROVAL", "STEP", "TARGET", "OPERATION", "STATE", "REQUESTER", "AGE"]
    human = table(headers, rows) if rows else f"nothing to approve for {clean(args.actor)}"
    out.emit(
        human + _next_page(page.next_cursor),
        {"items": [inbox_json(v) for v in page.items], "next_cursor": page.next_cursor},
    )


def _decided(request: MutationRequest, out: Output) -> None:
    waiting = ""
    if request.status is RequestStatus.PENDING and request.open_approvals:
        waiting = f" ({len(request.open_approvals)} approval(s) open)"
    out.emit(f"{clean(request.request_id)}: {status(request)}{waiting}", request_json(request))


async def _approve(gov: Governance, args: argparse.Namespace, out: Output) -> None:
    request = await gov.approve(
        args.request_id, args.approval, context=_context(args), reason=args.reason
    )
    _decided(request, out)


async def _reject(gov: Governance, args: argparse.Namespace, out: Output) -> None:
    request = await gov.reject(
        args.request_id, args.approval, context=_context(args), reason=args.reason
    )
    _decided(request, out)


async def _cancel(gov: Governance, args: argparse.Namespace, out: Output) -> None:
    request = await gov.cancel(args.request_id, context=_context(args), reason=args.reason)
    _decided(request, out)


async def _execute(gov: Governance, args: argparse.Namespace, out: Output) -> int:
    outcome = await gov.execute(args.request_id, strategy=_STRATEGIES[args.strategy])
    out.emit(outcome_line(outcome), outcome_json(outcome))
    # Not executed: rejected (stale, a policy, an already compensated original), pending
    # approvals again (renewal, policies on the latest state) or failed.
    executed = outcome.executed and outcome.request.status is RequestStatus.EXECUTED
    return 0 if executed else EXIT_NOT_EXECUTED


def _worker_line(outcome: WorkerOutcome, out: Output) -> None:
    """Print one worker outcome: the execution's line, or what stopped the attempt.

    Every JSON line has ``request_id`` and ``outcome`` (the kind); one that ran has the
    execution's keys, one that did not ``error`` (also under the kind's own key, as
    before ``outcome`` was added)."""
    kind = outcome.kind.value
    if outcome.result is not None:
        document = {"outcome": kind, **outcome_json(outcome.result)}
        out.emit(outcome_line(outcome.result), document)
        return
    error = str(outcome.error)
    out.emit(
        clean(f"{outcome.request_id}: {kind}: {error}"),
        {"request_id": outcome.request_id, "outcome": kind, "error": error, kind: error},
    )


async def _worker(gov: Governance, args: argparse.Namespace, out: Output) -> int:
    progress = WorkerProgress()
    stopped_by: list[int] = []
    lost: list[OutputLostError] = []
    async with anyio.create_task_group() as group:

        async def stop_on_signal(*, task_status: TaskStatus[None]) -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                task_status.started()
                async for signum in signals:
                    stopped_by.append(int(signum))
                    group.cancel_scope.cancel()
                    return

        def on_outcome(outcome: WorkerOutcome) -> None:
            # With nobody reading (``mutator worker | head``) the worker stops as on a
            # signal, instead of executing on unseen and logging each lost line.
            if lost:
                return
            try:
                _worker_line(outcome, out)
            except OutputLostError as error:
                lost.append(error)
                group.cancel_scope.cancel()

        await group.start(stop_on_signal)
        if not args.until_idle:
            out.emit(
                f"worker started: concurrency {args.concurrency}, strategy {args.strategy}; "
                "Ctrl-C stops it",
                None,
            )
        await gov.run_worker(
            concurrency=args.concurrency,
            poll_interval=args.poll_interval,
            strategy=_STRATEGIES[args.strategy],
            until_idle=args.until_idle,
            retention=args.retention,
            purge_every=args.purge_every,
            progress=progress,
            on_outcome=on_outcome,
        )
        group.cancel_scope.cancel()
    if lost:
        raise lost[0]
    c = progress.report
    out.emit(
        f"worker stopped: {c.executed} executed, {c.not_executed} not executed, "
        f"{c.failed} failed, {c.skipped} skipped, {c.errors} errors, {c.retried} retried; "
        f"{c.recovered} recovered, {c.expired} expired, {c.purged} purged, "
        f"{c.quarantined} quarantined, {c.outages} outages",
        {"summary": attrs.asdict(c)},
    )
    # A long-running worker stopped by a signal did its job (0). A drain (--until-idle)
    # stopped by one did not reach idle: 128 + the signal, as a shell reports it; one that
    # did says, like ``execute``, whether everything it attempted ended executed.
    if args.until_idle and stopped_by:
        return 128 + stopped_by[0]
    if args.until_idle and c.not_executed + c.failed + c.errors:
        return EXIT_NOT_EXECUTED
    return 0


async def _state(gov: Governance, args: argparse.Namespace, out: Output) -> None:
    current = await gov.states.get(args.state_id)
    if current is None:  # StateNotFoundError's advice (``gov.states.put``) is for code
        raise GovernanceError(f"no state {args.state_id!r} is stored")
    value = data(current.state)
    by = f" (written by request {clean(current.request_id)})" if current.request_id else ""
    out.emit(
        f"state {clean(args.state_id)} at version {clean(current.version)}{by}\n"
        + json.dumps(value, indent=2, sort_keys=True, ensure_ascii=True),
        {
            "state_id": args.state_id,
            "version": current.version,
            "request_id": current.request_id,
            "type": type(current.state).__name__,
            "state": value,
        },
    )


async def _history(gov: Governance, args: argparse.Namespace, out: Output) -> None:
    entries = (await gov.history(args.state_id)).entries
    shown = entries[-args.limit :]
    rows = [
        [
            e.executed_at.isoformat(timespec="seconds"),
            governed_request(e) or "-",
            e.context.actor_id or "-",
            e.intent.operation,
            "; ".join(change_text(c) for c in e.changes.changes) or "(no change)",
        ]
        for e in shown
    ]
    older = len(entries) - len(shown)
    if rows:
        human = table(["WHEN", "REQUEST", "ACTOR", "OPERATION", "CHANGES"], rows)
        if older:
            human = f"{older} older commit(s) not shown (--limit)\n{human}"
    else:
        human = f"no commits of state {clean(args.state_id)}"
    out.emit(
        human,
        {
            "state_id": args.state_id,
            "total": len(entries),
            "entries": [history_json(e) for e in shown],
        },
    )


async def _recover(gov: Governance, args: argparse.Namespace, out: Output) -> None:
    sweep = await gov.recover()
    out.emit(
        f"recovery: {len(sweep.finished)} finished, {len(sweep.released)} released, "
        f"{len(sweep.skipped)} skipped, {sweep.repaired_decisions} decision(s) repaired",
        {
            "finished": [r.request_id for r in sweep.finished],
            "released": [r.request_id for r in sweep.released],
            "skipped": list(sweep.skipped),
            "repaired_decisions": sweep.repaired_decisions,
        },
    )


async def _purge(gov: Governance, args: argparse.Namespace, out: Output) -> None:
    statuses = [RequestStatus(s) for s in args.status] or TERMINAL_STATUSES
    report = await gov.purge(
        older_than=args.older_than, statuses=statuses, batch_size=args.batch_size
    )
    cutoff = report.cutoff.isoformat() if report.cutoff is not None else None
    out.emit(
        f"purge: {report.requests} request(s) and {report.decisions} decision(s) deleted "
        f"in {report.batches} batch(es)",
        {
            "requests": report.requests,
            "decisions": report.decisions,
            "batches": report.batches,
            "cutoff": cutoff,
        },
    )


async def _expire(gov: Governance, args: argparse.Namespace, out: Output) -> None:
    sweep = await gov.expire_due()
    names = "".join(f"\n  {clean(r.request_id)}" for r in sweep.expired)
    out.emit(
        f"expiry: {len(sweep.expired)} expired, {len(sweep.skipped)} skipped{names}",
        {"expired": [r.request_id for r in sweep.expired], "skipped": list(sweep.skipped)},
    )


async def _release(gov: Governance, request_id: str, out: Output) -> None:
    """Put a repaired request back: only once it reads back, so a still-damaged row stays
    (a row the operator deleted instead just leaves the quarantine)."""
    log = gov.requests
    if not isinstance(log, QuarantineLog):
        raise UsageError("this store keeps no quarantine")
    request: MutationRequest | None
    try:
        request = await gov.get(request_id)  # StoredDataError (exit 1) while still damaged
    except RequestNotFoundError:
        request = None
    if not await log.release(request_id):
        raise GovernanceError(f"request {request_id!r} is not quarantined")
    if request is None:
        out.emit(f"{clean(request_id)}: released (the row is gone)", {"released": request_id})
        return
    out.emit(
        f"{clean(request_id)}: released ({status(request)}); listings and workers see it again",
        {"released": request_id, "request": request_json(request)},
    )


async def _release_readable(gov: Governance, out: Output) -> int | None:
    """Put back every quarantined request that reads back; the rest stay (exit 3)."""
    log = gov.requests
    if not isinstance(log, QuarantineLog):
        raise UsageError("this store keeps no quarantine")
    released: list[str] = []
    unreadable: list[tuple[str, str]] = []
    for item in await log.quarantined():
        try:
            await gov.get(item.request_id)
        except RequestNotFoundError:
            pass  # deleted instead of repaired: it just leaves the quarantine
        except StoredDataError as error:
            unreadable.append((item.request_id, str(error)))
            continue
        if await log.release(item.request_id):
            released.append(item.request_id)
    lines = [f"released {len(released)}, still unreadable {len(unreadable)}"]
    lines += [f"  released {clean(request_id)}" for request_id in released]
    lines += [
        f"  unreadable {clean(request_id)}: {clean(error)}" for request_id, error in unreadable
    ]
    out.emit(
        "\n".join(lines),
        {
            "released": released,
            "unreadable": [{"request_id": rid, "error": error} for rid, error in unreadable],
        },
    )
    return EXIT_NOT_EXECUTED if unreadable else None


async def _quarantine(gov: Governance, args: argparse.Namespace, out: Output) -> int | None:
    if args.release is not None:
        await _release(gov, args.release, out)
        return None
    if args.release_readable:
        return await _release_readable(gov, out)
    items = list(await gov.quarantined())
    human = (
        table(
            ("REQUEST", "BACKEND", "FIELD", "DETECTED", "ERROR"),
            [
                (i.request_id, i.backend, i.field or "-", i.detected_at.isoformat(), i.error)
                for i in items
            ],
        )
        if items
        else "no quarantined rows"
    )
    out.emit(human, {"items": [data(item) for item in items]})
    return None


_Command = Callable[[Governance, argparse.Namespace, Output], Awaitable[int | None]]
"""A command: it prints its output and returns its exit code (None for 0)."""

_COMMANDS: dict[str, _Command] = {
    "requests list": _requests_list,
    "requests show": _requests_show,
    "inbox": _inbox,
    "approve": _approve,
    "reject": _reject,
    "cancel": _cancel,
    "execute": _execute,
    "worker": _worker,
    "state": _state,
    "history": _history,
    "recover": _recover,
    "expire": _expire,
    "purge": _purge,
    "quarantine": _quarantine,
}


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for error in group.exceptions:
        found.extend(_leaves(error) if isinstance(error, BaseExceptionGroup) else [error])
    return found


def _check_sqlite_file(url: str) -> None:
    """Refuse a SQLite URL naming no governance database: opening would create one (in a
    new file, or as tables in another application's database), and a mistyped path
    would then show an empty store instead of an error. So is a URL with no path at all
    (``sqlite:///$UNSET``), which the library opens as a private in-memory database:
    only ``sqlite:///:memory:`` says that on purpose."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        return
    path = sqlite_path(url)
    if path == MEMORY and not parts.path.strip("/"):
        raise UsageError(
            f"--url {url!r} names no SQLite database file (an unset variable?); name the "
            "file, or sqlite:///:memory: for a store that lives as long as the command"
        )
    if path == MEMORY:
        return
    where = f"{os.path.abspath(path)!r} (from --url {url!r})"
    if not os.path.exists(path):
        raise UsageError(f"no SQLite database at {where}; the command line never creates one")
    if os.path.isfile(path) and not _holds_governance(path):
        raise UsageError(
            f"the SQLite database at {where} holds no governance store (no schema_version "
            "table); the command line never creates one"
        )


def _existing_only(url: str) -> dict[str, Any]:
    """The store option that refuses a PostgreSQL schema or Redis prefix holding no store
    (``create=False``: checked before anything is written), as SQLite files are refused.

    Every scheme but SQLite's and memory's gets it, so a server scheme added later
    (``unix://`` for Redis) cannot create a store by default; an unknown scheme is refused
    by ``open_store`` either way."""
    scheme = urlsplit(url).scheme.lower()
    return {} if scheme in ("", "sqlite", "memory") else {"create": False}


def _holds_governance(path: str) -> bool:
    """Whether the SQLite file has the store's tables (read-only; a file SQLite cannot
    read counts as one, so that opening it reports the store's own error)."""
    try:
        connection = sqlite3.connect(f"{pathlib.Path(path).absolute().as_uri()}?mode=ro", uri=True)
        try:
            found = connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
        finally:
            connection.close()
    except sqlite3.Error:
        return True
    return found is not None


async def _run(
    args: argparse.Namespace,
    registry: MutationRegistry,
    policies: tuple[MutationPolicy[Any], ...] = (),
) -> int:
    """Run the command; its exit code (0 unless it says otherwise)."""
    name = f"{args.command} {args.action}" if args.command == "requests" else args.command
    try:
        async with Governance.open(
            args.url, registry=registry, policies=policies, **_existing_only(args.url)
        ) as gov:
            code = await _COMMANDS[name](gov, args, Output(args.json))
    except BaseExceptionGroup as group:
        # a task group (the worker's) wraps the one error that stopped it: report that one
        leaves = _leaves(group)
        if len(leaves) == 1 and isinstance(leaves[0], Exception):
            raise leaves[0] from None
        raise
    return code or 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mutator`` with ``argv`` (default: the process arguments); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        level = log_level()
    except UsageError as error:
        parser.error(str(error))
    with _stderr_logging(level):
        return _main(parser, args)


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the parsed command: its exit code, or the usage error's exit (2)."""

    def usage(message: str) -> NoReturn:
        parser.error(message)

    if not args.url:
        usage("--url (or MUTATOR_URL) is required")
    if not args.registry:
        usage("--registry (or MUTATOR_REGISTRY) is required")
    try:
        _check_sqlite_file(args.url)
        registry = load_registry(args.registry)
        policies = load_policies(args.policies) if args.policies else ()
        if getattr(args, "strategy", None) == "revalidate" and not policies:
            print(
                f"{PROG}: warning: revalidating without --policies: no policy of the "
                "application is evaluated on the latest state",
                file=sys.stderr,
            )
        code = anyio.run(_run, args, registry, policies)
    except UsageError as error:
        usage(str(error))
    except StoreNotFoundError as error:
        usage(f"{error}; the command line never creates one")
    except ConfigurationError as error:
        usage(str(error))
    except MutatorError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    except ValueError as error:
        usage(str(error))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except OutputLostError as lost:
        _drop_stdout()
        if not isinstance(lost.error, BrokenPipeError):  # ``mutator ... | head``: quietly
            print(f"{PROG}: {lost}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        _drop_stdout()
        return 1
    return code


def _drop_stdout() -> None:
    """Point standard output at the null device, so that the interpreter's last flush of
    what could not be written raises nothing more at exit."""
    if sys.stdout is None:
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError):
        os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
