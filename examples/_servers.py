"""Which database server an example that needs one may use, or why it skips."""

from __future__ import annotations

import asyncio
import os

__all__ = ["server_url", "skip_reason"]


def server_url(*variables: str) -> str | None:
    """The value of the first of ``variables`` that is set and not empty, or None."""
    for variable in variables:
        value = os.environ.get(variable)
        if value:
            return value
    return None


def skip_reason(url: str | None, *, variable: str, store: str, scheme: str) -> str | None:
    """Why an example of the asyncio-only ``store`` skips here, or None when it runs."""
    if url is None:
        return f"skipped: set {variable} to a {store} server ({scheme}://...) to run it"
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return f"skipped: the {store} store runs on asyncio only"
    return None
