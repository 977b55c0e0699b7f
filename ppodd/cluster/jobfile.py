"""Named experiment grids: the `jobs/*.yaml` files that `ppodd submit JOB` expands into cells.

A job file names a run preset and the axes of its grid, so that a table of the paper is one
command and the grid is written down next to the code that runs it::

    description: Table II - new-stage boost at 0.9 IPC
    config: ../configs/cifar10.yaml   # relative to this file
    method: ppodd                     # or a list
    ipc: 0.9                          # or a list
    seeds: 0-4                        # 0-4, "0,2,5" or a list of integers
    set: {eval.nets: 8}               # overrides applied to every cell
    grid: {ppodd.boost: [1.5, 0.0]}   # one axis per key
    variants:                         # named override sets, one more axis (not a cross product)
      podd: {method: podd}
      paper-newest: {method: ppodd, ppodd.decay_anchor: newest}
    out: results/table2-boost         # default results folder (relative to the working folder)

Options given on the command line take precedence over the file's entries.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ppodd.cluster.grid import parse_seeds
from ppodd.config import parse_override, read_yaml
from ppodd.errors import ConfigError

KEYS = ("description", "config", "method", "ipc", "seeds", "set", "grid", "variants", "out")


@dataclass(frozen=True)
class Experiment:
    """A job file's contents, as `ppodd submit` options; empty lists mean "the config's value"."""

    path: Path
    description: str
    config: Path | None
    methods: list[str]
    ipcs: list[Any]
    seeds: list[int]
    sets: list[tuple[str, Any]]
    grid: list[tuple[str, list[Any]]]
    out: Path | None
    variants: list[tuple[str, list[tuple[str, Any]]]] = field(default_factory=list)


def load_experiment(path: Path) -> Experiment:
    """The experiment in a job file; ConfigError naming the file and key for anything malformed."""
    path = Path(path)
    raw = read_yaml(path)
    where = f"job file {str(path)!r}"
    for key in raw:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint}; allowed: {', '.join(KEYS)}")
    config = raw.get("config")
    if config is not None and not isinstance(config, str):
        raise ConfigError(f"{where}: config must be a path, got {config!r}")
    out = raw.get("out")
    if out is not None and not isinstance(out, str):
        raise ConfigError(f"{where}: out must be a path, got {out!r}")
    return Experiment(
        path=path,
        description=str(raw.get("description", "")),
        config=(path.parent / config) if config else None,
        methods=_items(where, "method", raw.get("method")),
        ipcs=_items(where, "ipc", raw.get("ipc")),
        seeds=_seeds(where, raw.get("seeds")),
        sets=_overrides(where, raw.get("set")),
        grid=_grid(where, raw.get("grid")),
        out=Path(out) if out else None,
        variants=_variants(where, raw.get("variants")),
    )


def _items(where: str, key: str, value: Any) -> list[Any]:
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not values or any(isinstance(v, (list, dict)) or v is None for v in values):
        raise ConfigError(f"{where}: {key} must be a value or a non-empty list of values, got {value!r}")
    return values


def _seeds(where: str, value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, list):
        if not value or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value):
            raise ConfigError(f"{where}: seeds must be non-negative integers, got {value!r}")
        return list(dict.fromkeys(value))
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"{where}: seeds must be like 0-4, '0,2,5' or a list, got {value!r}")
    return parse_seeds(str(value))


def _overrides(where: str, value: Any) -> list[tuple[str, Any]]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [(str(k), v) for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [parse_override(text) for text in value]
    raise ConfigError(f"{where}: set must map keys to values (e.g. {{eval.nets: 8}}), got {value!r}")


def _grid(where: str, value: Any) -> list[tuple[str, list[Any]]]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: grid must map keys to lists of values, e.g. {{ppodd.boost: [1.5, 0.0]}}")
    return [(str(k), _items(where, f"grid {k}", v)) for k, v in value.items()]


def _variants(where: str, value: Any) -> list[tuple[str, list[tuple[str, Any]]]]:
    if value is None:
        return []
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{where}: variants must map names to overrides, e.g. {{podd: {{method: podd}}}}")
    out = []
    for name, overrides in value.items():
        if not isinstance(overrides, dict) or not overrides:
            raise ConfigError(f"{where}: variant {name!r} must map keys to values, e.g. {{ppodd.variant: code}}")
        out.append((str(name), [(str(k), v) for k, v in overrides.items()]))
    return out
