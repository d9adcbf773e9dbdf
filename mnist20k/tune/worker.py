"""A tune worker: claims trials of a study until it has its total, and trains each as ordinary run folders,
in this process, through the library's train(). `mnist20k tune` starts `--jobs` of them
(`python -m mnist20k.tune SPEC INDEX WORKER`), and a machine joining a shared study starts its own. The
database URL, which may hold a password, comes in the environment ($MNIST20K_STORAGE), never in the
arguments, which every user of the machine can read (ps).

Every epoch's validation accuracy is reported to Optuna, which may prune the trial; a trial's value is its
final epoch's, the mean (or the minimum) over its seeds. With two objectives a trial's values are that and its
parameter count, and it trains to its end: Optuna's pruners judge one objective.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import optuna
from optuna.trial import TrialState

from mnist20k import process
from mnist20k.config import TrainConfig, validate
from mnist20k.distill import RECORD, recorded
from mnist20k.errors import Mnist20kError, TrainingDiverged, UsageError
from mnist20k.results import epoch_line
from mnist20k.settings import config_from_dict
from mnist20k.tune.limits import STORAGE_ENV
from mnist20k.tune.space import Dimension, parse_search, split_params
from mnist20k.tune.study import (
    claim,
    heartbeat,
    lease,
    make_pruner,
    make_sampler,
    open_storage,
    open_study,
    quiet_optuna,
    retry,
)


class Prune(BaseException):
    """Raised from inside train() when Optuna prunes the trial: a BaseException, so that it passes through the
    guard that tells a user network's own errors (nets.user_code) unchanged, as an interrupt does."""


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker of a study is told: plain values, passed on its command line as JSON, all but the
    storage URL, which goes in its environment."""

    folder: str
    storage: str | None  # a database URL, or None for the journal file in `folder`
    study: str
    search: list[str]  # the --search texts
    config: dict  # the fixed settings of every trial (TrainConfig)
    trials: int
    seeds: list[int]
    aggregate: str  # mean or min
    objectives: list[str]  # accuracy, or accuracy and params: a trial's values (limits.OBJECTIVES)
    pruner: str  # median, hyperband or none (always, with two objectives)
    sampler_seed: int | None  # worker i seeds Optuna's TPE sampler with sampler_seed + i
    budget: int
    device: str
    data_dir: str | None
    max_retry: int  # a trial whose worker stops is tried again this many times at most
    log: list[str]  # each trial's --log: tensorboard, csv

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if k != "storage"})

    @classmethod
    def from_json(cls, text: str, storage: str | None) -> WorkerSpec:
        values = json.loads(text)
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name != "storage"}, storage=storage)


def worker_env(jobs: int, storage: str | None = None) -> dict[str, str]:
    """Workers share the machine's cores: each takes its share of threads (PyTorch's default is every core, and
    two workers with every core each run slower than one), unless OMP_NUM_THREADS says otherwise. Trials of one
    study are compared with one another, so every worker keeps the same count. The storage URL is the study's,
    or none (the journal file), whatever this shell's $MNIST20K_STORAGE says."""
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // jobs))
    env = {k: v for k, v in os.environ.items() if k != STORAGE_ENV}
    return {**env, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": threads, **({STORAGE_ENV: storage} if storage else {})}


def trial_folder(folder: Path, number: int) -> Path:
    return Path(folder) / f"trial-{number:04d}"


def work(spec: WorkerSpec, index: int, worker: str) -> int:
    """Run trials until the study has its total; the number this worker, the `index`-th, ran. `worker` is its
    ID, recorded in each trial it runs; on a journal file, its lease is held until it returns."""
    folder = Path(spec.folder)
    storage = open_storage(spec.storage, folder, spec.max_retry)
    epochs = spec.config.get("epochs", TrainConfig.epochs)
    pruner = make_pruner(spec.pruner, epochs * len(spec.seeds), epochs)
    seed = None if spec.sampler_seed is None else spec.sampler_seed + index
    study = open_study(storage, spec.study, pruner, make_sampler(seed))
    space = parse_search(spec.search)
    ran = 0
    with lease(folder, worker) if spec.storage is None else contextlib.nullcontext():
        while (trial := claim(study, storage, folder, spec.trials, worker, spec.max_retry)) is not None:
            with heartbeat(storage, trial):
                run_trial(study, trial, spec, space)
            ran += 1
    return ran


def run_trial(study: optuna.Study, trial: optuna.Trial, spec: WorkerSpec, space: list[Dimension]) -> None:
    """Train one trial's seeds and tell the study how it ended; an interrupted trial is queued again."""
    from mnist20k.nets import build, count_params

    started = time.perf_counter()
    settings, args = split_params({d.key: d.suggest(trial) for d in space})
    base = config_from_dict(spec.config)
    folder = trial_folder(Path(spec.folder), trial.number)
    trial.set_user_attr("folder", folder.name)
    try:
        config = replace(base, **settings, args={**base.args, **args})
        validate(config)
        params = count_params(build(config.model, config.args, dropout=config.dropout).module)
    except UsageError as e:  # values that cannot work together: told, counted, never tried again
        trial.set_user_attr("message", str(e))
        _tell(study, trial, "invalid", TrialState.PRUNED, started)
        return
    try:
        trial.set_user_attr("params", params)
        if params > spec.budget:
            _tell(study, trial, "over budget", TrialState.PRUNED, started)
            return
        values = [_train_seed(trial, config, seed, k, spec, folder) for k, seed in enumerate(spec.seeds)]
    except Prune as pruned:
        trial.set_user_attr("pruned_at", str(pruned))
        _tell(study, trial, "pruned", TrialState.PRUNED, started)
        return
    except TrainingDiverged as e:
        trial.set_user_attr("message", str(e))
        _tell(study, trial, "diverged", TrialState.FAIL, started)
        return
    except Mnist20kError as e:  # the trial's settings or network cannot run: told, counted, not retried
        trial.set_user_attr("message", str(e))
        _tell(study, trial, "failed", TrialState.FAIL, started)
        return
    except BaseException:  # interrupted, or a bug: the values are tried again by the next worker that asks
        retry(study, trial, spec.max_retry)
        raise
    value = statistics.mean(values) if spec.aggregate == "mean" else min(values)
    trial.set_user_attr("seed_values", values)
    _tell(study, trial, "complete", TrialState.COMPLETE, started, [value, params][: len(spec.objectives)])


def _train_seed(trial, config: TrainConfig, seed: int, k: int, spec: WorkerSpec, folder: Path) -> float:
    """One seed of a trial as a run folder; each epoch reported at step k * epochs + epoch, so that trials are
    compared seed by seed, epoch by epoch."""
    from mnist20k.logs import EpochLogs
    from mnist20k.train import train

    run = folder / f"seed-{seed}" if len(spec.seeds) > 1 else folder
    config = replace(config, seed=seed)
    run.mkdir(parents=True, exist_ok=True)
    logs = EpochLogs(spec.log, run)
    with open(run / "train.log", "a") as log, contextlib.closing(logs):

        def on_epoch(record: dict) -> None:
            log.write(epoch_line(record, config.epochs) + "\n")
            log.flush()
            logs(record)
            if len(spec.objectives) > 1:  # Optuna's pruners and reports take one objective
                return
            trial.report(record["val_accuracy"], k * config.epochs + record["epoch"])
            if trial.should_prune():
                where = f"epoch {record['epoch']}" + (f" of seed {seed}" if len(spec.seeds) > 1 else "")
                raise Prune(where)

        metrics = train(
            config, data_dir=spec.data_dir, out_dir=run, device=spec.device, overwrite=True, on_epoch=on_epoch
        )
    teacher = recorded(run)
    if teacher is not None:  # what the tables name, and the teacher's training time they count
        trial.set_user_attr(RECORD, {"folder": teacher["folder"], "seconds": teacher["seconds"]})
    return metrics[-1]["val_accuracy"]


def _tell(study, trial, outcome: str, state: TrialState, started: float, values: list | None = None) -> None:
    trial.set_user_attr("outcome", outcome)
    trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
    study.tell(trial, values, state=state)


def main(argv: list[str]) -> int:
    process.configure()
    quiet_optuna()
    spec, index, worker = WorkerSpec.from_json(argv[0], os.environ.get(STORAGE_ENV)), int(argv[1]), argv[2]
    try:
        with process.sigterm_as_interrupt():
            ran = work(spec, index, worker)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
        print(f"worker {index}: {ran} trials, peak resident memory {peak:.0f} MB")
    except process.INTERRUPTS as e:
        return process.exit_code(e)
    except Mnist20kError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0
