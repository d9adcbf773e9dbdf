"""What a sweep trains, decided before anything runs: the seeds, the grid of settings, each run's folder
and config, and the state each run is in. Pure, apart from the checks of the folder and of what the runs
need."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from mnist20k.config import TrainConfig, make_config
from mnist20k.errors import OutputError, UsageError
from mnist20k.logs import check_logs
from mnist20k.seeds import parse_seeds
from mnist20k.settings import flag, parse_setting, setting_name

SWEEP_FILE = "sweep.json"


def parse_grid(pairs: list[str], given: dict) -> dict[str, list]:
    """["lr=0.05,0.1", "batch-size=64"] -> {"lr": [0.05, 0.1], "batch_size": [64]}, typed by TrainConfig."""
    grid: dict[str, list] = {}
    for pair in pairs:
        key, eq, values = pair.partition("=")
        if not eq or not values:
            raise UsageError(f"--set {pair!r}: write KEY=VALUE[,VALUE...], e.g. --set lr=0.05,0.1")
        try:
            name = setting_name(key)
            if name == "seed":
                raise UsageError("the seeds come from --seeds")
            if name in grid:
                raise UsageError(f"given twice; list its values once: --set {key}=A,B")
            if given.get(name) is not None:
                raise UsageError(f"{flag(name)} and --set {key} both set it; keep one")
            grid[name] = [parse_setting(name, v.strip()) for v in values.split(",")]
        except UsageError as e:
            raise UsageError(f"--set {pair!r}: {e}") from None
    return grid


@dataclass(frozen=True)
class Planned:
    """One run of the sweep."""

    grid: dict  # this configuration's --set values
    seed: int
    folder: Path
    config: TrainConfig  # written to the run folder's config.json, which the run trains from

    @property
    def label(self) -> str:
        return run_label(self.seed, self.grid)


def plan(recipe: str, overrides: dict, grid: dict[str, list], seeds: list[int], out: Path) -> list[Planned]:
    """Every configuration of the grid, each seed: checked for sense (make_config) before anything runs."""
    runs = []
    for values in itertools.product(*grid.values()):
        combo = dict(zip(grid, values, strict=True))
        folder = out / configuration_name(combo) if combo else out
        for seed in seeds:
            given = {**overrides, **combo, "seed": seed}
            runs.append(Planned(combo, seed, folder / f"seed-{seed}", make_config(recipe, **given)))
    return runs


def configuration_name(combo: dict) -> str:
    """lr=0.1,batch_size=64: a folder name, with a path in a value made safe."""
    return ",".join(f"{k}={_value_text(v)}" for k, v in combo.items())


def run_label(seed: int, grid: dict) -> str:
    """How a sweep names one run: "seed 2", or "seed 2 (lr=0.1)" in a grid."""
    return f"seed {seed}" + (f" ({configuration_name(grid)})" if grid else "")


def _value_text(value) -> str:
    text = ("on" if value else "off") if isinstance(value, bool) else str(value)
    return re.sub(r"[^\w.:=+-]", "_", text)


# ---- a sweep, and the state of each of its runs ------------------------------------------------


class State(Enum):
    NEW = "new"  # nothing saved: trains from its config.json
    SAVED = "saved"  # a checkpoint short of its epochs: resumes after it
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"  # by Ctrl-C or SIGTERM, its last completed epoch saved

    @property
    def status(self) -> str:
        """As sweep.json says it: a run not trained to its end yet is pending."""
        return "pending" if self in (State.NEW, State.SAVED) else self.value


@dataclass
class Job:
    run: Planned
    state: State
    returncode: int | None = None
    seconds: float = 0.0


@dataclass
class Sweep:
    """Everything `mnist20k sweep` needs, checked; run() trains it."""

    out: Path
    runs: list[Planned]
    settings: dict
    device: str
    data_dir: Path | None
    jobs: int
    target: float
    last: int
    overwrite: bool = False
    log: list[str] = field(default_factory=list)  # each run's --log: tensorboard, csv
    tracked: list[Job] = field(default_factory=list)  # run() fills it: each run's state as the sweep goes


# ---- the sweep folder -------------------------------------------------------------------------


def identity(recipe: str, overrides: dict, grid: dict) -> dict:
    """What makes two sweeps the same sweep: the recipe, the options for every run, the grid. Seeds may
    grow between calls (more seeds add runs), and --jobs or --device do not change what is trained."""
    return {"recipe": recipe, "overrides": {k: v for k, v in overrides.items() if v is not None}, "grid": grid}


def check_folder(out: Path, same: dict, overwrite: bool) -> None:
    """A sweep folder is new, empty, or holds this same sweep; anything else only with --overwrite."""
    record = out / SWEEP_FILE
    if out.exists() and not out.is_dir():
        raise OutputError(f"cannot write to {out}: it is a file, not a folder")
    if overwrite or not out.exists():
        return
    if record.is_file():
        try:
            saved = json.loads(record.read_text()).get("settings")
        except (OSError, ValueError, AttributeError):
            saved = None
        if saved != json.loads(json.dumps(same)):  # through JSON, as it was saved: tuples become lists
            raise UsageError(f"{out} holds a different sweep; pass --overwrite to replace it, or give another --out")
    elif any(out.iterdir()):
        raise UsageError(f"{out} is not empty and holds no {SWEEP_FILE}: give an empty or new --out")


def default_jobs(device: str, n_runs: int) -> int:
    """One run at a time on a CPU (two would share its cores and take twice as long each); on a GPU several
    runs share the card, since one Python thread cannot keep it busy with these small kernels."""
    from mnist20k.device import resolve_device

    return max(1, min(4, n_runs)) if resolve_device(device).type == "cuda" else 1


def prepare(
    recipe: str,
    overrides: dict,
    grid: list[str],
    *,
    seeds: list[str],
    out: Path,
    device: str,
    data_dir: Path | None,
    jobs: int | None,
    target: float,
    last: int,
    overwrite: bool,
    log: list[str] | None = None,
) -> Sweep:
    """A sweep from its command's words (--set pairs, --seeds texts), checked: its runs, its folder (new, or
    holding this same sweep) and what the runs need (their networks build, the data is there)."""
    if overrides.get("seed") is not None:
        raise UsageError(f"sweep trains the seeds of --seeds; write --seeds {overrides['seed']}")
    if not 0 < target <= 100:
        raise UsageError(f"--target is a percentage in (0, 100], got {target}")
    values = parse_grid(grid, overrides)
    runs = plan(recipe, overrides, values, parse_seeds(seeds), out)
    same = identity(recipe, overrides, values)
    check_folder(out, same, overwrite)
    check_runs_can_start(runs, data_dir)
    check_logs(log or [])
    jobs = jobs or default_jobs(device, len(runs))
    return Sweep(out, runs, same, device, data_dir, jobs, target, last, overwrite, list(log or []))


def check_runs_can_start(runs: list[Planned], data_dir: Path | None) -> None:
    """Build each distinct network once and read the data once, here, so that a bad --model or missing
    data is one line before any folder is made, and a first download happens once, not in every run. So is each
    teacher, against its runs' validation split."""
    import torch

    from mnist20k.data import load_split
    from mnist20k.distill import load_teacher
    from mnist20k.nets import build

    for c in {json.dumps([r.config.model, r.config.args], sort_keys=True): r.config for r in runs}.values():
        build(c.model, c.args, dropout=c.dropout)
    for c in {(r.config.teacher, r.config.val): r.config for r in runs if r.config.teacher}.values():
        load_teacher(c, torch.device("cpu"))
    for train in (True, False) if any(r.config.val == 0 for r in runs) else (True,):  # --val: never the test files
        load_split(data_dir, train=train)
