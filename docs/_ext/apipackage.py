"""``.. apipackage:: art_wdat.attacks``: the API reference of a package, one section per module, found at build time.

New modules appear in the reference without editing the docs. A module is left out only when
:data:`EXCLUDED` names it with its reason.
"""

from __future__ import annotations

import importlib
import pkgutil

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

#: Modules the reference does not show, with the reason.
EXCLUDED = {
    "art_wdat.__main__": "runs the command line when imported (``python -m art_wdat``); the CLI page documents it",
}


def package_modules(package: str) -> list[str]:
    """``package`` and its modules, in name order, without :data:`EXCLUDED` (subpackages are not walked into)."""
    pkg = importlib.import_module(package)
    names = [package]
    if hasattr(pkg, "__path__"):
        names += sorted(f"{package}.{info.name}" for info in pkgutil.iter_modules(pkg.__path__)
                        if not info.ispkg)
    return [name for name in names if name not in EXCLUDED]


class ApiPackage(SphinxDirective):
    """Expands to ``automodule`` sections for a package and each of its modules."""

    required_arguments = 1
    option_spec = {"modules": lambda arg: [m.strip() for m in (arg or "").split(",") if m.strip()]}

    def run(self) -> list[nodes.Node]:
        package = self.arguments[0]
        modules = self.options.get("modules") or package_modules(package)
        lines: list[str] = []
        for name in modules:
            # A package shows its docstring only, and a module only what it defines (not what its __all__
            # re-exports): every object is documented once, where it lives.
            options = ["   :no-members:"] if name == package else ["   :members:", "   :show-inheritance:",
                                                                      "   :ignore-module-all:"]
            lines += [name, "-" * len(name), "", f".. automodule:: {name}", *options, ""]
        container = nodes.section()
        nested_parse_with_titles(self.state, StringList(lines, source=self.get_source_info()[0]), container)
        return container.children


def setup(app: Sphinx) -> dict:
    app.add_directive("apipackage", ApiPackage)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
