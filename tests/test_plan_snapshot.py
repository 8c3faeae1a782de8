"""`vidinv plan` (and the pre-run check, which runs the same planner) gives, for every config in
configs/ on its family's tiny model and for each command, the numbers recorded before the planner
moved into its package (tests/data/plan_snapshot.json, written by `python -m tests.plan_snapshot`)."""

from __future__ import annotations

import json

import pytest

from tests.plan_snapshot import COMMANDS, SNAPSHOT, config_names, planned

RECORDED = json.loads(SNAPSHOT.read_text())


def test_the_snapshot_covers_every_shipped_config():
    assert sorted(RECORDED) == sorted(f"{n}:{c}" for n in config_names() for c in COMMANDS)


@pytest.mark.slow
@pytest.mark.parametrize("name", config_names())
def test_plan_numbers_equal_those_recorded_before_the_move(name):
    for command in COMMANDS:
        assert planned(name, command) == RECORDED[f"{name}:{command}"], f"{name} --for {command}"
