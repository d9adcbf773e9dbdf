"""One optimizer step: SGD and its one-cycle schedule, the step on a batch of uint8 images, and the same step
through fixed buffers, which a CUDA device captures once as a graph and replays."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mnist20k.config import TrainConfig
from mnist20k.data import augment, normalize
from mnist20k.distill import distill_loss
from mnist20k.ema import WeightAverage


def make_optimizer(model: nn.Module, c: TrainConfig, lr_on_device: bool = False) -> torch.optim.Optimizer:
    """SGD. With lr_on_device the learning rate is a tensor beside the parameters, which the scheduler
    fills in place and the fused kernel reads there: what a captured CUDA graph needs, since a Python
    float lr would be frozen into the graph at capture."""
    if not lr_on_device:
        return torch.optim.SGD(
            model.parameters(), lr=c.lr, momentum=c.momentum, nesterov=c.nesterov, weight_decay=c.weight_decay
        )
    lr = torch.tensor(c.lr, device=next(model.parameters()).device)
    return torch.optim.SGD(
        model.parameters(), lr=lr, momentum=c.momentum, nesterov=c.nesterov, weight_decay=c.weight_decay, fused=True
    )


def make_scheduler(optimizer: torch.optim.Optimizer, c: TrainConfig, total_steps: int):
    """Stepped once per batch. One-cycle rises to c.lr over the warm-up and then anneals to ~0,
    which is what keeps the last epochs from wandering (the seed's constant lr ends below its peak)."""
    if c.schedule == "constant" or total_steps < 3:  # one-cycle needs a step to rise and one to fall
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    # OneCycleLR divides by the warm-up's length in steps, less one: it must be at least 2 steps, and
    # leave one to anneal. That only changes very short runs (smoke tests with --max-batches).
    warmup = min(max(c.warmup, 2 / total_steps), (total_steps - 1) / total_steps)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=c.lr,
        total_steps=total_steps,
        pct_start=warmup,
        cycle_momentum=False,  # keep c.momentum fixed; one setting fewer to explain
        div_factor=10.0,  # start at lr / 10
        final_div_factor=100.0,  # end at lr / 1000
    )


def steps_per_epoch(n_images: int, c: TrainConfig) -> int:
    steps = math.ceil(n_images / c.batch_size)  # the last, smaller batch is kept, as the seed's loader does
    return min(steps, c.max_batches) if c.max_batches else steps


def train_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    c: TrainConfig,
    gen: torch.Generator,
    teacher: nn.Module | None = None,
) -> torch.Tensor:
    """One optimizer step on a batch of uint8 images, augmented on their device; returns the loss
    as a device tensor (reading it is a host sync, so the caller decides when). With a `teacher`, the loss
    is distill.py's, the teacher scoring the very batch the student sees."""
    x = normalize(augment(images.float() / 255, c.rotate, c.translate, gen))
    x = x.contiguous(memory_format=torch.channels_last)
    autocast = c.amp and x.device.type == "cuda"
    # cache_enabled=False: autocast's weight-cast cache must not outlive a CUDA graph capture
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast, cache_enabled=False):
        # The model returns log-probabilities, which log_softmax inside cross_entropy leaves as they
        # are: this is the seed's NLL loss, with optional label smoothing.
        scores = net(x).float()
        loss = F.cross_entropy(scores, labels, label_smoothing=c.label_smoothing)
        if teacher is not None:
            with torch.no_grad():
                taught = teacher(x).float()
            loss = distill_loss(scores, taught, loss, c)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


class BatchStep:
    """train_step on the training images at given indices, through fixed buffers, so that on a CUDA
    device the whole step can be captured once into a CUDA graph and replayed.

    A step of this network is over a hundred kernels of a few microseconds each: on a GPU the loop waits on
    Python and kernel launches (~4 ms a step), not on the GPU. A replay launches the whole step
    (gather, augmentation, forward, backward, SGD, and the weights' average with --ema) at once. Everything
    the graph reads changes in place between replays: the batch indices (copied in), weights, gradients,
    optimizer buffers, the average, the lr tensor the scheduler fills, and the generator's state, which is
    registered with the graph. Without capture, or for an epoch's last smaller batch, it is plain train_step.
    """

    WARMUP_STEPS = 3  # eager steps on a side stream before capture, as CUDA graphs ask (lazy init, cuDNN)

    def __init__(
        self,
        net,
        optimizer,
        images,
        labels,
        c: TrainConfig,
        gen: torch.Generator,
        capture: bool,
        average: WeightAverage | None = None,
        teacher: nn.Module | None = None,
    ):
        self.net, self.optimizer, self.c, self.gen = net, optimizer, c, gen
        self.average, self.teacher = average, teacher
        self.images, self.labels = images, labels
        self.capture = capture
        self.idx = torch.zeros(c.batch_size, dtype=torch.long, device=images.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.loss: torch.Tensor | None = None  # the graph's output, rewritten by each replay
        self.warm_steps = 0
        self.side_stream = torch.cuda.Stream() if capture else None  # warm-up runs off the default stream

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        """One optimizer step on the training images at `idx`; returns the loss as a device tensor."""
        if len(idx) != len(self.idx):  # a graph has fixed shapes: the smaller last batch runs eagerly
            return self._step(idx)
        self.idx.copy_(idx)
        if not self.capture:
            return self._step(self.idx)
        if self.graph is None:
            if self.warm_steps < self.WARMUP_STEPS:
                self.warm_steps += 1
                return self._on_side_stream()
            self.graph = torch.cuda.CUDAGraph()
            self.graph.register_generator_state(self.gen)
            with torch.cuda.graph(self.graph):  # records the step; the replay below runs it
                self.loss = self._step(self.idx)
        self.graph.replay()
        return self.loss

    def _step(self, idx: torch.Tensor) -> torch.Tensor:
        images, labels = self.images[idx], self.labels[idx]
        loss = train_step(self.net, self.optimizer, images, labels, self.c, self.gen, self.teacher)
        if self.average is not None:
            self.average.update()
        return loss

    def _on_side_stream(self) -> torch.Tensor:
        side = self.side_stream
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            loss = self._step(self.idx)
        torch.cuda.current_stream().wait_stream(side)
        return loss
