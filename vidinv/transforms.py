"""FreeInv's transform groups: exact, lossless transforms of the last two (spatial) axes.

A transform acts on (..., h, w), so on latents (f c h w) every frame gets the same one. Names:

    id, rot90, rot180, rot270 (counter-clockwise, torch.rot90), hflip (flip w), vflip (flip h),
    transpose (swap h and w), antitranspose (transpose about the other diagonal)

The per-step schedule is a list of names indexed by step (sampling order), drawn from a seeded
generator, stored with the inversion and reused at the same step of reconstruction and editing.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("vidinv")

GROUPS = {
    "none": ("id",),
    "rot90": ("id", "rot90", "rot180", "rot270"),
    "flips": ("id", "hflip", "vflip", "rot180"),  # Klein four-group: hflip o vflip = rot180
    "dihedral": ("id", "rot90", "rot180", "rot270", "hflip", "vflip", "transpose", "antitranspose"),
}
AUTO = "auto"  # rot90 on square latents, else the shape-preserving group (`group_for`)
# Transforms that keep an (h, w) shape for any h != w.
SHAPE_PRESERVING = ("id", "rot180", "hflip", "vflip")
# Inverse of each transform (rot90 <-> rot270; the rest are involutions).
INVERSE = {
    "id": "id",
    "rot90": "rot270",
    "rot180": "rot180",
    "rot270": "rot90",
    "hflip": "hflip",
    "vflip": "vflip",
    "transpose": "transpose",
    "antitranspose": "antitranspose",
}


def apply(name: str, x: torch.Tensor) -> torch.Tensor:
    """Transform `name` applied to the last two axes of x (exact: a permutation of entries)."""
    if name == "id":
        return x
    if name == "rot90":
        return torch.rot90(x, 1, dims=(-2, -1))
    if name == "rot180":
        return torch.rot90(x, 2, dims=(-2, -1))
    if name == "rot270":
        return torch.rot90(x, 3, dims=(-2, -1))
    if name == "hflip":
        return torch.flip(x, dims=(-1,))
    if name == "vflip":
        return torch.flip(x, dims=(-2,))
    if name == "transpose":
        return x.transpose(-2, -1)
    if name == "antitranspose":
        return torch.rot90(x, 2, dims=(-2, -1)).transpose(-2, -1)
    raise ValueError(f"unknown transform {name!r} (known: {', '.join(INVERSE)})")


def invert(name: str, x: torch.Tensor) -> torch.Tensor:
    """The inverse transform of `name` applied to x: invert(name, apply(name, x)) == x."""
    return apply(INVERSE[name], x)


def group_for(transforms: str, height: int, width: int) -> tuple[str, ...]:
    """The group `transforms` names, restricted to shape-preserving ones for non-square latents.
    `auto` (the default) is rot90 on square latents and the shape-preserving group on others,
    silently; a group with 90-degree rotations asked for by name on non-square latents is replaced
    with a note."""
    if transforms == AUTO:
        return GROUPS["rot90"] if height == width else SHAPE_PRESERVING
    if transforms not in GROUPS:
        raise ValueError(f"unknown transform group {transforms!r} (known: {AUTO}, {', '.join(GROUPS)})")
    group = GROUPS[transforms]
    if height != width and any(name not in SHAPE_PRESERVING for name in group):
        log.info(
            "inversion.transforms=%s: latents are %dx%d (not square), so 90-degree rotations and transposes are "
            "replaced by the shape-preserving group {%s}",
            transforms,
            height,
            width,
            ", ".join(SHAPE_PRESERVING),
        )
        group = SHAPE_PRESERVING
    return group


def schedule(group: tuple[str, ...] | list[str], steps: int, seed: int) -> list[str]:
    """One transform per step (sampling order), drawn uniformly from `group` by a seeded CPU generator."""
    generator = torch.Generator("cpu").manual_seed(int(seed))
    picks = torch.randint(len(group), (steps,), generator=generator).tolist()
    return [group[k] for k in picks]
