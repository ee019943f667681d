"""Which event loop is running, for the asyncio-only backends' check at ``open``."""

from __future__ import annotations

import asyncio
import sys

__all__ = ["running_library"]


def running_library() -> str:
    """``"asyncio"``, ``"trio"``, or ``"no event loop"`` (without depending on sniffio)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return "asyncio"
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            pass
        else:
            return "trio"
    return "no event loop"
