"""Choosing the device a run uses, with a clear refusal when the asked-for one is not there."""

from __future__ import annotations

import torch

from mnist20k.config import DEVICES
from mnist20k.errors import UsageError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple's MPS, then the CPU; 'cuda:1' style indices are accepted."""
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise UsageError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)}")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available here; use --device cpu or auto")
    if kind == "cuda" and ":" in name:
        index, count = name.partition(":")[2], torch.cuda.device_count()
        if not index.isdigit() or int(index) >= count:
            raise UsageError(f"--device {name}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    if kind == "mps" and not _mps_available():
        raise UsageError("--device mps: Apple's MPS is not available here; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise UsageError(f"bad device {name!r}: {e}") from None


def _mps_available() -> bool:
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
