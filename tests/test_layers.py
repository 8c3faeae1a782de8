"""The package's layers, read from its import statements (ast; function-level imports included).

Data flows io -> models -> attention -> guidance -> inversion -> editing -> editor (the facade)
-> jobs / cli / app / batch / the diffusers pipeline / the ComfyUI nodes (thin adapters). A module
may import its own layer and the layers below it, never one above (but in a PEP 562 `__getattr__`,
which runs only when its name is asked for: `vidinv.VidinvVideoEditPipeline`); library modules
never import the adapters; no import cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vidinv"

# Bottom to top; a module belongs to the first entry whose prefix names it or its package.
LAYERS = [
    (
        "base",
        (
            "vidinv.errors",
            "vidinv.chunks",
            "vidinv.outputs",
            "vidinv.registry",
            "vidinv.config",
            "vidinv.config_doc",  # docs/config.md from the config schema
            "vidinv.interrupts",
            "vidinv.hostmemory",
            "vidinv.info",
            "vidinv.transforms",
            "vidinv.run_lock",
            "vidinv.planning.memory",  # fake-tensor peaks: methods state their own widest moment with it
            "vidinv.callbacks",  # the step callback's `Step`, passed through every layer
        ),
    ),
    ("io", ("vidinv.io", "vidinv.metrics")),  # metrics measure the pictures the writers write
    ("models", ("vidinv.models", "vidinv.clip_metrics")),  # CLIP-T/F load a CLIP model as the models do
    ("attention", ("vidinv.attention",)),
    ("guidance", ("vidinv.guidance",)),
    ("inversion", ("vidinv.inversion",)),
    ("editing", ("vidinv.editing",)),
    (
        "editor",
        ("vidinv", "vidinv.editor", "vidinv.planning"),
    ),
    (
        "adapters",
        (
            "vidinv.jobs",
            "vidinv.cli",
            "vidinv.app",
            "vidinv.batch",
            "vidinv.doctor",
            "vidinv.__main__",
            "vidinv.diffusers_pipeline",  # the diffusers pipeline on VideoEditor
            "vidinv.pipeline",  # its custom-pipeline file for diffusers (a re-export)
            "vidinv.comfy",  # the ComfyUI nodes on VideoEditor
        ),
    ),
]
ADAPTERS = LAYERS[-1][1]


def module_files() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


MODULES = module_files()


def imported_modules(name: str, tree: ast.AST | None = None) -> set[str]:
    """The vidinv modules `name` imports (in `tree`, a part of its source; default all of it):
    `from a import b` counts as a.b when that is a module."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree or ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m for m in found if m in MODULES}


IMPORTS = {name: imported_modules(name) for name in MODULES}


def lazy_imports(name: str) -> set[str]:
    """What the module-level `__getattr__` (PEP 562) of `name` imports: it runs when one of its
    names is asked for, never on import, so it may import upward (`vidinv.VidinvVideoEditPipeline`)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    hooks = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"]
    return set().union(*(imported_modules(name, hook) for hook in hooks))


LAZY = {name: found for name in MODULES if (found := lazy_imports(name))}


def layer_of(name: str) -> int:
    """Index in LAYERS of the module's layer (the longest matching prefix wins)."""
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    assert best is not None and (best[1] > len("vidinv") or name == "vidinv"), (
        f"{name} is in no layer: add it to LAYERS in tests/test_layers.py"
    )
    return best[0]


def test_the_import_graph_is_read():
    """The parser finds imports of every form the package uses (guards the tests below)."""
    assert "vidinv.transforms" in IMPORTS["vidinv.inversion.methods"]  # from pkg import module
    assert "vidinv.interrupts" in IMPORTS["vidinv.inversion.api"]  # from vidinv import module
    assert "vidinv.models.tiny" in IMPORTS["vidinv.models.loading"]  # function-level import
    assert "vidinv.editor" in IMPORTS["vidinv"]  # package __init__


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_has_a_layer(name):
    layer_of(name)


def test_library_modules_never_import_jobs_or_cli():
    bad = [
        f"{name} imports {target}"
        for name, targets in IMPORTS.items()
        if not name.startswith(ADAPTERS)
        for target in targets
        if target.startswith(("vidinv.jobs", "vidinv.cli", "vidinv.app", "vidinv.batch"))
    ]
    assert bad == []


def test_layers_only_import_downward():
    bad = [
        f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for name, targets in IMPORTS.items()
        for target in targets
        if layer_of(target) > layer_of(name) and target not in LAZY.get(name, ())
    ]
    assert bad == []


def test_the_only_lazy_upward_import_is_the_packages_diffusers_pipeline():
    assert LAZY == {"vidinv": {"vidinv.diffusers_pipeline"}}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    assert find_cycle(IMPORTS) is None
