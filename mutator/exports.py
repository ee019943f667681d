"""Publishing a package's names under the package itself (public API).

Packages built like mutator — private modules re-exported from ``__init__`` — call
:func:`publish` once at the end of their ``__init__``, so reprs and tracebacks name the
public module, as anyio does.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

__all__ = ["publish"]


def publish(namespace: MutableMapping[str, Any], names: Iterable[str], module: str) -> None:
    """Give each class and function in ``names`` ``module`` as its ``__module__``.

    String annotations are evaluated first, while their defining module can still be
    found (``typing.get_type_hints`` looks names up through ``__module__``); a name only
    visible to type checkers is left as a string.
    """
    for name in names:
        value = namespace[name]
        if not (isinstance(value, type) or inspect.isfunction(value)):
            continue
        own = inspect.get_annotations(value) if isinstance(value, type) else None
        if own:
            scope = {**namespace, **vars(sys.modules[value.__module__])}
            evaluated = {}
            for key, annotation in own.items():
                try:
                    evaluated[key] = (
                        eval(annotation, scope) if isinstance(annotation, str) else annotation
                    )
                except NameError:
                    evaluated[key] = annotation
            value.__annotations__ = evaluated
        value.__module__ = module
