"""The commands that read a checkpoint: eval, predict, draw and export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mnist20k.cli.options import (
    Checkpoint,
    DataDir,
    Device,
    Format,
    Json,
    ModelRef,
    NetworkArgs,
    option,
    out_option,
    overwrite_option,
)
from mnist20k.errors import Mnist20kError, UsageError
from mnist20k.settings import parse_network_args


def evaluate(
    checkpoint: Checkpoint,
    data_dir: DataDir = None,
    device: Device = "auto",
    batch_size: Annotated[
        int | None, option(min=1, help="Test images per forward pass.", default="1000 on a GPU, 128 on a CPU")
    ] = None,
    json_output: Json = False,
    errors: Annotated[
        Path | None,
        option(metavar="FILE.png", help="Also write the misread test digits to this PNG, most confident first."),
    ] = None,
    errors_limit: Annotated[int | None, option(min=1, help="At most this many tiles in --errors.", default=100)] = None,
    model: ModelRef = None,
    arg: NetworkArgs = None,
) -> None:
    """Score a saved checkpoint on the 10,000 test images: loss, accuracy, per class, confusion."""
    from mnist20k.cli.plots import save_mistake_grid
    from mnist20k.cli.render import print_mistakes, print_score
    from mnist20k.data import load_split
    from mnist20k.evaluate import find_mistakes, predict_log_probs, score_log_probs

    if errors is None and errors_limit is not None:
        raise UsageError("--errors-limit sets how many tiles --errors draws: give --errors FILE.png too")
    if errors is not None and errors.suffix.lower() != ".png":
        raise UsageError(f"--errors writes a PNG: give a file name ending in .png, not {errors.name!r}")
    network, dev = rebuilt(checkpoint, device, model, arg)
    images, labels = load_split(data_dir, train=False, device=dev)
    if errors is not None:
        from mnist20k.files import check_writable

        check_writable(errors)  # before the test set is scored
    log_probs = predict_log_probs(network, images, batch_size)  # one pass serves the score and --errors
    score = score_log_probs(log_probs, labels)
    mistakes = []
    if errors is not None:
        mistakes = find_mistakes(log_probs, labels, errors_limit or 100)
        if mistakes:
            save_mistake_grid(images, mistakes, errors)
    if json_output:
        result = score.to_dict()
        if errors is not None:
            result["errors"] = [vars(m) for m in mistakes]
        typer.echo(json.dumps(result))
        return
    from mnist20k.checkpoint import find_checkpoint
    from mnist20k.distill import recorded

    print_score(score, checkpoint, recorded(find_checkpoint(checkpoint).parent))
    if errors is not None:
        print_mistakes(mistakes, errors)


def predict(
    checkpoint: Checkpoint,
    images: Annotated[
        list[Path], typer.Argument(metavar="IMAGE", help="PNG or JPEG files, one handwritten digit each.")
    ],
    device: Device = "auto",
    json_output: Annotated[bool, option("--json", help="One JSON object per file, one per line.")] = False,
    model: ModelRef = None,
    arg: NetworkArgs = None,
) -> None:
    """Read your own handwritten digits: prepared like MNIST's, then classified (top 3 shown)."""
    import torch

    from mnist20k.cli.render import print_predictions
    from mnist20k.predict import predict as classify
    from mnist20k.predict import read_digit

    network, dev = rebuilt(checkpoint, device, model, arg)
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


def draw(
    checkpoint: Checkpoint,
    port: Annotated[int, option(min=0, max=65535, help="Port of the page on this machine.", default=8020)] = 8020,
    host: Annotated[
        str,
        option(
            help="Address to serve on; other than 127.0.0.1, other machines can reach the page.", default="127.0.0.1"
        ),
    ] = "127.0.0.1",
    browser: Annotated[
        bool, option("--browser/--no-browser", help="Open the page in your browser.", default="on")
    ] = True,
    device: Device = "auto",
    model: ModelRef = None,
    arg: NetworkArgs = None,
) -> None:
    """Draw digits in your browser and watch the network read them; Ctrl-C stops it."""
    from mnist20k.cli.render import say
    from mnist20k.draw import LOCAL, DrawServer

    network, dev = rebuilt(checkpoint, device, model, arg)
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


def export_network(
    ctx: typer.Context,
    checkpoint: Checkpoint,
    format: Annotated[
        Format,
        option(
            "--format",
            help="File format for other runtimes: ONNX; pt2, a torch.export program; TorchScript, deprecated in "
            "PyTorch in favour of torch.export.",
            default="onnx",
        ),
    ] = Format.onnx,
    out: out_option("File to write.", "model.onnx, model.pt2 or model.pt beside the checkpoint", "FILE", None) = None,
    overwrite: overwrite_option("Replace the file if it exists.", None) = False,
    verify: Annotated[
        bool,
        option(
            "--verify/--no-verify",
            help="Check the export against PyTorch on the 10,000 test images.",
            default="on",
        ),
    ] = True,
    data_dir: DataDir = None,
    model: ModelRef = None,
    arg: NetworkArgs = None,
) -> None:
    """Export the inference network (BatchNorm folded, no dropout) to ONNX, pt2 or TorchScript, checked against
    PyTorch."""
    from mnist20k.cli.render import say
    from mnist20k.export import TOLERANCE, export

    given = ctx.get_parameter_source("data_dir").name == "COMMANDLINE"  # not $MNIST20K_DATA_DIR, set for all
    if not verify and given:
        raise UsageError("--data-dir holds the test images --verify checks the export on; with --no-verify drop it")

    path, checked = export(
        checkpoint,
        format.value,
        out,
        overwrite,
        check=verify,
        data_dir=data_dir,
        model=model,
        args=parse_network_args(arg),
    )
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


def rebuilt(checkpoint: Path, device: str, model: str | None, arg: list[str] | None):
    """(the checkpoint's network with its weights, the device it is on), for eval, predict and draw."""
    from mnist20k.checkpoint import load_checkpoint
    from mnist20k.device import resolve_device
    from mnist20k.nets import rebuild

    args = parse_network_args(arg)
    dev = resolve_device(device)
    return rebuild(load_checkpoint(checkpoint), model, args, where=str(checkpoint), device=dev).module, dev
