"""Seconds and peak memory of one outer step at a fixed warm-up and window (issue 6, setting 1).

    python -m bench.outer_step --repeats 5 [--set model.width=128 ...]

Setting 1 (the defaults here): window 10, warm-up 10, 96 patches, real batch 256, ConvNet-128 on
32 x 32 synthetic images (the step's cost does not depend on the pixel values). Writes one JSON
file under bench/results/ and prints a line per repeat. Peak memory is the process's maximum RSS
on the CPU and torch.cuda.max_memory_allocated on a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import socket
import statistics
import time
from pathlib import Path

import torch

from ppodd.config import load_config, to_dict
from ppodd.distill import Pool
from ppodd.prepare import prepare
from ppodd.run import _settings, fresh_state
from ppodd.distill import meta_gradient
from ppodd.seeding import generator

SETTING_1 = ["data.synthetic.image_size=32", "data.synthetic.train_per_class=100",
             "model.width=128", "distill.window=10", "distill.warmup=10", "distill.total_window=200",
             "distill.real_batch=256", "distill.batch_patches=96", "method=podd"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--name", default="outer_step_setting1")
    args = parser.parse_args()
    cfg = load_config(args.config, SETTING_1 + args.set)
    prep = prepare(cfg)
    state = fresh_state(prep)
    state.live.requires_grad_(True)
    pool = Pool(state.live, None, prep.fixed_labels, state.live.new_zeros((0, *state.live.shape)),
                prep.fixed_labels.new_zeros((0, *prep.fixed_labels.shape)))
    settings, _ = _settings(cfg, prep.data.num_classes)
    batch = cfg.distill.real_batch
    times = []
    for i in range(args.repeats + 1):  # the first step warms up the allocator and kernels
        start = time.perf_counter()
        loss = meta_gradient(pool, torch.tensor([1.0]), prep.geom, prep.train_x[:batch], prep.train_y[:batch],
                             cfg.distill.warmup, settings, generator(cfg.seed, "bench", i))
        float(loss)
        state.live.grad = None
        seconds = time.perf_counter() - start
        print(f"step {i}: {seconds:.2f} s{' (warm-up, not counted)' if i == 0 else ''}", flush=True)
        if i:
            times.append(seconds)
    if prep.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result = {"benchmark": args.name, "host": socket.gethostname(), "machine": platform.processor() or platform.machine(),
              "torch": str(torch.__version__), "device": str(prep.device), "threads": torch.get_num_threads(),
              "settings": to_dict(cfg), "repeats": args.repeats, "seconds": times,
              "median_s": statistics.median(times), "spread_s": max(times) - min(times), "peak_gib": round(peak, 3),
              "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    out = Path("bench/results") / f"{args.name}-{prep.device.type}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"median {result['median_s']:.2f} s, spread {result['spread_s']:.2f} s, peak {peak:.2f} GiB -> {out}")


if __name__ == "__main__":
    main()
