"""Quarantine: stored requests that cannot be read back are set aside, never fatal.

A row whose document is not JSON, names a mutation type nobody registered, or holds a
field of the wrong type would otherwise make every listing, sweep and worker poll raise.
Stores skip such a row wherever they read many (listings, pending, sweeps, ready
batches), record it once as a :class:`QuarantinedRequest` and log it once at WARNING on
:data:`QUARANTINE_LOGGER`; reading it by id still raises
:class:`~mutator_governance.StoredDataError`, so nobody mistakes it for a missing request.
"""

from __future__ import annotations

import logging
from datetime import datetime

import attrs

from ._errors import StoredDataError

__all__ = ["QUARANTINE_LOGGER", "QuarantinedRequest", "quarantine_entry"]

QUARANTINE_LOGGER = "mutator.governance.quarantine"
"""The logger that reports each newly quarantined row once, at WARNING."""

_log = logging.getLogger(QUARANTINE_LOGGER)


@attrs.frozen
class QuarantinedRequest:
    """A stored request that cannot be read back, and why.

    ``field`` is the place in the stored document that could not be read (None when the
    whole document is unreadable); ``error`` is the reader's message.
    """

    request_id: str
    backend: str
    field: str | None
    error: str
    detected_at: datetime


def quarantine_entry(
    request_id: str, error: StoredDataError, detected_at: datetime
) -> QuarantinedRequest:
    """The entry for ``request_id`` set aside because of ``error``; logs it at WARNING.

    Stores call it once per row they quarantine (not on every later read).
    """
    entry = QuarantinedRequest(request_id, error.backend, error.field, str(error), detected_at)
    _log.warning(
        "quarantined request %s: %s",
        request_id,
        error,
        extra={
            "request_id": request_id,
            "operation": "quarantine",
            "backend": error.backend,
            "field": error.field,
        },
    )
    return entry
