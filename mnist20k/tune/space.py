"""The search space of `mnist20k tune`, from `--search KEY=SPEC`: which settings and network arguments a study
varies, and over what. Pure: no Optuna here but the one function that asks a trial for values."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mnist20k.errors import UsageError
from mnist20k.settings import SETTINGS, flag, literal, parse_setting, setting_name

ARG = "arg."  # --search arg.width=8:16 searches the network's argument `width`
SPECS = "a,b,c (a choice), lo:hi (a range) or lo:hi:log (a log range)"


@dataclass(frozen=True)
class Dimension:
    """One searched key: a setting (`lr`) or a network argument (`arg.width`), and its values."""

    key: str  # the setting's name, or arg.NAME
    choices: tuple = ()  # a choice among these, or else a range:
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False

    @property
    def is_arg(self) -> bool:
        return self.key.startswith(ARG)

    @property
    def name(self) -> str:
        """The setting's or the argument's own name."""
        return self.key[len(ARG) :] if self.is_arg else self.key

    def spec(self) -> str:
        if self.choices:
            return ",".join(str(c) for c in self.choices)
        return f"{self.low}:{self.high}" + (":log" if self.log else "")

    def suggest(self, trial):
        """This dimension's value for an Optuna trial."""
        if self.choices:
            return trial.suggest_categorical(self.key, list(self.choices))
        if isinstance(self.low, int):
            return trial.suggest_int(self.key, self.low, self.high, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)


def parse_search(specs: list[str]) -> list[Dimension]:
    """Every `--search KEY=SPEC`, checked against the settings' types; UsageError for the first bad one."""
    if not specs:
        raise UsageError(f"tune needs at least one --search KEY=SPEC, SPEC being {SPECS}")
    space: dict[str, Dimension] = {}
    for text in specs:
        dim = parse_dimension(text)
        if dim.key in space:
            raise UsageError(f"--search {dim.key} is given twice")
        space[dim.key] = dim
    return list(space.values())


def parse_dimension(text: str) -> Dimension:
    key, eq, spec = text.partition("=")
    key, spec = key.strip(), spec.strip()
    if not eq or not key or not spec:
        raise UsageError(f"--search takes KEY=SPEC, SPEC being {SPECS}; not {text!r}")
    if key.startswith(ARG):
        name = key[len(ARG) :]
        if not name.isidentifier():
            raise UsageError(f"--search {key}: {name!r} is not an argument name")
        return _arg_dimension(key, spec)
    name = setting_name(key)
    if name in ("model", "seed", "val", "epochs", "max_batches"):  # what a study holds fixed or runs over
        raise UsageError(f"--search {key}: {name} is fixed for a study; give it as {flag(name)}")
    return _setting_dimension(name, spec)


def _setting_dimension(name: str, spec: str) -> Dimension:
    kind = SETTINGS[name]
    parts = spec.split(":")
    if len(parts) == 1:
        values = tuple(dict.fromkeys(parse_setting(name, v.strip()) for v in spec.split(",")))
        return Dimension(name, choices=values)
    if kind not in ("int", "float"):
        raise UsageError(f"--search {name}: a range needs a number setting; {name} takes {SETTINGS[name]}, give a,b,c")
    return _range(name, parts, lambda text: parse_setting(name, text), integer=kind == "int")


def _arg_dimension(key: str, spec: str) -> Dimension:
    """A network argument's values are Python literals, as with --arg; a range's type is its ends'."""
    parts = spec.split(":")
    if len(parts) == 1:
        return Dimension(key, choices=tuple(_choice(v) for v in _literals(spec)))
    ends = [literal(p.strip()) for p in parts[:2]]
    integer = all(isinstance(e, int) and not isinstance(e, bool) for e in ends)

    def number(text: str):
        value = literal(text)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(f"--search {key}: a range's ends are numbers, not {text!r}")
        return value

    return _range(key, parts, number, integer=integer)


def _literals(spec: str) -> list:
    """`8,12,16` -> three choices; `(8,8,12,12),(8,8,16,16)` -> two: the whole read as one Python tuple, so
    commas inside brackets stay. Bare words (`relu,gelu`) are no literal: each is its text."""
    values = literal(f"({spec},)")
    if isinstance(values, list | tuple):
        return list(values)
    return [literal(v) for v in spec.split(",")]


def _choice(value):
    """Optuna's choices are None, bool, int, float or str: a list is kept as its text, turned back by literal()."""
    return value if value is None or isinstance(value, bool | int | float | str) else repr(value)


def _range(key: str, parts: list[str], read, integer: bool) -> Dimension:
    if len(parts) > 3 or (len(parts) == 3 and parts[2].strip() != "log"):
        raise UsageError(f"--search {key}: {':'.join(parts)!r} is not lo:hi or lo:hi:log")
    low, high = (read(p.strip()) for p in parts[:2])
    log = len(parts) == 3
    if integer:
        low, high = int(low), int(high)
    else:
        low, high = float(low), float(high)
        if not (math.isfinite(low) and math.isfinite(high)):
            raise UsageError(f"--search {key}: the range {low}:{high} is not finite")
    if low > high:
        raise UsageError(f"--search {key}: the range {low}:{high} runs backwards (lo > hi)")
    if log and low <= 0:
        raise UsageError(f"--search {key}: a log range must stay above 0, not start at {low}")
    return Dimension(key, low=low, high=high, log=log)


def split_params(params: dict) -> tuple[dict, dict]:
    """A trial's values as (settings, network arguments); a choice kept as text is a literal again."""
    settings = {k: v for k, v in params.items() if not k.startswith(ARG)}
    args = {k[len(ARG) :]: literal(v) if isinstance(v, str) else v for k, v in params.items() if k.startswith(ARG)}
    return settings, args
