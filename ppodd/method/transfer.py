"""Copies of CPU tensors to the device that never make the host wait for the device.

Every random draw is made on the CPU (seeding.py), so each inner and evaluation step sends a few
small index tensors to the device. A plain `.to("cuda")` from ordinary host memory is a blocking
copy: PyTorch waits for the device to finish all queued work before it returns, so the host
cannot queue the next step's kernels while the device runs this step's. A copy from page-locked
memory with `non_blocking=True` is queued like a kernel instead; PyTorch keeps the page-locked
block until the copy is done.
"""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`tensor` on `device`: from the CPU to a GPU without a host synchronisation; on the CPU
    the tensor itself, as `Tensor.to` gives it."""
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
