"""Pages generated from the code at build time, so the docs cannot drift from it.

- ``_generated/request_states.md``: the request state machine as a Mermaid diagram, from
  :data:`mutator_governance._transitions.ALLOWED_TRANSITIONS`, with a table of the edges;
- ``_generated/errors.md``: the error hierarchy, from the exception classes that
  ``mutator.__all__`` and ``mutator_governance.__all__`` export, with each one's summary;
- ``_generated/constants_<package>.md``: the public constants (names in ``__all__`` that are
  neither classes nor functions), which autodoc skips when they are re-exported, with the
  docstring written under their assignment.

Both are written on ``builder-inited`` (before Sphinx reads any page) and included by the
explanation pages with ``{include}``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import itertools
import sys
from pathlib import Path
from typing import Any

import mutator
import mutator_governance
from mutator_governance._transitions import ALLOWED_TRANSITIONS

__all__ = [
    "public_bases",
    "constant_docs",
    "constants_markdown",
    "error_hierarchy_markdown",
    "request_states_markdown",
    "setup",
]

_PACKAGES = (mutator, mutator_governance)


def _summary(obj: Any) -> str:
    doc = inspect.getdoc(obj) if vars(obj).get("__doc__") else None
    return doc.strip().split("\n\n")[0].replace("\n", " ") if doc else ""


def request_states_markdown() -> str:
    """The state machine as a Mermaid block plus a table of every allowed transition.

    Terminal statuses (no way out) are drawn shaded rather than wired to an end marker,
    which keeps the diagram readable.
    """
    lines = ["```mermaid", "stateDiagram-v2", "    direction LR"]
    initial = next(iter(ALLOWED_TRANSITIONS))
    lines.append(f"    [*] --> {initial.name}")
    for source, targets in ALLOWED_TRANSITIONS.items():
        ordered = sorted(targets, key=lambda status: status.name)
        lines.extend(f"    {source.name} --> {target.name}" for target in ordered)
    terminal = [status.name for status, targets in ALLOWED_TRANSITIONS.items() if not targets]
    lines.append("    classDef terminal fill:#e8e8e8,stroke:#888888,color:#333333")
    lines.append(f"    class {', '.join(terminal)} terminal")
    lines.append("```")
    lines += ["", "| from | may move to |", "| --- | --- |"]
    for source, targets in ALLOWED_TRANSITIONS.items():
        names = ", ".join(f"`{t.name}`" for t in sorted(targets, key=lambda s: s.name))
        lines.append(f"| `{source.name}` | {names or '— (terminal)'} |")
    return "\n".join(lines) + "\n"


def _public_errors() -> dict[type[BaseException], str]:
    found: dict[type[BaseException], str] = {}
    for package in _PACKAGES:
        for name in package.__all__:
            obj = getattr(package, name)
            if inspect.isclass(obj) and issubclass(obj, BaseException):
                found.setdefault(obj, f"{package.__name__}.{name}")
    return found


def _public_parent(
    cls: type[BaseException], public: dict[type[BaseException], str]
) -> type[BaseException] | None:
    return next((base for base in cls.__mro__[1:] if base in public), None)


def error_hierarchy_markdown() -> str:
    """A nested list of the public exceptions under ``MutatorError``, each with its summary."""
    public = _public_errors()
    lines: list[str] = []
    walked: set[type[BaseException]] = set()

    def walk(cls: type[BaseException], depth: int) -> None:
        walked.add(cls)
        others = [
            f"`{base.__name__}`"
            for base in cls.__mro__[1:]
            if base.__module__ == "builtins" and base not in (Exception, BaseException, object)
        ]
        also = f" (also {', '.join(others)})" if others else ""
        summary = _summary(cls)
        text = f"{{py:class}}`~{public[cls]}`{also}" + (f": {summary}" if summary else "")
        lines.append("  " * depth + f"- {text}")
        children = [c for c in public if _public_parent(c, public) is cls]
        for child in sorted(children, key=lambda c: c.__name__):
            walk(child, depth + 1)

    walk(mutator.MutatorError, 0)
    outside = set(public) - walked
    if outside:
        names = ", ".join(sorted(public[c] for c in outside))
        raise RuntimeError(f"public errors outside the MutatorError tree: {names}")
    return "\n".join(lines) + "\n"


def _attribute_docs(module: Any) -> dict[str, str]:
    """Docstrings written as a string literal right under a module-level assignment."""
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return {}
    found: dict[str, str] = {}
    body = tree.body
    for statement, following in itertools.pairwise(body):
        targets: list[ast.expr] = []
        if isinstance(statement, ast.Assign):
            targets = statement.targets
        elif isinstance(statement, ast.AnnAssign):
            targets = [statement.target]
        if (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = inspect.cleandoc(following.value.value)
    return found


def constant_docs(package: Any) -> dict[str, str | None]:
    """Each public constant of ``package`` with its docstring (None when it has none)."""
    modules = [package] + [
        module
        for name, module in sorted(sys.modules.items())
        if name.startswith(package.__name__ + ".") and module is not None
    ]
    docs: dict[str, str] = {}
    for module in modules:
        for name, doc in _attribute_docs(module).items():
            if getattr(module, name, None) is getattr(package, name, object()):
                docs.setdefault(name, doc)
    return {
        name: docs.get(name)
        for name in package.__all__
        if not (inspect.isclass(getattr(package, name)) or callable(getattr(package, name)))
    }


def constants_markdown(package_name: str) -> str:
    """``py:data`` entries for the public constants of ``package_name``."""
    package = importlib.import_module(package_name)
    lines = ["```{eval-rst}", f".. py:currentmodule:: {package_name}", ""]
    for name, doc in constant_docs(package).items():
        lines.append(f".. py:data:: {name}")
        lines.append("")
        lines.extend(f"   {line}" if line else "" for line in (doc or "").splitlines())
        lines.append("")
    lines.append("```")
    return "\n".join(lines) + "\n"


_CONSTANT_PAGES = ("mutator", "mutator_governance", "mutator.testing", "mutator_governance.testing")


def _write(app: Any) -> None:
    target = Path(app.srcdir) / "_generated"
    target.mkdir(exist_ok=True)
    pages = {
        "request_states.md": request_states_markdown(),
        "errors.md": error_hierarchy_markdown(),
    }
    for package_name in _CONSTANT_PAGES:
        pages[f"constants_{package_name.replace('.', '_')}.md"] = constants_markdown(package_name)
    for name, text in pages.items():
        path = target / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


def public_bases(bases: list[type[Any]]) -> list[type[Any]]:
    """``bases`` as a reader should see them: private ones replaced by their own bases,
    ``object`` dropped (every class has it)."""
    shown: list[type[Any]] = []
    for base in bases:
        if base is object:
            continue
        private = base.__name__.startswith("_")
        candidates = public_bases(list(base.__bases__)) if private else [base]
        shown.extend(c for c in candidates if c not in shown)
    return shown


def _process_bases(app: Any, name: str, obj: Any, options: Any, bases: list[type[Any]]) -> None:
    bases[:] = public_bases(bases)


def _drop_empty_bases(app: Any, doctree: Any) -> None:
    """Autodoc always writes a "Bases:" line; drop it when no public base is left."""
    from docutils import nodes

    for paragraph in list(doctree.findall(nodes.paragraph)):
        if paragraph.astext().strip() == "Bases:":
            paragraph.parent.remove(paragraph)


def setup(app: Any) -> dict[str, Any]:
    """Register the generators with Sphinx."""
    app.connect("builder-inited", _write)
    app.connect("autodoc-process-bases", _process_bases)
    app.connect("doctree-read", _drop_empty_bases)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
