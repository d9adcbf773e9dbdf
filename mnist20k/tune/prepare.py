"""A study from tune's command words, checked before anything is made: the search space against the settings
and the network, the validation split (tune never opens the test files), the folder, the data, and the storage.
Every refusal is one line and leaves nothing behind."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mnist20k.config import MAX_VAL, TrainConfig, make_config, validate
from mnist20k.errors import Mnist20kError, OutputError, UsageError
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
    pruner: str,
    budget: int,
    device: str,
    data_dir: Path | None,
    overwrite: bool,
    sampler_seed: int | None = None,
    max_retry: int = MAX_RETRIES,
    log: list[str] | None = None,
) -> Tune:
    from mnist20k.data import load_split
    from mnist20k.nets import build

    if overrides.get("seed") is not None:
        raise UsageError("tune trains each trial on the seeds of --seeds; write --seeds " + str(overrides["seed"]))
    if aggregate == "min" and len(parse_seeds(seeds)) == 1:
        raise UsageError(
            "--aggregate min judges a trial by the lowest of its --seeds: give two or more, e.g. --seeds 1-2"
        )
    val = overrides.get("val")
    if val is not None and not 1 <= val <= MAX_VAL:
        raise UsageError(f"--val must be between 1 and {MAX_VAL:,} for tune: trials are judged on held-out images")
    config = make_config(recipe, **{**overrides, "val": val or DEFAULT_VAL})
    space = parse_search(search)
    network = build(config.model, config.args, dropout=config.dropout)  # the fixed network builds, before data
    for dim in space:
        check_dimension(dim, config, network)
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
        pruner=pruner,
        sampler_seed=sampler_seed,
        budget=budget,
        device=device,
        max_retry=max_retry,
        log=list(log or []),
        data_dir=None if data_dir is None else str(data_dir),
    )
    return Tune(spec, space, config, jobs, overwrite)


def check_dimension(dim: Dimension, config: TrainConfig, network) -> None:
    """Each end of a range, and each choice, is a value a run can take: refused here, not in trial 17. A network
    argument's value is built with, as `--arg` would be (your own code is not imported again for it)."""
    from mnist20k.nets import build

    values = dim.choices or (dim.low, dim.high)
    try:
        for value in values:
            args = {**config.args, **split_params({dim.key: value})[1]}
            if not dim.is_arg:
                validate(replace(config, **{dim.name: value}))
            elif network.source is not None:
                build(config.model, args, source=network.source)
            else:
                build(config.model, args, dropout=config.dropout)
    except Mnist20kError as e:
        raise UsageError(f"--search {dim.key}={dim.spec()}: {e}") from None


def check_folder(out: Path, overwrite: bool) -> None:
    """A study folder is new, empty, or a study's (its journal or tune.json); anything else is refused."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"cannot write to {out}: it is a file, not a folder")
    if not out.exists() or overwrite:
        return
    if any(out.iterdir()) and not ((out / JOURNAL).exists() or (out / TUNE_FILE).exists()):
        raise UsageError(f"{out} is not empty and holds no study: give an empty or new --out")
