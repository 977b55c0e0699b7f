"""The pool patch sampler behind every inner step: warm-up, unrolled window, evaluation (§10.1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def sample_pool(
    pi: Tensor | Sequence[float],
    batch: int,
    num_patches: int,
    generator: torch.Generator,
    *,
    nets: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Pool member and patch index for each of the b patch slots of one inner step.

    ``pi`` is the stage distribution π over the M pool members, shape (M,), in the pool's own
    order (zero entries are never drawn). Each slot draws its member i.i.d. from π; each member
    m drawn n_m times gets n_m distinct patch indices from {0 … N−1}, uniform without
    replacement (§10.1; with M = 1 this is plain PoDD, §8.2, and b = N yields a permutation).
    Returns ``(member, patch)``, int64, each (b,), or (nets, b) with ``nets`` independent draws,
    one per evaluation network (§9). All randomness comes from ``generator``, first the members
    then the patch order, and the work runs on the generator's device; the results are moved to
    ``device`` when given, else they stay there (CPU for a CPU generator).

    Raises ValueError when some n_m would exceed N. That cannot happen for b ≤ N; the config
    layer rejects b > N, so here it only guards direct calls.
    """
    work = generator.device
    weights = torch.as_tensor(pi, dtype=torch.float64).to(work)
    if weights.dim() != 1 or weights.numel() == 0:
        raise ValueError(f"pi: got shape {tuple(weights.shape)}, allowed a non-empty 1-D vector")
    if not (torch.isfinite(weights).all() and (weights >= 0).all() and weights.sum() > 0):
        raise ValueError(
            f"pi: got {weights.tolist()}, allowed finite values >= 0 with a positive sum"
        )
    if batch < 1 or num_patches < 1:
        raise ValueError(f"batch, num_patches: got {batch}, {num_patches}, allowed integers >= 1")
    if nets is not None and nets < 1:
        raise ValueError(f"nets: got {nets}, allowed None or an integer >= 1")

    rows = 1 if nets is None else nets
    members_count = weights.numel()
    member = torch.multinomial(
        weights.expand(rows, members_count), batch, replacement=True, generator=generator
    )  # (rows, b)

    # Rank of each slot among the earlier slots of its row that drew the same member.
    one_hot = member.unsqueeze(-1) == torch.arange(members_count, device=work)  # (rows, b, M)
    running = one_hot.cumsum(dim=1)  # (rows, b, M)
    if batch > num_patches and running[:, -1].max() > num_patches:
        raise ValueError(
            f"batch: a pool member drew more than num_patches = {num_patches} patches "
            f"(batch = {batch}); allowed batch <= num_patches"
        )
    rank = running.gather(-1, member.unsqueeze(-1)).squeeze(-1) - 1  # (rows, b)

    # One random patch order per (row, member); slot k of member m takes that order's k-th entry.
    noise = torch.rand((rows, members_count, num_patches), generator=generator, device=work)
    order = torch.argsort(noise, dim=-1)  # (rows, M, N)
    row = torch.arange(rows, device=work).unsqueeze(-1)  # (rows, 1)
    patch = order[row, member, rank]  # (rows, b)

    if nets is None:
        member, patch = member[0], patch[0]
    if device is not None:
        member, patch = member.to(device), patch.to(device)
    return member, patch
