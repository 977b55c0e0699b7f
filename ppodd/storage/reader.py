"""Reading run files: the whole record, the scalars of a results table, or just the scores.

Every reader checks the header first (`storage.runfile.read_checked`) and refuses a missing,
corrupt, foreign, newer or incomplete file with a StoreError subclass. torch is imported inside
the functions that build tensors, never at module level: `ppodd summarize` reads a thousand files
through `read_scores`, and importing torch alone costs seconds.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml
from h5py import h5a, h5d, h5g, h5s, h5t

from ppodd.storage.record import ArchitectureResult, EvalResult, RunRecord, StageRecord
from ppodd.storage.runfile import attr as _attr
from ppodd.storage.runfile import attr_value as _attr_value
from ppodd.storage.runfile import plain as _plain
from ppodd.storage.runfile import read_checked as _read_checked

# libyaml parses a config about ten times faster; `summarize` parses one per file.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_run(path: Path) -> RunRecord:
    """The RunRecord stored in a finished run file (the inverse of `write_run`).

    Tuples in config, provenance, seeds and geometry come back as lists. Raises a StoreError
    subclass for a missing, corrupt, foreign, newer or incomplete file.
    """
    return _read_checked(Path(path), _RUN_READERS)


def read_summary(path: Path) -> dict:
    """The scalars and small arrays of a finished run file, for tables; posters are never read.

    Keys (plain Python values):
      path, format_version, ppodd_version, method, dataset, ipc, seed, variant, stages (T),
      final_accuracy, final_accuracy_live, final_accuracy_pool, pixels_live, pixels_pool,
      effective_ipc_live, effective_ipc_pool, seconds, zca_key: root scalars (module docstring);
      config: the resolved config as a dict; provenance: a dict (nested for subgroups);
      poster_shape: (3, H, W) from the dataset's shape, no data read;
      stage_list: one dict per stage, oldest first, with index (t), epochs, stage_accuracy (A_t),
        pool_pixels, pi_before, pi_after, accuracy_mean (S values), accuracy_final,
        accuracy_best;
      final: {"live": ..., "pool": ...}, each with checkpoints, mean, per_net (S lists of nets
        values), members, pi, pixels, effective_ipc, seconds, final, best.
      architectures: {name: {"live": ..., "pool": ...}} of /final/architectures (empty without
        it), each with checkpoints and mean.
    Raises a StoreError subclass for a missing, corrupt, foreign, newer or incomplete file.
    """
    return _read_checked(Path(path), _SUMMARY_READERS)


def read_scores(path: Path) -> dict:
    """What a results table needs from a finished run file, read as cheaply as possible.

    `ppodd summarize` reads a thousand files with it. Keys (plain Python values):
      path, format_version, method, dataset, ipc, seed, variant, stages (T), final_accuracy,
      final_accuracy_live, final_accuracy_pool, pixels_live, pixels_pool, effective_ipc_live,
      effective_ipc_pool, seconds: root scalars (module docstring);
      config: the resolved config as a dict; poster_shape: (3, H, W), no data read;
      stage_accuracies: A_t of every stage, oldest first; pi_after: each stage's π after its
        update, over [S_1 … S_t, live];
      final: {"live": ..., "pool": ...}, each with checkpoints and mean (S values).
      architectures: {name: {"live": ..., "pool": ...}} of /final/architectures (empty without
        it), each with checkpoints and mean;
      phase_seconds: {phase: seconds} from the provenance (prepare, distill, evaluate).
    Raises a StoreError subclass for a missing, corrupt, foreign, newer or incomplete file.
    """
    return _read_checked(Path(path), _SCORES_READERS)



# The schema fixes the type of every numeric item, so the readers of `read_summary` let HDF5
# convert into a buffer of that type instead of asking each item for its dtype and shape first.
_NUMERIC = {float: (np.float64, h5t.NATIVE_DOUBLE), int: (np.int64, h5t.NATIVE_INT64)}


def _number(loc: h5py.h5g.GroupID, name: str, member: str = ".", kind: type = float) -> Any:
    """Numeric scalar attribute `name` of the object at `member`, as `kind` (float or int)."""
    dtype, mtype = _NUMERIC[kind]
    value = np.empty((), dtype=dtype)
    h5a.open(loc, name.encode(), obj_name=member.encode()).read(value, mtype=mtype)
    return kind(value)


def _numbers(loc: h5py.h5g.GroupID, member: str, kind: type = float) -> list:
    """The numeric dataset at `member` as a (nested) list of `kind`."""
    dtype, mtype = _NUMERIC[kind]
    dataset = h5d.open(loc, member.encode())
    value = np.empty(dataset.shape, dtype=dtype)
    dataset.read(h5s.ALL, h5s.ALL, value, mtype=mtype)
    return value.tolist()


def _array(loc: h5py.h5g.GroupID, member: str) -> np.ndarray:
    """The whole dataset at `member` (relative to loc)."""
    dataset = h5d.open(loc, member.encode())
    value = np.empty(dataset.shape, dtype=dataset.dtype)
    dataset.read(h5s.ALL, h5s.ALL, value)
    return value



def _read_attributes(group: h5py.Group) -> dict:
    """Every attribute of `group` as a plain value."""
    loc = group.id
    out = {}
    for index in range(h5a.get_num_attrs(loc)):
        attr = h5a.open(loc, index=index)
        out[attr.name.decode("utf-8")] = _attr_value(attr)
    return out


def _read_mapping(group: h5py.Group) -> dict:
    """The mapping `_write_mapping` stored in `group`: its attributes, subgroups nested."""
    out = _read_attributes(group)
    for name, child in group.items():
        out[name] = _read_mapping(child)
    return out


def _read_config(f: h5py.File) -> dict:
    return yaml.load(_plain(_array(f.id, "config_yaml")), Loader=_YAML_LOADER)


def _read_eval_v1(group: h5py.Group) -> EvalResult:
    import torch

    loc = group.id
    return EvalResult(
        checkpoints=_array(loc, "checkpoints").tolist(),
        per_net=torch.from_numpy(_array(loc, "per_net")),
        members=_array(loc, "members").tolist(),
        pi=_array(loc, "pi").tolist(),
        pixels=int(_attr(loc, "pixels")),
        effective_ipc=float(_attr(loc, "effective_ipc")),
        seconds=float(_attr(loc, "seconds")),
    )


def _read_stage_v1(name: str, group: h5py.Group) -> StageRecord:
    import torch

    loc = group.id
    return StageRecord(
        index=int(name),
        epochs=int(_attr(loc, "epochs")),
        poster=torch.from_numpy(_array(loc, "poster")),
        patch_labels=torch.from_numpy(_array(loc, "patch_labels")),
        label_map=torch.from_numpy(_array(loc, "label_map")) if "label_map" in group else None,
        pi_before=_array(loc, "pi_before").tolist(),
        pi_after=_array(loc, "pi_after").tolist(),
        accuracy=_read_eval_v1(group["accuracy"]),
        stage_accuracy=float(_attr(loc, "stage_accuracy")),
        pool_pixels=int(_attr(loc, "pool_pixels")),
        in_stage=[(int(epoch), _read_eval_v1(group["in_stage"][epoch]))
                  for epoch in sorted(group["in_stage"], key=int)],
    )


def _read_run_v1(f: h5py.File) -> RunRecord:
    import torch

    return RunRecord(
        config=_read_config(f),
        geometry=_read_mapping(f["geometry"]),
        class_order=_array(f.id, "class_order").tolist(),
        class_names=_plain(_array(f.id, "class_names")),
        initial_poster=torch.from_numpy(_array(f.id, "initial_poster")),
        stages=[_read_stage_v1(name, f["stages"][name]) for name in _stage_names_v1(f.id)],
        final_live=_read_eval_v1(f["final/live"]),
        final_pool=_read_eval_v1(f["final/pool"]),
        curves={name: torch.from_numpy(_array(f.id, f"curves/{name}")) for name in f["curves"]},
        provenance=_read_mapping(f["provenance"]),
        zca_key=str(_attr(f.id, "zca_key")),
        seeds=_read_mapping(f["seeds"]),
        architectures={name: ArchitectureResult(_read_attributes(f[f"final/architectures/{name}"]),
                                                _read_eval_v1(f[f"final/architectures/{name}/live"]),
                                                _read_eval_v1(f[f"final/architectures/{name}/pool"]))
                       for name in _architecture_names_v1(f.id)},
    )


_ROOT_TEXT = ("ppodd_version", "method", "dataset", "variant", "zca_key")
_ROOT_INTS = ("seed", "stages", "pixels_live", "pixels_pool")
_ROOT_FLOATS = ("ipc", "final_accuracy", "final_accuracy_live", "final_accuracy_pool",
                "effective_ipc_live", "effective_ipc_pool", "seconds")


def _summary_stage_v1(root: h5py.h5g.GroupID, name: str) -> dict:
    member = f"stages/{name}"
    mean = _numbers(root, f"{member}/accuracy/mean")
    return {
        "index": int(name),
        "epochs": _number(root, "epochs", member, int),
        "stage_accuracy": _number(root, "stage_accuracy", member),
        "pool_pixels": _number(root, "pool_pixels", member, int),
        "pi_before": _numbers(root, f"{member}/pi_before"),
        "pi_after": _numbers(root, f"{member}/pi_after"),
        "accuracy_mean": mean,
        # Derived from the stored mean, as EvalResult.final and .best are: two reads fewer.
        "accuracy_final": mean[-1],
        "accuracy_best": max(mean),
    }


def _summary_eval_v1(root: h5py.h5g.GroupID, name: str, scalars: dict) -> dict:
    member = f"final/{name}"
    out = {key: _numbers(root, f"{member}/{key}", kind)
           for key, kind in (("checkpoints", int), ("mean", float), ("per_net", float),
                             ("members", int), ("pi", float))}
    # pixels and effective IPC are root scalars already; final and best follow from the mean.
    out["pixels"] = scalars[f"pixels_{name}"]
    out["effective_ipc"] = scalars[f"effective_ipc_{name}"]
    out["seconds"] = _number(root, "seconds", member)
    out["final"] = out["mean"][-1]
    out["best"] = max(out["mean"])
    return out


def _root_scalars_v1(root: h5py.h5g.GroupID, text: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"format_version": 1}
    out.update((key, _attr(root, key)) for key in text)
    out.update((key, _number(root, key, kind=int)) for key in _ROOT_INTS)
    out.update((key, _number(root, key)) for key in _ROOT_FLOATS)
    return out


def _architecture_names_v1(root: h5py.h5g.GroupID) -> list[str]:
    """Names of the /final/architectures groups in `eval.models` order; none in files without it."""
    if b"architectures" not in h5g.open(root, b"final"):
        return []
    return _attr(root, "order", "final/architectures")


def _architecture_means_v1(root: h5py.h5g.GroupID) -> dict:
    """{name: {"live": {checkpoints, mean}, "pool": {...}}} of /final/architectures."""
    return {name: {score: {"checkpoints": _numbers(root, f"final/architectures/{name}/{score}/checkpoints", int),
                           "mean": _numbers(root, f"final/architectures/{name}/{score}/mean")}
                   for score in ("live", "pool")}
            for name in _architecture_names_v1(root)}


def _stage_names_v1(root: h5py.h5g.GroupID) -> list[str]:
    """Names of the /stages groups in stage order."""
    return sorted((name.decode() for name in h5g.open(root, b"stages")), key=int)


def _read_summary_v1(f: h5py.File) -> dict:
    root = f.id
    out = _root_scalars_v1(root, _ROOT_TEXT)
    out["config"] = _read_config(f)
    out["provenance"] = _read_mapping(f["provenance"])
    out["poster_shape"] = tuple(h5d.open(root, b"initial_poster").shape)
    out["stage_list"] = [_summary_stage_v1(root, name) for name in _stage_names_v1(root)]
    out["final"] = {name: _summary_eval_v1(root, name, out) for name in ("live", "pool")}
    out["architectures"] = _architecture_means_v1(root)
    return out


def _read_scores_v1(f: h5py.File) -> dict:
    root = f.id
    out = _root_scalars_v1(root, ("method", "dataset", "variant"))
    out["config"] = _config_from_template(_plain(_array(root, "config_yaml")), out)
    out["poster_shape"] = tuple(h5d.open(root, b"initial_poster").shape)
    names = _stage_names_v1(root)
    out["stage_accuracies"] = [_number(root, "stage_accuracy", f"stages/{name}") for name in names]
    out["pi_after"] = [_numbers(root, f"stages/{name}/pi_after") for name in names]
    out["final"] = {name: {"checkpoints": _numbers(root, f"final/{name}/checkpoints", int),
                           "mean": _numbers(root, f"final/{name}/mean")} for name in ("live", "pool")}
    out["architectures"] = _architecture_means_v1(root)
    out["phase_seconds"] = _phase_seconds_v1(f)
    return out


def _phase_seconds_v1(f: h5py.File) -> dict[str, float]:
    """Seconds per phase (prepare, distill, evaluate) of the run's provenance: its `seconds_<phase>`
    attributes, or the `seconds` mapping that other writers store."""
    provenance = f["provenance"]
    nested = provenance.get("seconds")
    if isinstance(nested, h5py.Group):
        return {k: float(v) for k, v in _read_mapping(nested).items() if isinstance(v, (int, float))}
    out = {}
    for index in range(h5a.get_num_attrs(provenance.id)):
        attr = h5a.open(provenance.id, index=index)
        name = attr.name.decode("utf-8")
        if name.startswith("seconds_") and name != "seconds_total":
            out[name.removeprefix("seconds_")] = float(_attr_value(attr))
    return out


# The stored config is YAML as `yaml.safe_dump` writes it; the runs of a grid differ mostly in
# the three values that are also root attributes. Parsing is the costliest part of a table read,
# so the text with those three values blanked is parsed once and they are filled in from the root.
_CELL_LINES = re.compile(r"^(method|seed): .*$|^(  ipc): .*$", re.MULTILINE)


def _config_from_template(text: str, scalars: Mapping[str, Any]) -> dict:
    template = _parse_template(_CELL_LINES.sub(lambda m: f"{m[1] or m[2]}: null", text))
    if not isinstance(template, dict):
        raise ValueError(f"config_yaml holds a {type(template).__name__}, not a mapping")
    config = _copy_mapping(template)
    config["method"], config["seed"] = scalars["method"], scalars["seed"]
    if isinstance(config.get("poster"), dict):
        config["poster"]["ipc"] = scalars["ipc"]
    return config


@functools.lru_cache(maxsize=256)
def _parse_template(text: str) -> dict:
    return yaml.load(text, Loader=_YAML_LOADER)


def _copy_mapping(mapping: dict) -> dict:
    """A copy of nested dicts and lists (the cached template is never handed out)."""
    return {k: _copy_mapping(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v
            for k, v in mapping.items()}


# Readers by format_version: a new schema adds an entry and keeps the old ones (anndata habit).
_RUN_READERS: dict[int, Callable[[h5py.File], RunRecord]] = {1: _read_run_v1}
_SUMMARY_READERS: dict[int, Callable[[h5py.File], dict]] = {1: _read_summary_v1}
_SCORES_READERS: dict[int, Callable[[h5py.File], dict]] = {1: _read_scores_v1}

