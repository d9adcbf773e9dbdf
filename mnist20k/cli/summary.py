"""`mnist20k summary`: the network's parameter table."""

from __future__ import annotations

from typing import Annotated

import typer

from mnist20k.cli.options import NetworkArgs, option
from mnist20k.config import PARAM_BUDGET, current_name
from mnist20k.settings import parse_network_args


def summary(
    model: Annotated[
        str, option(help="base, tiny, micro, or your own network: file.py:Name or package.module:Name.", default="base")
    ] = "base",
    arg: NetworkArgs = None,
    budget: Annotated[
        int, option(min=1, help="Parameter budget; over it, the exit code is 1.", default=f"{PARAM_BUDGET:,}")
    ] = PARAM_BUDGET,
) -> None:
    """Print the network's layer table (torchinfo), receptive field, and checklist against the budget."""
    from mnist20k.cli.render import print_summary

    if not print_summary(current_name("model", model), parse_network_args(arg) or {}, budget):
        raise typer.Exit(1)
