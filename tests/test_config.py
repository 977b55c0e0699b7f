import pytest
from helpers import assert_file_refused, yaml_bomb

from ppodd.cell.identity import config_digest
from ppodd.config import VARIANTS, build_config, load_config, to_yaml
from ppodd.errors import ConfigError


def test_load_config_demo_resolves_paper_variant_explicitly():
    cfg = load_config("configs/demo.yaml")
    assert cfg.data.name == "synthetic"
    for key, value in VARIANTS["paper"].items():
        assert getattr(cfg.ppodd, key) == value
    assert "pool_order: chronological" in to_yaml(cfg)
    # the default follows the paper's prose on D3 (the variant study); the code keeps Algorithm 1's formula
    assert (cfg.ppodd.variant, cfg.ppodd.decay_anchor) == ("paper", "newest")
    assert load_config(None, ["ppodd.variant=code"]).ppodd.decay_anchor == "oldest"


def test_load_config_code_variant_fills_code_options_but_keeps_explicit_ones():
    cfg = load_config(None, ["ppodd.variant=code", "ppodd.decay_anchor=newest"])
    assert cfg.ppodd.pool_order == "code" and cfg.ppodd.max_slots == 5
    assert cfg.ppodd.decay_anchor == "newest"


def test_podd_method_is_one_stage():
    assert load_config(None, ["method=podd"]).num_stages == 1


@pytest.mark.parametrize("override, message", [
    ("distill.windw=3", "distill.windw: unknown key; did you mean 'distill.window'?"),
    ("poster.ipc=0", "poster.ipc: must be > 0.0, got 0.0"),
    ("poster.ipc=-0.5", "poster.ipc: must be > 0.0"),
    ("poster.ipc=.nan", "poster.ipc: expected a finite number"),
    ("poster.ipc=abc", "poster.ipc: expected a number, got 'abc'"),
    ("distill.window=2.5", "distill.window: expected an integer, got 2.5"),
    ("distill.augment=maybe", "distill.augment: expected true or false"),
    ("method=dd", "method: 'dd' is not one of ppodd, podd"),
    ("ppodd.variant=papper", "ppodd.variant: 'papper' is not one of paper, code"),
    ("distill.window=300", "distill.window: must be <= distill.total_window - distill.min_window (200), got 300"),
    ("eval.checkpoints=[600,300]", "eval.checkpoints: must be positive and strictly increasing"),
    ("data=3", "data: expected a mapping of keys, got 3"),
    ("seed=-1", "seed: must be >= 0, got -1"),
    ("noequals", "expected KEY=VALUE"),
])
def test_load_config_bad_value_names_key_value_and_allowed(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_read_yaml_refuses_billion_laughs(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(yaml_bomb(levels=8, width=3))
    with pytest.raises(ConfigError, match=r"aliases are not allowed in configs \(line 2\)"):
        load_config(bomb)


@pytest.mark.parametrize("text, message", [
    ("key: [unclosed", "is not valid YAML"),
    ("- a\n- b\n", "must hold a mapping"),
])
def test_read_yaml_bad_file_is_config_error(tmp_path, text, message):
    assert_file_refused(load_config, tmp_path / "bad file.yaml", text, message)


def test_load_config_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_config_digest_depends_on_every_setting():
    a = build_config({})
    assert config_digest(a) == config_digest(build_config({}))
    assert config_digest(a) != config_digest(build_config({"seed": 1}))
    assert config_digest(a) != config_digest(build_config({"ppodd": {"boost": 0.0}}))


@pytest.mark.parametrize("name", ["demo", "cpu", "cifar10", "cifar100"])
def test_shipped_presets_load(name):
    load_config(f"configs/{name}.yaml")


def test_evaluation_learning_rate_follows_the_inner_one_unless_set():
    assert load_config(None, ["distill.inner_lr=0.02"]).eval.lr == 0.02
    assert load_config(None, ["distill.inner_lr=0.02", "eval.lr=0.005"]).eval.lr == 0.005
    assert load_config(None).eval.lr == 0.001
