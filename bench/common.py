"""What every benchmark shares: machine facts, timing, peak memory and the result file.

A benchmark is a module `bench.<name>` with `main(argv)`; `python -m bench` runs each in a fresh
process, so the peak RSS one reports is its own and not that of a benchmark run before it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ppodd.cell.malloc import hand_back_freed_memory

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() is empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict:
    """Where and with what a benchmark ran, including the 1-minute load average at its start,
    so that a slow figure measured on a busy shared machine shows as such."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    return {"host": socket.gethostname(), "machine": name, "cpus": os.cpu_count(),
            "torch": str(torch.__version__), "python": platform.python_version(), "device": str(device),
            "threads": torch.get_num_threads(), "load_1min_at_start": round(os.getloadavg()[0], 2),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def sync(device: torch.device) -> None:
    """Wait for queued device work, so a timer measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of `fn` takes, device work included."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def spread(seconds: list[float]) -> dict:
    """Median, min, max and max − min of repeated timings."""
    return {"seconds": [round(s, 4) for s in seconds], "median_s": round(statistics.median(seconds), 4),
            "min_s": round(min(seconds), 4), "max_s": round(max(seconds), 4),
            "spread_s": round(max(seconds) - min(seconds), 4)}


def reset_peak(device: torch.device) -> None:
    """Start a new peak-memory window on a GPU (the CPU's RSS peak cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def reset_rss_peak() -> bool:
    """Set the process's RSS high-water mark back to its current RSS, so that `rss_peak_gib`
    gives the peak of what runs next (Linux: /proc/self/clear_refs); False where it cannot.

    Memory that malloc keeps from earlier work is handed back first, so that the peak starts from
    what is in use, as in a fresh process.
    """
    hand_back_freed_memory()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_peak_gib() -> float:
    """The process's RSS high-water mark (VmHWM) in GiB: since the last `reset_rss_peak`, or the
    process's maximum RSS where /proc is not there."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def peak_memory(device: torch.device) -> dict:
    """Peak memory so far: the process's maximum RSS on the CPU, max_memory_allocated on a GPU."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20      # KiB on Linux
    out = {"peak_rss_gib": round(rss, 3)}
    if device.type == "cuda":
        out["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return out


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (each benchmark has its default)")
    p.add_argument("--quick", action="store_true", help="smaller sizes, to check that it runs")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON result")
    return p


def pick_device(name: str) -> torch.device:
    """The device for --device auto | cpu | cuda."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def write_result(out: Path, name: str, device: torch.device, start: dict, payload: dict) -> Path:
    """Write one benchmark's result as JSON under `out`, atomically; print and return its path.

    `start` is `machine(device)` taken when the benchmark began; the peak memory is read now.
    """
    result = {"benchmark": name, **start, **payload, **peak_memory(device),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{device.type}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, path)
    print(f"RESULT {path}", flush=True)
    return path
