"""A run's settings read from text or JSON: each TrainConfig field's kind, a setting's name as the user spells
it, its value from `--set lr=0.1` or a config.json, `--arg NAME=VALUE` literals, and a config.json or a
checkpoint's settings made into a TrainConfig, the one way from a dict to a config (config_from_dict)."""

from __future__ import annotations

import ast
import difflib
import json
import warnings
from dataclasses import fields
from pathlib import Path

from mnist20k.config import TrainConfig, make_config
from mnist20k.errors import CheckpointError, Renamed, UsageError
from mnist20k.files import reason
from mnist20k.nets import is_reference

KINDS = {"int": int, "float": float, "str": str, "bool": bool}  # the fields' annotations are strings
KIND_WORDS = {"int": "a whole number", "float": "a number", "str": "text", "bool": "on or off"}
TRUE, FALSE = ("1", "true", "t", "yes", "y", "on"), ("0", "false", "f", "no", "n", "off")  # click's words
SETTINGS = {f.name: f.type for f in fields(TrainConfig) if f.type in KINDS}  # name -> kind; args is no flag
TEACHER_RECORD = "distilled_from"  # beside the settings in a student's config.json: its teacher (distill.py)


def flag(name: str) -> str:
    """A setting's command-line option: batch_size -> --batch-size; the network's args are each an --arg."""
    if name == "args":
        return "--arg"
    return "--" + name.replace("_", "-")


def setting_name(key: str) -> str:
    """A setting as the user may spell it, batch-size or batch_size, as TrainConfig names it; or UsageError."""
    name = key.strip().replace("-", "_")
    if name not in SETTINGS:
        close = difflib.get_close_matches(name, SETTINGS, n=1)
        guess = f" (did you mean {close[0].replace('_', '-')}?)" if close else ""
        raise UsageError(f"unknown setting {key!r}{guess}; see mnist20k train --help")
    return name


def parse_setting(name: str, text: str):
    """A setting's value from text (--set lr=0.1): typed as the field is, or UsageError saying what it takes."""
    kind = SETTINGS[name]
    if kind == "bool":
        if text.lower() not in TRUE + FALSE:
            raise UsageError(f"{flag(name)} is {KIND_WORDS[kind]}, not {text!r}")
        return text.lower() in TRUE
    try:
        return KINDS[kind](text)
    except ValueError:
        raise UsageError(f"{flag(name)} takes {KIND_WORDS[kind]}, not {text!r}") from None


def check_setting(name: str, value):
    """A setting's value from JSON: of the field's type (a whole number is a number too), or UsageError."""
    kind = SETTINGS[name]
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not KINDS[kind]:
        what = "true or false" if kind == "bool" else KIND_WORDS[kind]
        raise UsageError(f"{flag(name)} takes {what}, not {json.dumps(value)}")
    return value


def parse_network_args(pairs: list[str] | None) -> dict | None:
    """`--arg NAME=VALUE` values: VALUE a Python literal (12, 0.1, (8, 8), 8,8,12,12, 'relu'), or else the
    text itself. None when none is given."""
    if not pairs:
        return None
    args = {}
    for pair in pairs:
        name, eq, text = pair.partition("=")
        name = name.strip()
        if not eq or not name.isidentifier():
            raise UsageError(f"--arg takes NAME=VALUE with NAME a Python identifier, not {pair!r}")
        args[name] = literal(text)
    return args


def literal(text: str) -> object:
    """A Python literal's value (or JSON's true and false), or the text itself when it is none (a bare word).
    Tuples become lists, as config.json keeps them, so that a run trained again from its config.json builds the
    very same network."""
    if text.strip() in ("true", "false"):  # as config.json spells them
        return text.strip() == "true"
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):  # a set, bytes, a complex number: refused with the run's other settings
        return value


def config_from_dict(d: dict, **overrides: object) -> TrainConfig:
    """The run a dict of settings describes (a config.json's, a checkpoint's, a study's): each setting's name
    and value checked, a setting left out taking the default recipe's value for its network, `overrides` that
    are not None replacing the dict's, and the whole validated."""
    d = dict(d)
    d.pop(TEACHER_RECORD, None)  # a record of what the run learnt from, not a setting
    args = d.pop("args", {})
    if not isinstance(args, dict):
        raise UsageError(f"args takes an object of the network's arguments, not {json.dumps(args)}")
    settings = {setting_name(key): value for key, value in d.items()}
    settings = {name: check_setting(name, value) for name, value in settings.items()}
    given = {k: v for k, v in overrides.items() if v is not None}
    return make_config("default", **{**settings, **given, "args": {**args, **given.get("args", {})}})


def saved_config(d: dict, where: str = "the checkpoint") -> TrainConfig:
    """A checkpoint's settings, as they were saved: an old network name among them is read without a note."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Renamed)
        try:
            return config_from_dict(d)
        except UsageError as e:
            raise CheckpointError(f"{where} holds settings this mnist20k cannot read: {e}") from None


def read_config(path: Path | str, **overrides: object) -> TrainConfig:
    """The run a config.json describes: a run folder's, or one written by hand (see config_from_dict)."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"no such config file: {path}") from None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {reason(e)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path} is not JSON: {e}") from None
    if not isinstance(d, dict):
        raise UsageError(f"{path} holds a JSON {type(d).__name__}, not an object of settings")
    try:
        return config_from_dict(d, **overrides)
    except UsageError as e:
        raise UsageError(f"{path}: {e}") from None


def config_for_run(recipe: str | None, config_file: Path | str | None, overrides: dict) -> TrainConfig:
    """What a new run trains: a config.json with `overrides` over it, or a recipe (default: "default") with
    them. A config.json naming code of the user's own is refused unless `overrides` name that code too: code
    runs only when named on the command line, never because a file that was read names it."""
    if config_file is None:
        return make_config(recipe or "default", **overrides)
    if recipe is not None:
        raise UsageError("--config holds every setting of the run: drop --recipe, or give options to change it")
    config = read_config(config_file, **overrides)
    if is_reference(config.model) and overrides.get("model") is None:
        raise UsageError(f"{config_file} trains {config.model}: name its code with --model {config.model}")
    return config
