"""The training loop and its learning-rate schedule.

train() reports progress through two callbacks and never prints: the CLI draws the progress bars,
a notebook or benchmark can pass its own callbacks or none.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mnist20k import __version__
from mnist20k.checkpoint import find_checkpoint, load_checkpoint, network_from_checkpoint
from mnist20k.config import TrainConfig, from_dict, make_config
from mnist20k.data import augment, load_split, normalize
from mnist20k.device import resolve_device
from mnist20k.errors import CheckpointError, TrainingDiverged, UsageError
from mnist20k.evaluate import evaluate
from mnist20k.networks import build_network, count_params, model_record
from mnist20k.refs import Source, user_code
from mnist20k.rundir import RunDir

StepCallback = Callable[[int, int, int, float], None]  # epoch, steps done, steps per epoch, mean loss so far
EpochCallback = Callable[[dict], None]  # the epoch's metrics record
StartCallback = Callable[[TrainConfig, int], None]  # the run's settings and its network's parameter count

REPORT_EVERY_S = 0.25  # progress reports cost a host sync each, so they are rationed by time


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
) -> torch.Tensor:
    """One optimizer step on a batch of uint8 images, augmented on their device; returns the loss
    as a device tensor (reading it is a host sync, so the caller decides when)."""
    x = normalize(augment(images.float() / 255, c.rotate, c.translate, gen))
    x = x.contiguous(memory_format=torch.channels_last)
    autocast = c.amp and x.device.type == "cuda"
    # cache_enabled=False: autocast's weight-cast cache must not outlive a CUDA graph capture
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast, cache_enabled=False):
        # The model returns log-probabilities, which log_softmax inside cross_entropy leaves as they
        # are: this is the seed's NLL loss, with optional label smoothing.
        loss = F.cross_entropy(net(x).float(), labels, label_smoothing=c.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


class BatchStep:
    """train_step on the training images at given indices, through fixed buffers, so that on a CUDA
    device the whole step can be captured once into a CUDA graph and replayed.

    A step of this network is over a hundred kernels of a few microseconds each: on a GPU the loop waits on
    Python and kernel launches (~4 ms a step), not on the GPU. A replay launches the whole step
    (gather, augmentation, forward, backward, SGD) at once. Everything the graph reads changes in
    place between replays: the batch indices (copied in), weights, gradients, optimizer buffers, the lr
    tensor the scheduler fills, and the generator's state, which is registered with the graph.
    Without capture, or for an epoch's last smaller batch, it is plain train_step.
    """

    WARMUP_STEPS = 3  # eager steps on a side stream before capture, as CUDA graphs ask (lazy init, cuDNN)

    def __init__(self, net, optimizer, images, labels, c: TrainConfig, gen: torch.Generator, capture: bool):
        self.net, self.optimizer, self.c, self.gen = net, optimizer, c, gen
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
        return train_step(self.net, self.optimizer, self.images[idx], self.labels[idx], self.c, self.gen)

    def _on_side_stream(self) -> torch.Tensor:
        side = self.side_stream
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            loss = self._step(self.idx)
        torch.cuda.current_stream().wait_stream(side)
        return loss


@dataclass
class Run:
    """What the training loop works on, made ready by prepare()."""

    config: TrainConfig
    dev: torch.device
    model: nn.Module
    source: Source | None  # where a network of the user's own came from; None for a built-in
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator  # shuffling and augmentation
    batch_step: BatchStep
    train_images: int
    test: tuple[torch.Tensor, torch.Tensor]
    folder: RunDir | None
    metrics: list[dict]  # the resumed run's epochs, or none


def train(
    config: TrainConfig | None = None,
    *,
    data_dir: Path | str | None = None,
    out_dir: Path | str | None = None,
    device: str = "auto",
    resume: Path | str | None = None,
    overwrite: bool = False,
    model: str | None = None,
    on_start: StartCallback | None = None,
    on_step: StepCallback | None = None,
    on_epoch: EpochCallback | None = None,
) -> list[dict]:
    """Train `config.model` (default: make_config()) on MNIST and score it on the test set after
    every epoch.

    Writes checkpoint.pt, metrics.jsonl and config.json into `out_dir` (nothing when it is None).
    With `resume` (a checkpoint or run folder) the run continues after its last completed epoch,
    with config, weights, optimizer, schedule and random states as they were; a `config` given with
    it must be the checkpoint's.
    An `out_dir` that already holds a run is refused unless `overwrite`, or unless it is the run
    being resumed. Returns one metrics record per epoch, the resumed ones included.
    To resume a network of your own, `model` names its code again (a checkpoint never does; see refs.py).
    `on_start` is called once everything is ready and checked, before the first step; `on_step`
    reports an epoch's last step just before its test set is scored.
    """
    r = prepare(config, data_dir, out_dir, device, resume, overwrite, model)
    if on_start is not None:
        on_start(r.config, count_params(r.model))
    # A network of the user's own may fail only in training mode: its error is told as one line, at its line.
    with user_code(r.source.ref, r.source.roots) if r.source is not None else contextlib.nullcontext():
        return run_epochs(r, on_step, on_epoch)


def run_epochs(r: Run, on_step: StepCallback | None = None, on_epoch: EpochCallback | None = None) -> list[dict]:
    """The loop of train(): every epoch still to run, each trained, scored, saved and reported."""
    c, metrics = r.config, r.metrics
    steps = steps_per_epoch(r.train_images, c)
    for epoch in range(len(metrics) + 1, c.epochs + 1):
        t0 = time.perf_counter()
        r.model.train()
        order = torch.randperm(r.train_images, device=r.dev, generator=r.gen)
        loss_sum = torch.zeros((), device=r.dev)
        last_report = t0
        for step in range(steps):
            loss_sum += r.batch_step(order[step * c.batch_size : (step + 1) * c.batch_size])
            if step + 1 == steps:
                lr = float(r.scheduler.get_last_lr()[0])  # the lr the epoch ended on, before the next step's
            r.scheduler.step()
            if on_step is not None and (step + 1 == steps or time.perf_counter() - last_report > REPORT_EVERY_S):
                on_step(epoch, step + 1, steps, loss_sum.item() / (step + 1))  # note: a host-device sync
                last_report = time.perf_counter()
        # Scoring is queued behind the epoch's last steps; its result is the epoch's one host sync, after
        # which reading the train loss waits on nothing. The plain model: a compiled one would recompile
        # for eval mode and for the smaller last batch.
        score = evaluate(r.model, *r.test)
        train_loss = loss_sum.item() / steps
        if not math.isfinite(train_loss):
            done = f"epoch {epoch - 1}'s checkpoint is kept" if metrics else "no checkpoint was written"
            raise TrainingDiverged(f"training diverged at epoch {epoch} (loss {train_loss}); {done}. Try a lower --lr")
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "test_loss": score.loss,
            "test_correct": score.correct,
            "test_total": score.total,
            "test_accuracy": score.accuracy,
            "lr": lr,
            "seconds": time.perf_counter() - t0,
        }
        metrics.append(record)
        if r.folder is not None:
            r.folder.save_epoch(_checkpoint_state(r, metrics))
        if on_epoch is not None:
            on_epoch(record)
    return metrics


def prepare(config, data_dir, out_dir, device, resume, overwrite, model_ref: str | None = None) -> Run:
    """Device, network, data, run folder, optimizer and schedule, restored from `resume` if given.
    Every refusal (network, data, device, folder, checkpoint) comes before anything is written."""
    ckpt = load_checkpoint(resume) if resume is not None else None
    if ckpt is not None:
        saved = from_dict(ckpt["config"])
        if config is not None and config != saved:
            changed = [f.name for f in fields(saved) if getattr(config, f.name) != getattr(saved, f.name)]
            raise UsageError(f"resume continues a run with its own settings; this config changes {', '.join(changed)}")
        config = saved
    config = config or make_config()
    dev = resolve_device(device)
    # The network first: a user's network that fails to build is told before any data is read.
    torch.manual_seed(config.seed)
    if ckpt is not None:
        model, source = network_from_checkpoint(ckpt, model_ref)  # weights that do not fit are refused first
        if ckpt["epoch"] >= config.epochs:
            raise UsageError(f"{find_checkpoint(resume)} has finished all {config.epochs} epochs: nothing to resume")
    else:
        model, source = build_network(config.model, config.dropout)
    # Data before the run folder: a data error then leaves no empty run folder behind.
    train_x, train_y = load_split(data_dir, train=True, device=dev)
    test = load_split(data_dir, train=False, device=dev)
    folder = RunDir(out_dir) if out_dir is not None else None
    if folder is not None:
        same_run = resume is not None and folder.checkpoint.resolve() == find_checkpoint(resume).resolve()
        folder.check(overwrite=overwrite or same_run)

    gen = torch.Generator(device=dev).manual_seed(config.seed)
    # channels_last: the layout both cuDNN and oneDNN run these small convs fastest in
    model = model.to(dev, memory_format=torch.channels_last)
    net = torch.compile(model) if config.compile else model
    # A compiled network is not captured: torch.compile makes graphs of its own (mode="reduce-overhead").
    capture = config.cuda_graph and dev.type == "cuda" and not config.compile
    optimizer = make_optimizer(model, config, lr_on_device=capture)
    scheduler = make_scheduler(optimizer, config, config.epochs * steps_per_epoch(len(train_x), config))
    batch_step = BatchStep(net, optimizer, train_x, train_y, config, gen, capture=capture)
    metrics: list[dict] = []
    if ckpt is not None:
        _restore(ckpt, optimizer, scheduler, gen, dev)
        metrics = list(ckpt["metrics"])
    if folder is not None:
        folder.start(asdict(config), metrics)
    return Run(config, dev, model, source, optimizer, scheduler, gen, batch_step, len(train_x), test, folder, metrics)


def _checkpoint_state(r: Run, metrics: list[dict]) -> dict:
    rng = {"torch": torch.get_rng_state(), "generator": r.gen.get_state(), "device": r.dev.type}
    if r.dev.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(r.dev)
    c = r.config
    return {
        "mnist20k_version": __version__,
        "model": model_record(c.model, c.dropout, r.source),
        "model_state": r.model.state_dict(),
        "config": asdict(c),
        "epoch": len(metrics),
        "metrics": metrics,
        "optimizer_state": _lr_as_float(r.optimizer.state_dict()),
        "scheduler_state": _lr_as_float(r.scheduler.state_dict()),
        "rng": rng,
    }


def _lr_as_float(state: dict) -> dict:
    """An optimizer or scheduler state dict with lr tensors as floats, so that a checkpoint resumes on
    any device and with either form of optimizer (see make_optimizer)."""

    def plain(v):
        return float(v) if isinstance(v, torch.Tensor) else v

    if "param_groups" in state:
        state["param_groups"] = [{**g, "lr": plain(g["lr"])} for g in state["param_groups"]]
    if "_last_lr" in state:
        state["_last_lr"] = [plain(v) for v in state["_last_lr"]]
    return state


def _restore(ckpt: dict, optimizer, scheduler, gen: torch.Generator, dev: torch.device) -> None:
    """Put optimizer, schedule and random states back as they were after the checkpoint's epoch."""
    try:
        # The checkpoint's lr is a float; this run's optimizer may keep its lr in a device tensor.
        lr_tensor, fused = optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["fused"]
        optimizer.load_state_dict(ckpt["optimizer_state"])
        for group in optimizer.param_groups:
            group["fused"] = fused
            if isinstance(lr_tensor, torch.Tensor):
                group["lr"] = lr_tensor.fill_(float(group["lr"]))
        scheduler.load_state_dict(ckpt["scheduler_state"])
        rng = ckpt["rng"]
        torch.set_rng_state(rng["torch"])
        # A generator's state only fits a generator of the same device type; on another device the
        # run goes on with freshly seeded shuffling and augmentation.
        if rng["device"] == dev.type:
            gen.set_state(rng["generator"])
            if dev.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], dev)
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"checkpoint cannot be resumed: its training state is incomplete ({e})") from None
