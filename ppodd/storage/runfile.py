"""The run file: one HDF5 file per run, its layout, its error family, and the header check.

Writing is `storage.writer`, reading `storage.reader`; both follow the layout below.

Layout of format "ppodd-run", format_version 1 (docs/hdf5.md says the same with MUST/MAY and shows
an `h5ls -r` listing). Symbols are those of docs/method.md: T stages (t = 1 … T), K classes, R × Q class
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
    /final/architectures    optional, only with config `eval.models` (§9): attrs order (str array,
                            the names as listed); one group per name (convnet, resnet18, vgg11,
                            alexnet) with attrs arch, width, norm (ConvNet also depth, pool) as the
                            network ran, and eval groups live and pool: the final live poster and
                            pool on that network. Readers without it ignore it (format_version 1).

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

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml
from h5py import h5a

from ppodd.errors import PpoddError

FORMAT_NAME = "ppodd-run"
FORMAT_VERSION = 1
# Every format_version this ppodd reads; `storage.reader` has a reader of each.
KNOWN_VERSIONS = (1,)

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# What h5py, numpy and yaml raise on a damaged file that opened; readers report it as corrupt.
_DAMAGE = (OSError, KeyError, ValueError, TypeError, IndexError, RuntimeError, yaml.YAMLError)


class StoreError(PpoddError):
    """A run file that cannot be read as one finished run; `reason` names the case in one word."""

    reason = "unreadable"

    def __init__(self, path: str | Path, detail: str) -> None:
        self.path = Path(path)
        # `summarize` prints one line per bad file, so the message must be one line.
        super().__init__(" ".join(f"{path}: {detail}".split()))


# Where one run file is expected (`plot`, `evaluate`), a path that names none is bad input (exit 2);
# a run file that is damaged or unfinished is a failure (exit 1). `summarize` reports both per file.


class MissingFileError(StoreError):
    """The path does not exist."""

    reason = "missing"
    exit_code = 2


class CorruptFileError(StoreError):
    """Not an HDF5 file, or an HDF5 file that is truncated or damaged."""

    reason = "corrupt"


class NotRunFileError(CorruptFileError):
    """Not a file, or a file without HDF5's signature (a YAML, a PNG): not what was asked for."""

    exit_code = 2


class ForeignFileError(StoreError):
    """An HDF5 file that is not a ppodd run (no or another `format`, unknown `format_version`)."""

    reason = "foreign"
    exit_code = 2


class NewerFormatError(StoreError):
    """A run file from a newer schema than this ppodd reads; bad input where one file is expected."""

    reason = "newer"
    exit_code = 2


class IncompleteFileError(StoreError):
    """A run file whose `complete` flag is missing or False."""

    reason = "incomplete"


# --- opening a file and checking its header ---------------------------------------------------


def read_header(path: Path) -> dict:
    """The format_version, reported accuracy and wall seconds of a finished run file, from its
    root attributes.

    No dataset is read: this is the cheap "is this result complete?" of `run`, `submit` and
    `status`. Raises a StoreError subclass for a missing, corrupt, foreign, newer or incomplete
    file, like every reader.
    """
    def header(f: h5py.File) -> dict:
        return {"format_version": attr(f.id, "format_version"),
                "final_accuracy": attr(f.id, "final_accuracy"), "seconds": attr(f.id, "seconds")}

    return read_checked(Path(path), {version: header for version in KNOWN_VERSIONS})


def read_checked(path: Path, readers: Mapping[int, Callable[[h5py.File], Any]]) -> Any:
    """What `readers[format_version]` returns for the open file, once its header checks out."""
    if not path.exists():
        raise MissingFileError(path, "no such file")
    if not path.is_file():
        raise NotRunFileError(path, "not a file")
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as err:
        raise _open_failure(path, err) from None
    try:
        with f:
            version = check_header(path, f.id, readers)
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
        return NotRunFileError(path, "not an HDF5 file")
    return CorruptFileError(path, f"truncated or corrupt HDF5 file ({err})")


def check_header(path: Path, root: h5py.h5g.GroupID, readers: Mapping) -> int:
    """The file's format_version, after checking format, version and the complete flag."""
    fmt = attr(root, "format") if h5a.exists(root, b"format") else None
    if fmt != FORMAT_NAME:
        found = "no 'format' attribute" if fmt is None else f"format {fmt!r}"
        raise ForeignFileError(path, f"not a ppodd run file ({found}, expected {FORMAT_NAME!r})")
    version = attr(root, "format_version") if h5a.exists(root, b"format_version") else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise ForeignFileError(path, f"format_version {version!r} is not an integer")
    if version > FORMAT_VERSION:
        raise NewerFormatError(path, f"written by a newer ppodd (format_version {version} > "
                                     f"{FORMAT_VERSION}); upgrade ppodd to read it")
    if version not in readers:
        known = ", ".join(str(v) for v in sorted(readers))
        raise ForeignFileError(path, f"format_version {version} is unknown (known: {known})")
    if not (h5a.exists(root, b"complete") and attr(root, "complete") is True):
        raise IncompleteFileError(path, "incomplete: the run has not finished or was interrupted")
    return version


# `summarize` reads a thousand files at a time: h5py's low-level calls below open an attribute
# or a dataset by path without building high-level objects, about twice as fast per read.


def attr(loc: h5py.h5g.GroupID, name: str, member: str = ".") -> Any:
    """Attribute `name` of the object at `member` (relative to loc) as a plain Python value."""
    return attr_value(h5a.open(loc, name.encode(), obj_name=member.encode()))


def attr_value(attr: h5a.AttrID) -> Any:
    if attr.shape is None:  # a null dataspace: how `_attribute` stores None
        return None
    value = np.empty(attr.shape, dtype=attr.dtype)
    attr.read(value)
    return plain(value)



def plain(value: np.ndarray) -> Any:
    """A Python scalar or (nested) list for an array read from the file; bytes become str."""
    if value.dtype.kind in "OS":  # variable-length (ours) and fixed-length strings are bytes
        decoded = [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v
                   for v in value.ravel().tolist()]
        return decoded[0] if value.ndim == 0 else np.array(decoded).reshape(value.shape).tolist()
    return value.tolist()

