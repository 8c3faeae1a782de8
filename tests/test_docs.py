"""The documents stay true: every file, section, anchor and module they cite exists, every path a
docstring or comment cites exists, the README stays short and names the commands CI runs, and
docs/config.md is what `python -m vidinv.config_doc` writes from the config schema."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import LANES, REPO
from vidinv import registry
from vidinv.config import valid_keys
from vidinv.config_doc import config_markdown

DOCS = sorted((REPO / "docs").glob("*.md"))
MARKDOWN = [REPO / "README.md", *DOCS]
SOURCES = sorted(p for folder in ("vidinv", "scripts") for p in (REPO / folder).rglob("*.py"))

# a repo path in prose: it starts at a top-level folder and is not part of a longer path or URL
REPO_PATH = re.compile(r"(?<![\w./-])((?:vidinv|scripts|configs|docs|tests|samples|\.ci)/[\w./-]*\w)")
# in code: the paths of the documents, configs, scripts and modules a docstring or comment cites
CITED_PATH = re.compile(
    r"(?<![\w./-])(docs/[\w./-]+\.md|configs/[\w./-]+\.yaml|scripts/[\w./-]+\.py|(?:vidinv|tests)/[\w./-]+\.py)"
)
BARE_DOC = re.compile(r"(?<![\w./-])((?:methods|models|operations|config|benchmarks|architecture)\.md)")
SECTION = re.compile(r"(docs/[\w.-]+\.md) §(\d+)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
MODULE = re.compile(r"`(vidinv(?:\.\w+)+)")
# a config key in backticks (`edit.pnp.inject_features`, `runtime.codec=ffv1`, `video.height/width`)
CONFIG_KEY = re.compile(r"`((?:model|video|inversion|edit|runtime|eval)(?:\.\w+)+)(?=[`=:\s,)/])(?!/\w+\.)")
FILE_NAME = re.compile(r"\.(safetensors|json|yaml|mp4|mkv|png)$")  # `inversion.resume.safetensors` is a file
ENTRY_POINT_GROUPS = {r.group for r in vars(registry).values() if isinstance(r, registry.Registry)}


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def numbered_sections(path: Path) -> set[str]:
    return set(re.findall(r"^## (\d+)\.", path.read_text(encoding="utf-8"), re.M))


def module_problem(name: str) -> str | None:
    """Why the dotted name `vidinv.a.b` names nothing in this checkout (None when it does): the
    longest prefix that is a package or module file, then a name that module's source holds."""
    if name in ENTRY_POINT_GROUPS:
        return None
    parts, path = name.split("."), REPO / "vidinv"
    source, rest = path / "__init__.py", []
    for i, part in enumerate(parts[1:], start=1):
        if (path / part).is_dir():
            path, source = path / part, path / part / "__init__.py"
        elif (path / f"{part}.py").is_file():
            source, rest = path / f"{part}.py", parts[i + 1 :]
            break
        else:
            rest = parts[i:]
            break
    if rest and not re.search(rf"\b{re.escape(rest[0])}\b", source.read_text(encoding="utf-8")):
        return f"{rel(source)} has no {rest[0]!r}"
    return None


def docstrings_and_comments(path: Path) -> str:
    source = path.read_text(encoding="utf-8")
    texts = [
        tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            texts.append(ast.get_docstring(node, clean=False) or "")
    return "\n".join(texts)


@pytest.mark.parametrize("doc", MARKDOWN, ids=rel)
def test_every_link_path_and_anchor_a_document_cites_exists(doc):
    text = doc.read_text(encoding="utf-8")
    missing = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked offline
            continue
        file_part, _, anchor = target.partition("#")
        linked = (doc.parent / file_part).resolve() if file_part else doc
        if not linked.exists():
            missing.append(f"link {target}: no {file_part}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            missing.append(f"link {target}: no heading #{anchor} in {rel(linked)}")
    for path in REPO_PATH.findall(text):
        if not (REPO / path).exists():
            missing.append(f"path {path}")
    for doc_path, number in SECTION.findall(text):
        if number not in numbered_sections(REPO / doc_path):
            missing.append(f"{doc_path} §{number}: no '## {number}.' section")
    for name in MODULE.findall(text):
        if problem := module_problem(name):
            missing.append(f"`{name}`: {problem}")
    keys = set(valid_keys())
    for key in CONFIG_KEY.findall(text):
        placeholder = any(part.isupper() for part in key.split("."))  # `edit.NAME`
        if key not in keys and not placeholder and not FILE_NAME.search(key):
            missing.append(f"config key {key}")
    assert not missing, f"{rel(doc)} cites what does not exist: {missing}"


@pytest.mark.parametrize("source", SOURCES, ids=rel)
def test_every_path_a_docstring_or_comment_cites_exists(source):
    text = docstrings_and_comments(source)
    problems = [f"{path} does not exist" for path in CITED_PATH.findall(text) if not (REPO / path).exists()]
    problems += [f"{name}: cite it as docs/{name}" for name in BARE_DOC.findall(text)]
    problems += [
        f"{doc} §{number}: no such section"
        for doc, number in SECTION.findall(text)
        if (REPO / doc).exists() and number not in numbered_sections(REPO / doc)
    ]
    problems += ["'shared docs' are not in this repository: cite docs/"] if "shared docs" in text else []
    assert not problems, f"{rel(source)}: {problems}"


def test_the_readme_is_short_and_names_what_ci_runs_and_the_quick_lane():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 200
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    (ci_tests,) = [line for line in ci.splitlines() if line.startswith("pip install") and "pytest" in line]
    assert ci_tests.replace("pip install -q ", "pip install ") in readme  # the README's test command
    assert "vidinv edit configs/demo.yaml" in readme
    assert 'pytest -q -m "not slow"' in readme
    named = set(re.findall(r"`(\w+)`", readme[readme.index("Lanes are pytest markers") :].split(")")[0]))
    assert named - {"fake_cuda"} == set(LANES) and "fake_cuda" in named


def test_docs_config_md_is_current():
    """Regenerate with: python -m vidinv.config_doc > docs/config.md"""
    assert (REPO / "docs" / "config.md").read_text(encoding="utf-8") == config_markdown()


# ------------------------------------------------------------- the generator on a schema of its own
@dataclass
class Leaf:
    """The deepest section."""

    depth: int = 3  # three levels down


@dataclass
class Middle:
    # a comment block above the field
    # on two lines
    limit: float | None = None  # and one after it
    mode: str = "a"
    leaf: Leaf = field(default_factory=Leaf)  # holds the leaf


@dataclass
class Root:
    names: list[str] = field(default_factory=list)  # a list default
    middle: Middle = field(default_factory=Middle)  # the middle section


@dataclass
class Schema:
    root: Root = field(default_factory=Root)  # the only section


def test_the_generator_walks_sections_of_any_depth_with_their_comments_types_and_defaults():
    text = config_markdown(Schema)
    assert "## root\n\nThe only section.\n" in text
    assert "| `root.names` | `list[str]` | `[]` | a list default |" in text
    assert "## root.middle\n\nThe middle section.\n" in text
    assert (
        "| `root.middle.limit` | `float \\| None` | `null` | and one after it; a comment block above the field on two lines |"
        in text
    )
    assert "| `root.middle.mode` | `str` | `a` |  |" in text
    assert (
        "| `root.middle.leaf` | section | | holds the leaf: the [root.middle.leaf](#rootmiddleleaf) section |" in text
    )
    assert "## root.middle.leaf\n\nThe deepest section.\n" in text
    assert "| `root.middle.leaf.depth` | `int` | `3` | three levels down |" in text
    assert text.index("## root.middle\n") < text.index("## root.middle.leaf\n")


def test_the_generated_config_doc_lists_every_key_and_the_allowed_values():
    from vidinv.config import CHOICES

    text = config_markdown()
    for key in valid_keys():
        assert (f"`{key}`" if "." in key else f"\n## {key}\n") in text, key
    row = next(line for line in text.splitlines() if line.startswith("| `runtime.codec` |"))
    assert all(f"`{value}`" in row for value in CHOICES["runtime.codec"])
    row = next(line for line in text.splitlines() if line.startswith("| `edit.method` |"))
    assert all(f"`{name}`" in row for name in ("pnp", "tokenflow", "fatezero", "flowedit"))
