"""Awaiting user code under an execution deadline, paying for a cancel scope only when needed.

Synchronous work cannot be interrupted; the engine checks the clock after it returns.
Whether a returned value must be awaited is answered once per type (:func:`is_awaitable`),
not by :func:`inspect.isawaitable` on every call, and the cancel check at the start of an
execution (:func:`checkpoint_if_cancelled`) goes straight to the running backend's.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from asyncio import _get_running_loop
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from threading import get_ident as _get_ident
from types import GeneratorType
from typing import Any, Final
from weakref import ref as _ref

import anyio
import anyio.lowlevel

try:
    import sniffio
except ImportError:  # pragma: no cover - anyio runs without sniffio on asyncio only
    sniffio = None  # type: ignore[assignment]

__all__ = [
    "AWAITABLE_TYPES",
    "DeadlineExpired",
    "bounded",
    "bounded_call",
    "checkpoint_if_cancelled",
    "current_time",
    "is_awaitable",
]


class DeadlineExpired(Exception):
    """The execution deadline passed while awaiting user code."""


AWAITABLE_TYPES: Final[dict[type[Any], bool]] = {}
"""Per type: whether its instances are awaitable (read directly on hot paths)."""

_CACHE_LIMIT: Final = 4096


def is_awaitable(value: object) -> bool:
    """:func:`inspect.isawaitable`, remembered per type.

    Generators are asked every time: whether one is awaitable is a flag of its code object
    (``types.coroutine``), not of its type. Types created at run time beyond a few thousand
    are not remembered, so the cache stays bounded.
    """
    cls = type(value)
    known = AWAITABLE_TYPES.get(cls)
    if known is not None:
        return known
    answer = inspect.isawaitable(value)
    if cls is not GeneratorType and len(AWAITABLE_TYPES) < _CACHE_LIMIT:
        AWAITABLE_TYPES[cls] = answer
    return answer


async def bounded(awaitable: Any, deadline: float | None) -> Any:
    """Await ``awaitable``, interrupting it at ``deadline`` (``anyio.current_time()`` clock)."""
    if deadline is None:
        return await awaitable
    with anyio.CancelScope(deadline=deadline):
        return await awaitable
    raise DeadlineExpired


async def bounded_call(method: Callable[[Any], Any], state: Any, deadline: float | None) -> Any:
    """Call ``method(state)``; await the result under ``deadline`` when it is awaitable."""
    outcome = method(state)
    if is_awaitable(outcome):
        return await bounded(outcome, deadline)
    return outcome


_CHECKS: Final[dict[str | None, Callable[[], Awaitable[None] | None]]] = {}
"""Per async library name: its cancel check (filled on first use)."""

_thread_library: Any = None if sniffio is None else sniffio.thread_local
_context_library: Any = None if sniffio is None else sniffio.current_async_library_cvar


def _library() -> str | None:
    """The running async library's name, asked in sniffio's order without its overhead."""
    if _thread_library is not None:
        name: str | None = _thread_library.name or _context_library.get()
        if name is not None:
            return name
    return "asyncio" if _get_running_loop() is not None else None


def checkpoint_if_cancelled() -> Awaitable[None] | None:
    """:func:`anyio.lowlevel.checkpoint_if_cancelled`, or None when it would do nothing.

    The caller awaits what it gets (``if (check := ...) is not None: await check``). The
    library is recognised in sniffio's order without its per-call overhead. On asyncio the
    task's anyio cancel scopes are inspected right here, as anyio's asyncio backend does,
    and only a pending cancellation is awaited (through anyio); on Trio, Trio's own check
    is returned (anyio's Trio backend only forwards to it); any other library goes through
    anyio. The asyncio task is found through :data:`_TASK` when that still names it (see
    :func:`_found`), else as asyncio finds it.
    """
    name = None
    if _thread_library is not None:
        name = _thread_library.name or _context_library.get()
    if name is None or name == "asyncio":
        # Only after sniffio: Trio run inside an asyncio task inherits the task's context.
        here = _TASK.get()  # only ever set while the inline check is on
        if here is not None:
            task_ref, loop = here
            task = task_ref()
            # The remembered task is the one its loop is stepping, that loop runs in this
            # thread, and no other loop is stepping a task anywhere (see _found).
            if (
                task is not None
                and _asyncio_tasks.get(loop) is task
                and loop._thread_id == _get_ident()
                and len(_asyncio_tasks) == 1
            ):
                state = _asyncio_states.get(task_ref)
                if state is None:
                    return None
                scope = state.cancel_scope
                while scope is not None:
                    if scope._cancel_called:
                        return anyio.lowlevel.checkpoint_if_cancelled()
                    if scope._shield:
                        return None
                    scope = scope._parent_scope
                return None
        loop = _get_running_loop()
        if loop is not None:
            if _asyncio_tasks is not None:
                return _found(loop)
            name = "asyncio"
    check = _CHECKS.get(name)
    if check is None:
        return _first_check()
    return check()


_TASK: ContextVar[tuple[Any, Any] | None] = ContextVar("mutator.current_asyncio_task", default=None)
"""(weak reference to the asyncio task, its loop), as :func:`_found` found them.

Set in the task's own context, so only that task and contexts copied from it (its child
tasks, threads started with a copy) see it; :func:`checkpoint_if_cancelled` trusts it only
after checking that it still names the running task (see :func:`_found`). Replaced by a
new variable in a forked child, where asyncio no longer reports the parent's loop.
"""
_seen: dict[Any, None] = {}
"""Tasks (weak references) :func:`_found` saw recently: one seen twice is remembered.

A task that runs one execution is not worth a context variable; tasks that take turns
(workers on one loop) are each seen again. Emptied when it reaches :data:`_SEEN_LIMIT`.
"""
_SEEN_LIMIT: Final = 64


def _found(loop: Any) -> Awaitable[None] | None:
    """The inline asyncio check for the task ``loop`` is running, found as asyncio does.

    A task seen twice (see :data:`_seen`) is remembered in :data:`_TASK` for the next ones,
    if its loop is a standard one (``BaseEventLoop.run_forever``, which sets ``_thread_id``
    for as long as it runs in a thread). :func:`checkpoint_if_cancelled` then trusts it
    when ``_current_tasks[loop]`` is that task, the loop's ``_thread_id`` is this thread
    and no other loop is stepping a task. asyncio steps a task synchronously in its loop's
    thread, so this thread is inside that task's step; with no other loop stepping a task
    (a loop nested through asyncio's private ``_set_running_loop`` would be), it is the
    task ``asyncio.current_task()`` returns. Anything else takes this path, which asks
    asyncio (``_get_running_loop``: a ``getpid()`` system call on every call).
    """
    task = _asyncio_tasks.get(loop)
    if task is None:
        return None
    task_ref = _ref(task)
    if task_ref not in _seen:
        if len(_seen) >= _SEEN_LIMIT:
            _seen.clear()
        _seen[task_ref] = None
    elif (
        type(loop).run_forever is _RUN_FOREVER
        and loop._thread_id == _get_ident()
        and _TASK.get() != (task_ref, loop)
    ):
        _TASK.set((task_ref, loop))
    state = _asyncio_states.get(task_ref)
    if state is None:
        return None
    scope = state.cancel_scope
    while scope is not None:
        if scope._cancel_called:
            return anyio.lowlevel.checkpoint_if_cancelled()
        if scope._shield:
            return None
        scope = scope._parent_scope
    return None


_RUN_FOREVER: Final = asyncio.BaseEventLoop.run_forever


def _forget_tasks() -> None:
    """In a forked child: nothing remembered before the fork is trusted."""
    global _TASK
    _TASK = ContextVar("mutator.current_asyncio_task", default=None)
    _seen.clear()


os.register_at_fork(after_in_child=_forget_tasks)


def current_time() -> float:
    """:func:`anyio.current_time` (the event loop's clock) without sniffio's detection."""
    name = None
    if _thread_library is not None:
        name = _thread_library.name or _context_library.get()
    if name is None or name == "asyncio":
        loop = _get_running_loop()
        if loop is not None:
            return float(loop.time())
    elif name == "trio":
        import trio

        return float(trio.current_time())
    return anyio.current_time()


_asyncio_tasks: Any = None
"""asyncio's map of running task per loop, once anyio's asyncio internals are checked."""
_asyncio_states: Any = None
"""The mapping (by weak reference) of asyncio task to anyio task state."""


async def _first_check() -> None:
    name = _library()
    if name == "trio":
        import trio.lowlevel

        _CHECKS[name] = trio.lowlevel.checkpoint_if_cancelled
    elif name == "asyncio":
        _CHECKS[name] = _asyncio_check()
    await anyio.lowlevel.checkpoint_if_cancelled()


def _asyncio_check() -> Callable[[], Awaitable[None] | None]:
    """anyio's asyncio backend check, and the inline one enabled if its internals fit.

    The inline check in :func:`checkpoint_if_cancelled` reads anyio's task states and
    cancel scopes directly; it is enabled only when they are the ones expected.
    """
    global _asyncio_tasks, _asyncio_states
    from anyio._core._eventloop import get_async_backend

    backend_check: Callable[[], Awaitable[None]] = get_async_backend(
        "asyncio"
    ).checkpoint_if_cancelled
    try:
        from anyio._backends._asyncio import CancelScope, TaskState, _task_states

        tasks = asyncio.tasks._current_tasks  # type: ignore[attr-defined]
        states = _task_states.data  # type: ignore[attr-defined]
        probe = CancelScope()
        fields = ("_cancel_called", "_shield", "_parent_scope")
        # Called from a running task (the first check): the maps must answer for it as
        # asyncio and anyio do, or the inline check stays off.
        task = asyncio.current_task()
        known = None if task is None else _task_states.get(task)
        if (
            task is not None
            and isinstance(tasks, dict)
            and tasks.get(_get_running_loop()) is task
            and isinstance(states, dict)
            and states.get(_ref(task)) is known
            and all(hasattr(probe, f) for f in fields)
            and "cancel_scope" in TaskState.__slots__
        ):
            _asyncio_tasks, _asyncio_states = tasks, states
    except (ImportError, AttributeError):  # pragma: no cover - another anyio or asyncio
        pass
    return backend_check
