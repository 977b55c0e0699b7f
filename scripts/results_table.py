"""Print a markdown table of run files and reference-poster JSONs (used for docs/results-cpu.md).

    python scripts/results_table.py results/cpu/*.h5 results/cpu/baseline-*.json
"""

import json
import sys
from pathlib import Path

from ppodd.store import read_summary


def rows(paths):
    for path in map(Path, paths):
        if path.suffix == ".json":
            row = json.loads(path.read_text())
            yield (f"reference: {row['poster']} poster", row["checkpoints"], row["mean"], row["pixels"],
                   row["effective_ipc"], row["seconds"])
            continue
        s = read_summary(path)
        for part in ("live", "pool"):
            e = s["final"][part]
            if s["method"] == "podd" and part == "pool":
                continue
            name = f"{s['method']} ({'final live poster' if part == 'live' else 'final pool'})"
            yield name, list(e["checkpoints"]), list(e["mean"]), e["pixels"], e["effective_ipc"], s["seconds"]


def main(paths):
    table = list(rows(paths))
    checkpoints = table[0][1]
    print("| poster | " + " | ".join(f"{c} steps" for c in checkpoints) + " | pixels | effective IPC | run seconds |")
    print("|---|" + "---|" * (len(checkpoints) + 3))
    for name, _, mean, pixels, ipc, seconds in table:
        cells = " | ".join(f"{m:.2f}" for m in mean)
        print(f"| {name} | {cells} | {pixels} | {ipc:.3f} | {seconds:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
