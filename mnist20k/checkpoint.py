"""Checkpoints: self-describing, written atomically, read only through torch's weights_only loader.

A checkpoint is a dict of tensors and plain Python values (docs/runs.md, "Checkpoints, resume and exit codes"), so
`torch.load(weights_only=True)` reads it without allow-listing anything and a file that would need
arbitrary unpickling, and so could run code, is refused rather than loaded.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import TypedDict

import torch

from mnist20k.errors import CheckpointError
from mnist20k.files import reason, write_file

FORMAT = "mnist20k-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


class Saved(TypedDict):
    """What every checkpoint holds: enough to rebuild, score and export the network. (Keys are the file's.)"""

    format: str  # FORMAT
    format_version: int  # FORMAT_VERSION when written; a reader takes any up to its own
    model: dict  # what rebuilds the network: nets.Network.record()
    model_state: dict  # the network's state dict
    config: dict  # the run's TrainConfig, as config.json holds it
    epoch: int  # epochs completed
    metrics: list[dict]  # one record an epoch, as metrics.jsonl holds them


class Checkpoint(Saved, total=False):
    """The checkpoint's one layout: training writes it each epoch; resume reads the training state back."""

    mnist20k_version: str
    optimizer_state: dict  # with lr as floats (train._lr_as_float), so that it resumes on any device
    scheduler_state: dict
    rng: dict  # "torch", "generator", "device" (the generator's device type), and "cuda" on CUDA
    trained_state: dict  # with --ema: the trained network's state dict (model_state holds the average)
    distilled_from: dict  # with --teacher: its folder, checkpoint sha256, config, final accuracy, seconds


REQUIRED_KEYS = tuple(Saved.__annotations__)


def save_checkpoint(path: Path, state: Checkpoint) -> None:
    """`state` as a checkpoint at `path`, atomically; a failed write (OutputError) leaves the old file whole."""
    buffer = io.BytesIO()  # serialized in memory: a checkpoint is a few hundred kB
    torch.save(state, buffer)
    write_file(path, buffer.getvalue())


def find_checkpoint(path: Path | str) -> Path:
    """A checkpoint file, or the checkpoint inside a run folder."""
    path = Path(path)
    if path.is_dir():
        if not (path / CHECKPOINT_NAME).is_file():
            raise CheckpointError(f"{path} is a folder without a {CHECKPOINT_NAME}: not a run folder")
        return path / CHECKPOINT_NAME
    if not path.exists():
        raise CheckpointError(f"no such checkpoint: {path}")
    return path


def load_checkpoint(path: Path | str) -> Checkpoint:
    """Read and check a checkpoint on the CPU; every failure is a CheckpointError that says why."""
    path = find_checkpoint(path)
    try:
        with open(path, "rb") as f:  # opened here, so that an unreadable file is told apart from a corrupt one
            if os.fstat(f.fileno()).st_size == 0:
                raise CheckpointError(f"{path} is empty: not a checkpoint")
            with warnings.catch_warnings():  # the loader warns about foreign pickles before refusing them
                warnings.simplefilter("ignore")
                ckpt = torch.load(f, map_location="cpu", weights_only=True)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {reason(e)}") from None
    except CheckpointError:
        raise
    except Exception as e:  # the loader fails in many ways on foreign bytes; each means "refused"
        raise CheckpointError(_refusal(path, e)) from None
    _check_format(path, ckpt)
    return ckpt


def _refusal(path: Path, error: Exception) -> str:
    match = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    if match:
        return (
            f"{path} refused: it holds Python objects ({match.group(1)}) that only unsafe unpickling "
            "could load, which could run code; nothing in it was run"
        )
    return (
        f"{path} is not a readable checkpoint (truncated, corrupt, or not tensors and plain values): "
        "refused by PyTorch's safe loader; nothing in it was run"
    )


def _check_format(path: Path, ckpt: object) -> None:
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a PyTorch file but not an mnist20k checkpoint")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is an incomplete mnist20k checkpoint: no {', '.join(missing)}")
    version = ckpt["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version}, newer than this mnist20k reads "
            f"({FORMAT_VERSION}); upgrade mnist20k"
        )
