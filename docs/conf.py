"""Sphinx configuration of the scoresde documentation site (``make docs`` builds it into ``site/``).

Pages are Markdown (MyST); the API reference comes from the docstrings (autodoc + napoleon); math is
rendered by a local MathJax (``docs/_static/mathjax``, unpacked from the npm registry by ``make docs``),
so the built site reads offline. The build is strict: ``sphinx-build -W -n`` fails on any warning,
broken cross-reference or missing page.
"""

project = "scoresde"
author = "the scoresde developers"
copyright = "2026, the scoresde developers"

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "screenshots", "README.md"]
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = "scoresde"
html_static_path = ["_static"]
html_css_files = ["site.css"]
mathjax_path = "mathjax/tex-chtml.js"  # relative to _static: no CDN at read time

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": False, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Strict cross-references for scoresde's own names; types from torch, numpy and the standard library are not
# documented here (no network to fetch their inventories), so references to them are not checked.
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"^(?!scoresde\.).*"), (r"py:.*", r".*\._[a-zA-Z].*")]  # and private names
