"""Result tables over many runs: groups over seeds, paired differences, ablations.

Pure functions over the plain-dict records of `report.records`: `summarize` aggregates them
(statistics in `stats.py`, ablation tables in `ablation.py`). Reading files and formatting live in
`gather.py` and `tables.py`.

Words used below:
  setting   the config keys that vary across the summarised runs, other than method, IPC and seed
            (and keys that do not shape a result, `_NOT_SETTINGS`), e.g. {"ppodd.boost": 0.0}.
            PoDD ignores every `ppodd.*` key (it is P-PoDD with T = 1), so they are left out of
            PoDD's setting, and PoDD's variant is "-".
  group     the runs of one (data set, method, variant, setting, IPC): one table cell.
  score     "pool" (the reported number: the final pool, D12) or "live" (the live poster alone,
            the honest budget). Accuracies are percent at the last evaluation checkpoint, the
            mean over the evaluation networks (§9).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from ppodd.cell.identity import RUN_ONLY_KEYS
from ppodd.config import VARIANTS
from ppodd.report.ablation import ablation_tables
from ppodd.report.architectures import add_architectures
from ppodd.report.random_real import add_gains
from ppodd.report.records import SCORES
from ppodd.report.stats import mean_std, paired_interval

METHOD_ORDER = ("ppodd", "podd")
# The grid's own axes, the keys that say where or how fast a run goes, not what it computes (the
# same rule that keeps them out of a cell's digest), and the extra architectures a run is also
# scored on (they add a table, not a number to the others): never a setting.
_NOT_SETTINGS = frozenset({"method", "seed", "poster.ipc", "ppodd.variant", "eval.models", *RUN_ONLY_KEYS})


# --- settings -----------------------------------------------------------------------------------


def _relevant(record: Mapping[str, Any]) -> dict[str, Any]:
    """The config keys of a run that may make its setting (PoDD has no P-PoDD options)."""
    podd = record["method"] == "podd"
    return {k: v for k, v in record["config"].items()
            if k not in _NOT_SETTINGS and not (podd and k.startswith("ppodd."))}


def setting_keys(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """The keys whose value differs between runs (those that have the key), sorted.

    A §10.4 option whose every value is its variant's preset is no axis: the variant says it.
    """
    records = [r for r in records if r["kind"] == "run"]
    values: dict[str, set] = defaultdict(set)
    for record in records:
        for key, value in _relevant(record).items():
            values[key].add(value)
    keys = []
    for key, seen in values.items():
        if len(seen) < 2:
            continue
        option = key.removeprefix("ppodd.")
        if key.startswith("ppodd.") and option in VARIANTS["paper"] and all(
                r["config"].get(key) == VARIANTS.get(r["config"].get("ppodd.variant"), {}).get(option)
                for r in records if key in r["config"] and r["method"] != "podd"):
            continue
        keys.append(key)
    return sorted(keys)


def with_settings(records: list[dict]) -> list[dict]:
    """The records with `setting` filled in, PoDD's variant set to "-", and `config` dropped."""
    keys = setting_keys(records)
    out = []
    for record in records:
        record = dict(record)
        relevant = _relevant(record)
        record["setting"] = {k: _plain(relevant[k]) for k in keys if k in relevant}
        if record["method"] == "podd":
            record["variant"] = "-"
        record.pop("config", None)
        out.append(record)
    return out


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def setting_label(setting: Mapping[str, Any]) -> str:
    """`key=value, key=value`, or "-" for the empty setting."""
    return ", ".join(f"{k}={_text(v)}" for k, v in setting.items()) or "-"


def group_label(group: Mapping[str, Any]) -> str:
    """A group's row name: method, variant unless "-", and setting unless empty."""
    parts = [group["method"]]
    if group["variant"] != "-":
        parts.append(group["variant"])
    if group["setting"]:
        parts.append(setting_label(group["setting"]))
    return " ".join(parts)


def ipc_label(value: Any) -> str:
    """An IPC as written in tables and figures; "?" when unknown."""
    return "?" if value is None else f"{value:g}"


def by_dataset(groups: Iterable[dict]) -> dict[str, list[dict]]:
    """Groups by data set name, in first-seen order."""
    out: dict[str, list[dict]] = defaultdict(list)
    for g in groups:
        out[str(g["dataset"])].append(g)
    return dict(out)


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(_text(v) for v in value) + "]"
    return str(value)


def _key(setting: Mapping[str, Any]) -> tuple:
    return tuple((k, repr(v)) for k, v in sorted(setting.items()))


# --- groups -------------------------------------------------------------------------------------


def group_key(record: Mapping[str, Any]) -> tuple:
    """What makes one group: data set, method, variant, setting and IPC."""
    return (record["dataset"], record["method"], record["variant"], _key(record["setting"]),
            record["ipc"])


def _sort_key(group: Mapping[str, Any]) -> tuple:
    method = group["method"]
    rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    ipc = group["ipc"] if group["ipc"] is not None else math.inf
    return (str(group["dataset"]), rank, method, group["variant"], _key(group["setting"]), ipc)


def _score(runs: list[dict], score: str) -> dict:
    values = [r[f"final_accuracy_{score}"] for r in runs]
    mean, std = mean_std(values)
    checkpoints = runs[0]["checkpoints"] if runs else []
    same = [r for r in runs if r["checkpoints"] == checkpoints]
    curve = [mean_std([r[f"final_accuracy_{score}_at"][str(c)] for r in same]) for c in checkpoints]
    return {
        "mean": mean, "std": std,
        "effective_ipc": _common([r[f"effective_ipc_{score}"] for r in runs]),
        "pixels": _common([r[f"pixels_{score}"] for r in runs]),
        "at": {str(c): {"mean": m, "std": s, "n": len(same)} for c, (m, s) in zip(checkpoints, curve)},
    }


def _common(values: list) -> Any:
    """The value every run shares (they share a config), else their mean; None for no runs."""
    if not values:
        return None
    if all(v == values[0] for v in values):
        return values[0]
    return statistics.fmean(values)


def _groups(records: list[dict]) -> list[dict]:
    by_key: dict[tuple, list[dict]] = defaultdict(list)
    for record in records:
        by_key[group_key(record)].append(record)
    expected = _expected_seeds(records)
    groups = []
    for key, members in by_key.items():
        first = members[0]
        done: dict[Any, dict] = {}
        duplicates = []
        for record in sorted((r for r in members if r["complete"]), key=lambda r: r["file"]):
            if record["seed"] in done:
                duplicates.append(record["seed"])
                continue
            done[record["seed"]] = record
        runs = [done[s] for s in sorted(done, key=_seed_order)]
        incomplete = sorted({r["seed"] for r in members if not r["complete"]} - set(done), key=_seed_order)
        # A reference poster is scored once for a comparison; it has no seeds to miss.
        wanted = expected.get(_seed_scope(first), set()) if first["kind"] == "run" else set()
        group = {
            "dataset": first["dataset"], "method": first["method"], "variant": first["variant"],
            "setting": first["setting"], "ipc": first["ipc"], "n": len(runs),
            "seeds": [r["seed"] for r in runs],
            "missing_seeds": sorted(wanted - set(done) - set(incomplete), key=_seed_order),
            "incomplete_seeds": incomplete,
            "duplicate_seeds": sorted(set(duplicates), key=_seed_order),
            "files": [r["file"] for r in runs],
            "checkpoints": runs[0]["checkpoints"] if runs else [],
            "seconds_mean": mean_std([r["seconds"] for r in runs if r["seconds"] is not None
                                      and math.isfinite(r["seconds"])])[0],
            "difference": None,
        }
        group.update({score: _score(runs, score) for score in SCORES})
        group["_runs"] = {r["seed"]: r for r in runs}
        groups.append(group)
    return sorted(groups, key=_sort_key)


def _seed_order(seed: Any) -> tuple:
    return (seed is None, seed if seed is not None else 0)


def _seed_scope(record: Mapping[str, Any]) -> tuple:
    """Runs that should share seeds: the same data set and setting, any method and IPC."""
    return (record["dataset"], _key(record["setting"]))


def _expected_seeds(records: list[dict]) -> dict[tuple, set]:
    expected: dict[tuple, set] = defaultdict(set)
    for record in records:
        if record["kind"] == "run" and record["seed"] is not None:
            expected[_seed_scope(record)].add(record["seed"])
    return expected


def _pair_differences(groups: list[dict]) -> None:
    """Fill `difference` of each P-PoDD group: minus the PoDD group of the same data, IPC and
    non-P-PoDD setting, over the seeds both have (paired by seed)."""
    podd = {(g["dataset"], _key(g["setting"]), g["ipc"]): g for g in groups if g["method"] == "podd"}
    for group in groups:
        if group["method"] != "ppodd":
            continue
        base_setting = {k: v for k, v in group["setting"].items() if not k.startswith("ppodd.")}
        other = podd.get((group["dataset"], _key(base_setting), group["ipc"]))
        if other is None:
            continue
        seeds = [s for s in group["_runs"] if s in other["_runs"]]
        if not seeds:
            continue
        group["difference"] = {
            "against": {"method": "podd", "variant": other["variant"], "setting": other["setting"]},
            "n": len(seeds), "seeds": seeds,
            **{score: paired_interval([group["_runs"][s][f"final_accuracy_{score}"]
                                       - other["_runs"][s][f"final_accuracy_{score}"] for s in seeds])
               for score in SCORES},
        }


# --- everything ---------------------------------------------------------------------------------


def summarize(records: list[dict], defaults: Mapping[str, Any] | None = None) -> dict:
    """The summary `ppodd summarize` formats: runs (with settings), groups and ablation tables.

    `records` come from `run_record`, `reference_record` and `incomplete_record`; `defaults`
    (key → value) overrides the reference value of an ablation axis.
    """

    runs = with_settings(records)
    groups = _groups(runs)
    _pair_differences(groups)
    add_gains(groups)
    add_architectures(groups)
    ablations = ablation_tables(groups, defaults or {})
    for group in groups:
        del group["_runs"]
    return {"runs": sorted(runs, key=lambda r: (_sort_key(r), _seed_order(r["seed"]), r["file"])),
            "groups": groups, "ablations": ablations}
