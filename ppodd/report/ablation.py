"""Ablation tables like the paper's Tables II–IV, from the groups of `summary.summarize`.

For every setting key with at least two values in a (data set, method, variant), one table: a row
per value and, per IPC, the accuracy of each score and its drop from the reference value (given,
ppodd's default, or the best). docs/summary.md states the rules.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from ppodd.config import VARIANTS, RunConfig, to_dict
from ppodd.errors import ConfigError
from ppodd.report.records import SCORES, flatten


def _config_defaults() -> dict[str, Any]:
    """ppodd's own config defaults (the paper's values) by dotted key."""
    return flatten(to_dict(RunConfig()))


def _reference(key: str, values: list, variant: str, given: Mapping[str, Any],
               defaults: Mapping[str, Any]) -> tuple[Any, str]:
    """(reference value of an axis, why): given with --default, the config default, or None."""
    if key in given:
        return given[key], "given"
    option = key.removeprefix("ppodd.")
    default = VARIANTS.get(variant, {}).get(option) if key.startswith("ppodd.") else None
    if default is None:
        default = defaults.get(key)
    default = list(default) if isinstance(default, tuple) else default
    if default is not None and any(_same(default, v) for v in values):
        return next(v for v in values if _same(default, v)), "default"
    return None, "best"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b)
    return a == b


def ablation_tables(groups: list[dict], given: Mapping[str, Any]) -> list[dict]:
    """One table per (data set, method, variant, axis): the axis's values as rows, the other axes
    held at their reference values, and the drop of every row from the reference row."""
    defaults = _config_defaults()
    families: dict[tuple, list[dict]] = defaultdict(list)
    for group in groups:
        if group["setting"] and not group["method"].startswith("reference:"):
            families[(group["dataset"], group["method"], group["variant"])].append(group)
    known = {k for members in families.values() for g in members for k in g["setting"]}
    for key in given:
        if key not in known:
            allowed = ", ".join(sorted(known)) or "none: no setting varies"
            raise ConfigError(f"--default {key}: not a setting of these runs (settings: {allowed})")
    tables = []
    for (dataset, method, variant), members in families.items():
        axes = sorted({k for g in members for k in g["setting"]})
        values = {k: _unique([g["setting"][k] for g in members if k in g["setting"]]) for k in axes}
        refs = {k: _reference(k, values[k], variant, given, defaults) for k in axes}
        for axis in axes:
            if len(values[axis]) < 2:
                continue
            fixed = {k: refs[k][0] if refs[k][0] is not None else _held_value(members, k, values[k], axis)
                     for k in axes if k != axis}
            chosen = [g for g in members if axis in g["setting"]
                      and all(_same(g["setting"].get(k), v) for k, v in fixed.items())]
            tables.append(_ablation_table(dataset, method, variant, axis, values[axis], refs[axis],
                                          fixed, chosen))
    return tables


def _held_value(groups: list[dict], key: str, values: list, axis: str) -> Any:
    """The value to hold axis `key` at, which has no reference, while `axis` varies: the one
    under which the most values of `axis` were run, then the best on average."""
    def rank(value: Any) -> tuple[int, float]:
        under = [g for g in groups if _same(g["setting"].get(key), value)]
        means = [g["pool"]["mean"] for g in under if g["pool"]["mean"] is not None]
        return (len(_unique([g["setting"].get(axis) for g in under])),
                statistics.fmean(means) if means else -math.inf)
    return max(values, key=rank)


def _unique(values: list) -> list:
    out: list = []
    for value in values:
        if not any(_same(value, v) for v in out):
            out.append(value)
    return sorted(out, key=lambda v: (str(type(v)), v if not isinstance(v, list) else str(v)))


def _ablation_table(dataset: str, method: str, variant: str, axis: str, values: list,
                    ref: tuple[Any, str], fixed: dict, groups: list[dict]) -> dict:
    ipcs = sorted({g["ipc"] for g in groups})
    reference, rule = ref
    rows = []
    for ipc in ipcs:
        at_ipc = [g for g in groups if g["ipc"] == ipc]
        best = None
        if rule == "best":
            scored = [g for g in at_ipc if g["pool"]["mean"] is not None]
            best = max(scored, key=lambda g: g["pool"]["mean"])["setting"][axis] if scored else None
        base_value = reference if rule != "best" else best
        base = next((g for g in at_ipc if _same(g["setting"][axis], base_value)), None)
        for value in values:
            group = next((g for g in at_ipc if _same(g["setting"][axis], value)), None)
            row = {"value": value, "ipc": ipc, "n": group["n"] if group else 0,
                   "reference": base_value is not None and _same(value, base_value)}
            for score in SCORES:
                mean = group[score]["mean"] if group else None
                std = group[score]["std"] if group else None
                base_mean = base[score]["mean"] if base else None
                row[score] = {"mean": mean, "std": std,
                              "drop": mean - base_mean if mean is not None and base_mean is not None else None}
            rows.append(row)
    return {"dataset": dataset, "method": method, "variant": variant, "axis": axis,
            "reference": reference, "reference_rule": rule, "fixed": fixed, "ipcs": ipcs, "rows": rows}
