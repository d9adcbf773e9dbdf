"""`mnist20k tune`: a search over settings and network arguments, judged on held-out training images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mnist20k.config import PARAM_BUDGET, parse_network_args
from mnist20k.errors import Mnist20kError
from mnist20k.options import DataDir, Device, NetworkArgs, Recipe, choices, plain, with_settings

Pruner = choices("Pruner", ("median", "hyperband", "none"))
Aggregate = choices("Aggregate", ("mean", "min"))


@with_settings
def tune(
    search: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=SPEC",
            help="A searched setting (lr, weight-decay, ...) or network argument (arg.NAME): a,b,c a choice, "
            "lo:hi a range, lo:hi:log a log range; repeat for more.",
        ),
    ] = None,
    trials: Annotated[int, typer.Option(min=1, help="Trials of the study in all, over every worker and machine.")] = 20,
    jobs: Annotated[int, typer.Option(min=1, help="Worker processes on this machine.")] = 1,
    seeds: Annotated[
        list[str] | None, typer.Option(metavar="SEEDS", help="Seeds each trial trains, as sweep's. (default: 1)")
    ] = None,
    aggregate: Annotated[Aggregate, typer.Option(help="A trial's value over its seeds.")] = Aggregate.mean,
    pruner: Annotated[Pruner, typer.Option(help="Stops hopeless trials early, from their epochs.")] = Pruner.median,
    budget: Annotated[
        int, typer.Option(min=1, help="A trial whose network has more parameters is not trained.")
    ] = PARAM_BUDGET,
    sampler_seed: Annotated[
        int | None, typer.Option(help="Seed Optuna's sampler, for a study that picks the same values again.")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(metavar="URL", help="A database shared by many machines: postgresql+psycopg://user@host/db."),
    ] = None,
    study: Annotated[
        str | None, typer.Option(help="The study's name in --storage (default: the --out folder's).")
    ] = None,
    recipe: Annotated[Recipe, typer.Option(help="Base settings of every trial, as for train.")] = Recipe.default,
    arg: NetworkArgs = None,
    device: Device = "auto",
    data_dir: DataDir = None,
    out: Annotated[
        Path | None, typer.Option(help="Study folder: trial folders, tune.json (default: runs/tune-<date>_<time>).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Delete the study in --out or --study and start afresh.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    **settings,
) -> None:
    """Search settings and network arguments with Optuna; each trial judged on --val images held out of training
    (default 10,000), never on the test set. The same command again continues the study."""
    from mnist20k import process

    try:
        from mnist20k import tune as tuning
    except ModuleNotFoundError as e:
        if e.name != "optuna":
            raise
        raise Mnist20kError("tune needs Optuna: pip install 'mnist20k[tune]'") from None
    from mnist20k.render import say
    from mnist20k.render_tune import TuneView
    from mnist20k.rundir import new_run_path
    from mnist20k.sweep import Interrupted

    process.quiet_optuna()
    out = out or new_run_path("runs", prefix="tune-")
    overrides = {**plain(settings), "args": parse_network_args(arg)}
    job = tuning.prepare(recipe.value, overrides, search or [], trials, jobs, out, storage, study, seeds or ["1"],
                         aggregate.value, pruner.value, budget, device, data_dir, overwrite, sampler_seed)  # fmt: skip
    view = TuneView(trials)
    say(f"study {job.spec.study!r}: {trials} trials, {jobs} worker{'s' * (jobs > 1)} -> {out}")
    try:
        with process.sigterm_as_interrupt():
            record = tuning.run(job, on_start=view.start, on_trial=view.trial)
    except Interrupted as e:
        view.stop()
        typer.echo(f"interrupted: the study is kept in {out}; to continue, run the same command", err=True)
        raise typer.Exit(e.code) from None
    finally:
        view.stop()
    if json_output:
        keys = ("study", "search", "trials_total", "finished", "value", "best", "importances", "confirm")
        typer.echo(json.dumps({k: record[k] for k in keys}))
    else:
        view.finish(record)
    if record["confirm"] is None:
        raise Mnist20kError(no_trial_completed(record, out))


def no_trial_completed(record: dict, out: Path) -> str:
    """Why a study has nothing to confirm: how its trials ended, and the first failure's own words."""
    from collections import Counter

    ended = Counter(t["outcome"] for t in record["trials"])
    how = ", ".join(f"{n} {outcome}" for outcome, n in ended.items())
    failed = next((t for t in record["trials"] if t["message"]), None)
    said = f"; trial {failed['number']}: {failed['message']}" if failed else ""
    return f"no trial of the study completed ({how}){said}; see {out / 'tune.json'}"
