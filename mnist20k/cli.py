"""The mnist20k command line: thin typer commands that parse options, call the library and render.

torch is imported inside the commands, so `mnist20k --help` answers at once.
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

try:  # typer vendors click from 0.24 on; before, its errors were click's own
    from typer.exceptions import TyperException as _CliError
except ImportError:  # pragma: no cover
    from click import ClickException as _CliError

from mnist20k import __version__
from mnist20k.config import PARAM_BUDGET
from mnist20k.errors import Mnist20kError, UsageError
from mnist20k.options import Checkpoint, DataDir, Device, Format, ModelRef, Recipe, plain, with_settings


class _Commands(TyperGroup):
    """Every failure the user is told of, told here, once, whichever command and however it is called (the
    console script, python -m, a test's CliRunner): a Mnist20kError or a usage error that typer finds as one
    `error:` line on stderr and its exit code; mnist20k's warnings as `warning:` lines."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        try:
            with _warnings_as_lines():
                code = super().main(*args, standalone_mode=False, **kwargs)
        except Mnist20kError as e:
            typer.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except _CliError as e:
            if type(e).__name__ != "NoArgsIsHelpError":  # the help text was already printed
                typer.echo(f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_Commands,
    help="Train, inspect and score a CNN of under 20,000 parameters on MNIST.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mnist20k {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    from mnist20k import process

    process.configure()


@app.command()
def summary(
    model: Annotated[
        str, typer.Option(help="seed, tiny, micro, or your own network: file.py:Name or package.module:Name.")
    ] = "seed",
    budget: Annotated[int, typer.Option(min=1, help="Parameter budget; over it, the exit code is 1.")] = PARAM_BUDGET,
) -> None:
    """Print the network's layer table (torchinfo), receptive field, and checklist against the budget."""
    from mnist20k.render import print_summary

    if not print_summary(model, budget):
        raise typer.Exit(1)


@app.command()
@with_settings
def train(
    recipe: Annotated[
        Recipe | None,
        typer.Option(
            help="Base settings: default; fast (9 epochs); seed (the seed document's). Options override. "
            "(default: default)",
            show_default=False,
        ),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="Train what this config.json says (a run folder's, or your own); options beside it override it.",
        ),
    ] = None,
    device: Device = "auto",
    data_dir: DataDir = None,
    out: Annotated[
        Path | None, typer.Option(help="Run folder (default: runs/<date>_<time>, or the resumed run's)")
    ] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this checkpoint or run folder.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a run already in --out.")] = False,
    **settings,
) -> None:
    """Train the network; after each epoch, score it on the test set and save a checkpoint."""
    from mnist20k.config import config_for_run, flag
    from mnist20k.render import TrainView
    from mnist20k.rundir import new_run_path

    overrides = plain(settings)
    if resume is not None:
        from mnist20k.checkpoint import find_checkpoint

        model = overrides.pop("model")  # names the code of a network of your own, not a new setting
        given = [k for k, v in overrides.items() if v is not None]
        given += ["recipe"] * (recipe is not None) + ["config"] * (config_file is not None)
        if given:
            flags = ", ".join(flag(k) for k in given)
            raise UsageError(f"--resume continues a run with its own settings; drop {flags}")
        config, model, out = None, model, out or find_checkpoint(resume).parent
    else:
        config, model = config_for_run(recipe and recipe.value, config_file, overrides), None
        out = out or new_run_path()
    view = TrainView(config, out, resumed=resume is not None)
    _run_training(config, view, data_dir, out, device, resume, overwrite, model)


@contextlib.contextmanager
def _warnings_as_lines():
    """mnist20k's own warnings as one `warning:` line each on stderr; others as Python prints them."""
    from mnist20k.errors import SourceChanged

    with warnings.catch_warnings():
        warnings.simplefilter("always", SourceChanged)
        python_shows = warnings.showwarning

        def show(message, category, *args, **kwargs):
            if issubclass(category, SourceChanged):
                typer.echo(f"warning: {message}", err=True)
            else:
                python_shows(message, category, *args, **kwargs)

        warnings.showwarning = show
        yield


def _run_training(config, view, data_dir, out, device, resume, overwrite, model) -> None:
    from mnist20k import process
    from mnist20k.train import train as run_training

    try:
        with process.sigterm_as_interrupt():
            metrics = run_training(
                config, data_dir=data_dir, out_dir=out, device=device, resume=resume, overwrite=overwrite, model=model,
                on_start=view.start, on_step=view.step, on_epoch=view.epoch,
            )  # fmt: skip
    except process.INTERRUPTS as e:
        view.stop()
        typer.echo(view.interrupted_message(), err=True)
        raise typer.Exit(process.exit_code(e)) from None
    finally:
        view.stop()
    from mnist20k.plots import save_curves

    view.finish(metrics, curves=save_curves(metrics, Path(out) / "curves.png"))


@app.command("sweep")
@with_settings
def sweep_command(
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
    job = sweeps.prepare(recipe.value, plain(settings), grid or [], seeds or ["1-5"], out, device, data_dir, jobs,
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


@app.command("eval")
def evaluate(
    checkpoint: Checkpoint,
    data_dir: DataDir = None,
    device: Device = "auto",
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Test images per forward pass (default: 1000 on a GPU, 128 on a CPU).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    errors: Annotated[
        Path | None, typer.Option(help="Also write the misread test digits to this PNG, most confident first.")
    ] = None,
    errors_limit: Annotated[int, typer.Option(min=1, help="At most this many tiles in --errors.")] = 100,
    model: ModelRef = None,
) -> None:
    """Score a saved checkpoint on the 10,000 test images: loss, accuracy, per class, confusion."""
    from mnist20k.evaluate import find_mistakes, load_for_eval, predict_log_probs, save_mistake_grid, score_log_probs
    from mnist20k.render import print_mistakes, print_score

    if errors is not None and errors.suffix.lower() != ".png":
        raise UsageError(f"--errors writes a PNG: give a file name ending in .png, not {errors.name!r}")
    network, images, labels = load_for_eval(checkpoint, data_dir, device, model)
    log_probs = predict_log_probs(network, images, batch_size)  # one pass serves the score and --errors
    score = score_log_probs(log_probs, labels)
    mistakes = []
    if errors is not None:
        mistakes = find_mistakes(log_probs, labels, errors_limit)
        if mistakes:
            save_mistake_grid(images, mistakes, errors)
    if json_output:
        result = score.to_dict()
        if errors is not None:
            result["errors"] = [vars(m) for m in mistakes]
        typer.echo(json.dumps(result))
        return
    print_score(score, checkpoint)
    if errors is not None:
        print_mistakes(mistakes, errors)


@app.command()
def predict(
    checkpoint: Checkpoint,
    images: Annotated[list[Path], typer.Argument(help="PNG or JPEG files, one handwritten digit each.")],
    device: Device = "auto",
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per file, one per line.")] = False,
    model: ModelRef = None,
) -> None:
    """Read your own handwritten digits: prepared like MNIST's, then classified (top 3 shown)."""
    import torch

    from mnist20k.checkpoint import load_model
    from mnist20k.device import resolve_device
    from mnist20k.predict import predict as classify
    from mnist20k.predict import read_digit
    from mnist20k.render import print_predictions

    dev = resolve_device(device)
    network = load_model(checkpoint, dev, model)
    digits, paths, failed = [], [], 0
    for path in images:
        try:
            digits.append(read_digit(path))
            paths.append(str(path))
        except Mnist20kError as e:  # one line for this file; the others are still read
            typer.echo(f"error: {e}", err=True)
            failed += 1
    predictions = classify(network, torch.stack(digits).to(dev), paths) if digits else []
    if json_output:
        for p in predictions:
            typer.echo(json.dumps(p.to_dict()))
    elif predictions:
        print_predictions(predictions)
    if failed:
        raise typer.Exit(1)


@app.command()
def draw(
    checkpoint: Checkpoint,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port of the page on this machine.")] = 8020,
    host: Annotated[
        str, typer.Option(help="Address to serve on; other than 127.0.0.1, other machines can reach the page.")
    ] = "127.0.0.1",
    browser: Annotated[bool, typer.Option("--browser/--no-browser", help="Open the page in your browser.")] = True,
    device: Device = "auto",
    model: ModelRef = None,
) -> None:
    """Draw digits in your browser and watch the network read them; Ctrl-C stops it."""
    from mnist20k.checkpoint import load_model
    from mnist20k.device import resolve_device
    from mnist20k.draw import LOCAL, DrawServer
    from mnist20k.render import say

    dev = resolve_device(device)
    network = load_model(checkpoint, dev, model)
    server = DrawServer(network, dev, host, port)
    if host not in LOCAL:
        typer.echo(f"warning: serving on {host}: anyone who can reach this machine can use the page", err=True)
    with server:
        try:
            say(f"drawing page: {server.url}  (Ctrl-C stops it)")
            if browser:
                import webbrowser

                webbrowser.open(server.url)
            server.serve_forever()
        except KeyboardInterrupt:  # the way it ends, whenever it comes
            say("stopped")


@app.command("export")
def export_network(
    checkpoint: Checkpoint,
    format: Annotated[Format, typer.Option("--format", help="File format for other runtimes.")] = Format.onnx,
    out: Annotated[
        Path | None, typer.Option(help="File to write (default: model.onnx or model.pt beside the checkpoint).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the file if it exists.")] = False,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Check the export against PyTorch on the 10,000 test images.")
    ] = True,
    data_dir: DataDir = None,
    model: ModelRef = None,
) -> None:
    """Export the inference network (BatchNorm folded, no dropout) to ONNX or TorchScript, checked against PyTorch."""
    from mnist20k.export import TOLERANCE, export
    from mnist20k.render import say

    path, checked = export(checkpoint, format.value, out, overwrite, check=verify, data_dir=data_dir, model=model)
    say(f"wrote {path} ({path.stat().st_size:,} bytes)")
    if checked is None:
        say("not checked against PyTorch (--no-verify)")
        return
    say(
        "checked on the 10,000 test images: the same digit for every image, "
        f"outputs within {checked.max_difference:.1g} "
        f"(allowed {TOLERANCE:g}); accuracy {checked.pytorch_accuracy:.2f}% in PyTorch, "
        f"{checked.exported_accuracy:.2f}% in the {format.value} file"
    )


def main() -> None:
    """Console entry point."""
    app(prog_name="mnist20k")
