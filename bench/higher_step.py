"""The reference's way of taking a setting-1 outer step, with `higher`, beside ppodd's own.

    pip install -e '.[bench]'        # higher 0.2.1, the version the PoDD reference runs on
    python -m bench.higher_step [--repeats 5]

The PoDD reference code is not part of this repository; this is the same outer step (§8.3)
written the way it does it, for a side-by-side figure on the same machine: an `nn.Module`
ConvNet (the layers of `ppodd.method.model.forward`), c warm-up steps with `torch.optim.Adam` and
ordinary autograd, then ω steps inside `higher.innerloop_ctx`, whose differentiable Adam carries
on from the warm-up moments, and the real-batch loss backpropagated through the whole unrolled
graph to the poster. Data, patch draws, augmentation and sizes are those of
`bench.outer_step --setting 1` (ω 10, c 10, b 96, B 256, ConvNet-128 on 32 × 32), so the
implementations differ only in how the inner loop and its meta-gradient are computed.

The benchmark times ppodd's step (plain window and `checkpoint_window`) and this one in turns, in
one process, and reports each one's median seconds and peak memory: the RSS high-water mark of its
own steps on the CPU (reset before each step), `max_memory_allocated` on a GPU.
"""

from __future__ import annotations

import dataclasses
import sys
from functools import partial
from importlib.metadata import version

import higher
import torch
import torch.nn.functional as F
from torch import nn

from bench.common import (machine, parser, pick_device, reset_peak, reset_rss_peak, rss_peak_gib, spread, timed,
                          write_result)
from bench.outer_step import outer_step
from ppodd.method.augment import draw_flip_rotate, flip_rotate
from ppodd.method.distill import Pool, StepSettings, meta_gradient
from ppodd.method.model import init_params
from ppodd.method.poster import PosterGeometry
from ppodd.cell.stages import settings_of
from ppodd.method.seeding import generator
from ppodd.method.unroll import ADAM_EPS, BETAS, draw_step, soft_cross_entropy, synthetic_batch


def convnet(width: int, depth: int, num_classes: int, image_size: int) -> nn.Sequential:
    """ConvNet-3 as a module: conv → instance norm (GroupNorm, a group per channel) → ReLU → pool.

    Its parameters come in the order of `ppodd.method.model`'s weight list."""
    layers: list[nn.Module] = []
    c_in = 3
    for _ in range(depth):
        layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.GroupNorm(width, width), nn.ReLU(), nn.AvgPool2d(2)]
        c_in = width
    side = image_size // 2 ** depth
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * side * side, num_classes))


def higher_meta_gradient(pool: Pool, pi: torch.Tensor, geom: PosterGeometry, real_x: torch.Tensor,
                         real_y: torch.Tensor, warmup: int, s: StepSettings,
                         generator: torch.Generator, torch_eps: bool = False) -> torch.Tensor:
    """`ppodd.method.distill.meta_gradient` computed the reference's way, through `higher`.

    Same arguments, the same random draws in the same order (initial weights, warm-up and window
    patches, real-batch augmentation) and the same result: the real-batch loss, with its gradient
    left in the live poster's `.grad`. The whole batch goes through at once (no sub-batches).
    The one difference is the window's Adam ε: higher's differentiable Adam adds ε to √v before
    dividing by √(1 − β₂ᵗ), torch.optim.Adam (the reference's warm-up, and ppodd) after. With
    `torch_eps` each window step hands higher ε·√(1 − β₂ᵗ), which makes its update torch's.
    """
    posters, labels = pool.stacked(geom, s.label_eps)
    net = convnet(s.width, s.depth, s.num_classes, geom.tile).to(device=posters.device, dtype=posters.dtype)
    with torch.no_grad():
        for p, w in zip(net.parameters(), init_params(s.num_classes, s.width, s.depth, geom.tile, generator)):
            p.copy_(w)
    warm = [draw_step(pi, s.batch_patches, geom.num_patches, s.augment, generator) for _ in range(warmup)]
    window = [draw_step(pi, s.batch_patches, geom.num_patches, s.augment, generator) for _ in range(s.window)]
    real_aug = draw_flip_rotate(1, real_x.shape[0], generator) if s.augment else None
    opt = torch.optim.Adam(net.parameters(), lr=s.inner_lr, eps=ADAM_EPS)
    for draw in warm:
        x, y = synthetic_batch(posters.detach(), labels.detach(), draw, geom)
        opt.zero_grad()
        soft_cross_entropy(net(x), y).backward()
        opt.step()
    with higher.innerloop_ctx(net, opt, copy_initial_weights=True) as (fnet, diffopt):
        for t, draw in enumerate(window, start=warmup + 1):
            if torch_eps:
                diffopt.param_groups[0]["eps"] = ADAM_EPS * (1 - BETAS[1] ** t) ** 0.5
            x, y = synthetic_batch(posters, labels, draw, geom)
            diffopt.step(soft_cross_entropy(fnet(x), y))
        x = flip_rotate(real_x, real_aug) if real_aug is not None else real_x
        loss = F.cross_entropy(fnet(x), real_y)
        loss.backward()
    return loss.detach()


def main(argv: list[str] | None = None) -> None:
    """Time ppodd's step (plain and checkpointed window) and higher's, taking turns, with the peak
    RSS of each; check that their poster gradients agree; write the result JSON."""
    p = parser(__doc__)
    args = p.parse_args(argv)
    repeats = 1 if args.quick else args.repeats or 5
    device = pick_device(args.device)
    start = machine(device)
    cfg, prep, pool, _ = outer_step("1", args.device, [], args.quick)
    plain, _ = settings_of(cfg, prep.data.num_classes)
    real_x, real_y = prep.train_x[:cfg.distill.real_batch], prep.train_y[:cfg.distill.real_batch]
    pi = torch.tensor([1.0])
    variants = {"ppodd": partial(meta_gradient, s=plain),
                "ppodd_checkpointed": partial(meta_gradient, s=dataclasses.replace(plain, checkpoint_window=True)),
                "higher": partial(higher_meta_gradient, s=plain)}

    def step(i: int, fn) -> torch.Tensor:
        fn(pool, pi, prep.geom, real_x, real_y, cfg.distill.warmup,
           generator=generator(cfg.seed, "bench", i))
        grad, pool.live.grad = pool.live.grad, None
        return grad

    # The variants take turns, in a rotating order, so that a change in the shared machine's speed
    # weighs on all alike; each step's peak RSS is its own (the high-water mark is reset before it).
    times = {name: [] for name in variants}
    peaks = {name: 0.0 for name in variants}
    names = list(variants)
    for i in range(repeats + 1):
        for name in names[i % len(names):] + names[:i % len(names)]:
            reset_peak(device)
            reset_rss_peak()
            seconds = timed(lambda: step(i, variants[name]), device)
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else rss_peak_gib()
            print(f"step {i} {name}: {seconds:.2f} s, peak {peak:.2f} GiB"
                  f"{' (warm-up, not counted)' if i == 0 else ''}", flush=True)
            if i > 0:
                times[name].append(seconds)
                peaks[name] = max(peaks[name], peak)
    # Agreement with ppodd's gradient on the same draws, in float32: higher as the reference runs
    # it, and with the window's ε placed as torch places it (tests/test_unroll.py: float64).
    ours = step(0, variants["ppodd"])
    agreement = {name: ((ours - step(0, partial(higher_meta_gradient, s=plain, torch_eps=eps))).norm()
                        / ours.norm()).item() for name, eps in (("higher_eps", False), ("torch_eps", True))}
    print(f"poster gradient against ppodd's, relative difference: {agreement}", flush=True)
    results = {name: {**spread(times[name]), "peak_gib": round(peaks[name], 3)} for name in variants}
    payload = {"setting": "1", "higher": version("higher"), "quick": args.quick, "repeats": repeats,
               "peak_kind": "cuda max_memory_allocated" if device.type == "cuda" else "RSS high-water mark per step",
               "variants": results,
               "higher_over_ppodd_time": round(results["higher"]["median_s"] / results["ppodd"]["median_s"], 3),
               "grad_rel_diff_vs_ppodd": agreement}
    write_result(args.out, "side_by_side_1", device, start, payload)


if __name__ == "__main__":
    main(sys.argv[1:])
