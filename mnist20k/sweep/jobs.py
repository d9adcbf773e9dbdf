"""A sweep's runs as child `mnist20k train` processes: each run's state, the command that trains it from its
config.json, and run(), which trains them --jobs at a time through the runner and keeps sweep.json current."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict

from mnist20k import process
from mnist20k.checkpoint import CHECKPOINT_NAME
from mnist20k.children import Interrupted, Runner
from mnist20k.errors import OutputError, UsageError
from mnist20k.files import reason
from mnist20k.rundir import write_config
from mnist20k.sweep.plan import Job, Planned, State, Sweep
from mnist20k.sweep.record import read_metrics, write_record

LOG_NAME = "train.log"  # each run's own output, beside its checkpoint
POLL_S = 0.5  # how often the progress is told while runs train
STOP_WAIT_S = 120  # after Ctrl-C or SIGTERM, how long a run may take to finish saving before it is killed


def run_state(run: Planned, overwrite: bool) -> State:
    """What is saved of a run: nothing (or --overwrite), part of it, or all of it."""
    if overwrite or not (run.folder / CHECKPOINT_NAME).is_file():
        return State.NEW
    from mnist20k.checkpoint import load_checkpoint
    from mnist20k.settings import saved_config

    ckpt = load_checkpoint(run.folder)
    if saved_config(ckpt["config"]) != run.config:
        raise UsageError(f"{run.folder} holds a run with other settings; pass --overwrite to replace it")
    return State.DONE if ckpt["epoch"] >= run.config.epochs else State.SAVED


def child_command(job: Job, sweep: Sweep) -> list[str]:
    base = [sys.executable, "-m", "mnist20k", "train", "--device", sweep.device]
    if sweep.data_dir is not None:
        base += ["--data-dir", str(sweep.data_dir)]
    for kind in sweep.log:
        base += ["--log", kind]
    from mnist20k.nets import is_reference

    model = job.run.config.model
    code = ["--model", model] if is_reference(model) else []  # code runs only when named on the command line
    if job.state is State.SAVED:
        return [*base, "--resume", str(job.run.folder), *code]
    # The run's config.json, written by _prepare, is the whole description of the run. --overwrite: whatever
    # else is in the folder is a run stopped before its first epoch ended (or --overwrite was given).
    config = job.run.folder / "config.json"
    return [*base, "--config", str(config), "--out", str(job.run.folder), "--overwrite", *code]


def run(
    sweep: Sweep,
    on_start: Callable[[list[Job]], None] | None = None,
    on_poll: Callable[[int], None] | None = None,
    on_done: Callable[[Job, list[dict]], None] | None = None,
) -> dict:
    """Train every planned run not finished yet, --jobs at a time; write sweep.json as runs finish and at the
    end; return it. Ctrl-C, or SIGTERM inside process.sigterm_as_interrupt() (as the CLI runs it), stops every
    child cleanly (each saves its last completed epoch) and raises Interrupted. on_poll gets the epochs
    completed over all runs, on_done each finished run's records."""
    jobs = [Job(r, run_state(r, sweep.overwrite)) for r in sweep.runs]
    sweep.tracked = jobs
    try:
        sweep.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot write to {sweep.out}: {reason(e)}") from None
    write_record(sweep)
    if on_start is not None:
        on_start(jobs)
    runner = Runner(sweep.jobs, env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"})
    training: dict[Future, Job] = {}
    try:
        for job in jobs:
            if job.state is not State.DONE:
                training[runner.submit(_prepare(job, sweep), job.run.folder / LOG_NAME)] = job
        waiting = set(training)
        while waiting:
            finished, waiting = wait(waiting, timeout=POLL_S, return_when=FIRST_COMPLETED)
            for future in finished:
                job = training[future]
                end = future.result()
                job.returncode, job.seconds = end.returncode, end.seconds
                job.state = State.DONE if end.returncode == 0 else State.FAILED
                write_record(sweep)
                if on_done is not None:
                    on_done(job, read_metrics(job.run.folder))
            if on_poll is not None:
                on_poll(sum(len(read_metrics(j.run.folder)) for j in jobs))
    except process.INTERRUPTS as e:
        runner.stop(STOP_WAIT_S)
        _mark_stopped(training)
        write_record(sweep)
        raise Interrupted(process.exit_code(e)) from None
    except BaseException:  # the sweep itself failed (a full disk): no run is left behind on its own
        runner.stop(STOP_WAIT_S)
        raise
    runner.close()
    return write_record(sweep)


def _prepare(job: Job, sweep: Sweep) -> list[str]:
    """The run's folder, its config.json when it starts afresh, and the command's first line in its log."""
    command = child_command(job, sweep)
    try:
        job.run.folder.mkdir(parents=True, exist_ok=True)
        if job.state is State.NEW:
            write_config(job.run.folder / "config.json", asdict(job.run.config))
        with open(job.run.folder / LOG_NAME, "a") as log:
            log.write("$ " + shlex.join(["mnist20k", *command[3:]]) + "\n")
    except OSError as e:
        raise OutputError(f"cannot write to {job.run.folder}: {reason(e)}") from None
    return command


def _mark_stopped(training: dict[Future, Job]) -> None:
    """After the runner stopped: the runs it had started are stopped; the others stay as they were."""
    for future, job in training.items():
        if future.done() and not future.cancelled() and job.state in (State.NEW, State.SAVED):
            end = future.result()
            if end.returncode is not None:
                job.returncode, job.seconds, job.state = end.returncode, end.seconds, State.STOPPED


def last_log_line(job: Job) -> str:
    try:
        lines = (job.run.folder / LOG_NAME).read_text().strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""
