"""Sphinx configuration of the API reference (built by ``scripts/api_docs.sh``)."""

project = "avalanche-fgadahat"
author = "avalanche-fgadahat contributors"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode"]
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_inherit_docstrings = False
autodoc_preserve_defaults = True
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_title = "avalanche-fgadahat API reference"
