"""Writing a run file: the whole layout of `storage.runfile`, appearing atomically and durably."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import yaml

from ppodd import __version__
from ppodd.atomic import write_atomic
from ppodd.storage.record import EvalResult, RunRecord, StageRecord
from ppodd.storage.runfile import FORMAT_NAME, FORMAT_VERSION

if TYPE_CHECKING:
    import torch

# Posters are the only large arrays; everything else stays uncompressed so small reads stay cheap.
_POSTER_COMPRESSION = dict(compression="gzip", compression_opts=4, shuffle=True)


def write_run(record: RunRecord, path: Path) -> Path:
    """The path of the finished run file, which appears atomically with `complete = True`.

    The file is written under a temporary name, `complete` set last, fsynced and renamed onto
    `path` (`atomic.write_atomic`, durable), so `path` is either absent, the previous file, or
    this run complete. A failed write raises WriteError and leaves no temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        # locking=False: HDF5 file locks fail on some cluster file systems; the rename already
        # keeps readers away from a file being written.
        with h5py.File(tmp, "w", locking=False) as f:
            _write_layout(f, record)
            f.flush()
            f.attrs["complete"] = True

    return write_atomic(path, write, durable=True)


def _write_layout(f: h5py.File, record: RunRecord) -> None:
    """Everything of the module docstring's layout except `complete = True`."""
    config = record.config
    attrs = f.attrs
    # Header first, with complete=False: a temporary file left by a killed writer then reads as
    # incomplete rather than foreign.
    attrs["format"] = FORMAT_NAME
    attrs["format_version"] = np.int64(FORMAT_VERSION)
    attrs["complete"] = False
    attrs["ppodd_version"] = __version__
    attrs["method"] = str(config.get("method", ""))
    attrs["dataset"] = str(config.get("data", {}).get("name", ""))
    attrs["ipc"] = float(config.get("poster", {}).get("ipc", math.nan))
    attrs["seed"] = np.int64(config.get("seed", -1))
    attrs["variant"] = str(config.get("ppodd", {}).get("variant", ""))
    attrs["stages"] = np.int64(len(record.stages))
    attrs["final_accuracy"] = record.final_pool.final
    attrs["final_accuracy_live"] = record.final_live.final
    attrs["final_accuracy_pool"] = record.final_pool.final
    attrs["pixels_live"] = np.int64(record.final_live.pixels)
    attrs["pixels_pool"] = np.int64(record.final_pool.pixels)
    attrs["effective_ipc_live"] = float(record.final_live.effective_ipc)
    attrs["effective_ipc_pool"] = float(record.final_pool.effective_ipc)
    attrs["seconds"] = _total_seconds(record.provenance)
    attrs["zca_key"] = str(record.zca_key)

    f.create_dataset("config_yaml", data=yaml.safe_dump(config, sort_keys=False),
                     dtype=h5py.string_dtype())
    _write_mapping(f.create_group("provenance"), record.provenance)
    _write_mapping(f.create_group("seeds"), record.seeds)
    _write_mapping(f.create_group("geometry"), record.geometry)
    f.create_dataset("class_order", data=np.asarray(record.class_order, dtype=np.int64))
    f.create_dataset("class_names", data=np.asarray(record.class_names, dtype=object),
                     dtype=h5py.string_dtype())
    _write_poster(f, "initial_poster", record.initial_poster)

    import torch

    curves = f.create_group("curves")
    for name, values in record.curves.items():
        values = values.detach().cpu()
        if values.dtype == torch.bfloat16:  # numpy has no bfloat16
            values = values.float()
        curves.create_dataset(name, data=values.numpy())

    stages = f.create_group("stages")
    for stage in record.stages:
        _write_stage(stages.create_group(f"{stage.index:03d}"), stage)

    final = f.create_group("final")
    _write_eval(final.create_group("live"), record.final_live)
    _write_eval(final.create_group("pool"), record.final_pool)
    if record.architectures:
        architectures = final.create_group("architectures")
        architectures.attrs["order"] = np.asarray(list(record.architectures), dtype=h5py.string_dtype())
        for name, result in record.architectures.items():
            group = architectures.create_group(name)
            _write_mapping(group, result.network)
            _write_eval(group.create_group("live"), result.live)
            _write_eval(group.create_group("pool"), result.pool)


def _total_seconds(provenance: Mapping) -> float:
    """Wall seconds of the run: `seconds_total`, else the sum of `seconds` per phase, else NaN."""
    if "seconds_total" in provenance:
        return float(provenance["seconds_total"])
    phases = provenance.get("seconds")
    if isinstance(phases, Mapping):
        return float(sum(float(v) for v in phases.values()))
    if isinstance(phases, (int, float)):
        return float(phases)
    return math.nan


def _write_stage(group: h5py.Group, stage: StageRecord) -> None:
    group.attrs["epochs"] = np.int64(stage.epochs)
    group.attrs["stage_accuracy"] = float(stage.stage_accuracy)
    group.attrs["pool_pixels"] = np.int64(stage.pool_pixels)
    _write_poster(group, "poster", stage.poster)
    group.create_dataset("patch_labels", data=_float32(stage.patch_labels))
    if stage.label_map is not None:
        group.create_dataset("label_map", data=_float32(stage.label_map))
    group.create_dataset("pi_before", data=np.asarray(stage.pi_before, dtype=np.float64))
    group.create_dataset("pi_after", data=np.asarray(stage.pi_after, dtype=np.float64))
    _write_eval(group.create_group("accuracy"), stage.accuracy)
    in_stage = group.create_group("in_stage")
    for epoch, result in stage.in_stage:
        _write_eval(in_stage.create_group(f"{epoch:05d}"), result)


def _write_eval(group: h5py.Group, result: EvalResult) -> None:
    group.create_dataset("checkpoints", data=np.asarray(result.checkpoints, dtype=np.int64))
    group.create_dataset("per_net", data=_float64(result.per_net))
    group.create_dataset("mean", data=_float64(result.mean))
    group.create_dataset("members", data=np.asarray(result.members, dtype=np.int64))
    group.create_dataset("pi", data=np.asarray(result.pi, dtype=np.float64))
    group.attrs["pixels"] = np.int64(result.pixels)
    group.attrs["effective_ipc"] = float(result.effective_ipc)
    group.attrs["seconds"] = float(result.seconds)
    group.attrs["final"] = result.final
    group.attrs["best"] = result.best


def _write_poster(group: h5py.Group, name: str, poster: torch.Tensor) -> None:
    data = _float32(poster)
    # One chunk per poster: it is always read whole.
    group.create_dataset(name, data=data, chunks=data.shape, **_POSTER_COMPRESSION)


def _float32(tensor: torch.Tensor) -> np.ndarray:
    import torch

    return tensor.detach().to("cpu", torch.float32).numpy()


def _float64(tensor: torch.Tensor) -> np.ndarray:
    import torch

    return tensor.detach().to("cpu", torch.float64).numpy()


def _write_mapping(group: h5py.Group, mapping: Mapping) -> None:
    """Attributes of `group` for a mapping; nested mappings become subgroups."""
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            _write_mapping(group.create_group(str(key)), value)
        else:
            group.attrs[str(key)] = _attribute(value)


def _attribute(value: Any) -> Any:
    """An HDF5-storable form of one mapping value: None is empty, unknown types their str()."""
    import torch

    if value is None:
        return h5py.Empty("f4")
    if isinstance(value, str):
        return str(value)  # str subclasses (torch's TorchVersion) have no HDF5 type
    if isinstance(value, (bool, int, float, np.generic)):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return np.asarray(value, dtype=h5py.string_dtype())
    if isinstance(value, (list, tuple, np.ndarray, torch.Tensor)):
        array = np.asarray(value.cpu() if isinstance(value, torch.Tensor) else value)
        if array.dtype.kind in "biuf":
            return array
    # e.g. a torch.device or a mixed list: keep something readable rather than fail a finished run.
    return str(value)
