"""_boot's import closure: which of the collection's module_utils a source imports."""

from __future__ import annotations

import ast
import glob
import os
import textwrap

import pytest

from ansible_collections.gpuops.sharing.plugins.module_utils import _boot

P = _boot.PACKAGE
UTILS = os.path.dirname(os.path.abspath(_boot.__file__))


def test_imports_are_found_wherever_a_statement_can_hold_them():
    source = textwrap.dedent(f"""
        from {P} import _a, _b
        import {P}._c.sub
        try:
            from {P}._d import thing
        except ImportError:
            from {P} import _e
        finally:
            pass
        class K:
            def f(self):
                if True:
                    with open("x"):
                        for _i in ():
                            from {P}._f import g
                else:
                    while False:
                        import {P}._g
        match 1:
            case 1:
                from {P} import _h
        from os import path
        import json
        """)
    assert _boot.imported_utils(source) == {"_a", "_b", "_c", "_d", "_e", "_f", "_g", "_h"}


def _walked(source: str) -> set[str]:
    """The same question answered by walking the whole tree, expressions too."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == P:
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(P + "."):
            found.add(node.module[len(P) + 1:].split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(a.name[len(P) + 1:].split(".")[0] for a in node.names if a.name.startswith(P + "."))
    return found


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(UTILS, "*.py"))), ids=os.path.basename)
def test_every_module_utils_file_gives_what_a_whole_tree_walk_gives(path):
    with open(path, encoding="utf-8") as fh:
        source = fh.read()
    assert _boot.imported_utils(source) == _walked(source)
