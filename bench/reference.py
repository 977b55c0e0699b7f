"""The machine's reference compute rate: ConvNet-128 forward + backward at batch 96, and a matmul.

    python -m bench.reference

The ConvNet's FLOPs are counted by torch.utils.flop_counter.FlopCounterMode (convolutions and
matmuls, forward and backward), the same counter the outer-step benchmark uses, so the outer
step's achieved GFLOP/s divided by this rate is the fraction of the attainable limit it reaches.
The 2048² float32 matmul is the machine's dense-GEMM ceiling, for scale.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench.common import machine, parser, pick_device, spread, timed, write_result
from ppodd.method.model import forward, init_params


def main(argv: list[str] | None = None) -> None:
    """Measure the ConvNet and matmul rates and write the result JSON."""
    p = parser(__doc__)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--batch", type=int, default=96)
    args = p.parse_args(argv)
    device = pick_device(args.device)
    start = machine(device)
    repeats = args.repeats or 5
    iters = 2 if args.quick else 10
    gen = torch.Generator().manual_seed(0)
    params = [t.requires_grad_() for t in init_params(10, args.width, 3, 32, gen, device=device)]
    x = torch.randn(args.batch, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=gen).to(device)

    def convnet() -> None:
        for _ in range(iters):
            loss = F.cross_entropy(forward(params, x), y)
            torch.autograd.grad(loss, params)

    with FlopCounterMode(display=False) as counter:
        convnet()
    flops = counter.get_total_flops() / iters
    convnet()
    conv_s = [timed(convnet, device) / iters for _ in range(repeats)]
    a = torch.randn(2048, 2048, generator=gen).to(device)

    def matmul() -> None:
        for _ in range(iters):
            a @ a

    matmul()
    mm_s = [timed(matmul, device) / iters for _ in range(repeats)]
    conv, mm = spread(conv_s), spread(mm_s)
    payload = {"width": args.width, "batch": args.batch, "iters": iters, "repeats": repeats,
               "flops_per_fwd_bwd": flops, **conv,
               "convnet_gflops": round(flops / conv["median_s"] / 1e9, 2),
               "matmul_2048": mm, "matmul_gflops": round(2 * 2048**3 / mm["median_s"] / 1e9, 2)}
    print(f"ConvNet-{args.width} fwd+bwd at {args.batch}: {payload['convnet_gflops']} GFLOP/s; "
          f"2048² matmul: {payload['matmul_gflops']} GFLOP/s", flush=True)
    write_result(args.out, "reference", device, start, payload)


if __name__ == "__main__":
    main(sys.argv[1:])
