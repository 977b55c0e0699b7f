"""The cross-architecture result: a group's final live poster and pool on every evaluation network
of `eval.models` (§9), over seeds."""

from __future__ import annotations

from ppodd.report.records import SCORES
from ppodd.report.stats import mean_std


def add_architectures(groups: list[dict]) -> None:
    """Fill `architectures` of every group: name → score → {mean, std, n} over the group's runs
    scored on that architecture, names in the order the runs list them ({} when none has any)."""
    for group in groups:
        scored = [r["architectures"] for r in group["_runs"].values() if r.get("architectures")]
        names = list(dict.fromkeys(name for arch in scored for name in arch))
        group["architectures"] = {}
        for name in names:
            group["architectures"][name] = {}
            for score in SCORES:
                values = [arch[name][score] for arch in scored if name in arch]
                mean, std = mean_std(values)
                group["architectures"][name][score] = {"mean": mean, "std": std, "n": len(values)}
