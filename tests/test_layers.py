"""The import-linter contracts in pyproject.toml cover every private module of the core."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_governance_is_forbidden_every_private_core_module() -> None:
    """A new private module of ``mutator`` is forbidden to governance as soon as it exists."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    (public_only,) = [c for c in contracts if c.get("source_modules") == ["mutator_governance"]]
    private = {
        f"mutator.{path.stem}"
        for path in (ROOT / "mutator").glob("_*.py")
        if path.name != "__init__.py"
    }
    assert private <= set(public_only["forbidden_modules"]), (
        "add these to the contract in pyproject.toml: "
        + ", ".join(sorted(private - set(public_only["forbidden_modules"])))
    )
