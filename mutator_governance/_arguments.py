"""Checks of the arguments the public API takes: clear errors at the call, not deep inside."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from mutator import ConfigurationError

__all__ = [
    "MAX_ID_BYTES",
    "MAX_SPAN",
    "check_count",
    "check_id",
    "check_key",
    "check_limit",
    "check_moment",
    "check_seconds",
    "check_span",
    "check_text",
    "check_version",
]


MAX_ID_BYTES: Final = 1024
"""The longest id, in UTF-8 bytes. PostgreSQL indexes ids in pairs, and refuses an index
entry over 2,704 bytes; the same limit holds on every store."""


def check_id(name: str, value: object) -> str:
    """``value`` when it is a non-blank string without NUL characters (which PostgreSQL
    cannot store) that encodes as UTF-8 in at most :data:`MAX_ID_BYTES`, ValueError
    otherwise, as every lookup says.

    A lone surrogate (``"\\udc80"``, e.g. from ``os.fsdecode``) is refused here on every
    store alike: SQLite and PostgreSQL cannot store it, the in-memory store and Redis could.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-blank string, got {value!r}")
    if "\x00" in value:
        raise ValueError(f"{name} must not contain NUL characters, got {value!r}")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValueError(
                f"{name} must be valid Unicode text (no lone surrogates), got {value!r}"
            ) from None
    if len(value) > MAX_ID_BYTES // 4:  # shorter ids cannot exceed the limit
        size = len(value.encode())
        if size > MAX_ID_BYTES:
            raise ValueError(
                f"{name} must be at most {MAX_ID_BYTES:,} bytes as UTF-8, got {size:,} "
                f"bytes ({value[:40]!r}...)"
            )
    return value


def check_key(name: str, value: object) -> str:
    """``value`` when it is a string, TypeError otherwise: the id a store's lookup takes.

    Every backend answers a lookup for any string (None for one it holds nothing under);
    another type was an error of the driver, or on PostgreSQL an outage.
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {value!r}")
    return value


def check_moment(name: str, value: object) -> datetime:
    """``value`` when it is a timezone-aware datetime (TypeError or ValueError otherwise)."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value


def check_text(name: str, value: object) -> str | None:
    """``value`` when it is a string or None, TypeError otherwise: free text a decision
    keeps (a reason, a note), refused here rather than by the store that cannot encode it
    after the decision was made."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a string or None, got {type(value).__name__}")
    return value


def check_version(value: object) -> str | None:
    """``value`` when it is a state version (a string) or None, TypeError otherwise: an
    expected version of another type could only ever be a concurrency error."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"expected_version must be a string or None, got {value!r}")
    return value


MAX_COUNT = 2**31 - 1
"""The largest page size, batch or concurrency accepted: every backend's integers hold it
(a 20-digit limit overflowed SQLite's and PostgreSQL's, and a worker of that concurrency
asked the store for that many requests at each poll, failing forever)."""


def check_limit(value: object) -> int:
    """``value`` when it is a page size (an int >= 1), TypeError or ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"limit must be an int >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"limit must be an int >= 1, got {value!r}")
    if value > MAX_COUNT:
        raise ValueError(f"limit must be at most {MAX_COUNT:,}, got {value:,}")
    return value


def check_seconds(name: str, value: object, *, allow_zero: bool = False) -> None:
    """Refuse an interval that is not a finite number of seconds > 0 (ConfigurationError)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}")
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")) or number < 0:
        raise ConfigurationError(f"{name} must be a finite number >= 0, got {value!r}")
    if number == 0 and not allow_zero:
        raise ConfigurationError(f"{name} must be > 0, got {value!r}")


def check_count(name: str, value: object) -> None:
    """Refuse a count that is not an integer from 1 to :data:`MAX_COUNT` (ConfigurationError)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be an integer >= 1, got {value!r}")
    if value > MAX_COUNT:
        raise ConfigurationError(f"{name} must be at most {MAX_COUNT:,}, got {value:,}")


MAX_SPAN = 10 * 365 * 86400.0
"""The longest lease or backoff accepted, in seconds (ten years): a longer one put the
moments computed from it past the calendar (``OverflowError`` on every claim)."""


def check_span(name: str, value: object) -> None:
    """Refuse a number of seconds longer than :data:`MAX_SPAN` (ConfigurationError);
    anything else is left to :func:`check_seconds`."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > MAX_SPAN:
        raise ConfigurationError(
            f"{name} must be at most {MAX_SPAN:.0f} seconds (ten years), got {value!r}"
        )
