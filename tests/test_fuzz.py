"""Property-based tests of the command line (hypothesis): random overrides over the schema's keys
with random values of random types, and video files cut or with flipped bytes. Every outcome is
exit 0 or exit 2 with one line on stderr: never a traceback, a crash or a hang."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO
from tests.forked_cli import ForkedCli
from vidinv.config import valid_keys

LEAF_KEYS = [key for key in valid_keys() if not any(other.startswith(key + ".") for other in valid_keys())]
SAMPLE = (REPO / "samples" / "bikes.mp4").read_bytes()
FUZZ = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def cli():
    driver = ForkedCli()
    yield driver
    driver.close()


def render(value) -> str:
    """A value as the command line writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # nan, inf, -inf
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    return str(value)


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=12),
    st.lists(st.integers(-3, 3) | st.text("abc", max_size=3), max_size=3),
)
overrides = st.lists(
    st.tuples(st.sampled_from(LEAF_KEYS) | st.text("abcdefghij.", min_size=1, max_size=12), values), max_size=4
)


def assert_clean(code, stderr: str) -> None:
    """Exit 0 (notes at most), or exit 2 with exactly one `vidinv: error:` line."""
    assert code in (0, 2), (code, stderr)
    lines = stderr.splitlines()
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("vidinv: error: "), stderr
    else:
        assert all(line.startswith("vidinv: note: ") for line in lines), stderr


@FUZZ
@given(pairs=overrides)
@example(pairs=[("model.pretrained", ["", 0])])  # found by this test: yaml's own error for `[,0]`
def test_random_overrides_give_exit_0_or_one_line_exit_2(cli, tmp_path, pairs):
    argv = ["--quiet", "plan", "configs/demo.yaml", *(f"{key}={render(value)}" for key, value in pairs)]
    assert_clean(*cli.run(argv, timeout=60))


corruptions = st.one_of(
    st.integers(0, len(SAMPLE) - 1).map(lambda cut: SAMPLE[:cut]),
    st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1), st.integers(1, 255)), min_size=1, max_size=16).map(
        lambda flips: _flipped(flips)
    ),
)


def _flipped(flips: list[tuple[int, int]]) -> bytes:
    data = bytearray(SAMPLE)
    for index, mask in flips:
        data[index] ^= mask
    return bytes(data)


@FUZZ
@given(data=corruptions)
def test_corrupted_videos_give_exit_0_or_one_line_exit_2_and_never_hang(cli, tmp_path, data):
    path = tmp_path / "corrupted.mp4"
    path.write_bytes(data)
    assert_clean(*cli.run(["--quiet", "eval", str(path), str(path)], timeout=60))
