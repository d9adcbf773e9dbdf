"""`mnist20k tune`: a search over settings and network arguments, judged on held-out training images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mnist20k.cli.options import (
    DataDir,
    Device,
    Json,
    Logs,
    NetworkArgs,
    Recipe,
    choices,
    log_kinds,
    option,
    out_option,
    overwrite_option,
    plain,
    with_settings,
)
from mnist20k.config import PARAM_BUDGET
from mnist20k.errors import Mnist20kError
from mnist20k.settings import parse_network_args
from mnist20k.tune.limits import AGGREGATES, MAX_RETRIES, PRUNERS, STORAGE_ENV

Pruner = choices("Pruner", PRUNERS)
Aggregate = choices("Aggregate", AGGREGATES)


STUDY, STORAGE = "Study", "Storage"


@with_settings(shown={"val": "10,000 for tune"})
def tune(
    search: Annotated[
        list[str] | None,
        option(
            metavar="KEY=SPEC",
            help="A searched setting (lr, weight-decay, ...) or network argument (arg.NAME): a,b,c a choice, "
            "lo:hi a range, lo:hi:log a log range; repeat for more.",
            panel=STUDY,
        ),
    ] = None,
    trials: Annotated[
        int, option(min=1, help="Trials of the study in all, over every worker and machine.", default=20, panel=STUDY)
    ] = 20,
    jobs: Annotated[int, option(min=1, help="Worker processes on this machine.", default=1, panel=STUDY)] = 1,
    seeds: Annotated[
        list[str] | None, option(metavar="SEEDS", help="Seeds each trial trains, as sweep's.", default=1, panel=STUDY)
    ] = None,
    aggregate: Annotated[
        Aggregate, option(help="A trial's value over its seeds.", default="mean", panel=STUDY)
    ] = Aggregate.mean,
    objectives: Annotated[
        str,
        option(
            metavar="accuracy[,params]",
            help="What a trial is judged on: validation accuracy, or that and the network's parameters as two "
            "objectives (a Pareto front of small and accurate networks).",
            default="accuracy",
            panel=STUDY,
        ),
    ] = "accuracy",
    pruner: Annotated[
        Pruner | None,
        option(
            help="Stops hopeless trials early, from their epochs. Optuna's pruners judge one objective: with two, "
            "every trial trains to its end.",
            default="median (none with two objectives)",
            panel=STUDY,
        ),
    ] = None,
    budget: Annotated[
        int,
        option(
            min=1,
            help="A trial whose network has more parameters is not trained.",
            default=f"{PARAM_BUDGET:,}",
            panel=STUDY,
        ),
    ] = PARAM_BUDGET,
    sampler_seed: Annotated[
        int | None,
        option(help="Seed Optuna's sampler, for a study that picks the same values again.", panel=STUDY),
    ] = None,
    storage: Annotated[
        str | None,
        option(
            metavar="URL",
            envvar=STORAGE_ENV,
            help="A PostgreSQL database shared by many machines: postgresql+psycopg://user@host/db, its password "
            "in ~/.pgpass or $PGPASSFILE, out of sight of ps.",
            panel=STORAGE,
        ),
    ] = None,
    max_retries: Annotated[
        int,
        option(
            min=0,
            help="Tries again of a trial whose worker stopped (killed, interrupted, its machine gone), after which "
            "it counts as lost.",
            default=MAX_RETRIES,
            panel=STORAGE,
        ),
    ] = MAX_RETRIES,
    study: Annotated[
        str | None, option(help="The study's name in --storage.", default="the --out folder's", panel=STORAGE)
    ] = None,
    recipe: Recipe = None,
    arg: NetworkArgs = None,
    device: Device = "auto",
    data_dir: DataDir = None,
    out: out_option("Study folder: trial folders, tune.json.", "runs/tune-<date>_<time>") = None,
    overwrite: overwrite_option("Delete the study in --out or --study and start afresh.") = False,
    log: Logs = None,
    json_output: Json = False,
    **settings,
) -> None:
    """Search settings and network arguments with Optuna; each trial judged on --val images held out of training
    (default 10,000), never on the test set. The same command again continues the study."""
    from mnist20k import process

    try:
        from mnist20k.tune.prepare import prepare  # Optuna's first import
        from mnist20k.tune.run import run
    except ModuleNotFoundError as e:
        if e.name != "optuna":
            raise
        raise Mnist20kError("tune needs Optuna: pip install 'mnist20k[tune]'") from None
    from mnist20k.children import Interrupted
    from mnist20k.cli.render import on_stderr, plural, say
    from mnist20k.cli.render_tune import TuneView
    from mnist20k.rundir import new_run_path
    from mnist20k.tune.study import quiet_optuna

    quiet_optuna()
    out = out or new_run_path("runs", prefix="tune-")
    overrides = {**plain(settings), "args": parse_network_args(arg)}
    base = recipe or "default"
    job = prepare(
        base,
        overrides,
        search or [],
        trials=trials,
        jobs=jobs,
        out=out,
        storage=storage,
        study=study,
        seeds=seeds or ["1"],
        aggregate=aggregate.value,
        pruner=None if pruner is None else pruner.value,
        objectives=objectives,
        budget=budget,
        device=device,
        data_dir=data_dir,
        overwrite=overwrite,
        sampler_seed=sampler_seed,
        max_retry=max_retries,
        log=log_kinds(log),
    )
    with on_stderr(json_output):  # with --json, stdout holds the JSON alone
        view = TuneView(trials)
        say(f"study {job.spec.study!r}: {plural(trials, 'trial')}, {plural(jobs, 'worker')} -> {out}")
        try:
            with process.sigterm_as_interrupt():
                record = run(job, on_start=view.start, on_trial=view.trial)
        except Interrupted as e:
            view.stop()
            typer.echo(f"interrupted: the study is kept in {out}; to continue, run the same command", err=True)
            raise typer.Exit(e.code) from None
        finally:
            view.stop()
        if not json_output:
            view.finish(record)
    if json_output:
        keys = ("study", "search", "trials_total", "finished", "objectives", "value", "best", "pareto")
        keys += ("importances", "confirm")
        typer.echo(json.dumps({k: record[k] for k in keys}))
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
