"""The one rule every durable store applies to its options' two sources.

A store option can be named in the URL's query string (``?pool_size=8``) or as a keyword
argument of ``open`` / ``open_store`` / ``Governance.open`` (``pool_size=8``). Named both
ways it must have the same value in both, compared once each is converted to its typed
form (``?pool_size=8`` and ``pool_size=8`` agree, as do ``?connect_timeout=2`` and
``connect_timeout=2.0``); different values raise :class:`mutator.ConfigurationError`
naming the option and both values, before anything is opened or connected. Neither source
silently wins: a URL kept in a deployment's configuration and a keyword in its code that
disagree are a mistake to report, not to resolve behind the operator's back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mutator import ConfigurationError

__all__ = ["LONGEST_MILLISECONDS", "check_create", "one_value_each", "typed_alone"]

LONGEST_MILLISECONDS = 2**31 - 1
"""The longest timeout SQLite's ``busy_timeout`` and PostgreSQL's ``statement_timeout`` and
``client_connection_check_interval`` hold (32-bit milliseconds, about 24.8 days): beyond
it SQLite silently waits not at all and PostgreSQL refuses the setting."""


def check_create(value: Any) -> None:
    """Refuse an ``open(create=...)`` that is not a bool: a ``"false"`` read from a
    configuration file is truthy, and would create the store the caller meant to refuse."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"create must be True or False, got {value!r}")


def typed_alone(options: type[Any], name: str, value: Any) -> Any:
    """``value`` as an ``options`` class holds option ``name``: converted and validated on
    its own (the other fields at their defaults), ConfigurationError when malformed."""
    return getattr(options(**{name: value}), name)


def one_value_each(
    backend: str,
    query: Mapping[str, str],
    keywords: Mapping[str, Any],
    *,
    from_text: Callable[[str, str], Any],
    from_keyword: Callable[[str, Any], Any],
) -> dict[str, Any]:
    """The typed value of every option named in ``query`` or ``keywords``.

    ``from_text`` and ``from_keyword`` convert and check one option's value as given in
    the URL (text) or as a keyword, raising ConfigurationError when it is malformed; so a
    malformed value is reported as such, and only two well-formed values are compared.
    An option named both ways with values that differ once typed raises
    ConfigurationError naming ``backend``, the option and both values as given (option
    values hold no secrets; the URL, which may hold a password, is not shown).
    """
    values = {name: from_text(name, text) for name, text in query.items()}
    for name, given in keywords.items():
        value = from_keyword(name, given)
        if name in values and values[name] != value:
            raise ConfigurationError(
                f"{backend} option {name!r} is {query[name]!r} in the URL but {given!r} as "
                "a keyword argument; name it once, or give it the same value both ways"
            )
        values[name] = value
    return values
