"""The planner's numbers for every config in configs/ on the tiny model of its family: recorded once
(`python -m tests.plan_snapshot`) into tests/data/plan_snapshot.json, and compared by
tests/test_plan_snapshot.py so that moving the planner's code changes none of them."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "tests" / "data" / "plan_snapshot.json"
COMMANDS = ("edit", "invert", "reconstruct")
# each published model of configs/ -> the tiny model of its family (the planner reads configs offline)
TINY_OF = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "tiny",
    "stabilityai/stable-diffusion-2-1": "tiny-sd2",
    "stabilityai/stable-diffusion-xl-base-1.0": "tiny-sdxl",
    "stabilityai/stable-diffusion-3-medium-diffusers": "tiny-sd3",
    "black-forest-labs/FLUX.1-dev": "tiny-flux",
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": "tiny-wan",
    "Wan-AI/Wan2.2-TI2V-5B-Diffusers": "tiny-wan22",
    "Wan-AI/Wan2.2-T2V-A14B-Diffusers": "tiny-wan22-a14b",
    "hunyuanvideo-community/HunyuanVideo": "tiny-hunyuan",
    "THUDM/CogVideoX-2b": "tiny-cogvideox",
    "Lightricks/LTX-Video": "tiny-ltx",
}
# sizes the tiny model of a family takes (tiny-sd3's positional embedding stops at 256 px)
SIZE_OF = {"tiny-sd3": (128, 256)}


def config_names() -> list[str]:
    return sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))


def planned(name: str, command: str) -> dict:
    """The plan of configs/NAME on its family's tiny model, as plain numbers."""
    from vidinv.config import load_config

    config = load_config(ROOT / "configs" / name)
    pretrained = TINY_OF.get(config.model.pretrained, config.model.pretrained)
    overrides = [f"model.pretrained={pretrained}", f"video.path={ROOT / 'samples' / 'bikes.mp4'}"]
    if pretrained in SIZE_OF:
        overrides += [f"video.height={SIZE_OF[pretrained][0]}", f"video.width={SIZE_OF[pretrained][1]}"]
    config = load_config(ROOT / "configs" / name, overrides)
    from vidinv.planning import plan_run

    return asdict(plan_run(config, command))


def snapshot() -> dict:
    return {f"{name}:{command}": planned(name, command) for name in config_names() for command in COMMANDS}


if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(snapshot(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")
