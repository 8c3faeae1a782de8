"""Frame patterns (who attends to whom) and the pass plans that chunk a clip."""

from __future__ import annotations

import pytest

from vidinv.attention.frames import MODES, FramePattern, attended_frames
from vidinv.errors import VidinvError


def test_none_attends_to_itself_only():
    assert [attended_frames(i, 5, "none") for i in range(5)] == [(0,), (1,), (2,), (3,), (4,)]


def test_sparse_causal_attends_to_first_and_previous_frame():
    got = [attended_frames(i, 6, "sparse_causal") for i in range(6)]
    assert got == [(0,), (0,), (0, 1), (0, 2), (0, 3), (0, 4)]


@pytest.mark.parametrize(
    "params, anchors",
    [
        ({"keyframes": "first"}, (0,)),
        ({"keyframes": "middle"}, (3,)),
        ({"keyframes": "stride", "keyframe_stride": 3}, (0, 3, 6)),
    ],
)
def test_keyframe_mode_attends_to_the_anchors(params, anchors):
    assert all(attended_frames(i, 7, "keyframe", **params) == anchors for i in range(7))


def test_full_mode_attends_to_the_whole_group_including_a_short_last_group():
    got = [attended_frames(i, 5, "full", group=2) for i in range(5)]
    assert got == [(0, 1), (0, 1), (2, 3), (2, 3), (4,)]


@pytest.mark.parametrize("mode", MODES)
def test_a_single_frame_attends_to_itself_in_every_mode(mode):
    assert attended_frames(0, 1, mode, keyframes="middle", group=4) == (0,)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("num_frames", [1, 2, 5, 7])
@pytest.mark.parametrize("chunk", [0, 1, 2, 3, 8])
def test_plan_runs_every_frame_once_and_caches_what_later_passes_need(mode, num_frames, chunk):
    pattern = FramePattern(mode, keyframes="stride", keyframe_stride=3, group=2)
    plan = pattern.plan(num_frames, chunk)  # raises if a pass needs an uncached frame
    frames = [i for p in plan for i in p.frames]
    assert sorted(frames) == list(range(num_frames))
    for p in plan:
        queries = sorted(i for bucket in p.buckets for qs in bucket.queries for i in qs)
        assert queries == sorted(p.frames)
        for bucket in p.buckets:
            for qs, ks in zip(bucket.queries, bucket.keys):
                assert all(pattern.attended(i, num_frames) == ks for i in qs)


def test_sparse_causal_chunks_carry_the_previous_chunks_last_frame():
    plan = FramePattern("sparse_causal").plan(7, 3)
    assert [p.frames for p in plan] == [(0, 1, 2), (3, 4, 5), (6,)]
    assert [p.record for p in plan] == [(0, 2), (5,), ()]
    assert [p.cached for p in plan] == [(), (0, 2), (0, 5)]
    assert plan[1].drop == (2,)


def test_keyframe_chunks_put_all_anchors_in_the_first_pass():
    plan = FramePattern("keyframe", keyframes="stride", keyframe_stride=3).plan(8, 2)
    assert plan[0].frames == (0, 3, 6)
    assert [p.frames for p in plan[1:]] == [(1, 2), (4, 5), (7,)]
    assert all(p.cached == (0, 3, 6) for p in plan[1:])


def test_full_mode_chunks_are_aligned_to_groups():
    pattern = FramePattern("full", group=3)
    assert [p.frames for p in pattern.plan(8, 4)] == [(0, 1, 2), (3, 4, 5), (6, 7)]
    assert [p.frames for p in pattern.plan(8, 7)] == [(0, 1, 2, 3, 4, 5), (6, 7)]
    assert all(not p.cached for p in pattern.plan(8, 4))


def test_unknown_mode_is_a_user_error():
    with pytest.raises(VidinvError, match="sparse_causal"):
        FramePattern("causal")
