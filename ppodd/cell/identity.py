"""A cell's identity: its name, its files, and whether its result is complete.

A cell is one resolved config. Its files sit side by side in the results folder and share one
stem, `METHOD-DATASET-ipcIPC-seedSEED-DIGEST`, where the digest hashes the fields that shape the
result (`config_digest`), not where or how fast it runs. Every layer that needs a cell's
files (`ppodd run`, the grid, array tasks, `status`) takes them from `cell_files`, and every
"is it done?" is `is_complete`, which reads the run file's header and nothing else.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ppodd.atomic import leftover_temporaries
from ppodd.config import RunConfig, to_dict
from ppodd.storage.runfile import NewerFormatError, StoreError, read_header

# The config keys that say where or how fast a run goes, not what it computes: moving the data
# folder, the cache, the device, the thread count, the checkpoint cadence, splitting the real batch
# into chunks (the same gradient by construction), the test batch, or how the evaluation nets are
# batched and compiled (the same numbers up to rounding) leaves a cell the same cell.
# They stay out of the cell's digest, so a rerun elsewhere finds and resumes its files, and out of
# the summary's settings, so they never split a table row.
RUN_ONLY_KEYS = ("device", "threads", "checkpoint_minutes", "data.root", "data.cache_dir", "data.download",
                 "distill.real_subbatch", "eval.test_batch", "eval.batching", "eval.compile")

# Keys added after cells were first named, each with the value at which a run computes what it
# computed before the key existed. At that value the key stays out of the digest, so a cell keeps
# its name and a rerun finds its result; any other value names another cell.
LATER_KEYS = {"eval.model": "convnet", "eval.models": [], "eval.width": 0, "eval.depth": 0,
              "eval.norm": "auto", "eval.pool": "avg", "eval.optimizer": "adam", "eval.momentum": 0.9,
              "eval.weight_decay": 0.0, "eval.augment": None, "data.image_size": 0, "data.resize": "squash",
              "precision": "ieee"}


def result_fields(cfg: RunConfig) -> dict:
    """The config as a mapping without RUN_ONLY_KEYS and the LATER_KEYS at their earlier value
    (and PoDD's inert decay anchor at one value): everything that shapes a result."""
    out = to_dict(cfg)
    for key in RUN_ONLY_KEYS + tuple(LATER_KEYS):
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node[part]
        if key in RUN_ONLY_KEYS or node[last] == LATER_KEYS[key]:
            del node[last]
    if cfg.method == "podd":
        # PoDD trains one poster, so the decay's direction (D3) never weighs a pool: its cells keep
        # the names they had before the `paper` variant's anchor moved from oldest to newest.
        out["ppodd"]["decay_anchor"] = "oldest"
    return out


def config_digest(cfg: RunConfig) -> str:
    """A short, stable hash of everything that shapes a result (it names the cell's files)."""
    return _digest(result_fields(cfg))


def legacy_digest(cfg: RunConfig) -> str:
    """The digest ppodd 0.1 named files with: every field, RUN_ONLY_KEYS included."""
    return _digest(to_dict(cfg))


def _digest(fields: dict) -> str:
    text = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class CellFiles:
    """The files of one cell: its result, and the digest its checkpoint must carry.

    The digest is empty where only the paths matter (`status` reading a manifest).
    """

    result: Path
    digest: str = ""

    @property
    def name(self) -> str:
        """The stem every file of the cell shares; it names the cell in logs, manifest and status."""
        return self.result.stem

    @property
    def checkpoint(self) -> Path:
        """The unfinished run's state, beside the result until the result is written."""
        return self.result.with_suffix(".ckpt")

    @property
    def lock(self) -> Path:
        """The `fcntl` lock file that keeps two runs of the cell apart (storage.lock)."""
        return self.result.with_suffix(".lock")

    @property
    def state(self) -> Path:
        """Where an array task records running / requeued / failed for `ppodd status`."""
        return self.result.with_name(self.name + ".state.json")

    def temporaries(self) -> list[Path]:
        """Files that writers of this cell's result and checkpoint left under temporary names.

        Any process's, not only this one's: they are stale once the cell's lock is held.
        """
        return [tmp for target in (self.result, self.checkpoint) for tmp in leftover_temporaries(target)]


def result_name(cfg: RunConfig, digest: str | None = None) -> str:
    """The file name of a cell's result: readable fields plus the digest of what shapes it."""
    return (f"{cfg.method}-{cfg.data.name}-ipc{cfg.poster.ipc:g}-seed{cfg.seed}-"
            f"{digest or config_digest(cfg)}.h5")


def cell_files(cfg: RunConfig, out_dir: Path) -> CellFiles:
    """The files of `cfg`'s cell in `out_dir`.

    A cell that ppodd 0.1 started or finished there, under its digest of every field, keeps its
    files: a rerun of the grid that wrote them finds them instead of starting over.
    """
    out_dir = Path(out_dir)
    current = CellFiles(out_dir / result_name(cfg), config_digest(cfg))
    if current.result.exists() or current.checkpoint.exists():
        return current
    legacy = CellFiles(out_dir / result_name(cfg, legacy_digest(cfg)), legacy_digest(cfg))
    if legacy.result.exists() or legacy.checkpoint.exists():
        return legacy
    return current


def is_complete(path: Path) -> bool:
    """True when `path` holds a finished run file; its header alone is read.

    False for a missing, incomplete, corrupt or foreign file (the cell runs again); a file of a
    newer ppodd raises NewerFormatError, since overwriting it would destroy a result.
    """
    try:
        read_header(path)
    except NewerFormatError:
        raise
    except StoreError:
        return False
    return True
