"""A summary (see `summary.summarize`) as text for a terminal, Markdown, CSV or JSON.

Text and Markdown show the same tables: per data set the final accuracy by IPC, the accuracy at
every evaluation checkpoint, the accuracy on every evaluation architecture (when runs were scored
on several) and one table per ablation axis, with notes on missing seeds and incomplete runs. CSV holds the same numbers at full precision in one long table (column `table`
says which); JSON holds everything, one record per run included. docs/summary.md describes each.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

from ppodd.report.records import SCORES
from ppodd.report.summary import by_dataset, group_label, ipc_label, setting_label

FORMATS = ("table", "markdown", "csv", "json")
JSON_FORMAT = "ppodd-summary"
JSON_VERSION = 1


@dataclass
class Table:
    """A titled grid of text cells with notes under it."""

    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _num(value: float | None, digits: int = 2, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _mean_std(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "–"
    return _num(mean) if std is None else f"{_num(mean)} ± {_num(std)}"


def _flag(group: dict) -> str:
    return " !" if group["missing_seeds"] or group["incomplete_seeds"] or group["duplicate_seeds"] else ""


def _notes(groups: list[dict]) -> list[str]:
    notes = []
    for g in groups:
        parts = []
        if g["missing_seeds"]:
            parts.append(f"missing seeds {_seeds(g['missing_seeds'])}")
        if g["incomplete_seeds"]:
            parts.append(f"incomplete (not averaged) seeds {_seeds(g['incomplete_seeds'])}")
        if g["duplicate_seeds"]:
            parts.append(f"seeds with more than one run, first file used: {_seeds(g['duplicate_seeds'])}")
        if parts:
            notes.append(f"! {group_label(g)}, ipc {ipc_label(g['ipc'])}: " + "; ".join(parts))
    return notes


def _seeds(seeds: list) -> str:
    return ", ".join(str(s) for s in seeds)


def _rows_by_setting(groups: list[dict]) -> dict[tuple, list[dict]]:
    """Groups of one data set by table row (method, variant, setting), in summary order."""
    out: dict[tuple, list[dict]] = {}
    for g in groups:
        out.setdefault((g["method"], g["variant"], setting_label(g["setting"])), []).append(g)
    return out


def _steps_title(groups: list[dict]) -> str:
    last = {g["checkpoints"][-1] for g in groups if g["checkpoints"]}
    return f"after {last.pop()} steps" if len(last) == 1 else "at the last checkpoint"


def main_table(dataset: str, groups: list[dict]) -> Table:
    """Final accuracy, one row per (method, variant, setting, score) and one column per IPC."""
    ipcs = sorted({g["ipc"] for g in groups}, key=lambda v: (v is None, v or 0))
    table = Table(f"{dataset}: final accuracy (%) {_steps_title(groups)}, mean ± std over seeds "
                  "(n seeds, effective IPC); Δ = P-PoDD − PoDD paired by seed [95 % t-interval]",
                  ["method", "variant", "setting", "score"] + [f"ipc {ipc_label(i)}" for i in ipcs])
    for (method, variant, setting), members in _rows_by_setting(groups).items():
        by_ipc = {g["ipc"]: g for g in members}
        for score in SCORES:
            cells = []
            for ipc in ipcs:
                g = by_ipc.get(ipc)
                s = g[score] if g else None
                if g is None:
                    cells.append("")
                elif g["n"] == 0:
                    cells.append(f"– (n=0){_flag(g)}")
                else:
                    cells.append(f"{_mean_std(s['mean'], s['std'])} (n={g['n']}, {_num(s['effective_ipc'], 3)})"
                                 f"{_flag(g)}")
            table.rows.append([method, variant, setting, score] + cells)
        if any(g["difference"] for g in members):
            for score in SCORES:
                cells = []
                for ipc in ipcs:
                    d = by_ipc[ipc]["difference"] if ipc in by_ipc else None
                    cells.append("" if d is None else
                                 f"{_num(d[score]['mean'], sign=True)} [{_num(d[score]['low'], sign=True)}, "
                                 f"{_num(d[score]['high'], sign=True)}] (n={d['n']})")
                table.rows.append([method, variant, setting, f"Δ {score} vs podd"] + cells)
        if any(g.get("gain_over_random_real") for g in members):
            for score in SCORES:
                cells = []
                for ipc in ipcs:
                    gain = (by_ipc[ipc].get("gain_over_random_real") or {}).get(score) if ipc in by_ipc else None
                    cells.append("" if gain is None else f"{_num(gain['gain'], sign=True)} (random real "
                                 f"{_num(gain['random_real'])} at {gain['pixels']} px)")
                table.rows.append([method, variant, setting, f"{score} − random real"] + cells)
    table.notes = _notes(groups)
    return table


def checkpoint_table(dataset: str, groups: list[dict]) -> Table:
    """Accuracy at every evaluation checkpoint, with pixels, effective IPC and run time."""
    steps = sorted({c for g in groups for c in g["checkpoints"]})
    table = Table(f"{dataset}: accuracy (%) at each evaluation checkpoint (training steps), mean ± std over seeds",
                  ["method", "variant", "setting", "ipc", "score", "n"] + [f"{c} steps" for c in steps]
                  + ["pixels", "effective ipc", "seconds"])
    for g in (g for g in groups if g["n"]):  # groups with no complete run are flagged above
        for score in SCORES:
            s = g[score]
            at = [s["at"].get(str(c)) for c in steps]
            table.rows.append([g["method"], g["variant"], setting_label(g["setting"]), ipc_label(g["ipc"]),
                               score, str(g["n"])]
                              + ["" if a is None else _mean_std(a["mean"], a["std"]) for a in at]
                              + [str(s["pixels"]) if s["pixels"] is not None else "–",
                                 _num(s["effective_ipc"], 3), _num(g["seconds_mean"], 0)])
    return table


def architecture_table(dataset: str, groups: list[dict]) -> Table:
    """The cross-architecture result: one row per poster (group and score), one column per
    evaluation architecture of `eval.models`, mean ± std over the seeds scored on it."""
    names = list(dict.fromkeys(name for g in groups for name in g["architectures"]))
    table = Table(f"{dataset}: final accuracy (%) by evaluation architecture {_steps_title(groups)}, "
                  "mean ± std over seeds (n seeds)", ["method", "variant", "setting", "ipc", "score"] + names)
    for g in (g for g in groups if g["architectures"]):
        for score in SCORES:
            cells = []
            for name in names:
                s = g["architectures"].get(name, {}).get(score)
                cells.append("" if s is None else f"{_mean_std(s['mean'], s['std'])} (n={s['n']}){_flag(g)}")
            table.rows.append([g["method"], g["variant"], setting_label(g["setting"]), ipc_label(g["ipc"]),
                               score] + cells)
    return table


def ablation_table(ablation: dict) -> Table:
    """One ablation axis as the paper's Tables II–IV: accuracy per value and the drop from the
    reference (default) value, per IPC."""
    axis = ablation["axis"]
    fixed = f"; others fixed at {setting_label(ablation['fixed'])}" if ablation["fixed"] else ""
    rule = {"given": "the given reference", "default": "the default",
            "best": "the best value (no default in the grid)"}[ablation["reference_rule"]]
    header = [axis]
    for ipc in ablation["ipcs"]:
        header += [f"ipc {ipc_label(ipc)} pool", "drop", f"ipc {ipc_label(ipc)} live", "drop"]
    table = Table(f"{ablation['dataset']}: ablation of {axis} ({ablation['method']}, variant "
                  f"{ablation['variant']}{fixed}); drop from {rule}", header)
    values: dict[str, dict[Any, dict]] = {}
    for row in ablation["rows"]:
        values.setdefault(json.dumps(row["value"]), {})[row["ipc"]] = row
    for key, by_ipc in values.items():
        first = next(iter(by_ipc.values()))
        label = setting_label({axis: first["value"]}).split("=", 1)[1]
        if any(r["reference"] for r in by_ipc.values()):
            label += " (reference)"
        cells = [label]
        for ipc in ablation["ipcs"]:
            r = by_ipc.get(ipc)
            for score in SCORES:
                if r is None or r[score]["mean"] is None:
                    cells += ["–", "–"]
                    continue
                cells += [f"{_mean_std(r[score]['mean'], r[score]['std'])} (n={r['n']})",
                          "–" if r["reference"] else _num(r[score]["drop"], sign=True)]
        table.rows.append(cells)
    return table


def tables(summary: dict) -> list[Table]:
    """Every table of a summary, in reading order."""
    out = []
    for dataset, groups in by_dataset(summary["groups"]).items():
        out.append(main_table(dataset, groups))
        out.append(checkpoint_table(dataset, groups))
        if any(g["architectures"] for g in groups):
            out.append(architecture_table(dataset, groups))
    out += [ablation_table(a) for a in summary["ablations"]]
    return out


def to_text(summary: dict) -> str:
    """The tables aligned for a terminal."""
    blocks = []
    for table in tables(summary):
        widths = [max(len(row[i]) for row in [table.header] + table.rows) for i in range(len(table.header))]
        lines = [table.title,
                 "  ".join(h.ljust(w) for h, w in zip(table.header, widths)).rstrip(),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table.rows]
        blocks.append("\n".join(lines + table.notes))
    return "\n\n".join(blocks) + "\n" if blocks else "no runs to summarise\n"


def to_markdown(summary: dict) -> str:
    """The tables as GitHub Markdown, each under its title in bold."""
    blocks = []
    for table in tables(summary):
        lines = [f"**{table.title}**", "", "| " + " | ".join(table.header) + " |",
                 "|" + "---|" * len(table.header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in table.rows]
        if table.notes:
            lines += [""] + [f"{note}  " for note in table.notes]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n" if blocks else "no runs to summarise\n"


CSV_COLUMNS = ["table", "dataset", "method", "variant", "setting", "ipc", "score", "step", "n",
               "seeds", "missing_seeds", "incomplete_seeds", "mean", "std", "effective_ipc", "pixels",
               "seconds_mean", "diff_n", "diff_mean", "diff_low", "diff_high", "axis", "axis_value",
               "reference", "drop", "architecture"]


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def to_csv(summary: dict) -> str:
    """One long table at full precision: `group` rows (final accuracy), `checkpoint` rows (one
    per evaluation step), `architecture` rows (one per evaluation architecture) and `ablation`
    rows, one per score each."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for g in summary["groups"]:
        common = {"dataset": g["dataset"], "method": g["method"], "variant": g["variant"],
                  "setting": setting_label(g["setting"]), "ipc": g["ipc"], "n": g["n"], "seeds": g["seeds"],
                  "missing_seeds": g["missing_seeds"], "incomplete_seeds": g["incomplete_seeds"],
                  "seconds_mean": g["seconds_mean"]}
        for score in SCORES:
            s = g[score]
            row = dict(common, table="group", score=score, mean=s["mean"], std=s["std"],
                       step=g["checkpoints"][-1] if g["checkpoints"] else None,
                       effective_ipc=s["effective_ipc"], pixels=s["pixels"])
            d = g["difference"]
            if d is not None:
                row.update(diff_n=d["n"], diff_mean=d[score]["mean"], diff_low=d[score]["low"],
                           diff_high=d[score]["high"])
            writer.writerow({k: _csv_value(v) for k, v in row.items()})
            for step, at in s["at"].items():
                writer.writerow({k: _csv_value(v) for k, v in dict(
                    common, table="checkpoint", score=score, step=int(step), n=at["n"], mean=at["mean"],
                    std=at["std"], effective_ipc=s["effective_ipc"], pixels=s["pixels"]).items()})
            for name, scores in g["architectures"].items():
                writer.writerow({k: _csv_value(v) for k, v in dict(
                    common, table="architecture", score=score, architecture=name, n=scores[score]["n"],
                    mean=scores[score]["mean"], std=scores[score]["std"],
                    step=g["checkpoints"][-1] if g["checkpoints"] else None).items()})
    for a in summary["ablations"]:
        for r in a["rows"]:
            for score in SCORES:
                writer.writerow({k: _csv_value(v) for k, v in {
                    "table": "ablation", "dataset": a["dataset"], "method": a["method"],
                    "variant": a["variant"], "setting": setting_label(a["fixed"]), "ipc": r["ipc"],
                    "score": score, "n": r["n"], "mean": r[score]["mean"], "std": r[score]["std"],
                    "axis": a["axis"], "axis_value": json.dumps(r["value"]), "reference": r["reference"],
                    "drop": r[score]["drop"]}.items()})
    return buffer.getvalue()


def to_json(summary: dict, problems: list) -> str:
    """Everything: runs, groups, ablations and the files that could not be read.

    One top-level key per line and one list item per line: readable, diffable, and written by
    json's C encoder (indentation would switch to its much slower pure-Python one).
    """
    document = {"format": JSON_FORMAT, "format_version": JSON_VERSION, **summary,
                "bad_files": [{"file": p.file, "reason": p.reason, "message": p.message} for p in problems]}
    lines = []
    for key, value in document.items():
        if isinstance(value, list) and value:
            items = ",\n  ".join(json.dumps(item, allow_nan=False, ensure_ascii=False) for item in value)
            lines.append(f"{json.dumps(key)}: [\n  {items}\n]")
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value, allow_nan=False, ensure_ascii=False)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def render(summary: dict, problems: list, fmt: str) -> str:
    """The summary in format `fmt` (one of FORMATS)."""
    if fmt == "json":
        return to_json(_finite(summary), problems)
    return {"table": to_text, "markdown": to_markdown, "csv": to_csv}[fmt](summary)


def _finite(value: Any) -> Any:
    """NaN and infinities (e.g. unknown run seconds) as None, since JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
