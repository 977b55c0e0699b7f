"""The evaluation networks a config asks for (§9): their settings, resolved, and checked up front.

`eval.model` is the network of every evaluation of a run; `eval.models` lists the architectures
the final live poster and pool are also scored on (the cross-architecture result). Sizes left at
0 and `eval.norm: auto` are resolved here, so the method layer gets concrete networks.
"""

from __future__ import annotations

import torch

from ppodd.config import RunConfig
from ppodd.errors import ConfigError
from ppodd.method.evaluate import EvalSettings
from ppodd.method.networks import STANDARD_NORM, STANDARD_WIDTH, forward, init_weights


def eval_settings(cfg: RunConfig, num_classes: int, arch: str | None = None) -> EvalSettings:
    """The evaluation settings of `arch` (default `eval.model`) under the config."""
    d, m, e = cfg.distill, cfg.model, cfg.eval
    arch = arch or e.model
    width = e.width or (m.width if arch == "convnet" else STANDARD_WIDTH[arch])
    return EvalSettings(
        e.nets, e.checkpoints, e.lr, d.batch_patches, d.augment if e.augment is None else e.augment,
        num_classes, width, e.depth or m.depth, e.test_batch, arch=arch,
        norm=STANDARD_NORM[arch] if e.norm == "auto" else e.norm, pool=e.pool, optimizer=e.optimizer,
        momentum=e.momentum, weight_decay=e.weight_decay, batching=e.batching, bf16=cfg.precision == "bf16",
        compile=e.compile)


def describe(settings: EvalSettings) -> dict:
    """The network as it ran, for the run file: architecture, width, norm, and ConvNet's depth and pooling."""
    out = {"arch": settings.arch, "width": settings.width, "norm": settings.norm}
    if settings.arch == "convnet":
        out.update(depth=settings.depth, pool=settings.pool)
    return out


def check_networks(cfg: RunConfig, num_classes: int, image_size: int) -> None:
    """ConfigError, before any work, for an evaluation network that cannot take the images.

    Each network runs once on two blank images: a net made for 32-pixel images can end in 1 × 1
    maps on smaller ones, where instance norm has nothing to normalise.
    """
    for key, arch in [("eval.model", cfg.eval.model)] + [("eval.models", a) for a in cfg.eval.models]:
        spec = eval_settings(cfg, num_classes, arch).spec(image_size)
        try:
            with torch.no_grad():
                forward(spec, init_weights(spec, torch.Generator(), 1), torch.zeros(1, 2, 3, image_size, image_size),
                        train=True)
        except (RuntimeError, ValueError) as err:
            reason = str(err).splitlines()[0]
            raise ConfigError(f"{key}: {arch} with {spec.norm} norm cannot take {image_size} x {image_size} images "
                              f"({reason}); use larger images or another eval.norm") from None
