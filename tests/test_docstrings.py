"""Every public name has a docstring: the API reference is generated from them.

Public names are those in ``mutator.__all__`` and ``mutator_governance.__all__``; for
public classes, their public methods and properties too (inherited ones included when they
are defined in this project); for constants, the string literal under their assignment.
There is no exemption list: a new public name ships with its docstring.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Iterator
from typing import Any

import pytest

import mutator
import mutator_governance

from .test_docs import mutator_docs

PACKAGES = (mutator, mutator_governance)


def _own_doc(obj: Any) -> str | None:
    doc = vars(obj).get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    return doc if isinstance(doc, str) and doc.strip() else None


def _member_doc(cls: type[Any], name: str, member: Any) -> str | None:
    """The member's docstring, or one it overrides in a base class (as autodoc shows it)."""
    if isinstance(member, classmethod | staticmethod):
        member = member.__func__
    if _own_doc(member):
        return _own_doc(member)
    for base in cls.__mro__[1:]:
        inherited = vars(base).get(name)
        if inherited is not None:
            if isinstance(inherited, classmethod | staticmethod):
                inherited = inherited.__func__
            if _own_doc(inherited):
                return _own_doc(inherited)
    return None


def _ours(obj: Any) -> bool:
    module = getattr(obj, "__module__", "") or ""
    return module.split(".")[0] in {"mutator", "mutator_governance"}


def _documentable(member: Any) -> bool:
    if isinstance(member, classmethod | staticmethod):
        member = member.__func__
    return inspect.isfunction(member) or isinstance(member, property)


def public_names() -> Iterator[tuple[str, str | None]]:
    """(qualified name, docstring) for every public name and public class member."""
    seen: set[str] = set()
    for package in PACKAGES:
        for name in package.__all__:
            obj = getattr(package, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            qualified = f"{obj.__module__}.{obj.__qualname__}"
            if qualified in seen:
                continue
            seen.add(qualified)
            yield qualified, _own_doc(obj)
            if not inspect.isclass(obj) or issubclass(obj, BaseException):
                continue
            for base in obj.__mro__:
                if not _ours(base) or base is enum.Enum:
                    continue
                for member_name, member in vars(base).items():
                    if member_name.startswith("_") or not _documentable(member):
                        continue
                    member_qualified = f"{base.__module__}.{base.__qualname__}.{member_name}"
                    if member_qualified in seen:
                        continue
                    seen.add(member_qualified)
                    yield member_qualified, _member_doc(base, member_name, member)


def public_constants() -> Iterator[tuple[str, str | None]]:
    """(qualified name, docstring) for every public name that is neither class nor function;
    the docstring is the string literal under its assignment, as the reference shows it."""
    for package in PACKAGES:
        for name, doc in mutator_docs.constant_docs(package).items():
            yield f"{package.__name__}.{name}", doc


def undocumented() -> set[str]:
    found = [*public_names(), *public_constants()]
    return {name for name, doc in found if doc is None}


def test_every_public_name_has_a_docstring() -> None:
    """A public name without a docstring fails."""
    missing = undocumented()
    assert not missing, "public names without a docstring:\n" + "\n".join(sorted(missing))


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_checker_sees_the_whole_public_surface(package: Any) -> None:
    """The check covers every name of ``__all__`` that is a class or a function."""
    names = {name for name, _ in public_names()}
    for name in package.__all__:
        obj = getattr(package, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert f"{obj.__module__}.{obj.__qualname__}" in names
