"""One record per file for `ppodd summarize`: a finished run, a reference poster, or a cell
with no result yet.

Pure functions over plain dicts: `run_record` turns what `storage.reader.read_scores` returns into
the record `ppodd summarize --format json` prints (docs/summary.md lists every field).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

SCORES = ("pool", "live")


def run_record(summary: Mapping[str, Any], file: str) -> dict:
    """The JSON record of one finished run, from what `storage.reader.read_scores` returns.

    `config` (the flattened resolved config) is kept for finding settings; `summarize` drops it.
    """
    live, pool = summary["final"]["live"], summary["final"]["pool"]
    checkpoints = [int(c) for c in pool["checkpoints"]]
    pool_at = _by_checkpoint(checkpoints, pool["mean"])
    return {
        "file": file,
        "kind": "run",
        "method": summary["method"],
        "dataset": summary["dataset"],
        "ipc": summary["ipc"],
        "seed": summary["seed"],
        "variant": summary["variant"],
        "setting": {},
        "stages": summary["stages"],
        "complete": True,
        "reason": None,
        "checkpoints": checkpoints,
        "final_accuracy": summary["final_accuracy"],
        "final_accuracy_at": pool_at,
        "final_accuracy_live": summary["final_accuracy_live"],
        "final_accuracy_live_at": _by_checkpoint(live["checkpoints"], live["mean"]),
        "final_accuracy_pool": summary["final_accuracy_pool"],
        "final_accuracy_pool_at": pool_at,
        "pixels_live": summary["pixels_live"],
        "pixels_pool": summary["pixels_pool"],
        "effective_ipc_live": summary["effective_ipc_live"],
        "effective_ipc_pool": summary["effective_ipc_pool"],
        "stage_accuracies": list(summary["stage_accuracies"]),
        "pi_history": [list(pi) for pi in summary["pi_after"]],
        "poster_shape": list(summary["poster_shape"]),
        "seconds": summary["seconds"],
        "seconds_per_phase": dict(summary.get("phase_seconds", {})),
        "device_hours": _hours(summary["seconds"]),
        "format_version": summary["format_version"],
        "architectures": {name: {score: float(scores[score]["mean"][-1]) for score in SCORES}
                          for name, scores in summary.get("architectures", {}).items()},
        "config": flatten(summary["config"]),
    }


def reference_record(row: Mapping[str, Any], file: str) -> dict:
    """The record of a reference poster scored by `ppodd evaluate initial|real --json`.

    Its method is `reference:<poster>`; it has one pool, so live and pool are the same numbers.
    Files written before `evaluate` stored the data set, IPC and seed have data set "?" and no
    IPC or seed.
    """
    checkpoints = [int(c) for c in row["checkpoints"]]
    at = _by_checkpoint(checkpoints, row["mean"])
    final = float(row["mean"][-1])
    return {
        "file": file, "kind": "reference", "method": reference_method(row),
        "dataset": row.get("dataset") or "?", "ipc": row.get("ipc"), "seed": row.get("seed"),
        "variant": "-", "setting": {}, "stages": 0, "complete": True, "reason": None,
        "checkpoints": checkpoints,
        "final_accuracy": final, "final_accuracy_at": at,
        "final_accuracy_live": final, "final_accuracy_live_at": at,
        "final_accuracy_pool": final, "final_accuracy_pool_at": at,
        "pixels_live": row["pixels"], "pixels_pool": row["pixels"],
        "effective_ipc_live": row["effective_ipc"], "effective_ipc_pool": row["effective_ipc"],
        "stage_accuracies": [], "pi_history": [], "poster_shape": None,
        "seconds": row.get("seconds"), "seconds_per_phase": {}, "device_hours": _hours(row.get("seconds")),
        "format_version": None, "config": {},
        # A poster alone has one pool: live and pool are the same score on every architecture.
        "architectures": {name: {score: float(arch["mean"][-1]) for score in SCORES}
                          for name, arch in row.get("architectures", {}).items()},
    }


def reference_method(row: Mapping[str, Any]) -> str:
    """`reference:<poster>`: a run file or poster file by its name (the path is not needed), and
    random real images with their pixel budget, since budgets are compared, never averaged."""
    name = Path(str(row["poster"])).name
    if name == "random-real":
        # The budget, not the pixels of the whole images that fit in it, is what posters match.
        return f"reference:random-real-{int(row.get('budget_pixels', row['pixels']))}px"
    return f"reference:{name}"


def incomplete_record(file: str, reason: str, method: str, dataset: str, ipc: float, seed: int,
                      variant: str, config: Mapping[str, Any] | None = None) -> dict:
    """The record of a run with no result yet (still running, interrupted, or never started)."""
    record = {key: None for key in _NUMERIC_FIELDS}
    record.update({
        "file": file, "kind": "run", "method": method, "dataset": dataset, "ipc": ipc,
        "seed": seed, "variant": variant, "setting": {}, "stages": None, "complete": False,
        "reason": reason, "checkpoints": [], "final_accuracy_at": {},
        "final_accuracy_live_at": {}, "final_accuracy_pool_at": {}, "stage_accuracies": [],
        "pi_history": [], "poster_shape": None, "format_version": None, "architectures": {},
        "seconds_per_phase": {}, "device_hours": None,
        "config": flatten(config or {}),
    })
    return record


_NUMERIC_FIELDS = ("final_accuracy", "final_accuracy_live", "final_accuracy_pool", "pixels_live",
                   "pixels_pool", "effective_ipc_live", "effective_ipc_pool", "seconds")


def _hours(seconds: Any) -> float | None:
    """Device-hours of a run's wall seconds: a run uses one device (None when unknown)."""
    if not isinstance(seconds, (int, float)) or seconds != seconds:
        return None
    return round(seconds / 3600, 6)


def _by_checkpoint(checkpoints: Iterable[int], means: Iterable[float]) -> dict[str, float]:
    # JSON object keys are strings: the step count as text.
    return {str(int(c)): float(m) for c, m in zip(checkpoints, means)}


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as one level of dotted keys; lists become tuples so values can be compared."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out

