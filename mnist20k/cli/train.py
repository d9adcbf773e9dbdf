"""`mnist20k train`: one run, with progress bars."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mnist20k.cli.options import (
    OUTPUT,
    RECIPE,
    DataDir,
    Device,
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
from mnist20k.errors import UsageError
from mnist20k.settings import parse_network_args


@with_settings
def train(
    recipe: Recipe = None,
    config_file: Annotated[
        Path | None,
        option(
            "--config",
            metavar="FILE",
            help="Train what this config.json says (a run folder's, or your own); options beside it override it.",
            panel=RECIPE,
        ),
    ] = None,
    arg: NetworkArgs = None,
    device: Device = "auto",
    data_dir: DataDir = None,
    out: out_option("Run folder.", "runs/<date>_<time>, or the resumed run's") = None,
    resume: Annotated[
        Path | None,
        option(metavar="RUN", help="Continue the run in this checkpoint or run folder.", panel=OUTPUT),
    ] = None,
    overwrite: overwrite_option("Replace a run already in --out.") = False,
    log: Logs = None,
    **settings,
) -> None:
    """Train the network; after each epoch, score it on the test set (or --val held-out images) and save it."""
    from mnist20k.cli.render import TrainView
    from mnist20k.logs import EpochLogs
    from mnist20k.rundir import new_run_path
    from mnist20k.settings import config_for_run, flag

    overrides = {**plain(settings), "args": parse_network_args(arg)}
    if resume is not None:
        from mnist20k.checkpoint import find_checkpoint

        model = overrides.pop("model")  # names the code of a network of your own, not a new setting
        given = [k for k, v in overrides.items() if v is not None]
        given += ["recipe"] * (recipe is not None) + ["config"] * (config_file is not None)
        if given:
            flags = ", ".join(flag(k) for k in given)
            raise UsageError(f"--resume continues a run with its own settings; drop {flags}")
        if overwrite and out is None:
            raise UsageError(
                "--resume continues the run in its own folder, which --overwrite would not replace: drop it"
            )
        config, model, out = None, model, out or find_checkpoint(resume).parent
    else:
        config, model = config_for_run(recipe, config_file, overrides), None
        out = out or new_run_path()
    logs = EpochLogs(log_kinds(log), out)  # a missing library is told before anything trains
    view = TrainView(config, out, resumed=resume is not None)
    _run_training(config, view, logs, data_dir, out, device, resume, overwrite, model)


def _run_training(config, view, logs, data_dir, out, device, resume, overwrite, model) -> None:
    from mnist20k import process
    from mnist20k.train import train as run_training

    try:
        with process.sigterm_as_interrupt():
            metrics = run_training(
                config,
                data_dir=data_dir,
                out_dir=out,
                device=device,
                resume=resume,
                overwrite=overwrite,
                model=model,
                on_start=view.start,
                on_step=view.step,
                on_epoch=lambda record: (view.epoch(record), logs(record)),
            )
    except process.INTERRUPTS as e:
        view.stop()
        typer.echo(view.interrupted_message(), err=True)
        raise typer.Exit(process.exit_code(e)) from None
    finally:
        view.stop()
        logs.close()
    from mnist20k.cli.plots import save_curves

    view.finish(metrics, curves=save_curves(metrics, Path(out) / "curves.png"))
