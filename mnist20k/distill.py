"""--teacher RUN: knowledge distillation from a finished run. The student learns from the labels and from the
teacher's softened answers on the same augmented batch (Hinton et al., 2015):

    loss = (1 - alpha) * CE(student, labels) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

T^2 keeps the soft term's gradients as large as the hard term's whatever T is. The teacher is read with
weights_only, like every checkpoint, and runs in eval mode without gradients.

Honest by construction: a student that scores --val N held-out images takes only a teacher that held out those
same images (the last N of the training file: a teacher with --val M >= N did), or else its validation score
would be judged by a network that has seen the answers. The student's checkpoint and config.json record the
teacher (`distilled_from`: its folder, its checkpoint's sha256, its settings and its training time, its own
teacher's included), and every table that shows the run says so and counts that time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mnist20k.config import TrainConfig
from mnist20k.errors import UsageError
from mnist20k.results import loop_seconds
from mnist20k.settings import TEACHER_RECORD, saved_config

if TYPE_CHECKING:  # torch is imported where a network is, not with the records sweep and tune read (below)
    import torch
    from torch import nn

RECORD = TEACHER_RECORD  # the key of the teacher's record in a student's checkpoint and config.json


@dataclass
class Teacher:
    module: nn.Module  # on the student's device, in eval mode, no gradients
    record: dict  # folder, sha256, config, seconds: what the student's files say of it


def load_teacher(config: TrainConfig, dev: torch.device, recorded: dict | None = None) -> Teacher:
    """The finished run `config.teacher` names, checked against the student; `recorded`, a resumed student's
    record of its teacher, which the checkpoint must still be."""
    from mnist20k.checkpoint import find_checkpoint, load_checkpoint
    from mnist20k.nets import rebuild

    path = find_checkpoint(config.teacher)
    ckpt = load_checkpoint(path)
    where = f"--teacher {config.teacher}"
    theirs = saved_config(ckpt["config"], where=str(path))
    if ckpt["epoch"] < theirs.epochs:
        raise UsageError(
            f"{where} has trained {ckpt['epoch']} of its {theirs.epochs} epochs: a teacher is a finished run"
        )
    if config.val and theirs.val < config.val:
        trained = "all 60,000 training images" if not theirs.val else f"the images before its last {theirs.val:,}"
        raise UsageError(
            f"{where} trained on {trained}, among them this run's {config.val:,} validation images: give a teacher "
            f"trained with --val {config.val} (or more), or the validation score would be judged by what it has seen"
        )
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    if recorded is not None and recorded.get("sha256") != sha256:
        raise UsageError(f"{where} is not the checkpoint this run was distilled from: it has changed since")
    if isinstance(ckpt["model"], dict) and "ref" in ckpt["model"]:
        raise UsageError(f"{where} is a network of your own: a teacher is a built-in network (cnn draws most shapes)")
    module = rebuild(ckpt, where=str(path), device=dev).module.eval().requires_grad_(False)
    own = ckpt.get(RECORD) or {}
    record = {
        "folder": str(path.parent.resolve()),
        "sha256": sha256,
        "config": ckpt["config"],
        "accuracy": _final(ckpt["metrics"]),
        "seconds": round(loop_seconds(ckpt["metrics"]) + own.get("seconds", 0.0), 3),  # and its own teacher's
    }
    return Teacher(module, record)


def _final(metrics: list[dict]) -> dict:
    last = metrics[-1]
    return {k: v for k, v in last.items() if k.endswith("_accuracy")}


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, hard: torch.Tensor, c: TrainConfig) -> torch.Tensor:
    """The loss above from both networks' log-probabilities: log_softmax of them over T is of the logits over T."""
    import torch.nn.functional as F

    t = c.temperature
    soft = F.kl_div(
        F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1), reduction="batchmean", log_target=True
    )
    return (1 - c.distill_weight) * hard + c.distill_weight * t * t * soft


def recorded(folder: Path | str) -> dict | None:
    """The teacher a run folder's config.json records, or None for a run without one (or no config.json)."""
    try:
        return json.loads((Path(folder) / "config.json").read_text()).get(RECORD)
    except (OSError, ValueError, AttributeError):
        return None


def described(record: dict) -> str:
    """What a table of a distilled run says of it: its teacher, and that the times count the teacher's."""
    return f"distilled from {record['folder']}; times include its {record['seconds']:.1f} s of training"
