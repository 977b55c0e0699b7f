"""Run configuration: typed, frozen dataclasses, loaded from YAML plus `--set` overrides.

Validated once here, at the edge, and trusted everywhere else. Every field says what it is, its
symbol in docs/method.md and its allowed values through `_opt(...)` metadata, so a bad value stops
the run before any work with a line that names the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ppodd.errors import ConfigError

METHODS = ("ppodd", "podd")
PRECISIONS = ("ieee", "tf32", "bf16")
EVAL_ARCHITECTURES = ("convnet", "resnet18", "vgg11", "alexnet")
# A config file is a few hundred bytes; anything far larger is not one of ours.
MAX_CONFIG_BYTES = 1 << 20


def _opt(default: Any, *, choices: tuple | None = None, lo: float | None = None,
         hi: float | None = None, lo_open: bool = False, doc: str = "") -> Any:
    """A dataclass field with its allowed values recorded for validation and help."""
    meta = {"choices": choices, "lo": lo, "hi": hi, "lo_open": lo_open, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class SyntheticConfig:
    """The built-in offline data set (used by the demo and the tests)."""

    num_classes: int = _opt(10, lo=2, hi=1000)
    image_size: int = _opt(32, lo=8, hi=256)
    train_per_class: int = _opt(500, lo=1)
    test_per_class: int = _opt(100, lo=1)
    seed: int = _opt(0, lo=0)


@dataclass(frozen=True)
class DataConfig:
    """Where the real images come from and how they are whitened (§1)."""

    name: str = _opt("synthetic", choices=("synthetic", "cifar10", "cifar100", "imagefolder", "tinyimagenet",
                                           "cub200"))
    root: str = _opt("data", doc="data set folder (imagefolder: holds train/ and test/; README, Data)")
    download: bool = _opt(False, doc="let torchvision download CIFAR when it is missing")
    cache_dir: str = _opt("", doc="ZCA and decoded-image cache; empty = $PPODD_CACHE or ~/.cache/ppodd")
    image_size: int = _opt(0, lo=0, hi=512, doc="resize images to this side a (imagefolder, tinyimagenet, "
                           "cub200); 0 = keep (one square size), cub200: 32")
    resize: str = _opt("squash", choices=("squash", "center_crop"),
                       doc="squash: scale both sides; center_crop: scale the central square")
    zca: bool = _opt(True)
    zca_reg: float = _opt(0.1, lo=0.0, lo_open=True)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass(frozen=True)
class PosterConfig:
    """Poster geometry (§2), class order (§4) and labels (§5). Zero means 'derive it'."""

    ipc: float = _opt(0.9, lo=0.0, lo_open=True, hi=50.0, doc="images per class of pixel budget")
    height: int = _opt(0, lo=0)
    width: int = _opt(0, lo=0)
    rows: int = _opt(0, lo=0, doc="class grid rows R")
    cols: int = _opt(0, lo=0, doc="class grid columns Q")
    patches_x: int = _opt(0, lo=0, doc="n_x")
    patches_y: int = _opt(0, lo=0, doc="n_y")
    size_rule: str = _opt("auto", choices=("auto", "rows", "square"))
    patch_stride_mode: str = _opt("fixed_count", choices=("fixed_count", "fixed_stride"))
    class_order: str = _opt("auto", doc="auto | poco_cifar10 | superclass | identity | FILE.json")
    labels: str = _opt("fixed", choices=("fixed", "learned"))
    fixed_label_mode: str = _opt("softmax_counts", choices=("softmax_counts", "proportional"))
    label_lr_scale: float = _opt(1.0, lo=0.0, lo_open=True)
    label_eps: float = _opt(0.0, lo=0.0)


@dataclass(frozen=True)
class ModelConfig:
    """ConvNet-3 (§6): conv(width) → instance norm → ReLU → avg-pool, `depth` times, then linear."""

    width: int = _opt(128, lo=1, hi=4096)
    depth: int = _opt(3, lo=1, hi=5)


@dataclass(frozen=True)
class DistillConfig:
    """RaT-BPTT as PoDD runs it (§8)."""

    epochs: int = _opt(150, lo=1, doc="E: passes over the real train set")
    batch_patches: int = _opt(96, lo=1, doc="b: patches per inner step")
    real_batch: int = _opt(5000, lo=1, doc="B: real images per outer step")
    real_subbatch: int = _opt(0, lo=0, doc="split the real batch into chunks of this size (0: no split)")
    window: int = _opt(60, lo=1, doc="ω: unrolled inner steps")
    total_window: int = _opt(200, lo=1, doc="Ω")
    min_window: int = _opt(0, lo=0, doc="ω₀")
    warmup: int = _opt(-1, lo=-1, doc="fixed warm-up c for benchmarks; -1 draws c once per epoch")
    inner_lr: float = _opt(1e-3, lo=0.0, lo_open=True)
    outer_lr: float = _opt(1e-3, lo=0.0, lo_open=True)
    clip_ema: float = _opt(0.9, lo=0.0, hi=1.0)
    clip_factor: float = _opt(2.0, lo=0.0, lo_open=True)
    augment: bool = _opt(True, doc="flip_rotate on synthetic and real batches (§7)")
    checkpoint_window: bool = _opt(False, doc="keep each unrolled step's weights, recompute its graph "
                                   "in the meta-backward (same gradient, a fraction of the memory)")
    real_bf16: bool = _opt(False, doc="run the real batch's network under bfloat16 autocast")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation protocol (§9): K fresh nets trained on the poster, tested at checkpoints."""

    nets: int = _opt(8, lo=1, hi=256)
    checkpoints: tuple[int, ...] = _opt((300, 600, 1000, 2000), doc="cumulative steps to test at")
    lr: float | None = _opt(None, lo=0.0, lo_open=True, doc="Adam learning rate; empty: distill.inner_lr, "
                            "as the reference code trains its evaluation nets")
    every_epochs: int = _opt(10, lo=0, doc="in-stage evaluation cadence (0: off)")
    test_batch: int = _opt(2000, lo=1)
    model: str = _opt("convnet", choices=EVAL_ARCHITECTURES, doc="the evaluation network of every evaluation")
    models: tuple[str, ...] = _opt((), lo=0, choices=EVAL_ARCHITECTURES,
                                   doc="also score the final live poster and pool on each of these")
    width: int = _opt(0, lo=0, hi=4096, doc="ConvNet channels, the others' first-layer width "
                      "(0: model.width for ConvNet, the benchmark's width for the others)")
    depth: int = _opt(0, lo=0, hi=5, doc="ConvNet blocks (0: model.depth)")
    norm: str = _opt("auto", choices=("auto", "instance", "batch", "none"),
                     doc="auto: instance for ConvNet, ResNet-18, VGG-11; none for AlexNet")
    pool: str = _opt("avg", choices=("avg", "max"), doc="ConvNet's pooling")
    optimizer: str = _opt("adam", choices=("adam", "sgd"))
    momentum: float = _opt(0.9, lo=0.0, hi=1.0, doc="sgd only")
    weight_decay: float = _opt(0.0, lo=0.0)
    augment: bool | None = _opt(None, doc="flip_rotate on the training patches (null: distill.augment)")
    batching: str = _opt("auto", choices=("auto", "stacked", "sequential"),
                         doc="train the nets together or one after another (auto: the faster here)")
    compile: bool = _opt(False, doc="build each evaluation training step's gradient with torch.compile "
                         "(needs a C++ compiler on the CPU, Triton and a C compiler on a GPU; the same numbers "
                         "up to rounding)")


@dataclass(frozen=True)
class StagesConfig:
    """P-PoDD (§10). Options left empty take the value of `variant` (§10.4 presets)."""

    stages: int = _opt(5, lo=1, hi=100, doc="T")
    variant: str = _opt("paper", choices=("paper", "code"))
    boost: float = _opt(1.5, lo=0.0, doc="β")
    min_weight: float = _opt(0.1, lo=0.0, hi=1.0, doc="ε")
    decay: float = _opt(0.5, lo=0.0, doc="λ")
    bootstrap: float = _opt(0.9, lo=0.0)
    sampling: str = _opt("dynamic", choices=("dynamic", "uniform"))
    pool_order: str | None = _opt(None, choices=("chronological", "code"), doc="D1")
    boost_target: str | None = _opt(None, choices=("live", "latest_snapshot"), doc="D2")
    decay_anchor: str | None = _opt(None, choices=("oldest", "newest"), doc="D3")
    acc_list: str | None = _opt(None, choices=("per_stage", "code_mutated"), doc="D4")
    floor_mode: str | None = _opt(None, choices=("before_norm", "after_norm"), doc="D5")
    stage_init: str | None = _opt(None, choices=("continue", "reinit_random"), doc="D6")
    reset_outer_adam: bool | None = _opt(None, doc="D6")
    final_pool: str | None = _opt(None, choices=("all_stages", "code_first5"), doc="D7")
    stage_acc_source: str | None = _opt(None, choices=("mixture", "poster_alone"), doc="D8")
    stage_acc_reduce: str | None = _opt(None, choices=("max", "at_last"), doc="D8")
    max_slots: int | None = _opt(None, lo=1, doc="D9: cap on pool slots (code: 5)")


# §10.4: "paper" takes the paper's reading of every option, "code" reproduces §10.3. On D3, where
# Algorithm 1's formula and the paper's prose disagree, "paper" follows the prose (newest): the CPU
# variant study chose it (docs/results-cpu.md); `decay_anchor: oldest` is the formula as written.
VARIANTS: dict[str, dict[str, Any]] = {
    "paper": dict(pool_order="chronological", boost_target="live", decay_anchor="newest",
                  acc_list="per_stage", floor_mode="before_norm", stage_init="continue",
                  reset_outer_adam=False, final_pool="all_stages", stage_acc_source="mixture",
                  stage_acc_reduce="max", max_slots=None),
    "code": dict(pool_order="code", boost_target="latest_snapshot", decay_anchor="oldest",
                 acc_list="code_mutated", floor_mode="after_norm", stage_init="continue",
                 reset_outer_adam=False, final_pool="code_first5", stage_acc_source="mixture",
                 stage_acc_reduce="max", max_slots=5),
}


@dataclass(frozen=True)
class RunConfig:
    """One cell: a data set, a method, an IPC, a seed and every option that shapes the result."""

    method: str = _opt("ppodd", choices=METHODS, doc="podd is P-PoDD with T = 1")
    seed: int = _opt(0, lo=0, hi=2**31 - 1, doc="drives every random number (D13)")
    device: str = _opt("auto", choices=("auto", "cpu", "cuda"))
    precision: str = _opt("ieee", choices=PRECISIONS,
                          doc="float32 arithmetic of the networks: ieee (full float32), tf32 (a GPU's TF32 "
                          "matrix products and convolutions; the CPU computes as ieee) or bf16 (every "
                          "network forward under bfloat16 autocast, on a GPU or the CPU)")
    threads: int = _opt(0, lo=0, doc="torch CPU threads (0: Slurm's cpus-per-task, else torch's default)")
    checkpoint_minutes: float = _opt(5.0, lo=0.0, lo_open=True)
    data: DataConfig = field(default_factory=DataConfig)
    poster: PosterConfig = field(default_factory=PosterConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ppodd: StagesConfig = field(default_factory=StagesConfig)

    @property
    def num_stages(self) -> int:
        """T as run: PoDD is the single-stage case of the same code path."""
        return 1 if self.method == "podd" else self.ppodd.stages


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without anchors/aliases, which is how a billion-laughs file explodes."""

    def compose_node(self, parent, index):  # noqa: D102 - PyYAML hook
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(f"YAML aliases are not allowed in configs (line {event.start_mark.line + 1})")
        return super().compose_node(parent, index)


def read_yaml(path: str | Path) -> dict:
    """The mapping in a YAML config file; ConfigError for a missing, huge or non-mapping file."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file {str(p)!r} is a folder; expected a YAML file such as configs/demo.yaml")
    if not p.is_file():
        raise ConfigError(f"config file not found: {str(p)!r}")
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {str(p)!r} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        raw = yaml.load(p.read_text(encoding="utf-8"), Loader=_NoAliasLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"config file {str(p)!r} is not valid YAML{where}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(p)!r} is not UTF-8 text") from None
    except RecursionError:
        raise ConfigError(f"config file {str(p)!r} nests lists or mappings too deeply to be a config") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of keys, got {type(raw).__name__}")
    return raw


def parse_value(option: str, text: str) -> Any:
    """A value written on the command line, read as YAML (`0.6`, `true`, `[300,2000]`, `paper`)."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader) if text.strip() else ""
    except yaml.YAMLError:
        return text
    except RecursionError:
        raise ConfigError(f"{option}: the value nests lists or mappings too deeply") from None


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=value` as its dotted key and its YAML-parsed value."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. poster.ipc=0.6")
    return key.strip(), parse_value(f"--set {key.strip()}", value)


def format_override(key: str, value: Any) -> str:
    """`key=value` as `--set` takes it, for array maps and manifests."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    return f"{key}={text}"


def apply_overrides(raw: dict, overrides: list[tuple[str, Any]]) -> dict:
    """A copy of `raw` with each (dotted key, value) override applied in order."""
    out = json.loads(json.dumps(raw, default=list))
    for key, value in overrides:
        path = key.split(".")
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
    return out


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return {type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _float_text(text: str) -> float | str:
    """The number in `text`, else `text`: YAML 1.1 reads `1e9` and `nan` as strings, users mean numbers."""
    try:
        return float(text)
    except ValueError:
        return text


def _check_scalar(key: str, value: Any, tp: Any, meta: dict) -> Any:
    """`value` converted to `tp`, or ConfigError naming key, value and what is allowed."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = next(a for a in args if a is not type(None))
        return _check_scalar(key, value, inner, meta)
    if origin is tuple:
        least = 1 if meta.get("lo") is None else meta["lo"]  # a list's `lo` is its fewest items
        if not isinstance(value, (list, tuple)) or len(value) < least:
            allowed = f" (allowed: {', '.join(map(str, meta['choices']))})" if meta.get("choices") else ""
            raise ConfigError(f"{key}: expected a {'non-empty ' if least else ''}{_type_name(tp)}, got {value!r}{allowed}")
        elem = typing.get_args(tp)[0]
        # A list's allowed values are those of its items.
        items = {"choices": meta.get("choices")}
        return tuple(_check_scalar(f"{key}[{i}]", v, elem, items) for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, str):
            value = _float_text(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    elif tp is str:
        if not isinstance(value, str):
            allowed = f" (allowed: {', '.join(map(str, meta['choices']))})" if meta.get("choices") else ""
            raise ConfigError(f"{key}: expected a string, got {value!r}{allowed}")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (value < lo or (meta.get("lo_open") and value == lo)):
        rel = ">" if meta.get("lo_open") else ">="
        raise ConfigError(f"{key}: must be {rel} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{key}: must be <= {hi}, got {value!r}")
    return value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """An instance of dataclass `cls` from a mapping, refusing unknown keys and wrong types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            name = f"{prefix}{key}"
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {prefix + close[0]!r}?" if close else ""
            raise ConfigError(f"{name}: unknown key{hint} (allowed: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, raw[name], f"{prefix}{name}.")
        else:
            kwargs[name] = _check_scalar(f"{prefix}{name}", raw[name], tp, dict(f.metadata))
    return cls(**kwargs)


def resolve_variant(stages: StagesConfig) -> StagesConfig:
    """Fill every option left empty from the chosen §10.4 preset, so the stored config is explicit."""
    preset = VARIANTS[stages.variant]
    filled = {k: v for k, v in preset.items() if getattr(stages, k) is None}
    return dataclasses.replace(stages, **filled)


def _check_relations(cfg: RunConfig) -> None:
    """Cross-field rules that no single field can express."""
    d = cfg.distill
    if d.window > d.total_window - d.min_window:
        raise ConfigError(f"distill.window: must be <= distill.total_window - distill.min_window "
                          f"({d.total_window - d.min_window}), got {d.window}")
    if d.warmup > d.total_window - d.window:
        raise ConfigError(f"distill.warmup: must be <= distill.total_window - distill.window "
                          f"({d.total_window - d.window}), got {d.warmup}")
    if d.epochs < cfg.num_stages:
        raise ConfigError(f"distill.epochs: must be >= ppodd.stages ({cfg.num_stages}) so every stage "
                          f"gets an epoch, got {d.epochs}")
    cps = cfg.eval.checkpoints
    if any(c <= 0 for c in cps) or list(cps) != sorted(set(cps)):
        raise ConfigError(f"eval.checkpoints: must be positive and strictly increasing, got {list(cps)}")
    repeated = sorted({m for m in cfg.eval.models if cfg.eval.models.count(m) > 1})
    if repeated:
        raise ConfigError(f"eval.models: lists {', '.join(repeated)} more than once, got {list(cfg.eval.models)}")
    if cfg.poster.height and not cfg.poster.width or cfg.poster.width and not cfg.poster.height:
        raise ConfigError("poster.height and poster.width: set both or neither "
                          f"(got {cfg.poster.height} x {cfg.poster.width})")
    if bool(cfg.poster.rows) != bool(cfg.poster.cols):
        raise ConfigError(f"poster.rows and poster.cols: set both or neither (got {cfg.poster.rows}, {cfg.poster.cols})")
    if cfg.data.image_size and cfg.data.name in ("synthetic", "cifar10", "cifar100"):
        raise ConfigError(f"data.image_size: resizes imagefolder, tinyimagenet and cub200 images only, not "
                          f"{cfg.data.name} (synthetic: data.synthetic.image_size); got {cfg.data.image_size}")
    if bool(cfg.poster.patches_x) != bool(cfg.poster.patches_y):
        raise ConfigError("poster.patches_x and poster.patches_y: set both or neither "
                          f"(got {cfg.poster.patches_x}, {cfg.poster.patches_y})")


def build_config(raw: dict) -> RunConfig:
    """A validated RunConfig from a raw mapping; presets resolved to explicit values."""
    cfg = _build(RunConfig, raw, "")
    cfg = dataclasses.replace(cfg, ppodd=resolve_variant(cfg.ppodd))
    if cfg.eval.lr is None:
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, lr=cfg.distill.inner_lr))
    _check_relations(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """The run config from a YAML file (or the defaults) with `a.b=value` overrides applied."""
    raw = read_yaml(path) if path is not None else {}
    return build_config(apply_overrides(raw, [parse_override(text) for text in overrides or []]))


def to_dict(cfg: Any) -> dict:
    """A plain, JSON- and YAML-safe mapping of a config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML text, keys in declaration order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
