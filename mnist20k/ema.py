"""--ema DECAY: an exponential moving average of the network's weights, BatchNorm's running statistics with them,
scored each epoch and saved as the run's network (what eval, predict, draw and export use).

torch's AveragedModel holds the average and its EMA function makes the update: EMA_0 is the network as built,
and after every optimizer step EMA <- decay * EMA + (1 - decay) * W, one foreach lerp over every float tensor.
The update calls that function on lists made once, not AveragedModel.update_parameters(), which reads its step
count on the host every call: a sync that a CUDA graph cannot capture. So on CUDA it runs inside the captured
step, and it reads nothing back anywhere.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float):
        device = next(model.parameters()).device
        self.averaged = AveragedModel(
            model, device=device, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True
        ).eval()
        pairs = zip(_tensors(self.averaged.module), _tensors(model), strict=True)
        self.floats, self.counts = [], []  # (average, model) pairs: averaged, or copied (num_batches_tracked)
        for mean, tensor in pairs:
            (self.floats if mean.is_floating_point() else self.counts).append((mean, tensor))

    @property
    def module(self) -> nn.Module:
        """The averaged network, in eval mode: what is scored and saved."""
        return self.averaged.module

    @torch.no_grad()
    def update(self) -> None:
        """Fold the network's weights after this step into the average."""
        means, tensors = zip(*self.floats, strict=True)
        self.averaged.multi_avg_fn(list(means), list(tensors), self.averaged.n_averaged)
        for mean, tensor in self.counts:
            mean.copy_(tensor)
        self.averaged.n_averaged.add_(1)


def _tensors(model: nn.Module) -> list[torch.Tensor]:
    return [t.detach() for t in (*model.parameters(), *model.buffers())]
