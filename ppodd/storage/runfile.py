"""One HDF5 file per run: its layout, an atomic writer, and readers that check the header first.

Layout of format "ppodd-run", format_version 1 (docs/hdf5.md says the same with MUST/MAY and shows
an `h5ls -r` listing). Symbols are ALGORITHM.md's: T stages (t = 1 … T), K classes, R × Q class
grid, H × W poster, N = n_x·n_y patches, h_l × w_l learned label map. Three more: S evaluation
checkpoints, `nets` evaluation networks, M members of an evaluated pool, U outer steps of the run.
Integers are int64, floats float64, strings variable-length UTF-8, accuracies percent (0–100),
unless a line says otherwise.

    /                       root attributes, the scalars a results table needs:
        format              str    "ppodd-run"
        format_version      int    1; readers refuse larger values
        complete            bool   False while writing, set True last (see `write_run`)
        ppodd_version       str    package version that wrote the file
        method              str    config `method` ("ppodd" | "podd")
        dataset             str    config `data.name`
        ipc                 float  config `poster.ipc`, the nominal budget (§2.2)
        seed                int    config `seed`
        variant             str    config `ppodd.variant` ("paper" | "code")
        stages              int    T, the number of /stages groups
        final_accuracy      float  = final_accuracy_pool, the reported number (§9)
        final_accuracy_live float  /final/live `final`
        final_accuracy_pool float  /final/pool `final`
        pixels_live         int    /final/live `pixels`: the honest budget (§2.2, D12)
        pixels_pool         int    /final/pool `pixels`: every poster the final nets draw from
        effective_ipc_live  float  /final/live `effective_ipc`
        effective_ipc_pool  float  /final/pool `effective_ipc`
        seconds             float  wall time of the run (provenance `seconds_total`, else the sum
                                   of provenance `seconds` per phase; NaN when neither is given)
        zca_key             str    key of the cached ZCA matrices, "" when ZCA is off
    /config_yaml            str, scalar dataset: the resolved config as YAML
    /provenance             group of attributes: ppodd and torch versions, git commit, device,
                            host, start and end time, seconds per phase (as the run recorded them)
    /seeds                  group of attributes: every seed the run used
    /geometry               group of attributes: height, width, tile, rows, cols, n_x, n_y,
                            pixels, effective_ipc
    /class_order            (R, Q) int64: class of tile (row, col) (§4)
    /class_names            (K,) str
    /initial_poster         (3, H, W) float32, gzip 4 + shuffle: the poster before distillation (§3)
    /curves/<name>          (U,) dtype as recorded, one value per outer step: stage, epoch, loss,
                            grad_norm, clip_threshold, warmup (whatever names the run recorded)
    /stages/<t>             one group per stage, named by t zero-padded to 3 digits ("001")
        attrs               epochs int, stage_accuracy float (A_t), pool_pixels int
        poster              (3, H, W) float32, gzip 4 + shuffle: the snapshot S_t (§10.6)
        patch_labels        (N, K) float32: label of every patch of S_t
        label_map           (K, h_l, w_l) float32; only with learned labels (§5.2)
        pi_before           (t,) float64: π the stage trained with, over [S_1 … S_{t-1}, live]
        pi_after            (t+1,) float64: π for the next stage, over [S_1 … S_t, live]
                            (members beyond a D9 cap have weight 0)
        accuracy/           eval group: the stage-end measurement behind A_t
        in_stage/<epoch>    eval group per in-stage evaluation, epoch zero-padded to 5 digits
    /final/live             eval group: the final live poster alone
    /final/pool             eval group: the final pool with its final π

    eval group (§9):
        checkpoints         (S,) int64: cumulative training steps at which the test set was scored
        per_net             (S, nets) float64: top-1 test accuracy of every net
        mean                (S,) float64: per_net averaged over the nets (stored for fast reading)
        members             (M,) int64: stage numbers of the pool members, 0 = live poster
        pi                  (M,) float64: sampling weight of each member
        attrs               pixels int, effective_ipc float, seconds float,
                            final float (mean at the last checkpoint), best float (max of mean)

Attribute groups (/provenance, /seeds, /geometry) hold str, bool, int, float and numeric or string
arrays; a nested mapping becomes a subgroup, None an empty attribute, any other value its str().
Only posters are compressed; everything else is small, contiguous and cheap to read.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import yaml
from h5py import h5a, h5d, h5g, h5s, h5t

from ppodd import __version__
from ppodd.errors import PpoddError
from ppodd.storage.record import EvalResult, RunRecord, StageRecord

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions that write or read back tensors, never at module level:
# `ppodd summarize` reads a thousand files through `read_summary` and importing torch alone costs
# seconds.

FORMAT_NAME = "ppodd-run"
FORMAT_VERSION = 1

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Posters are the only large arrays; everything else stays uncompressed so small reads stay cheap.
_POSTER_COMPRESSION = dict(compression="gzip", compression_opts=4, shuffle=True)
# libyaml parses a config about ten times faster; `summarize` parses one per file.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# What h5py, numpy and yaml raise on a damaged file that opened; readers report it as corrupt.
_DAMAGE = (OSError, KeyError, ValueError, TypeError, IndexError, RuntimeError, yaml.YAMLError)


class StoreError(PpoddError):
    """A run file that cannot be read as one finished run; `reason` names the case in one word."""

    reason = "unreadable"

    def __init__(self, path: str | Path, detail: str) -> None:
        self.path = Path(path)
        # `summarize` prints one line per bad file, so the message must be one line.
        super().__init__(" ".join(f"{path}: {detail}".split()))


class MissingFileError(StoreError):
    """The path does not exist."""

    reason = "missing"


class CorruptFileError(StoreError):
    """Not an HDF5 file, or an HDF5 file that is truncated or damaged."""

    reason = "corrupt"


class ForeignFileError(StoreError):
    """An HDF5 file that is not a ppodd run (no or another `format`, unknown `format_version`)."""

    reason = "foreign"


class NewerFormatError(StoreError):
    """A run file from a newer schema than this ppodd reads; bad input where one file is expected."""

    reason = "newer"
    exit_code = 2


class IncompleteFileError(StoreError):
    """A run file whose `complete` flag is missing or False."""

    reason = "incomplete"


# --- writing -----------------------------------------------------------------------------------


def write_run(record: RunRecord, path: Path) -> Path:
    """The path of the finished run file, which appears atomically with `complete = True`.

    Writes to `.<name>.<pid>.tmp` in the same folder, fsyncs it, sets `complete` last, then
    renames it onto `path`; on any exception the temporary file is removed and the exception
    re-raised, so `path` is either absent, the previous file, or this run complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # locking=False: HDF5 file locks fail on some cluster file systems; the rename already
        # keeps readers away from a file being written.
        with h5py.File(tmp, "w", locking=False) as f:
            _write_layout(f, record)
            f.flush()
            os.fsync(f.id.get_vfd_handle())
            f.attrs["complete"] = True
        _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
    except BaseException:
        # BaseException too: a Slurm preemption (KeyboardInterrupt, SystemExit) must not leave
        # a stray temporary file behind either.
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    # Makes the rename durable; some platforms and file systems refuse to fsync a directory.
    try:
        _fsync(folder, os.O_RDONLY)
    except OSError:
        pass


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


# --- reading -----------------------------------------------------------------------------------


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
    Raises a StoreError subclass for a missing, corrupt, foreign, newer or incomplete file.
    """
    return _read_checked(Path(path), _SCORES_READERS)


def _read_checked(path: Path, readers: Mapping[int, Callable[[h5py.File], Any]]) -> Any:
    """What `readers[format_version]` returns for the open file, once its header checks out."""
    if not path.exists():
        raise MissingFileError(path, "no such file")
    if not path.is_file():
        raise CorruptFileError(path, "not a file")
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as err:
        raise _open_failure(path, err) from None
    try:
        with f:
            version = _check_header(path, f.id, readers)
            result = readers[version](f)
    except _DAMAGE as err:
        raise CorruptFileError(path, f"damaged run file ({type(err).__name__}: {err})") from None
    if isinstance(result, dict):
        result["path"] = str(path)
    return result


def _open_failure(path: Path, err: OSError) -> StoreError:
    """Why h5py could not open `path`: not HDF5 at all, or an HDF5 file cut short or damaged."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_HDF5_SIGNATURE))
    except OSError as read_err:
        return StoreError(path, f"cannot read: {read_err.strerror or read_err}")
    if head != _HDF5_SIGNATURE:
        return CorruptFileError(path, "not an HDF5 file")
    return CorruptFileError(path, f"truncated or corrupt HDF5 file ({err})")


def _check_header(path: Path, root: h5py.h5g.GroupID, readers: Mapping) -> int:
    """The file's format_version, after checking format, version and the complete flag."""
    fmt = _attr(root, "format") if h5a.exists(root, b"format") else None
    if fmt != FORMAT_NAME:
        found = "no 'format' attribute" if fmt is None else f"format {fmt!r}"
        raise ForeignFileError(path, f"not a ppodd run file ({found}, expected {FORMAT_NAME!r})")
    version = _attr(root, "format_version") if h5a.exists(root, b"format_version") else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise ForeignFileError(path, f"format_version {version!r} is not an integer")
    if version > FORMAT_VERSION:
        raise NewerFormatError(path, f"written by a newer ppodd (format_version {version} > "
                                     f"{FORMAT_VERSION}); upgrade ppodd to read it")
    if version not in readers:
        known = ", ".join(str(v) for v in sorted(readers))
        raise ForeignFileError(path, f"format_version {version} is unknown (known: {known})")
    if not (h5a.exists(root, b"complete") and _attr(root, "complete") is True):
        raise IncompleteFileError(path, "incomplete: the run has not finished or was interrupted")
    return version


# `summarize` reads a thousand files at a time: h5py's low-level calls below open an attribute
# or a dataset by path without building high-level objects, about twice as fast per read.


def _attr(loc: h5py.h5g.GroupID, name: str, member: str = ".") -> Any:
    """Attribute `name` of the object at `member` (relative to loc) as a plain Python value."""
    return _attr_value(h5a.open(loc, name.encode(), obj_name=member.encode()))


def _attr_value(attr: h5a.AttrID) -> Any:
    if attr.shape is None:  # a null dataspace: how `_attribute` stores None
        return None
    value = np.empty(attr.shape, dtype=attr.dtype)
    attr.read(value)
    return _plain(value)


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


def _plain(value: np.ndarray) -> Any:
    """A Python scalar or (nested) list for an array read from the file; bytes become str."""
    if value.dtype.kind in "OS":  # variable-length (ours) and fixed-length strings are bytes
        decoded = [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v
                   for v in value.ravel().tolist()]
        return decoded[0] if value.ndim == 0 else np.array(decoded).reshape(value.shape).tolist()
    return value.tolist()


def _read_mapping(group: h5py.Group) -> dict:
    """The mapping `_write_mapping` stored in `group`: its attributes, subgroups nested."""
    loc = group.id
    out = {}
    for index in range(h5a.get_num_attrs(loc)):
        attr = h5a.open(loc, index=index)
        out[attr.name.decode("utf-8")] = _attr_value(attr)
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


# --- output folders ----------------------------------------------------------------------------


def check_writable(folder: Path, need_bytes: int) -> None:
    """Nothing when `folder` exists (or was created), takes a new file and has need_bytes free.

    Raises PpoddError naming the folder, and for space the free and needed bytes, so a run
    fails before its work rather than at the final write.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PpoddError(f"cannot create output folder {folder}: {err.strerror or err}") from None
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ppodd-write-check-",
                                         suffix=".tmp") as probe:
            probe.write(b"x")
            probe.flush()
    except OSError as err:
        raise PpoddError(f"cannot write in output folder {folder}: {err.strerror or err}") from None
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise PpoddError(f"not enough space in output folder {folder}: {free} bytes free, "
                         f"{need_bytes} bytes needed")
