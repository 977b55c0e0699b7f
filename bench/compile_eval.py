"""Does torch.compile pay for the evaluation step? Eager against compiled, same inputs.

    python -m bench.compile_eval [--width 32] [--nets 8]

Times the gradient of the stacked evaluation loss (8 nets × 96 images, what every evaluation
step computes) as `ppodd.method.evaluate` takes it, eager and with `eval.compile: true`
(`compiled_grad`), the two taking turns call by call so that the shared machine's drift weighs on
both alike; the compiled version's first call (the compile) is timed apart.
"""

from __future__ import annotations

import sys

import torch

from bench.common import machine, parser, pick_device, spread, timed, write_result
from ppodd.method.evaluate import _stacked_grad, compiled_grad
from ppodd.method.model import init_params
from ppodd.method.networks import NetSpec


def main(argv: list[str] | None = None) -> None:
    """Time eager and compiled gradients and write the result JSON."""
    p = parser(__doc__)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--nets", type=int, default=8)
    args = p.parse_args(argv)
    device = pick_device(args.device)
    start = machine(device)
    repeats = args.repeats or 5
    gen = torch.Generator().manual_seed(0)
    width = 8 if args.quick else args.width
    params = init_params(10, width, 3, 32, gen, nets=args.nets, device=device)
    spec = NetSpec("convnet", 10, 32, width)
    x = torch.randn(args.nets, 96, 3, 32, 32, generator=gen).to(device)
    y = torch.softmax(torch.randn(args.nets, 96, 10, generator=gen), -1).to(device)
    eager, compiled = _stacked_grad, compiled_grad()
    eager(params, spec, [], x, y)
    first = timed(lambda: compiled(params, spec, [], x, y), device)
    eager_s, compiled_s = [], []
    for _ in range(repeats):
        eager_s.append(timed(lambda: eager(params, spec, [], x, y), device))
        compiled_s.append(timed(lambda: compiled(params, spec, [], x, y), device))
    diff = max(float((a - b).abs().max())
               for a, b in zip(eager(params, spec, [], x, y)[0], compiled(params, spec, [], x, y)[0]))
    e, c = spread(eager_s), spread(compiled_s)
    print(f"eager {e['median_s']:.3f} s, compiled {c['median_s']:.3f} s per call, compile {first:.1f} s", flush=True)
    payload = {"width": width, "nets": args.nets, "quick": args.quick, "repeats": repeats, **e,
               "compiled": c, "compile_first_call_s": round(first, 3), "max_abs_difference": diff}
    write_result(args.out, "compile_eval", device, start, payload)


if __name__ == "__main__":
    main(sys.argv[1:])
