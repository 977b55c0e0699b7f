"""The grid: the cells of a cross product of methods, IPCs, config axes and seeds.

A cell is one resolved config and its files (`cell.identity`). `expand_grid` builds every cell
of a grid once, on the submit side; array tasks, the manifest and `status` use those cells.
Values arrive typed (from a job file's YAML or parsed once from the command line), never as text
to parse again.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppodd.cell.identity import CellFiles, cell_files
from ppodd.config import METHODS, apply_overrides, build_config, format_override, parse_value, read_yaml, to_dict
from ppodd.errors import ConfigError

# A grid above MAX_CELLS cells needs `submit --yes`: a slip in --seeds or --grid should not queue
# thousands of GPU jobs. MAX_SEEDS bounds --seeds whatever --yes says.
MAX_CELLS = 500
MAX_SEEDS = 100_000

Axis = tuple[str, list[Any]]
# A named set of overrides that the grid applies together.
Variant = tuple[str, list[tuple[str, Any]]]


@dataclass(frozen=True)
class Cell:
    """One cell of a grid: the overrides that make it, its resolved config and its files."""

    overrides: tuple[str, ...]
    config: dict
    files: CellFiles

    @property
    def name(self) -> str:
        """The stem of the cell's files, which names the cell everywhere (logs, manifest, status)."""
        return self.files.name

    @property
    def path(self) -> Path:
        """The cell's result file."""
        return self.files.result


def parse_seeds(spec: str) -> list[int]:
    """The seeds of a spec such as `0-4`, `0,2,5` or `0-4,9`, in order and without repeats.

    At most MAX_SEEDS seeds, counted before any list is built, so a slip such as `0-1000000000`
    fails at once instead of filling memory.
    """
    ranges = []
    if not spec.strip():
        raise ConfigError(f"--seeds {spec!r}: empty; expected N, A-B or a comma-separated list of them "
                          "(e.g. 0-4,9), or leave --seeds out to keep the config's seed")
    for part in spec.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise ConfigError(f"--seeds {spec!r}: {part!r} is not a seed or a range; "
                              "allowed: N, A-B with A <= B, comma-separated (e.g. 0-4,9)")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            raise ConfigError(f"--seeds {spec!r}: range {part!r} runs backwards; write {hi}-{lo}")
        ranges.append((lo, hi))
    count = sum(hi - lo + 1 for lo, hi in ranges)
    if count > MAX_SEEDS:
        raise ConfigError(f"--seeds {spec!r}: {count} seeds; allowed at most {MAX_SEEDS}")
    return list(dict.fromkeys(s for lo, hi in ranges for s in range(lo, hi + 1)))


def parse_list(option: str, text: str) -> list[str]:
    """The non-empty comma-separated items of an option's value; an empty value is an error, not
    "keep the config's value" (leaving the option out says that)."""
    if not text.strip():
        raise ConfigError(f"{option} {text!r}: empty; expected a comma-separated list, or leave {option} out "
                          "to keep the config's value")
    items = [t.strip() for t in text.split(",")]
    if any(not t for t in items):
        raise ConfigError(f"{option} {text!r}: expected a comma-separated list without empty items")
    return items


def parse_values(option: str, text: str) -> list[Any]:
    """The comma-separated values of an option, each read as YAML once (`0.6,0.9` -> [0.6, 0.9])."""
    return [parse_value(option, item) for item in parse_list(option, text)]


def parse_grid(items: list[str]) -> list[Axis]:
    """The axes of `--grid key=v1,v2` options: (dotted key, values read as YAML)."""
    axes = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,... e.g. ppodd.boost=0,1.5")
        axes.append((key.strip(), parse_values(f"--grid {key.strip()}", values)))
    return axes


def expand_grid(config: Path | None, sets: list[tuple[str, Any]], methods: list[str], ipcs: list[Any],
                seeds: list[int], grid: list[Axis], out: Path, max_cells: int | None = None,
                variants: list[Variant] | None = None) -> list[Cell]:
    """Every cell of the cross product variant × method × IPC × grid axes × seed, validated,
    duplicates dropped.

    An empty axis keeps the config's value. A variant is a named set of overrides applied
    together (e.g. PoDD, and P-PoDD under two readings), so a grid can hold settings that are not
    a cross product. Seeds vary fastest, so the seeds of one setting sit next to each other in
    the array. A grid of more than `max_cells` cells (None: no limit) is refused before any cell
    is built.
    """
    variants = variants or []
    sizes = [("variants", len(variants)), ("--method", len(methods)), ("--ipc", len(ipcs)),
             *((f"--grid {k}", len(v)) for k, v in grid), ("--seeds", len(seeds))]
    total = math.prod(n for _, n in sizes if n)
    if max_cells is not None and total > max_cells:
        shape = " x ".join(f"{n} ({name})" for name, n in sizes if n > 1)
        raise ConfigError(f"grid of {total} cells ({shape}) is above {max_cells}; "
                          "add --yes to submit it, or narrow --seeds, --ipc or --grid")
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"--method {m!r}: allowed {', '.join(METHODS)}")
    raw = read_yaml(config) if config is not None else {}
    # Every axis is a list of entries, each entry the overrides it applies.
    axes = [[tuple(pairs) for _, pairs in variants], [(("method", m),) for m in methods],
            [(("poster.ipc", i),) for i in ipcs]]
    axes += [[((key, v),) for v in values] for key, values in grid]
    axes.append([(("seed", s),) for s in seeds])
    folder = Path(out).absolute()
    cells: dict[Path, Cell] = {}
    for combo in itertools.product(*[a for a in axes if a]):
        pairs = [pair for entry in combo for pair in entry]
        cfg = build_config(apply_overrides(raw, list(sets) + pairs))
        files = cell_files(cfg, folder)
        overrides = tuple(format_override(key, value) for key, value in pairs)
        cells.setdefault(files.result, Cell(overrides, to_dict(cfg), files))
    return list(cells.values())
