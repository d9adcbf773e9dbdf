"""--ema DECAY: an exponential moving average of the network's weights, scored each epoch and saved as the run's
network (what eval, predict, draw and export use).

torch's AveragedModel holds the average and its EMA function makes the update: EMA_0 is the network as built,
and after every optimizer step EMA <- decay * EMA + (1 - decay) * W, one foreach lerp over every parameter.
The update calls that function on lists made once, not AveragedModel.update_parameters(), which reads its step
count on the host every call: a sync that a CUDA graph cannot capture. So on CUDA it runs inside the captured
step, and it reads nothing back anywhere.

BatchNorm's statistics are not averaged: before the average is scored, they are measured anew on a fixed set
of augmented training images, in train mode (torch's update_bn), as torch's own EMA recipe does at the end. An
average of the statistics of weights that moved does not describe the averaged weights: with a decay of 0.999
and a peak lr of 0.24, a 1,317-parameter cnn with averaged statistics scored 81.85% on validation images, and
the same averaged weights with statistics of their own 98.17%. Measuring them costs 0.16 s an epoch for base
on two CPU cores.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from mnist20k.data import augment, normalize

CALIBRATION_IMAGES = 2048  # BatchNorm's mean and variance per channel, each over 2,048 images' positions
CALIBRATION_BATCH = 128  # on a CPU, batches of 128 keep the activations in cache (evaluate.py)


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float, calibration: torch.Tensor):
        """`calibration`: the training images, augmented and normalized, on which BatchNorm's statistics of the
        average are measured before it is scored."""
        device = next(model.parameters()).device
        self.averaged = AveragedModel(model, device=device, multi_avg_fn=get_ema_multi_avg_fn(decay)).eval()
        pairs = zip(self.averaged.module.parameters(), model.parameters(), strict=True)
        means, weights = zip(*((mean.detach(), weight.detach()) for mean, weight in pairs), strict=True)
        self.means, self.weights = list(means), list(weights)  # made once: each step's update only reads them
        self.batches = calibration.split(CALIBRATION_BATCH)

    @property
    def module(self) -> nn.Module:
        """The averaged network, in eval mode: what is scored and saved."""
        return self.averaged.module

    @torch.no_grad()
    def update(self) -> None:
        """Fold the network's weights after this step into the average."""
        self.averaged.multi_avg_fn(self.means, self.weights, self.averaged.n_averaged)
        self.averaged.n_averaged.add_(1)

    def calibrate(self) -> None:
        """Measure BatchNorm's statistics of the average as it is now (update_bn leaves it in eval mode)."""
        update_bn(self.batches, self.averaged.module)


def calibration_images(images: torch.Tensor, rotate: float, translate: float, seed: int) -> torch.Tensor:
    """The first training images (uint8), augmented as training augments them, by a generator of their own: the
    same images every epoch and on resuming, and the run's own random stream untouched."""
    gen = torch.Generator(device=images.device).manual_seed(seed)
    return normalize(augment(images[:CALIBRATION_IMAGES].float() / 255, rotate, translate, gen))
