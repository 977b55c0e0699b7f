"""Which files a summary reads, and reading them: run files, reference JSONs, grid manifests.

A path argument is a file, a folder (searched recursively for `*.h5` run files, reference
JSONs written by `ppodd evaluate --json` and `manifest.json` of `ppodd submit`) or a glob
(`results/*/ppodd-*.h5`, `**` recursive). A file that cannot be used becomes a `Problem`, one line
naming it and the reason; it never stops the others.
"""

from __future__ import annotations

import glob
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
import yaml

from ppodd.errors import PpoddError
from ppodd.storage.manifest import MANIFEST, read_manifest
from ppodd.storage.reader import read_scores
from ppodd.storage.runfile import IncompleteFileError, StoreError
from ppodd.report.records import incomplete_record, reference_record, run_record

# A reference JSON of `ppodd evaluate --json` has these keys.
_REFERENCE_KEYS = frozenset({"poster", "checkpoints", "mean", "pixels", "effective_ipc"})
# Below this many files a process pool costs more than it saves.
_PARALLEL_FROM = 64


@dataclass(frozen=True)
class Problem:
    """A path that could not be summarised: `reason` is one word, `message` one line naming it."""

    file: str
    reason: str
    message: str


@dataclass(frozen=True)
class Sources:
    """What the path arguments name: files to read, grid manifests, and arguments that named nothing."""

    files: list[Path]
    manifests: list[Path]
    problems: list[Problem]


def collect(arguments: list[str]) -> Sources:
    """The files, manifests and problems of path arguments, each file once, in argument order."""
    files: list[Path] = []
    manifests: list[Path] = []
    problems: list[Problem] = []
    for argument in arguments:
        paths = [argument]
        if not Path(argument).is_dir() and glob.has_magic(argument):
            paths = sorted(glob.glob(argument, recursive=True))
            if not paths:
                problems.append(Problem(argument, "missing", f"{argument}: no file matches"))
        for path in map(Path, paths):
            if path.is_dir():
                found, found_manifests = _folder(path)
                files += found
                manifests += found_manifests
            elif path.name == MANIFEST:
                manifests.append(path)
            else:
                files.append(path)  # a missing file is reported when it is read
    return Sources(_unique(files), _unique(manifests), problems)


def _folder(folder: Path) -> tuple[list[Path], list[Path]]:
    """Run files, reference JSONs and manifests under `folder`, sorted; hidden files skipped
    (a run being written is `.<name>.<pid>.tmp`)."""
    files, manifests = [], []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(root) / name
            if name.startswith("."):
                continue
            if name == MANIFEST:
                manifests.append(path)
            elif name.endswith(".h5") or (name.endswith(".json") and not name.endswith(".state.json")
                                          and _is_reference(path)):
                files.append(path)
    return files, manifests


def _is_reference(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and _REFERENCE_KEYS <= data.keys()


def _unique(paths: list[Path]) -> list[Path]:
    seen: set[str] = set()
    out = []
    for path in paths:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out


def read_file(path: Path) -> tuple[dict | None, Problem | None]:
    """(record, None) for a usable file; (incomplete record or None, problem) for a bad one."""
    if path.suffix == ".json":
        return _read_reference(path)
    try:
        return run_record(read_scores(path), str(path)), None
    except IncompleteFileError as err:
        return _unfinished(path, str(err)), Problem(str(path), err.reason, str(err))
    except StoreError as err:
        return None, Problem(str(path), err.reason, str(err))


def _read_reference(path: Path) -> tuple[dict | None, Problem | None]:
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        return None, Problem(str(path), "missing" if not path.exists() else "unreadable",
                             f"{path}: {'no such file' if not path.exists() else err.strerror}")
    except ValueError:
        return None, Problem(str(path), "corrupt", f"{path}: not JSON")
    if not (isinstance(data, dict) and _REFERENCE_KEYS <= data.keys()):
        return None, Problem(str(path), "foreign", f"{path}: not a reference poster written by "
                                                   "`ppodd evaluate --json`")
    try:
        return reference_record(data, str(path)), None
    except (KeyError, TypeError, ValueError, IndexError) as err:
        return None, Problem(str(path), "corrupt", f"{path}: damaged reference JSON ({err!r})")


def _unfinished(path: Path, reason: str) -> dict | None:
    """The incomplete record of a run file whose writer has not set `complete`, from the root
    attributes it writes first; None when even those cannot be read."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            a = f.attrs
            config = yaml.safe_load(f["config_yaml"][()]) if "config_yaml" in f else None
            return incomplete_record(str(path), "incomplete file", str(a["method"]), str(a["dataset"]),
                                     float(a["ipc"]), int(a["seed"]), str(a["variant"]), config)
    except (OSError, KeyError, ValueError, TypeError, yaml.YAMLError):
        return None


def read_files(paths: list[Path], workers: int = 0) -> tuple[list[dict], list[Problem]]:
    """Records and problems of `paths`, in order; `workers` processes (0: one per CPU, at most 8)."""
    workers = workers or min(8, os.cpu_count() or 1)
    if workers > 1 and len(paths) >= _PARALLEL_FROM:
        chunk = max(1, len(paths) // (workers * 4))
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(read_file, paths, chunksize=chunk))
    else:
        results = [read_file(path) for path in paths]
    records = [r for r, _ in results if r is not None]
    return records, [p for _, p in results if p is not None]


def manifest_records(manifests: list[Path], records: list[dict]) -> tuple[list[dict], list[Problem]]:
    """Incomplete records for the cells of grid manifests that have no complete result among
    `records` (queued, running, failed or interrupted), and problems for unreadable manifests."""
    have = {os.path.realpath(r["file"]) for r in records}
    out, problems = [], []
    for manifest in manifests:
        try:
            cells = read_manifest(manifest.parent)["cells"]
            for cell in cells.values():
                path = manifest.parent / cell["file"]
                if os.path.realpath(path) in have:
                    continue
                config = cell["config"]
                reason = "no result file" if not path.exists() else "result not readable"
                out.append(incomplete_record(str(path), reason, config["method"], config["data"]["name"],
                                             config["poster"]["ipc"], config["seed"],
                                             config["ppodd"]["variant"], config))
        except PpoddError as err:
            problems.append(Problem(str(manifest), "corrupt", str(err)))
        except (KeyError, TypeError, AttributeError) as err:
            problems.append(Problem(str(manifest), "corrupt",
                                    f"{manifest}: not a readable ppodd manifest ({type(err).__name__})"))
    return out, problems


def gather(arguments: list[str], workers: int = 0) -> tuple[list[dict], list[Problem]]:
    """Every record the path arguments lead to (runs, references, cells of grid manifests that
    have no result yet) and every problem met on the way."""
    sources = collect(arguments)
    records, problems = read_files(sources.files, workers)
    pending, manifest_problems = manifest_records(sources.manifests, records)
    return records + pending, sources.problems + problems + manifest_problems
