"""Seconds, FLOP rate and peak memory of one outer step (§8.3) at a fixed warm-up and window.

    python -m bench.outer_step --setting 1 [--repeats 5] [--set distill.real_subbatch=128 ...]

Settings (issue 6), all with the warm-up count c fixed instead of drawn:
  1      window 10, warm-up 10, 96 patches, real batch 256, ConvNet-128 on 32 × 32 synthetic images;
  2      configs/cpu.yaml (CIFAR-10 image folder, ConvNet-32), warm-up 10 (the mean of its 0..20);
  paper  ω 60, warm-up 70, B 5000 in sub-batches of 1000, ConvNet-128 on 32 × 32 synthetic images
         (the step's cost does not depend on pixel values); on the CPU with window checkpointing.
The first step is not timed (allocator and kernel warm-up). With --flops, one more untimed step
runs under torch.utils.flop_counter.FlopCounterMode to count the step's FLOPs, so the result
gives the achieved GFLOP/s.
"""

from __future__ import annotations

import os
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import machine, parser, pick_device, reset_peak, spread, timed, write_result
from ppodd.config import load_config, to_dict
from ppodd.method.distill import meta_gradient
from ppodd.cell.host import Host
from ppodd.cell.prepare import prepare
from ppodd.cell.stages import fresh_state, pool_of, settings_of
from ppodd.method.seeding import generator

_SYNTHETIC_32 = ["data.name=synthetic", "data.synthetic.image_size=32", "method=podd"]
SETTINGS = {
    "1": ("configs/demo.yaml", _SYNTHETIC_32 + [
        "data.synthetic.train_per_class=100", "model.width=128", "distill.window=10", "distill.warmup=10",
        "distill.total_window=200", "distill.real_batch=256", "distill.batch_patches=96"], 5),
    "2": ("configs/cpu.yaml", ["distill.warmup=10"], 5),
    "paper": ("configs/cifar10.yaml", _SYNTHETIC_32 + [
        "data.synthetic.train_per_class=500", "data.synthetic.test_per_class=10", "distill.warmup=70",
        "distill.real_subbatch=1000", "distill.checkpoint_window=true"], 1),
}


def outer_step(setting: str, device: str, extra: list[str], quick: bool):
    """(config, prepared data, single-poster pool, step) at a setting; `step(i)` runs outer step i."""
    path, overrides, _ = SETTINGS[setting]
    overrides = overrides + [f"device={device}"] + extra
    if quick:
        overrides += ["distill.window=2", "distill.warmup=2", "distill.real_batch=64", "model.width=16"]
    cfg = load_config(path, overrides)
    prep = prepare(cfg, Host.from_environment(os.environ))
    state = fresh_state(prep)
    state.live.requires_grad_(True)
    pool = pool_of(prep, state)
    settings, _ = settings_of(cfg, prep.data.num_classes)
    batch = cfg.distill.real_batch
    real_x, real_y = prep.train_x[:batch], prep.train_y[:batch]

    def step(i: int) -> None:
        meta_gradient(pool, torch.tensor([1.0]), prep.geom, real_x, real_y, cfg.distill.warmup, settings,
                      generator(cfg.seed, "bench", i))
        state.live.grad = None

    return cfg, prep, pool, step


def main(argv: list[str] | None = None) -> None:
    """Time `repeats` outer steps at one setting and write the result JSON."""
    p = parser(__doc__)
    p.add_argument("--setting", choices=sorted(SETTINGS), default="1")
    p.add_argument("--set", action="append", default=[], help="extra config overrides KEY=VALUE")
    p.add_argument("--flops", action="store_true", help="count the step's FLOPs (one more untimed step)")
    p.add_argument("--name", help="result name (default outer_step_SETTING)")
    args = p.parse_args(argv)
    repeats = 1 if args.quick else SETTINGS[args.setting][2]
    repeats = args.repeats or repeats
    start = machine(pick_device(args.device))
    cfg, prep, _, step = outer_step(args.setting, args.device, args.set, args.quick)
    device = prep.device
    reset_peak(device)

    times = []
    for i in range(repeats + (repeats > 1)):  # a lone repeat is timed cold: it is a memory check
        seconds = timed(lambda: step(i), device)
        counted = i > 0 or repeats == 1
        print(f"step {i}: {seconds:.2f} s{'' if counted else ' (warm-up, not counted)'}", flush=True)
        if counted:
            times.append(seconds)
    payload = {"setting": args.setting, "quick": args.quick, "config": to_dict(cfg), "repeats": repeats,
               **spread(times)}
    if args.flops:
        with FlopCounterMode(display=False) as counter:
            step(repeats + 1)
        flops = counter.get_total_flops()
        payload.update(flops_per_step=flops, achieved_gflops=round(flops / payload["median_s"] / 1e9, 2))
    write_result(args.out, args.name or f"outer_step_{args.setting}", device, start, payload)


if __name__ == "__main__":
    main(sys.argv[1:])
