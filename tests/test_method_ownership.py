"""Each method owns its knowledge: outside a method's own module no code compares a method name to a
string or keys a table by method names (read from the package's source with ast), and each
built-in edit method's settings live in its own config section."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.name_uses import name_uses
from vidinv.config import MOVED_EDIT_KEYS, edit_sections, load_config
from vidinv.registry import EDIT_METHODS, INVERSION_METHODS

PACKAGE = Path(__file__).resolve().parents[1] / "vidinv"
METHOD_NAMES = set(EDIT_METHODS.names()) | set(INVERSION_METHODS.names())


def own_modules() -> set[Path]:
    """The modules that define the registered methods (each may name itself)."""
    return {
        Path(__import__(registry.get(n).__module__, fromlist=["_"]).__file__).resolve()
        for registry in (EDIT_METHODS, INVERSION_METHODS)
        for n in registry.names()
    }


def method_name_uses(path: Path) -> list[str]:
    """Comparisons of something to a method's name, and tables keyed by two or more method names."""
    return name_uses(path, METHOD_NAMES, "method")


def test_no_code_outside_a_methods_module_compares_a_method_name_to_a_string():
    allowed = own_modules() | {(PACKAGE / "registry.py").resolve()}  # the registries name the built-ins
    found = [
        use for path in sorted(PACKAGE.rglob("*.py")) if path.resolve() not in allowed for use in method_name_uses(path)
    ]
    assert found == []


def test_the_check_finds_a_comparison_it_should(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text('if config.edit.method == "fatezero":\n    pass\nCALLS = {"pnp": 1, "tokenflow": 2}\n')
    assert len(method_name_uses(planted)) == 2


def test_each_builtin_edit_method_with_settings_has_its_section():
    assert {"pnp", "tokenflow", "fatezero", "flowedit"} <= set(edit_sections())
    config = load_config(None, ["edit.pnp.inject_features=0.25", "edit.tokenflow.keyframe_stride=3"])
    assert config.edit.pnp.inject_features == 0.25 and config.edit.tokenflow.keyframe_stride == 3


@pytest.mark.parametrize(
    "key, text, value",
    [("inject_features", "0.25", 0.25), ("keyframe_stride", "3", 3), ("blend_words", "[man]", ["man"])],
)
def test_a_flat_key_of_the_last_release_still_works_with_a_one_line_note(key, text, value, caplog):
    section = MOVED_EDIT_KEYS[key]
    old = load_config(None, [f"edit.{key}={text}"])
    assert getattr(getattr(old.edit, section), key) == value
    notes = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    new = f"edit.{section}.{key}"
    assert notes == [f"config: 'edit.{key}' is deprecated, use '{new}' (the old key goes in the next release)"]
    assert old == load_config(None, [f"{new}={text}"])
