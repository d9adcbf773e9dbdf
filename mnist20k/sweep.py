"""Many runs of one recipe: seeds times a grid of settings, each an ordinary run folder, trained as local
`mnist20k train` processes, summarized from the runs' own metrics files.

    DIR/sweep.json             the settings, device, versions, every run's epochs, the summary
    DIR/seed-3/                a run folder (without --set)
    DIR/lr=0.1/seed-3/         a run folder of one grid configuration (with --set lr=...)

Each run is a child process running `mnist20k train`, so `eval`, `predict` and `--resume` work on each
folder, and a run's numbers are those of the same `mnist20k train` command: on a CPU every child keeps
PyTorch's default thread count whatever --jobs is, since the thread count changes a CPU run's numerics.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from mnist20k import __version__
from mnist20k.checkpoint import CHECKPOINT_NAME
from mnist20k.config import TrainConfig, make_config
from mnist20k.errors import OutputError, UsageError
from mnist20k.files import reason, write_file
from mnist20k.results import summarize
from mnist20k.rundir import RUN_FILES

SWEEP_FILE = "sweep.json"
FORMAT = "mnist20k-sweep"
LOG_NAME = "train.log"  # each run's own output, beside its checkpoint
POLL_S = 0.5
STOP_WAIT_S = 120  # after Ctrl-C or SIGTERM, how long a run may take to finish saving before it is killed
TYPES = {"int": int, "float": float, "str": str, "bool": bool}
TRUE, FALSE = ("true", "on", "yes", "1"), ("false", "off", "no", "0")


# ---- what to run ------------------------------------------------------------------------------


def parse_seeds(values: list[str]) -> list[int]:
    """["1-5"], ["1 3 7"], ["1,3", "8-9"] -> the seeds in order given, each once."""
    seeds: list[int] = []
    for token in re.split(r"[\s,]+", " ".join(values).strip()):
        if not token:
            continue
        low, dash, high = token.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise UsageError(f"--seeds: {token!r} is not a seed or a range like 1-5 (seeds are whole numbers >= 0)")
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise UsageError(f"--seeds: {token} is a reversed range; write {last}-{first}")
        seeds += [s for s in range(first, last + 1) if s not in seeds]
    if not seeds:
        raise UsageError("--seeds: no seeds given; e.g. --seeds 1-5 or --seeds '1 3 7'")
    return seeds


def parse_grid(pairs: list[str], given: dict) -> dict[str, list]:
    """["lr=0.05,0.1", "batch-size=64"] -> {"lr": [0.05, 0.1], "batch_size": [64]}, typed by TrainConfig."""
    types = {f.name: f.type for f in fields(TrainConfig)}
    grid: dict[str, list] = {}
    for pair in pairs:
        key, eq, values = pair.partition("=")
        name = key.strip().replace("-", "_")
        if not eq or not values:
            raise UsageError(f"--set {pair!r}: write KEY=VALUE[,VALUE...], e.g. --set lr=0.05,0.1")
        if name == "seed":
            raise UsageError("--set seed: the seeds come from --seeds")
        if name not in types:
            raise UsageError(f"--set {pair!r}: unknown setting {key!r}; see mnist20k train --help")
        if name in grid:
            raise UsageError(f"--set {key} given twice; list its values once: --set {key}=A,B")
        if given.get(name) is not None:
            raise UsageError(f"--{key.replace('_', '-')} and --set {key} both set it; keep one")
        grid[name] = [_typed(name, types[name], v.strip(), pair) for v in values.split(",")]
    return grid


def _typed(name: str, kind: str, value: str, pair: str):
    if kind == "bool":
        if value.lower() not in TRUE + FALSE:
            raise UsageError(f"--set {pair!r}: {name} is on or off, not {value!r}")
        return value.lower() in TRUE
    try:
        return TYPES[kind](value)
    except ValueError:
        what = {"int": "a whole number", "float": "a number"}.get(kind, kind)
        raise UsageError(f"--set {pair!r}: {name} takes {what}, not {value!r}") from None


@dataclass(frozen=True)
class Planned:
    """One run of the sweep."""

    grid: dict  # this configuration's --set values
    seed: int
    folder: Path
    config: TrainConfig
    flags: tuple[str, ...]  # the train options that make `config` from the recipe

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
            config = make_config(recipe, **given)
            flags = ("--recipe", recipe, *train_flags(given))
            runs.append(Planned(combo, seed, folder / f"seed-{seed}", config, flags))
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


def train_flags(settings: dict) -> list[str]:
    """Settings as `mnist20k train` options: {"lr": 0.1, "nesterov": False} -> --lr 0.1 --no-nesterov."""
    flags = []
    for name, value in settings.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, str(value)]  # str() of a float reads back as the same float
    return flags


# ---- the sweep folder -------------------------------------------------------------------------


def identity(recipe: str, overrides: dict, grid: dict) -> dict:
    """What makes two sweeps the same sweep: the recipe, the options for every run, the grid. Seeds may
    grow between calls (more seeds add runs), and --jobs or --device do not change what is trained."""
    return {"recipe": recipe, "overrides": {k: v for k, v in overrides.items() if v is not None}, "grid": grid}


def check_folder(out: Path, same: dict, overwrite: bool) -> None:
    """A sweep folder is new, empty, or holds this same sweep; anything else only with --overwrite."""
    record = out / SWEEP_FILE
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
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


def run_state(run: Planned, overwrite: bool) -> str:
    """done: finished before; resume: a checkpoint short of its epochs; fresh: nothing saved yet."""
    if overwrite or not (run.folder / CHECKPOINT_NAME).is_file():
        return "fresh"
    from mnist20k.checkpoint import load_checkpoint
    from mnist20k.config import from_dict

    ckpt = load_checkpoint(run.folder)
    if from_dict(ckpt["config"]) != run.config:
        raise UsageError(f"{run.folder} holds a run with other settings; pass --overwrite to replace it")
    return "done" if ckpt["epoch"] >= run.config.epochs else "resume"


def read_metrics(folder: Path) -> list[dict]:
    """A run's records from its metrics.jsonl, as training wrote them (full precision)."""
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---- running ------------------------------------------------------------------------------------


@dataclass
class Job:
    run: Planned
    state: str
    process: subprocess.Popen | None = None
    log: object = None
    returncode: int | None = None
    started: float = 0.0
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
    tracked: list[Job] = field(default_factory=list)  # run() fills it: each run's state as the sweep goes


def child_command(job: Job, sweep: Sweep) -> list[str]:
    base = [sys.executable, "-m", "mnist20k", "train", "--device", sweep.device]
    if sweep.data_dir is not None:
        base += ["--data-dir", str(sweep.data_dir)]
    if job.state == "resume":
        from mnist20k.refs import is_reference

        model = job.run.config.model
        return [*base, "--resume", str(job.run.folder), *(["--model", model] if is_reference(model) else [])]
    # A folder with run files but no checkpoint is a run stopped before its first epoch ended: nothing to keep.
    stale = any((job.run.folder / name).exists() for name in RUN_FILES)
    replace = ["--overwrite"] if sweep.overwrite or stale else []
    return [*base, "--out", str(job.run.folder), *replace, *job.run.flags]


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped the sweep; every run's last completed epoch is saved."""

    def __init__(self, code: int):
        self.code = code


def run(
    sweep: Sweep,
    on_start: Callable[[list[Job]], None] | None = None,
    on_poll: Callable[[int], None] | None = None,
    on_done: Callable[[Job, list[dict]], None] | None = None,
) -> dict:
    """Train every planned run not finished yet, --jobs at a time; write sweep.json as runs finish and at the
    end; return it. Ctrl-C or SIGTERM stops every child cleanly (each saves its last completed epoch) and raises
    Interrupted. on_poll gets the epochs completed over all runs, on_done each finished run's records."""
    jobs = [Job(r, run_state(r, sweep.overwrite)) for r in sweep.runs]
    sweep.tracked = jobs
    try:
        sweep.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot write to {sweep.out}: {reason(e)}") from None
    write_record(sweep)
    if on_start is not None:
        on_start(jobs)
    pending = [j for j in jobs if j.state != "done"]
    running: list[Job] = []
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while pending or running:
            while pending and len(running) < sweep.jobs:
                job = pending.pop(0)
                _start(job, sweep)
                running.append(job)
            time.sleep(POLL_S)
            for job in [j for j in running if j.process.poll() is not None]:
                running.remove(job)
                _finish(job)
                write_record(sweep)
                if on_done is not None:
                    on_done(job, read_metrics(job.run.folder))
            if on_poll is not None:
                on_poll(sum(len(read_metrics(j.run.folder)) for j in jobs))
    except (KeyboardInterrupt, _Terminated) as e:
        _stop(running)
        write_record(sweep)
        raise Interrupted(143 if isinstance(e, _Terminated) else 130) from None
    except BaseException:  # the sweep itself failed (a full disk): no run is left behind on its own
        _stop(running)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return write_record(sweep)


class _Terminated(BaseException):
    pass


def _raise_interrupt(signum, frame):
    raise _Terminated()


def _start(job: Job, sweep: Sweep) -> None:
    try:
        job.run.folder.mkdir(parents=True, exist_ok=True)
        job.log = open(job.run.folder / LOG_NAME, "a")  # noqa: SIM115 (closed when the run ends)
    except OSError as e:
        raise OutputError(f"cannot write to {job.run.folder}: {reason(e)}") from None
    command = child_command(job, sweep)
    job.log.write("$ " + shlex.join(["mnist20k", *command[3:]]) + "\n")
    job.log.flush()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    # A session of its own: a terminal's Ctrl-C reaches the sweep alone, which passes it on to each run
    # once, as a SIGTERM (a run that got it twice could stop in the middle of saving its message).
    job.started = time.perf_counter()
    job.process = subprocess.Popen(
        command, stdout=job.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
    )


def _finish(job: Job) -> None:
    job.returncode = job.process.wait()
    job.seconds = time.perf_counter() - job.started
    job.log.close()
    job.state = "done" if job.returncode == 0 else "failed"


def _stop(running: list[Job]) -> None:
    """SIGTERM to every run, which `train` takes as it takes Ctrl-C: each keeps its last completed epoch's
    checkpoint. Not SIGINT: a sweep started in the background by a script (`nohup mnist20k sweep ... &`)
    and its runs have SIGINT ignored, as a shell starts every background job."""
    for job in running:
        job.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    for job in running:
        try:
            job.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            job.process.kill()
            job.process.wait()
        job.returncode = job.process.returncode
        job.log.close()
        job.state = "stopped"


def last_log_line(job: Job) -> str:
    try:
        lines = (job.run.folder / LOG_NAME).read_text().strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


# ---- the record -----------------------------------------------------------------------------------


def write_record(sweep: Sweep) -> dict:
    """DIR/sweep.json: settings, device, versions, every run's epochs and the summary, written atomically."""
    record = build_record(sweep)
    write_file(sweep.out / SWEEP_FILE, (json.dumps(record, indent=1) + "\n").encode())
    return record


def build_record(sweep: Sweep) -> dict:
    import torch

    configurations = []
    states = {id(j.run): j for j in sweep.tracked}
    for grid, runs in _by_configuration(sweep.runs):
        entries = []
        for r in runs:
            job = states.get(id(r))
            entries.append(
                {
                    "seed": r.seed,
                    "folder": str(r.folder.relative_to(sweep.out)),
                    "status": _status(job),
                    "epochs": read_metrics(r.folder),
                }
            )
        config = asdict(runs[0].config) | {"seed": None}
        finished = {e["seed"]: e["epochs"] for e in entries if e["status"] == "done"}
        configurations.append(
            {"grid": grid, "config": config, "runs": entries, "summary": summarize(finished, sweep.target, sweep.last)}
        )
    everyone = [c["summary"] for c in configurations]
    complete = all(e["status"] == "done" for c in configurations for e in c["runs"])
    return {
        "format": FORMAT,
        "format_version": 1,
        "settings": sweep.settings,
        "seeds": sorted({r.seed for r in sweep.runs}, key=[r.seed for r in sweep.runs].index),
        "target": sweep.target,
        "last": sweep.last,
        "device": device_name(sweep.device),
        "torch": torch.__version__,
        "mnist20k": __version__,
        "complete": complete,
        "holds": complete and all(s["holds"] for s in everyone),
        "configurations": configurations,
    }


def _status(job: Job | None) -> str:
    if job is not None:
        return {"fresh": "pending", "resume": "pending"}.get(job.state, job.state)
    return "pending"


def _by_configuration(runs: list[Planned]) -> list[tuple[dict, list[Planned]]]:
    groups: dict[str, tuple[dict, list[Planned]]] = {}
    for r in runs:
        groups.setdefault(json.dumps(r.grid), (r.grid, []))[1].append(r)
    return list(groups.values())


def summary_object(record: dict) -> dict:
    """What --json prints: each configuration's summary and the verdict, without the per-epoch records."""
    keys = ("format", "settings", "seeds", "target", "last", "device", "torch", "mnist20k", "complete", "holds")
    return {
        **{k: record[k] for k in keys},
        "configurations": [{"grid": c["grid"], "summary": c["summary"]} for c in record["configurations"]],
    }


@functools.cache  # sweep.json is rewritten after every run; the device does not change
def device_name(device: str) -> str:
    import torch

    from mnist20k.device import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if dev.type != "cpu":
        return dev.type
    # A CPU run's numbers depend on its thread count (OMP_NUM_THREADS, which every run inherits).
    threads = torch.get_num_threads()
    return f"cpu ({platform.machine()}, {os.cpu_count()} CPUs, {threads} thread{'s' * (threads != 1)} a run)"


def default_jobs(device: str, n_runs: int) -> int:
    """One run at a time on a CPU (two would share its cores and take twice as long each); on a GPU several
    runs share the card, since one Python thread cannot keep it busy with these small kernels."""
    from mnist20k.device import resolve_device

    return max(1, min(4, n_runs)) if resolve_device(device).type == "cuda" else 1


def continue_command(argv: list[str], out: Path) -> str:
    """The command that continues an interrupted sweep: the same one, into the same folder."""
    args = list(argv)
    if "--out" not in args and not any(a.startswith("--out=") for a in args):
        args += ["--out", str(out)]
    return "mnist20k " + shlex.join(args)


def check_runs_can_start(runs: list[Planned], data_dir: Path | None) -> None:
    """Build each distinct network once and read the data once, here, so that a bad --model or missing
    data is one line before any folder is made, and a first download happens once, not in every run."""
    from mnist20k.data import load_split
    from mnist20k.model import build_network

    for name in dict.fromkeys(r.config.model for r in runs):
        build_network(name, 0.0)
    for train in (True, False):
        load_split(data_dir, train=train)
