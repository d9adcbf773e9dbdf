"""`mnist20k sweep`: many seeds, and a grid of settings, as ordinary runs."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mnist20k.cli.options import (
    DataDir,
    Device,
    Json,
    Logs,
    NetworkArgs,
    Recipe,
    log_kinds,
    option,
    out_option,
    overwrite_option,
    plain,
    with_settings,
)
from mnist20k.settings import parse_network_args

SWEEP = "Sweep"


@with_settings
def sweep(
    seeds: Annotated[
        list[str] | None,
        option(
            metavar="SEEDS", help="Seeds: a range 1-5, a list '1 3 7' or 1,3,7; repeatable.", default="1-5", panel=SWEEP
        ),
    ] = None,
    grid: Annotated[
        list[str] | None,
        option(
            "--set",
            metavar="KEY=V1,V2",
            help="A grid: every value of KEY, each seed; repeat for more keys.",
            panel=SWEEP,
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        option(min=1, help="Runs at once, each its own process.", default="1 on a CPU, up to 4 on a GPU", panel=SWEEP),
    ] = None,
    target: Annotated[
        float,
        option(
            help="Accuracy in percent every seed must hold on each of its --last epochs.", default=99.4, panel=SWEEP
        ),
    ] = 99.4,
    last: Annotated[
        int, option(min=1, help="How many of each run's last epochs must hold --target.", default=3, panel=SWEEP)
    ] = 3,
    recipe: Recipe = None,
    arg: NetworkArgs = None,
    device: Device = "auto",
    data_dir: DataDir = None,
    out: out_option("Sweep folder: run folders and sweep.json.", "runs/sweep-<date>_<time>") = None,
    overwrite: overwrite_option("Replace a different sweep, or the runs, already in --out.") = False,
    log: Logs = None,
    json_output: Json = False,
    **settings,
) -> None:
    """Train many seeds (and a grid of settings) as ordinary runs; mean ± std, and whether every seed holds the target.

    Running the same command into the same --out again skips finished runs and resumes unfinished ones."""
    from mnist20k import process
    from mnist20k import sweep as sweeps
    from mnist20k.cli.render import on_stderr, plural, say
    from mnist20k.cli.render_sweep import SweepView
    from mnist20k.rundir import new_run_path

    out = out or new_run_path("runs", prefix="sweep-")
    overrides = {**plain(settings), "args": parse_network_args(arg)}
    job = sweeps.prepare(
        recipe or "default",
        overrides,
        grid or [],
        seeds=seeds or ["1-5"],
        out=out,
        device=device,
        data_dir=data_dir,
        jobs=jobs,
        target=target,
        last=last,
        overwrite=overwrite,
        log=log_kinds(log),
    )
    with on_stderr(json_output):  # with --json, stdout holds the JSON alone
        view = SweepView(sum(r.config.epochs for r in job.runs), last, target)
        say(f"sweep of {plural(len(job.runs), 'run')}, {job.jobs} at a time -> {out}")
        try:
            with process.sigterm_as_interrupt():
                record = sweeps.run(job, on_start=view.start, on_poll=view.poll, on_done=view.done)
        except sweeps.Interrupted as e:
            view.stop()
            typer.echo(
                f"interrupted: each run's last completed epoch is saved in {out}; to continue, run the same "
                f"command with --out {out}",
                err=True,
            )
            raise typer.Exit(e.code) from None
        finally:
            view.stop()
        if not json_output:
            view.finish(record)
    if json_output:
        typer.echo(json.dumps(sweeps.summary_object(record)))
    if any(r["status"] == "failed" for c in record["configurations"] for r in c["runs"]):
        raise typer.Exit(1)
