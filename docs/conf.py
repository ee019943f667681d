"""Sphinx configuration for the mutator documentation (furo, MyST, autodoc).

Build with ``python -m sphinx -W --keep-going -b html docs docs/_build/html``. The request
state machine and the error hierarchy are generated from the code on every build by the
``mutator_docs`` extension in ``_ext/``, so they cannot drift.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE / "_ext"))

import mutator  # noqa: E402

project = "mutator"
author = "mutator developers"
copyright = "mutator developers"
release = mutator.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinxcontrib.mermaid",
    "mutator_docs",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
myst_fence_as_directive = ["mermaid"]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"mutator {release}"
html_static_path: list[str] = []
