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

from mnist20k.config import CHOICES, MODEL_DEFAULTS, OLD_RECIPES, RECIPES, TrainConfig
from mnist20k.device import DEVICES, parse_device
from mnist20k.errors import UsageError
from mnist20k.export import EXPORT_FORMATS
from mnist20k.logs import LOGS
from mnist20k.settings import KINDS, SETTINGS, flag


def choices(name: str, values) -> type[Enum]:
    """A str Enum: typer lists its values in --help as [a|b|c] and refuses any other."""
    return Enum(name, {v: v for v in values}, type=str)


# The panels of --help: an option's place, by what it is about
NETWORK, RECIPE, AUGMENTATION, DEVICE, OUTPUT = "Network", "Recipe", "Augmentation", "Data and device", "Output"
AVERAGE_AND_TEACHER = "Weight average and teacher"
SETTING_PANELS = {
    "model": NETWORK,
    "rotate": AUGMENTATION,
    "translate": AUGMENTATION,
    "val": DEVICE,
    "max_batches": DEVICE,
    "amp": DEVICE,
    "compile": DEVICE,
    "cuda_graph": DEVICE,
    "ema": AVERAGE_AND_TEACHER,
    "teacher": AVERAGE_AND_TEACHER,
    "distill_weight": AVERAGE_AND_TEACHER,
    "temperature": AVERAGE_AND_TEACHER,
}  # every other setting: RECIPE


def option(*decls: str, help: str, default: object = None, panel: str | None = None, **kw):
    """typer.Option as every option here reads: its default told in its help as "(default: X)" (typer's own
    "[default: X]" is off), and its panel of --help. A flag shows no metavar (cli/__init__.py's _NoBoolMetavar)."""
    text = help if default is None else f"{help} (default: {default})"
    if "min" in kw or "max" in kw:  # click's "<int range> [x>=1]" says less than the help does
        kw.setdefault("metavar", "N")
    return typer.Option(*decls, help=text, show_default=False, rich_help_panel=panel, **kw)


Format = choices("Format", EXPORT_FORMATS)
RECIPE_HELP = "Base settings: default; fast (5 epochs); original (the seed document's). Options override them."


def _check_recipe(value: str | None) -> str | None:
    """A recipe's name, its old name (with a note when used) included, though only the current ones are listed."""
    if value is not None and value not in RECIPES and value not in OLD_RECIPES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(repr(r) for r in RECIPES)}")
    return value


def _recipes(incomplete: str) -> list[str]:
    """What the shell completes --recipe with: the current names only."""
    return [name for name in RECIPES if name.startswith(incomplete)]


def _networks(incomplete: str) -> list[str]:
    """What the shell completes --model with: the built-in networks (a reference to your code is a path)."""
    from mnist20k.nets.builtin import PRESETS

    return [name for name in PRESETS if name.startswith(incomplete)]


Recipe = Annotated[
    str | None,
    option(
        "--recipe",
        metavar="NAME",
        callback=_check_recipe,
        autocompletion=_recipes,
        help=RECIPE_HELP,
        default="default",
        panel=RECIPE,
    ),
]


def _shown(value: object) -> str:
    """A default as --help says it: on/off, a float in four significant digits (config.json keeps them all)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value == "":
        return "none"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def default_text(name: str) -> str:
    """A setting's default, and where a network brings its own: `20; tiny 15`, `0.05; tiny 0.08187, micro 0.1`."""
    own = [f"{model} {_shown(values[name])}" for model, values in MODEL_DEFAULTS.items() if name in values]
    return _shown(getattr(RECIPES["default"], name)) + (f"; {', '.join(own)}" if own else "")


def setting_options(shown: dict[str, str] | None = None) -> list[inspect.Parameter]:
    """One keyword parameter per TrainConfig field, None unless given, its help from the field; `shown` gives a
    command's own default text of a setting (tune's --val)."""
    params = []
    for f in fields(TrainConfig):
        if f.name not in SETTINGS:
            continue  # the network's arguments: --arg, given where a command takes them
        kind = choices(f.name.title(), CHOICES[f.name]) if f.name in CHOICES else KINDS[f.type]
        spelled = flag(f.name)
        decls = [f"{spelled}/--no-{spelled[2:]}"] if kind is bool else [spelled]
        text = (shown or {}).get(f.name) or default_text(f.name)
        panel = SETTING_PANELS.get(f.name, RECIPE)
        named = {"metavar": "NAME", "autocompletion": _networks} if f.name == "model" else {}
        named = {"metavar": "RUN"} if f.name == "teacher" else named
        annotation = Annotated[kind | None, option(*decls, help=f.metadata["help"], default=text, panel=panel, **named)]
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation))
    return params


def with_settings(command=None, *, shown: dict[str, str] | None = None):
    """Give a typer command every training setting as an option, received in its **settings (`shown`: its own
    default text of a setting)."""

    def give(command):
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        command.__signature__ = signature.replace(parameters=[*own, *setting_options(shown)])
        return command

    return give(command) if command is not None else give


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
    option(
        metavar="[" + "|".join(DEVICES) + "|cuda:N]",
        envvar="MNIST20K_DEVICE",
        callback=_check_device,
        help="auto picks CUDA, then Apple's MPS, then the CPU.",
        default="auto",
        panel=DEVICE,
    ),
]


ModelRef = Annotated[
    str | None,
    option(
        "--model",
        metavar="FILE.py:NAME",
        help="Your own network's code, when the checkpoint holds one: mnist20k imports code only when you name it.",
        panel=NETWORK,
    ),
]


NetworkArgs = Annotated[
    list[str] | None,
    option(
        "--arg",
        metavar="NAME=VALUE",
        help="A keyword argument of the network's constructor, a Python literal (widths=8,8,12,12); repeatable.",
        panel=NETWORK,
    ),
]


Checkpoint = Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="A checkpoint file or a run folder.")]

DataDir = Annotated[
    Path | None,
    option(
        metavar="DIR",
        envvar="MNIST20K_DATA_DIR",  # data.py reads it too, for the library's data_dir=None
        help="Folder holding MNIST/raw/.",
        default="~/.cache/mnist20k",
        panel=DEVICE,
    ),
]

LogKind = choices("LogKind", LOGS)
Logs = Annotated[
    list[LogKind] | None,
    option(
        "--log",
        metavar="[" + "|".join(LOGS) + "]",
        help="Also log each epoch to TensorBoard (event files in each run's folder) or to metrics.csv; repeatable.",
        panel=OUTPUT,
    ),
]


def log_kinds(log: list | None) -> list[str]:
    return [kind.value for kind in log or []]


Json = Annotated[bool, option("--json", help="Print one JSON object instead of tables.", panel=OUTPUT)]


def out_option(help: str, default: str, metavar: str = "DIR", panel: str | None = OUTPUT):
    """--out of a command: where its files go, and where they go when it is not given."""
    return Annotated[Path | None, option(metavar=metavar, help=help, default=default, panel=panel)]


def overwrite_option(help: str, panel: str | None = OUTPUT):
    """--overwrite of a command: what it replaces, which without the flag is refused and left alone."""
    return Annotated[bool, option("--overwrite", help=help, panel=panel)]
