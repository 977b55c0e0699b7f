import json
from pathlib import Path

import pytest
from helpers import assert_file_refused, cli, set_args

from ppodd.cluster import grid
from ppodd.config import build_config

from ppodd.storage.manifest import MANIFEST
from ppodd.cluster.jobfile import load_experiment

JOBS = sorted(Path("jobs").glob("*.yaml"))

# Cells of each shipped grid: methods x IPCs x axis values x seeds.
EXPECTED_CELLS = {"table1-cifar10": 2 * 4 * 5, "table2-boost": 2 * 5, "table3-sampling": 2 * 5,
                  "table4-stages": 5 * 5, "table1-cpu": 2 * 4 * 3, "demo": 2 * 2 * 2,
                  "variant-study-cpu": 5 * 3, "authors-code-cifar10": 3, "algorithm1-cifar10": 4 * 5,
                  "lr-sweep-cpu-short": 2 * 2}


def expand(exp, out):
    return grid.expand_grid(exp.config, exp.sets, exp.methods, exp.ipcs, exp.seeds, exp.grid, out,
                            variants=exp.variants)


def test_every_shipped_job_file_is_listed_here():
    assert {p.stem for p in JOBS} == set(EXPECTED_CELLS)


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.stem)
def test_shipped_job_files_expand_to_their_grids(path, tmp_path):
    exp = load_experiment(path)
    cells = expand(exp, tmp_path)
    assert len(cells) == EXPECTED_CELLS[path.stem]
    assert exp.description and exp.out is not None


def test_authors_code_and_algorithm1_jobs_resolve_to_their_variants(tmp_path):
    def resolved(name):
        cells = expand(load_experiment(Path(f"jobs/{name}.yaml")), tmp_path / name)
        return [build_config(c.config) for c in cells]

    code, literal = resolved("authors-code-cifar10"), resolved("algorithm1-cifar10")
    assert {(c.ppodd.variant, c.ppodd.final_pool, c.ppodd.boost_target, c.poster.ipc) for c in code} == {
        ("code", "code_first5", "latest_snapshot", 0.9)}
    assert {(c.ppodd.variant, c.ppodd.final_pool, c.ppodd.decay_anchor) for c in literal} == {
        ("paper", "all_stages", "oldest")}
    assert {c.poster.ipc for c in literal} == {0.6, 0.7, 0.8, 0.9}


def test_paper_ablation_grids_vary_only_their_own_key(tmp_path):
    varied = {}
    for name, key in [("table2-boost", "boost"), ("table3-sampling", "sampling"), ("table4-stages", "stages")]:
        cells = expand(load_experiment(Path(f"jobs/{name}.yaml")), tmp_path)
        varied[name] = sorted({str(c.config["ppodd"][key]) for c in cells})
        assert {c.config["poster"]["ipc"] for c in cells} == {0.9}
        assert {c.config["model"]["width"] for c in cells} == {128}
    assert varied == {"table2-boost": ["0.0", "1.5"], "table3-sampling": ["dynamic", "uniform"],
                      "table4-stages": ["3", "4", "5", "6", "7"]}


def test_job_file_entries_parse_lists_scalars_and_mappings(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("config: ../configs/demo.yaml\nmethod: podd\nipc: [0.6, 0.9]\nseeds: [2, 0, 2]\n"
                    "set: {eval.nets: 1, distill.augment: false}\ngrid: {ppodd.boost: [0, 1.5]}\nout: r\n")
    exp = load_experiment(path)
    assert exp.config == tmp_path / "../configs/demo.yaml"
    # Values stay as YAML typed them: no round trip through text.
    assert (exp.methods, exp.ipcs, exp.seeds) == (["podd"], [0.6, 0.9], [2, 0])
    assert exp.sets == [("eval.nets", 1), ("distill.augment", False)]
    assert exp.grid == [("ppodd.boost", [0, 1.5])]
    assert exp.out == Path("r")


@pytest.mark.parametrize("text, match", [
    ("seed: 0-4\n", "unknown key 'seed' \\(did you mean 'seeds'\\?\\)"),
    ("seeds: 4-0\n", "runs backwards"),
    ("seeds: [1, -2]\n", "seeds must be non-negative integers"),
    ("ipc: []\n", "ipc must be a value or a non-empty list"),
    ("grid: [ppodd.boost]\n", "grid must map keys"),
    ("set: 3\n", "set must map keys"),
    ("config: [a]\n", "config must be a path"),
    ("- a\n", "must hold a mapping"),
])
def test_malformed_job_files_name_the_key(tmp_path, text, match):
    assert_file_refused(load_experiment, tmp_path / "bad.yaml", text, match)


def test_submit_job_file_dry_run_lists_its_grid_and_writes_nothing(tmp_path):
    out = tmp_path / "res"
    result = cli("submit", "jobs/demo.yaml", "--out", str(out), "--cluster", "local", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "8 cell(s) to run" in result.output
    assert not out.exists()


def test_command_line_options_override_the_job_file(tmp_path, tiny_overrides):
    out = tmp_path / "res"
    args = ["submit", "jobs/demo.yaml", "--out", str(out), "--cluster", "local", "--method", "podd",
            "--ipc", "0.9", "--seeds", "3"]
    result = cli(*args, *set_args(tiny_overrides))
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / MANIFEST).read_text())
    files = sorted(p.name for p in out.glob("*.h5"))
    assert len(files) == 1 and files[0].startswith("podd-synthetic-ipc0.9-seed3-")
    assert len(manifest["cells"]) == 1


def test_variants_are_named_override_sets_applied_together(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(f"config: {Path('configs/demo.yaml').absolute()}\nseeds: [0, 1]\nvariants:\n  podd: {{method: podd}}\n"
                    "  oldest: {method: ppodd, ppodd.decay_anchor: oldest}\n")
    exp = load_experiment(path)
    assert exp.variants == [("podd", [("method", "podd")]),
                            ("oldest", [("method", "ppodd"), ("ppodd.decay_anchor", "oldest")])]
    cells = expand(exp, tmp_path)
    assert [(c.config["method"], c.config["ppodd"]["decay_anchor"], c.config["seed"]) for c in cells] == [
        ("podd", "newest", 0), ("podd", "newest", 1), ("ppodd", "oldest", 0), ("ppodd", "oldest", 1)]
    assert cells[2].overrides == ("method=ppodd", "ppodd.decay_anchor=oldest", "seed=0")


@pytest.mark.parametrize("text", ["variants: [podd]\n", "variants: {}\n", "variants: {podd: method}\n"])
def test_malformed_variants_refused_naming_the_file(tmp_path, text):
    assert_file_refused(load_experiment, tmp_path / "bad.yaml", text, "variant")


def test_variant_study_job_lists_its_fifteen_cells(tmp_path):
    result = cli("submit", "jobs/variant-study-cpu.yaml", "--dry-run", "--cluster", "local", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "# 15 cell(s) to run" in result.output
    assert result.output.count("ppodd.decay_anchor=oldest") == 3 and result.output.count("method=podd") == 3
