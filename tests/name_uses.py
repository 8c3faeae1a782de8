"""Where source code branches on a name (read with ast): comparisons of something to one of the
names, and tables keyed by two or more of them. The ownership tests (method names outside the
methods' modules, family names outside `vidinv.models`) read the package with it."""

from __future__ import annotations

import ast
from pathlib import Path


def string_constants(node: ast.AST) -> set[str]:
    values = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return {v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str)}


def name_uses(path: Path, names: set[str], kind: str) -> list[str]:
    """`path:line: code` of each comparison with one of `names`, and of each table keyed by two or more."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            if set().union(*(string_constants(c) for c in [node.left, *node.comparators])) & names:
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Dict) and len(set().union(*map(string_constants, filter(None, node.keys))) & names) > 1:
            found.append(f"{path.name}:{node.lineno}: a table keyed by {kind} names")
    return found
