"""Building blocks for frozen attrs values that extend mutator's own (public API).

Validators and converters the library's models use, for packages built on it (the
governance package among them) and for users' own values: timezone-aware datetimes,
read-only mappings, tuples from any iterable, and :func:`trusted` constructors for values
whose fields are known to be valid already.
"""

from __future__ import annotations

from ._context import aware, optional_aware, utc_now
from ._freeze import EMPTY_MAPPING, freeze_mapping, to_tuple
from ._trusted import trusted

__all__ = [
    "EMPTY_MAPPING",
    "aware",
    "freeze_mapping",
    "optional_aware",
    "to_tuple",
    "trusted",
    "utc_now",
]
