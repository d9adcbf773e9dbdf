"""The devices by name: a name's spelling checked, the device a run uses chosen with a clear refusal when the
asked-for one is not there, and its name as records give it. torch is imported where it is used: the command
line's --help reads DEVICES."""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING

from mnist20k.errors import UsageError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda", "mps")  # "cuda:1" names one of several GPUs


def parse_device(name: str) -> tuple[str, int | None]:
    """'cuda:1' -> ('cuda', 1), 'cpu' -> ('cpu', None): the spelling checked, not whether the device is here."""
    kind, colon, index = name.partition(":")
    if kind not in DEVICES or (colon and (kind != "cuda" or not index.isdigit())):
        raise UsageError(f"{name!r} is not one of {', '.join(DEVICES)}, cuda:N")
    return kind, int(index) if colon else None


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple's MPS, then the CPU; 'cuda:1' style indices are accepted."""
    import torch

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
    import torch

    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def device_name(device: str, threads: int | None = None) -> str:
    """The device by name; a CPU with its cores and the threads each run uses (`threads`, or this process's)."""
    import torch

    dev = resolve_device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if dev.type != "cpu":
        return dev.type
    # A CPU run's numbers depend on its thread count (OMP_NUM_THREADS, which every run inherits).
    threads = threads or torch.get_num_threads()
    return f"cpu ({platform.machine()}, {os.cpu_count()} CPUs, {threads} thread{'s' * (threads != 1)} a run)"
