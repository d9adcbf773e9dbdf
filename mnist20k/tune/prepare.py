"""A study from tune's command words, checked before anything is made: the search space against the settings
and the network, the validation split (tune never opens the test files), the folder, the data, and the storage.
Every refusal is one line and leaves nothing behind."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mnist20k.config import MAX_VAL, TrainConfig, make_config, validate
from mnist20k.errors import InvalidShape, Mnist20kError, OutputError, UsageError
from mnist20k.logs import check_logs
from mnist20k.seeds import parse_seeds
from mnist20k.tune.limits import MAX_RETRIES
from mnist20k.tune.space import Dimension, parse_search, split_params
from mnist20k.tune.study import JOURNAL
from mnist20k.tune.worker import WorkerSpec

TUNE_FILE = "tune.json"
DEFAULT_VAL = 10_000


@dataclass(frozen=True)
class Tune:
    spec: WorkerSpec
    space: list[Dimension]
    config: TrainConfig  # the fixed settings of every trial
    jobs: int
    overwrite: bool

    @property
    def folder(self) -> Path:
        return Path(self.spec.folder)

    def search(self) -> dict:
        """What makes a study this study: running the same command again continues it; another is refused.
        As JSON gives it back from the study's storage (tuples as lists), so that the two compare."""
        return json.loads(
            json.dumps(
                {
                    "search": [f"{d.key}={d.spec()}" for d in self.space],
                    "config": asdict(self.config),
                    "seeds": self.spec.seeds,
                    "aggregate": self.spec.aggregate,
                    "budget": self.spec.budget,
                    # one objective is what every study was before there could be two: it continues them
                    **({"objectives": self.spec.objectives} if len(self.spec.objectives) > 1 else {}),
                }
            )
        )


def prepare(
    recipe: str,
    overrides: dict,
    search: list[str],
    *,
    trials: int,
    jobs: int,
    out: Path,
    storage: str | None,
    study: str | None,
    seeds: list[str],
    aggregate: str,
    pruner: str | None,
    budget: int,
    device: str,
    data_dir: Path | None,
    overwrite: bool,
    sampler_seed: int | None = None,
    max_retry: int = MAX_RETRIES,
    log: list[str] | None = None,
    objectives: str = "accuracy",
) -> Tune:
    from mnist20k.data import load_split
    from mnist20k.nets import build

    if overrides.get("seed") is not None:
        raise UsageError("tune trains each trial on the seeds of --seeds; write --seeds " + str(overrides["seed"]))
    if aggregate == "min" and len(parse_seeds(seeds)) == 1:
        raise UsageError(
            "--aggregate min judges a trial by the lowest of its --seeds: give two or more, e.g. --seeds 1-2"
        )
    goals = parse_objectives(objectives)
    if len(goals) > 1 and pruner not in (None, "none"):
        raise UsageError(
            f"--pruner {pruner} judges one objective; with --objectives {objectives} every trial trains to its end"
        )
    val = overrides.get("val")
    if val is not None and not 1 <= val <= MAX_VAL:
        raise UsageError(f"--val must be between 1 and {MAX_VAL:,} for tune: trials are judged on held-out images")
    config = make_config(recipe, **{**overrides, "val": val or DEFAULT_VAL})
    space = parse_search(search)
    network = build(config.model, config.args, dropout=config.dropout)  # the fixed network builds, before data
    if config.teacher:  # and the teacher loads, and held out the trials' validation images
        import torch

        from mnist20k.distill import load_teacher

        load_teacher(config, torch.device("cpu"))
    shapes = sum(d.is_arg for d in space) > 1  # searched together, network arguments may make shapes of their own
    for dim in space:
        check_dimension(dim, config, network, alone=not shapes)
    check_folder(out, overwrite)
    check_logs(log or [])
    load_split(data_dir, train=True)  # the training file only: the test files are never opened
    spec = WorkerSpec(
        folder=str(out),
        storage=storage,
        study=study or out.name,
        search=search,
        config=asdict(config),
        trials=trials,
        seeds=parse_seeds(seeds),
        aggregate=aggregate,
        objectives=goals,
        pruner=pruner or ("median" if len(goals) == 1 else "none"),
        sampler_seed=sampler_seed,
        budget=budget,
        device=device,
        max_retry=max_retry,
        log=list(log or []),
        data_dir=None if data_dir is None else str(data_dir),
    )
    return Tune(spec, space, config, jobs, overwrite)


def parse_objectives(text: str) -> list[str]:
    """`accuracy`, or `accuracy,params`: validation accuracy first, always, then the parameters to keep few."""
    goals = [g.strip() for g in text.split(",")]
    if goals not in (["accuracy"], ["accuracy", "params"]):
        raise UsageError(f"--objectives is accuracy or accuracy,params, not {text!r}")
    return goals


def check_dimension(dim: Dimension, config: TrainConfig, network, alone: bool = True) -> None:
    """Each end of a range, and each choice, is a value a run can take: refused here, not in trial 17. A network
    argument's value is built with, as `--arg` would be (your own code is not imported again for it). Unless it
    is searched `alone`, a network argument whose shape cannot work with the fixed arguments may with the other
    searched ones: such a combination is a trial recorded as invalid, not a refusal."""
    from mnist20k.nets import build

    for value in dim.choices or (dim.low, dim.high):
        args = {**config.args, **split_params({dim.key: value})[1]}
        try:
            if not dim.is_arg:
                validate(replace(config, **{dim.name: value}))
            elif network.source is not None:
                build(config.model, args, source=network.source)
            else:
                build(config.model, args, dropout=config.dropout)
        except Mnist20kError as e:
            if alone or not isinstance(e, InvalidShape):
                raise UsageError(f"--search {dim.key}={dim.spec()}: {e}") from None


def check_folder(out: Path, overwrite: bool) -> None:
    """A study folder is new, empty, or a study's (its journal or tune.json); anything else is refused."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"cannot write to {out}: it is a file, not a folder")
    if not out.exists() or overwrite:
        return
    if any(out.iterdir()) and not ((out / JOURNAL).exists() or (out / TUNE_FILE).exists()):
        raise UsageError(f"{out} is not empty and holds no study: give an empty or new --out")
