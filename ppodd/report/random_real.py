"""The gain of every poster over random real images of its own pixel count (the equal budget).

A live poster is compared with random real images of one poster's pixels, a pool with random real
images of all its posters' pixels, at the same evaluation step, on the same data set: the random
real images must have been scored with `ppodd evaluate random-real --pixels N --json`, a budget of N
pixels (the whole images that fit in it may hold a few pixels less).
"""

from __future__ import annotations

from ppodd.report.records import SCORES

PREFIX = "reference:random-real-"


def add_gains(groups: list[dict]) -> None:
    """Fill `gain_over_random_real` of every group that is not random real images itself:
    score → {gain, random_real, random_real_n, pixels, step}, or None where no reference fits."""
    refs = {(g["dataset"], int(g["method"][len(PREFIX):-2])): g for g in groups
            if g["method"].startswith(PREFIX) and g["n"]}
    for group in groups:
        group["gain_over_random_real"] = None
        if group["method"].startswith(PREFIX) or not group["n"] or not group["checkpoints"]:
            continue
        step = str(group["checkpoints"][-1])
        gains = {}
        for score in SCORES:
            ref = refs.get((group["dataset"], group[score]["pixels"]))
            at = ref[score]["at"].get(step) if ref else None
            if at is None or group[score]["mean"] is None:
                continue
            gains[score] = {"gain": group[score]["mean"] - at["mean"], "random_real": at["mean"],
                            "random_real_n": ref["n"], "pixels": group[score]["pixels"], "step": int(step)}
        group["gain_over_random_real"] = gains or None
