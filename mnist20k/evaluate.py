"""Scoring a model, or a saved checkpoint, on the 10,000 MNIST test images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mnist20k.data import load_split, normalize


@dataclass
class Score:
    loss: float  # mean negative log-likelihood per image
    correct: int
    total: int
    confusion: list[list[int]]  # confusion[true][predicted]

    @property
    def accuracy(self) -> float:
        """Percent correct."""
        return 100.0 * self.correct / self.total

    @property
    def per_class(self) -> list[float]:
        """Percent correct of each true digit 0-9."""
        return [100.0 * row[i] / max(1, sum(row)) for i, row in enumerate(self.confusion)]

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "correct": self.correct,
            "total": self.total,
            "loss": self.loss,
            "per_class": self.per_class,
            "confusion": self.confusion,
        }


@torch.no_grad()
def predict_log_probs(model: nn.Module, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """(N, 10) log-probabilities, batch by batch, in eval mode. On a CPU, batches of 128 keep the
    activations in cache; 1000 at a time ran three times slower on two cores.
    A network may return logits or log-probabilities: log_softmax makes the first the second and leaves
    the second as it is."""
    model.eval()
    step = batch_size or (1000 if images.device.type == "cuda" else 128)
    return torch.cat(
        [F.log_softmax(model(normalize(images[i : i + step])).float(), dim=1) for i in range(0, len(images), step)]
    )


def score_log_probs(log_probs: torch.Tensor, labels: torch.Tensor) -> Score:
    """Loss, accuracy and confusion matrix of the predictions, read in one host sync."""
    loss = F.nll_loss(log_probs, labels, reduction="sum")
    counts = torch.bincount(labels * 10 + log_probs.argmax(1), minlength=100)
    *counts, loss_sum = torch.cat([counts.double(), loss.double().view(1)]).tolist()  # float64: counts exact
    matrix = [[int(n) for n in counts[row * 10 : row * 10 + 10]] for row in range(10)]
    return Score(
        loss=loss_sum / len(labels),
        correct=sum(matrix[i][i] for i in range(10)),
        total=len(labels),
        confusion=matrix,
    )


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int | None = None) -> Score:
    """Loss, accuracy and confusion matrix of `model` on the images."""
    return score_log_probs(predict_log_probs(model, images, batch_size), labels)


def evaluate_checkpoint(
    path: Path | str,
    data_dir: Path | str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    model: str | None = None,
) -> Score:
    """Rebuild the network a checkpoint records and score it on the test set; `model` names the code of a
    network of your own."""
    from mnist20k.checkpoint import load_checkpoint
    from mnist20k.device import resolve_device
    from mnist20k.nets import rebuild

    dev = resolve_device(device)
    network = rebuild(load_checkpoint(path), model, where=str(path), device=dev).module
    return evaluate(network, *load_split(data_dir, train=False, device=dev), batch_size)


@dataclass
class Mistake:
    index: int  # position in the test set
    label: int
    predicted: int
    confidence: float  # probability the model gave its wrong answer


def find_mistakes(log_probs: torch.Tensor, labels: torch.Tensor, limit: int) -> list[Mistake]:
    """The misclassified images, most confidently wrong first, at most `limit` of them."""
    confidence, predicted = log_probs.exp().max(1)
    wrong = torch.nonzero(predicted != labels).flatten()
    wrong = wrong[confidence[wrong].argsort(descending=True)][:limit].tolist()
    return [Mistake(i, int(labels[i]), int(predicted[i]), float(confidence[i])) for i in wrong]
