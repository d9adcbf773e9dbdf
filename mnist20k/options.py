"""The command line's shared options: one per TrainConfig field, made from the field itself, and the
device option. A setting is written once, in config.py: its name, type, default and help.

No torch here: `mnist20k --help` builds every option.
"""

from __future__ import annotations

import inspect
from dataclasses import fields
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from mnist20k.config import (
    CHOICES,
    DEVICES,
    EXPORT_FORMATS,
    KINDS,
    RECIPES,
    RENAMED,
    SETTINGS,
    TrainConfig,
    flag,
    parse_device,
)
from mnist20k.errors import UsageError


def choices(name: str, values) -> type[Enum]:
    """A str Enum: typer lists its values in --help as [a|b|c] and refuses any other."""
    return Enum(name, {v: v for v in values}, type=str)


Recipe = choices("Recipe", [*RECIPES, *RENAMED["recipe"]])  # old names are still taken, with a note
Format = choices("Format", EXPORT_FORMATS)


def setting_options() -> list[inspect.Parameter]:
    """One keyword parameter per TrainConfig field, None unless given, its help from the field."""
    default = RECIPES["default"]
    params = []
    for f in fields(TrainConfig):
        if f.name not in SETTINGS:
            continue  # the network's arguments: --arg, given where a command takes them
        kind = choices(f.name.title(), CHOICES[f.name]) if f.name in CHOICES else KINDS[f.type]
        spelled = flag(f.name)
        decls = [f"{spelled}/--no-{spelled[2:]}"] if kind is bool else [spelled]
        value = getattr(default, f.name)
        shown = ("on" if value else "off") if kind is bool else value
        option = typer.Option(*decls, help=f"{f.metadata['help']} (default: {shown})", show_default=False)
        annotation = Annotated[kind | None, option]
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation))
    return params


def with_settings(command):
    """Give a typer command every training setting as an option, received in its **settings."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    command.__signature__ = signature.replace(parameters=[*own, *setting_options()])
    return command


def plain(settings: dict) -> dict:
    """Option values as TrainConfig holds them: choices as their strings."""
    return {k: v.value if isinstance(v, Enum) else v for k, v in settings.items()}


def _check_device(value: str) -> str:
    try:
        parse_device(value)
    except UsageError as e:
        raise typer.BadParameter(str(e)) from None
    return value


Device = Annotated[
    str,
    typer.Option(
        metavar="[" + "|".join(DEVICES) + "|cuda:N]",
        callback=_check_device,
        help="auto picks CUDA, then Apple's MPS, then the CPU.",
    ),
]


ModelRef = Annotated[
    str | None,
    typer.Option(
        "--model",
        metavar="FILE.py:NAME",
        help="Your own network's code, when the checkpoint holds one: mnist20k imports code only when you name it.",
    ),
]


NetworkArgs = Annotated[
    list[str] | None,
    typer.Option(
        "--arg",
        metavar="NAME=VALUE",
        help="A keyword argument of the network's constructor, a Python literal (widths=8,8,12,12); repeatable.",
    ),
]


Checkpoint = Annotated[Path, typer.Argument(help="A checkpoint file or a run folder.")]

DataDir = Annotated[
    Path | None,
    typer.Option(help="Folder holding MNIST/raw/ (default: $MNIST20K_DATA_DIR, else ~/.cache/mnist20k)."),
]
