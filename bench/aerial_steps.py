"""Which part of the aerial recipe carries its gain (`bash bench/run.sh aerial_steps`): the same tiles, orthophoto,
epochs, batch and input size as ``bench.aerial``, trained once per step, each step adding one part to the one
before it, so each figure is the part's own share. The platform's defaults were chosen from this table
(docs/user-guide.md, "Training on aerial imagery").

1. ``default``: the preset's pipeline before issue 31 (whole tiles resized to the input size, two flips).
2. ``+ orientations``: the same whole tiles in all eight orientations (free in compute).
3. ``+ orientations, colour``: and colour jitter.
4. ``crops``: crops of the input size at the tiles' own resolution instead of whole tiles shrunk (two flips, no
   colour), to see crops alone.
5. ``crops + target_gsd``: the crops resampled to one ground resolution (6 cm) first.
6. ``aerial``: step 5 with all eight orientations, colour and scale jitter: the whole recipe of ``bench.aerial``.

``BENCH_AERIAL_STEPS`` (comma-separated step names) runs some of them: each with the step it is measured against.
"""

from __future__ import annotations

import os

from .aerial import RECIPES, bench_dataset, bench_user, measured
from .common import Figure

AERIAL = RECIPES["aerial"]
CROPS = {"resize": "crops", "crop_box_share": AERIAL["crop_box_share"]}
FREE = {"orientations": AERIAL["orientations"], "colour": AERIAL["colour"]}
WHOLE = RECIPES["default"]
STEPS = {
    "default": WHOLE,
    "+ orientations": {**WHOLE, "orientations": AERIAL["orientations"]},
    "+ orientations, colour": {**WHOLE, **FREE},
    "crops": CROPS,
    "crops + target_gsd": {**CROPS, "target_gsd": AERIAL["target_gsd"]},
    "aerial": AERIAL,
}
# What each step is measured against: the step it adds a part to.
AGAINST = {
    "+ orientations": "default",
    "+ orientations, colour": "default",
    "crops": "default",
    "crops + target_gsd": "crops",
    "aerial": "crops + target_gsd",
}


def chosen() -> dict[str, dict]:
    """The steps to run: those named in BENCH_AERIAL_STEPS and the ones they are measured against; all by default."""
    named = [n.strip() for n in os.environ.get("BENCH_AERIAL_STEPS", "").split(",") if n.strip()]
    unknown = [n for n in named if n not in STEPS]
    if unknown:
        raise ValueError(f"unknown step(s) {unknown}; the steps: {', '.join(STEPS)}")
    wanted = {*named, *(AGAINST[n] for n in named if n in AGAINST)} if named else set(STEPS)
    return {name: recipe for name, recipe in STEPS.items() if name in wanted}


def run() -> list[Figure]:
    steps = chosen()
    models, recalls = measured(steps, bench_dataset(), bench_user(), "aerial-steps-qcluster.log")
    figures = []
    for step, base in AGAINST.items():
        if step not in steps:
            continue
        m, b = models[step].bbox_mAP_50 or 0.0, models[base].bbox_mAP_50 or 0.0
        figures.append(
            Figure(
                "aerial_steps",
                f"{step} against {base}: mAP50 (10 cm validation); site recall (4 cm orthophoto)",
                f"{m:.3f} / {b:.3f} = {m - b:+.3f}; {recalls[step]:.3f} / {recalls[base]:.3f}",
                "—",
                None,
            )
        )
    return figures
