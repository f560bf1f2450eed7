"""Sphinx configuration of the art-wdat documentation (``sphinx-build -W -b html docs OUT``)."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # the package, also when it is not installed
sys.path.insert(0, str(DOCS / "_ext"))

import art_wdat  # noqa: E402

project = "art-wdat"
author = "the art-wdat authors"
copyright = "the art-wdat authors"  # noqa: A001 (Sphinx's name)
release = art_wdat.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "apipackage",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# Markdown: $...$ and $$...$$ for mathematics, (label)= targets, headings as link anchors (GitHub's links too).
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# The API reference: docstrings are reST with :param: fields; signatures carry the types.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Heavy optional back ends are imported inside functions; nothing to mock.
autodoc_mock_imports: list[str] = []

html_theme = "furo"
html_title = f"art-wdat {release}"
html_static_path: list[str] = []
