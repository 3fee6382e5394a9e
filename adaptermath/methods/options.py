"""The options methods share, declared once (name, type, range, default, sweep aliases)."""

from __future__ import annotations

from .registry import MethodOption

DENSITY = MethodOption(
    "density", float, 0.2, "share k of entries each update keeps, by magnitude (TIES: top-k%)",
    minimum=0.0, maximum=1.0, include_minimum=False, aliases=("k",),
)
DROP = MethodOption(
    "drop", float, 0.5, "probability p of dropping each entry (DARE); survivors are scaled by 1/(1 − p)",
    minimum=0.0, maximum=1.0, include_maximum=False, aliases=("p",),
)
SEED = MethodOption("seed", int, 0, "seed of the random drop masks (per module: sha256(seed, module name))", minimum=0)
DARE_COMBINE = MethodOption(
    "combine", str, "linear", "how DARE combines the rescaled updates: linear (Σ) or ties (sign election, disjoint mean)",
    choices=("linear", "ties"),
)
EXT_SUB_DIRECTION = MethodOption(
    "direction", str, "common",
    "what the anti-expert keeps before subtraction: its projection on the common direction of expert and "
    "anti-expert (common, the paper's code) or on the expert's direction (expert)",
    choices=("common", "expert"),
)
