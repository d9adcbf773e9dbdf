"""`mnist20k sweep`: many seeds, and a grid of settings, as ordinary runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mnist20k.config import parse_network_args
from mnist20k.options import DataDir, Device, NetworkArgs, Recipe, plain, with_settings


@with_settings
def sweep(
    seeds: Annotated[
        list[str] | None,
        typer.Option(metavar="SEEDS", help="Seeds: a range 1-5, a list '1 3 7' or 1,3,7; repeatable. (default: 1-5)"),
    ] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=V1,V2", help="A grid: every value of KEY, each seed; repeat for more keys."),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(min=1, help="Runs at once, each its own process (default: 1 on a CPU, up to 4 on a GPU)."),
    ] = None,
    target: Annotated[float, typer.Option(help="Accuracy in percent every seed must hold.")] = 99.4,
    last: Annotated[int, typer.Option(min=1, help="...on each of its last this many epochs.")] = 3,
    recipe: Annotated[Recipe, typer.Option(help="Base settings for every run, as for train.")] = Recipe.default,
    arg: NetworkArgs = None,
    device: Device = "auto",
    data_dir: DataDir = None,
    out: Annotated[
        Path | None, typer.Option(help="Sweep folder: run folders and sweep.json (default: runs/sweep-<date>_<time>).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a different sweep, or the runs, already in --out.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    **settings,
) -> None:
    """Train many seeds (and a grid of settings) as ordinary runs; mean ± std, and whether every seed holds the target.

    Running the same command into the same --out again skips finished runs and resumes unfinished ones."""
    from mnist20k import process
    from mnist20k import sweep as sweeps
    from mnist20k.render import say
    from mnist20k.render_sweep import SweepView
    from mnist20k.rundir import new_run_path

    out = out or new_run_path("runs", prefix="sweep-")
    overrides = {**plain(settings), "args": parse_network_args(arg)}
    job = sweeps.prepare(recipe.value, overrides, grid or [], seeds or ["1-5"], out, device, data_dir, jobs,
                         target, last, overwrite)  # fmt: skip
    view = SweepView(sum(r.config.epochs for r in job.runs), last, target)
    say(f"sweep of {len(job.runs)} runs, {job.jobs} at a time -> {out}")
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
    if json_output:
        typer.echo(json.dumps(sweeps.summary_object(record)))
    else:
        view.finish(record)
    if any(r["status"] == "failed" for c in record["configurations"] for r in c["runs"]):
        raise typer.Exit(1)
