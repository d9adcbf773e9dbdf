"""The training loop: a run prepared (network, data, folder, optimizer, restored state), its epochs trained,
scored, saved and reported. One step, and the schedule, are step.py's.

train() reports progress through two callbacks and never prints: the CLI draws the progress bars,
a notebook or benchmark can pass its own callbacks or none.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from mnist20k import __version__
from mnist20k.checkpoint import FORMAT, FORMAT_VERSION, Checkpoint, find_checkpoint, load_checkpoint
from mnist20k.config import TrainConfig, make_config
from mnist20k.data import load_split
from mnist20k.device import resolve_device
from mnist20k.distill import RECORD, Teacher, load_teacher
from mnist20k.ema import WeightAverage, calibration_images
from mnist20k.errors import CheckpointError, NotApplied, TrainingDiverged, UsageError
from mnist20k.evaluate import evaluate
from mnist20k.nets import Network, build, count_params, rebuild, user_code
from mnist20k.rundir import RunDir
from mnist20k.settings import saved_config
from mnist20k.step import BatchStep, make_optimizer, make_scheduler, steps_per_epoch

StepCallback = Callable[[int, int, int, float], None]  # epoch, steps done, steps per epoch, mean loss so far
EpochCallback = Callable[[dict], None]  # the epoch's metrics record
StartCallback = Callable[[TrainConfig, int], None]  # the run's settings and its network's parameter count

REPORT_EVERY_S = 0.25  # progress reports cost a host sync each, so they are rationed by time


@dataclass
class Run:
    """What the training loop works on, made ready by prepare()."""

    config: TrainConfig
    dev: torch.device
    network: Network  # its module, on the device; and what rebuilds it: a built-in's name and arguments, or your code
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator  # shuffling and augmentation
    batch_step: BatchStep
    train_images: int
    scored: tuple[torch.Tensor, torch.Tensor]  # the images scored each epoch
    split: str  # which they are: "val" (held out of the training images) or "test"
    folder: RunDir | None
    metrics: list[dict]  # the resumed run's epochs, or none
    average: WeightAverage | None = None  # with --ema: the average of the weights, scored and saved
    teacher: Teacher | None = None  # with --teacher

    @property
    def scored_network(self) -> torch.nn.Module:
        """The network each epoch scores and the checkpoint holds: the average of the weights, if one is kept."""
        return self.network.module if self.average is None else self.average.module


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
    """Train `config.model` (default: make_config()) on MNIST and score it after every epoch: on the test
    set, or with `config.val` on that many training images held out of training (the test set unopened).

    Writes checkpoint.pt, metrics.jsonl and config.json into `out_dir` (nothing when it is None).
    With `resume` (a checkpoint or run folder) the run continues after its last completed epoch,
    with config, weights, optimizer, schedule and random states as they were; a `config` given with
    it must be the checkpoint's.
    An `out_dir` that already holds a run is refused unless `overwrite`, or unless it is the run
    being resumed. Returns one metrics record per epoch, the resumed ones included.
    To resume a network of your own, `model` names its code again (a checkpoint never does; see nets/code.py).
    `on_start` is called once everything is ready and checked, before the first step; `on_step`
    reports an epoch's last step just before its test set is scored.
    """
    r = prepare(config, data_dir, out_dir, device, resume, overwrite, model)
    if on_start is not None:
        on_start(r.config, count_params(r.network.module))
    # A network of the user's own may fail only in training mode: its error is told as one line, at its line.
    source = r.network.source
    try:
        with user_code(source.ref, source.roots) if source is not None else contextlib.nullcontext():
            return run_epochs(r, on_step, on_epoch)
    except BaseException:
        if r.folder is not None and not r.folder.saved:
            r.folder.discard()  # nothing of the run was saved: leave no run behind to be refused next time
        raise


def run_epochs(r: Run, on_step: StepCallback | None = None, on_epoch: EpochCallback | None = None) -> list[dict]:
    """The loop of train(): every epoch still to run, each trained, scored, saved and reported."""
    c, metrics = r.config, r.metrics
    steps = steps_per_epoch(r.train_images, c)
    for epoch in range(len(metrics) + 1, c.epochs + 1):
        t0 = time.perf_counter()
        r.network.module.train()
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
        if r.average is not None:
            r.average.calibrate()  # BatchNorm's statistics measured for the averaged weights (ema.py)
        score = evaluate(r.scored_network, *r.scored)
        train_loss = loss_sum.item() / steps
        if not math.isfinite(train_loss):
            done = f"epoch {epoch - 1}'s checkpoint is kept" if metrics else "nothing of the run was kept"
            raise TrainingDiverged(f"training diverged at epoch {epoch} (loss {train_loss}); {done}. Try a lower --lr")
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            f"{r.split}_loss": score.loss,
            f"{r.split}_correct": score.correct,
            f"{r.split}_total": score.total,
            f"{r.split}_accuracy": score.accuracy,
            "lr": lr,
            "seconds": time.perf_counter() - t0,
        }
        metrics.append(record)
        if r.folder is not None:
            r.folder.save_epoch(_checkpoint_state(r, metrics))
        if on_epoch is not None:
            on_epoch(record)
    return metrics


def prepare(config, data_dir, out_dir, device, resume, overwrite, code: str | None = None) -> Run:
    """Device, network, data, run folder, optimizer and schedule, restored from `resume` if given.
    Every refusal (network, data, device, folder, checkpoint) comes before anything is written."""
    ckpt = load_checkpoint(resume) if resume is not None else None
    if ckpt is not None:
        saved = saved_config(ckpt["config"], where=str(resume))
        if config is not None and config != saved:
            changed = [f.name for f in fields(saved) if getattr(config, f.name) != getattr(saved, f.name)]
            raise UsageError(f"resume continues a run with its own settings; this config changes {', '.join(changed)}")
        config = saved
    config = config or make_config()
    dev = resolve_device(device)
    if config.amp and dev.type != "cuda":
        warnings.warn(
            NotApplied(f"--amp is bfloat16 autocast on CUDA: this {dev.type} run trains in float32"), stacklevel=2
        )
    # The network first: a user's network that fails to build is told before any data is read.
    torch.manual_seed(config.seed)
    if ckpt is not None:
        network = rebuild(ckpt, code, where=str(resume))  # weights that do not fit: refused
        if ckpt["epoch"] >= config.epochs:
            raise UsageError(f"{find_checkpoint(resume)} has finished all {config.epochs} epochs: nothing to resume")
    else:
        network = build(config.model, config.args, dropout=config.dropout)
    teacher = load_teacher(config, dev, ckpt.get(RECORD) if ckpt else None) if config.teacher else None
    # Data before the run folder: a data error then leaves no empty run folder behind.
    train_x, train_y = load_split(data_dir, train=True, device=dev)
    if config.val:  # the last images of the file: the same ones for every seed and every run
        scored, split = (train_x[-config.val :], train_y[-config.val :]), "val"
        train_x, train_y = train_x[: -config.val], train_y[: -config.val]
    else:
        scored, split = load_split(data_dir, train=False, device=dev), "test"
    folder = RunDir(out_dir) if out_dir is not None else None
    if folder is not None:
        same_run = resume is not None and folder.checkpoint.resolve() == find_checkpoint(resume).resolve()
        folder.check(overwrite=overwrite or same_run)
        folder.saved = same_run  # the checkpoint resumed from is in it already

    gen = torch.Generator(device=dev).manual_seed(config.seed)
    # channels_last: the layout both cuDNN and oneDNN run these small convs fastest in
    model = network.module = network.module.to(dev, memory_format=torch.channels_last)
    net = torch.compile(model) if config.compile else model
    average = None
    if config.ema:  # EMA_0: the network as built, or resumed
        calibration = calibration_images(train_x, config.rotate, config.translate, config.seed)
        average = WeightAverage(model, config.ema, calibration)
    # A compiled network is not captured: torch.compile makes graphs of its own (mode="reduce-overhead").
    capture = config.cuda_graph and dev.type == "cuda" and not config.compile
    optimizer = make_optimizer(model, config, lr_on_device=capture)
    scheduler = make_scheduler(optimizer, config, config.epochs * steps_per_epoch(len(train_x), config))
    taught = None if teacher is None else teacher.module
    batch_step = BatchStep(net, optimizer, train_x, train_y, config, gen, capture, average, taught)
    metrics: list[dict] = []
    if ckpt is not None:
        _restore(ckpt, model if average else None, optimizer, scheduler, gen, dev)
        metrics = list(ckpt["metrics"])
    if folder is not None:
        folder.start({**asdict(config), **({RECORD: teacher.record} if teacher else {})}, metrics)
    return Run(
        config, dev, network, optimizer, scheduler, gen, batch_step, len(train_x), scored, split, folder, metrics,
        average, teacher
    )  # fmt: skip


def _checkpoint_state(r: Run, metrics: list[dict]) -> Checkpoint:
    rng = {"torch": torch.get_rng_state(), "generator": r.gen.get_state(), "device": r.dev.type}
    if r.dev.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(r.dev)
    state = Checkpoint(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        mnist20k_version=__version__,
        model=r.network.record(),
        model_state=r.scored_network.state_dict(),
        config=asdict(r.config),
        epoch=len(metrics),
        metrics=metrics,
        optimizer_state=_lr_as_float(r.optimizer.state_dict()),
        scheduler_state=_lr_as_float(r.scheduler.state_dict()),
        rng=rng,
    )
    if r.average is not None:  # the weights training goes on from
        state["trained_state"] = r.network.module.state_dict()
    if r.teacher is not None:
        state[RECORD] = r.teacher.record
    return state


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


def _restore(ckpt: Checkpoint, trained, optimizer, scheduler, gen: torch.Generator, dev: torch.device) -> None:
    """Put optimizer, schedule and random states back as they were after the checkpoint's epoch, and with --ema
    the `trained` network's weights (the network was rebuilt from their average, which it holds until now)."""
    try:
        if trained is not None:
            trained.load_state_dict(ckpt["trained_state"])
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
