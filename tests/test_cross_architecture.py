"""The cross-architecture result (§9, `eval.models`): config keys, a demo run scored on every
architecture, its place in the run file, and the `ppodd summarize` table."""

import json

import pytest
import torch
from helpers import cli

from ppodd.cell.host import Host
from ppodd.cell.identity import cell_files, config_digest
from ppodd.cell.prepare import prepare
from ppodd.cell.run import run_cell
from ppodd.config import load_config
from ppodd.errors import ConfigError
from ppodd.storage.reader import read_run, read_scores

ALL = "eval.models=[convnet,resnet18,vgg11,alexnet]"


@pytest.mark.parametrize("override, message", [
    ("eval.model=resnet", "eval.model: 'resnet' is not one of convnet, resnet18, vgg11, alexnet"),
    ("eval.models=[convnet,vgg]", "eval.models[1]: 'vgg' is not one of convnet, resnet18, vgg11, alexnet"),
    ("eval.models=resnet18", "eval.models: expected a list of str, got 'resnet18' (allowed: convnet, resnet18, vgg11, alexnet)"),
    ("eval.models=[vgg11,vgg11]", "eval.models: lists vgg11 more than once"),
    ("eval.norm=group", "eval.norm: 'group' is not one of auto, instance, batch, none"),
    ("eval.pool=min", "eval.pool: 'min' is not one of avg, max"),
    ("eval.optimizer=rmsprop", "eval.optimizer: 'rmsprop' is not one of adam, sgd"),
    ("eval.batching=true", "eval.batching: expected a string, got True (allowed: auto, stacked, sequential)"),
    ("eval.momentum=1.5", "eval.momentum: must be <= 1.0, got 1.5"),
    ("eval.width=-2", "eval.width: must be >= 0, got -2"),
    ("eval.augment=sometimes", "eval.augment: expected true or false"),
])
def test_bad_evaluation_keys_stop_with_one_line_naming_key_and_allowed_values(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("configs/demo.yaml", [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_default_evaluation_keys_keep_the_cells_name_and_others_change_it():
    # the demo cell as it was named before these keys existed (then the default decay anchor was oldest)
    base = load_config("configs/demo.yaml", ["ppodd.decay_anchor=oldest"])
    assert config_digest(base) == "679f5644de"
    assert config_digest(load_config("configs/demo.yaml", ["ppodd.decay_anchor=oldest", "eval.batching=sequential"])
                         ) == config_digest(base)
    for change in ("eval.model=vgg11", ALL, "eval.width=8", "eval.norm=batch", "eval.optimizer=sgd",
                   "eval.augment=false", "eval.weight_decay=0.0005"):
        assert config_digest(load_config("configs/demo.yaml", ["ppodd.decay_anchor=oldest", change])
                             ) != config_digest(base), change


def test_a_network_that_cannot_take_the_images_stops_before_any_work(tmp_path, tiny_overrides):
    # 8-pixel images leave VGG-11 1 × 1 maps, where instance norm has nothing to normalise.
    cfg = load_config("configs/demo.yaml", tiny_overrides + ["eval.models=[convnet,vgg11]"])
    with pytest.raises(ConfigError, match=r"^eval.models: vgg11 with instance norm cannot take 8 x 8 images"):
        prepare(cfg, Host(tmp_path / "cache"))


def test_demo_scored_on_every_architecture_and_summarized(tmp_path, tiny_overrides, log):
    cfg = load_config("configs/demo.yaml", tiny_overrides + [ALL, "eval.width=2", "eval.norm=batch"])
    path = run_cell(cfg, cell_files(cfg, tmp_path / "out"), Host(tmp_path / "cache"), log, bar=False)
    record = read_run(path)
    assert list(record.architectures) == ["convnet", "resnet18", "vgg11", "alexnet"]
    convnet = record.architectures["convnet"]
    assert torch.equal(convnet.live.per_net, record.final_live.per_net)      # eval.model's reused
    assert torch.equal(convnet.pool.per_net, record.final_pool.per_net)
    assert convnet.network == {"arch": "convnet", "width": 2, "norm": "batch", "depth": 2, "pool": "avg"}
    assert record.architectures["alexnet"].network == {"arch": "alexnet", "width": 2, "norm": "batch"}
    for result in record.architectures.values():
        assert result.live.per_net.shape == (2, 2) and result.live.members == [0]
        assert result.pool.pixels == record.final_pool.pixels and result.pool.pi == record.final_pool.pi
    assert not torch.equal(record.architectures["resnet18"].pool.per_net, convnet.pool.per_net)
    scores = read_scores(path)["architectures"]
    assert scores["vgg11"]["live"]["mean"] == record.architectures["vgg11"].live.mean.tolist()

    result = cli("summarize", tmp_path / "out")
    assert result.exit_code == 0, result.output
    title = "synthetic: final accuracy (%) by evaluation architecture after 4 steps"
    assert title in result.output
    table = result.output.split(title)[1]
    header = table.splitlines()[1].split()
    assert header == ["method", "variant", "setting", "ipc", "score", "convnet", "resnet18", "vgg11", "alexnet"]
    assert "(n=1)" in table.splitlines()[3]
    csv = cli("summarize", tmp_path / "out", "--format", "csv").output
    assert sum(line.startswith("architecture,") for line in csv.splitlines()) == 8


def test_runs_without_other_architectures_print_no_architecture_table(tmp_path, tiny_overrides, log):
    cfg = load_config("configs/demo.yaml", tiny_overrides + ["method=podd"])
    path = run_cell(cfg, cell_files(cfg, tmp_path / "out"), Host(tmp_path / "cache"), log, bar=False)
    assert read_run(path).architectures == {} and read_scores(path)["architectures"] == {}
    assert "by evaluation architecture" not in cli("summarize", tmp_path / "out").output


def test_evaluate_scores_any_poster_on_every_architecture_and_summarize_tables_it(tmp_path, tiny_overrides):
    sets = [a for o in tiny_overrides + ["eval.models=[convnet,alexnet]", "eval.width=2", "eval.norm=batch"]
            for a in ("--set", o)]
    result = cli("evaluate", "initial", "--config", "configs/demo.yaml", *sets, "--json", tmp_path / "s" / "i.json")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["convnet", "alexnet"]
    row = json.loads((tmp_path / "s" / "i.json").read_text())
    assert row["model"] == "convnet" and list(row["architectures"]) == ["convnet", "alexnet"]
    assert row["mean"] == row["architectures"]["convnet"]["mean"]
    assert len(row["architectures"]["alexnet"]["per_net"]) == len(row["checkpoints"])
    one = cli("evaluate", "initial", "--config", "configs/demo.yaml", *sets[:-6], "--set", "eval.width=2",
              "--set", "eval.norm=batch", "--json", tmp_path / "one.json")
    assert one.exit_code == 0 and ":" in one.stdout and not one.stdout.startswith("convnet")
    assert json.loads((tmp_path / "one.json").read_text())["mean"] == row["mean"]   # the same nets and draws

    table = cli("summarize", tmp_path / "s")
    assert table.exit_code == 0, table.output
    title = "by evaluation architecture"
    assert title in table.output
    body = table.output.split(title)[1].splitlines()
    assert body[1].split()[-2:] == ["convnet", "alexnet"]
    assert any(line.startswith("reference:initial") for line in body)
