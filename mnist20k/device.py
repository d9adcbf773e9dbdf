"""Choosing the device a run uses, with a clear refusal when the asked-for one is not there, and its name as
records give it."""

from __future__ import annotations

import os
import platform

import torch

from mnist20k.config import parse_device
from mnist20k.errors import UsageError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple's MPS, then the CPU; 'cuda:1' style indices are accepted."""
    kind, index = parse_device(name)
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available here; use --device cpu or auto")
    if kind == "cuda" and index is not None and index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise UsageError(f"--device {name}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    if kind == "mps" and not _mps_available():
        raise UsageError("--device mps: Apple's MPS is not available here; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise UsageError(f"bad device {name!r}: {e}") from None


def _mps_available() -> bool:
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def device_name(device: str, threads: int | None = None) -> str:
    """The device by name; a CPU with its cores and the threads each run uses (`threads`, or this process's)."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if dev.type != "cpu":
        return dev.type
    # A CPU run's numbers depend on its thread count (OMP_NUM_THREADS, which every run inherits).
    threads = threads or torch.get_num_threads()
    return f"cpu ({platform.machine()}, {os.cpu_count()} CPUs, {threads} thread{'s' * (threads != 1)} a run)"
