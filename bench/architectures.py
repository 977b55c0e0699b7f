"""Seconds for K evaluation networks of each architecture (§9), trained together against one after another.

    python -m bench.architectures [--nets 8] [--steps 4] [--block 2] [--widths convnet=32,resnet18=8,...]

For ConvNet, ResNet-18, VGG-11 and AlexNet in turn, the two forms `ppodd.method.evaluate.evaluate_pool`
chooses between with `eval.batching`: the K nets' weights stacked and trained by one gradient
per step (`stacked`), or the same step taken by one net after another (`sequential`), each net
on its own slice of the same draws. Both draw b = 96 patches per net and step from a pool of 5
CIFAR-10-sized posters (153 × 60), augment them and take an Adam step, with the allocation
evaluation uses (`ppodd.cell.malloc`); test-set scoring is not timed. The forms take turns in
blocks of --block steps (`bench.evaluation.compare`), so a change in the shared machine's speed
weighs on both alike. Per architecture the result has both times and their ratio (sequential over
stacked: above 1, training together pays).
"""

from __future__ import annotations

import sys

import torch

from bench.common import machine, parser, pick_device, write_result
from bench.evaluation import POOL, compare
from ppodd.cell.malloc import reuse_freed_memory
from ppodd.method.class_order import identity_order
from ppodd.method.evaluate import EvalSettings, nets_of, optimizer_state, train_step
from ppodd.method.labels import fixed_labels
from ppodd.method.networks import ARCHITECTURES, STANDARD_NORM, init_weights
from ppodd.method.poster import init_poster, make_geometry
from ppodd.method.unroll import draw_step

# Small enough for a 2-core CPU to take a few steps of 8 nets of each in about a minute.
WIDTHS = {"convnet": 32, "resnet18": 8, "vgg11": 8, "alexnet": 16}


def _widths(text: str) -> dict[str, int]:
    out = dict(WIDTHS)
    for item in filter(None, text.split(",")):
        arch, _, width = item.partition("=")
        out[arch] = int(width)
    return out


def main(argv: list[str] | None = None) -> None:
    """Time both forms for every architecture and write one result JSON."""
    p = parser(__doc__)
    p.add_argument("--nets", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--block", type=int, default=2, help="steps per block; blocks of the two alternate")
    p.add_argument("--widths", default="", help="ARCH=WIDTH,... overriding " + str(WIDTHS))
    p.add_argument("--archs", default=",".join(ARCHITECTURES))
    args = p.parse_args(argv)
    device = pick_device(args.device)
    start = machine(device)
    steps = 2 if args.quick else args.steps
    widths = _widths(args.widths)
    geom = make_geometry(0.9, 10, 32)
    labels = fixed_labels(geom, identity_order(geom.rows, geom.cols)).expand(POOL, -1, -1).contiguous().to(device)
    posters = torch.stack([init_poster(geom, torch.Generator().manual_seed(i)) for i in range(POOL)]).to(device)
    pi = torch.full((POOL,), 1.0 / POOL)
    results = {}
    for arch in args.archs.split(","):
        s = EvalSettings(args.nets, (steps,), 1e-3, 96, True, 10, widths[arch], 3, 2000, arch=arch,
                         norm=STANDARD_NORM[arch])
        spec = s.spec(geom.tile)

        def runner(size: int):
            """K nets in groups of `size`; each call advances every net by `count` steps."""
            gen = torch.Generator().manual_seed(0)
            weights = init_weights(spec, gen, args.nets, device=device)
            groups = [weights.net(k, k + size) for k in range(0, args.nets, size)]
            states = [optimizer_state(g.params, s) for g in groups]

            def run(count: int) -> None:
                with torch.no_grad():
                    for _ in range(count):
                        draw = draw_step(pi, 96, geom.num_patches, True, gen, nets=args.nets)
                        for i, group in enumerate(groups):
                            groups[i], states[i] = train_step(spec, group, states[i], posters, labels,
                                                              nets_of(draw, i * size, (i + 1) * size), geom, s)
            return run

        print(f"{arch} (width {widths[arch]}, {STANDARD_NORM[arch]} norm):", flush=True)
        with reuse_freed_memory():
            timing = compare({"batched": runner(args.nets), "sequential": runner(1)}, steps, 1, args.block, device)
        results[arch] = {"width": widths[arch], "norm": STANDARD_NORM[arch], "stacked_s": timing.pop("batched_s"),
                         **timing}
    payload = {"nets": args.nets, "steps": steps, "batch_patches": 96, "pool": POOL, "quick": args.quick,
               "architectures": results}
    write_result(args.out, f"architectures_k{args.nets}_s{steps}", device, start, payload)


if __name__ == "__main__":
    main(sys.argv[1:])
