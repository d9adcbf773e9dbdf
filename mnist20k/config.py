"""Every hyperparameter of a run, in one frozen dataclass, and the named recipes built from it."""

from __future__ import annotations

import ast
import difflib
import json
import math
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from mnist20k.errors import Renamed, UsageError
from mnist20k.files import reason
from mnist20k.refs import SHAPES, check_reference, is_reference


def setting(default, help: str):
    """A config field and its one line of help: `mnist20k train --help` is made from these."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    model: str = setting(
        "base",
        "Network: base (18,448 parameters), tiny (7,736), micro (3,968), or your own: file.py:Name, pkg.mod:Name. "
        "tiny and micro bring their own defaults (docs/runs.md).",
    )
    # a network's own keyword arguments (--arg NAME=VALUE): not a flag of its own, so not in SETTINGS
    args: dict = field(default_factory=dict, metadata={"help": "Keyword arguments of the network's constructor."})
    epochs: int = setting(20, "Passes over the 60,000 training images.")
    batch_size: int = setting(128, "Images per optimizer step.")
    lr: float = setting(0.05, "Peak learning rate of the one-cycle schedule, or the constant one.")
    schedule: str = setting("onecycle", "onecycle: warm up, then anneal to ~0 so late epochs settle; or constant.")
    warmup: float = setting(0.2, "Fraction of all steps spent rising to the peak lr (onecycle only).")
    momentum: float = setting(0.9, "SGD momentum.")
    nesterov: bool = setting(True, "Nesterov momentum (the original recipe used plain momentum).")
    weight_decay: float = setting(5e-4, "L2 on every parameter, BatchNorm's included.")
    # with the schedule, weight decay and shifts, no dropout is needed (docs/results.md, "Why this recipe")
    dropout: float = setting(0.0, "Dropout2d rate after each conv block.")
    rotate: float = setting(7.0, "Max rotation in degrees, drawn per image (the original recipe's augmentation).")
    translate: float = setting(2.0, "Max shift in pixels, drawn per image and axis.")
    label_smoothing: float = setting(0.0, "Cross-entropy label smoothing.")
    seed: int = setting(1, "Seeds weights, dropout, shuffling and augmentation.")
    val: int = setting(
        0, "Hold out the last N training images and score them each epoch instead of the test set (never opened)."
    )
    max_batches: int = setting(0, "Stop each epoch after this many batches (0: the whole epoch); smoke tests.")
    amp: bool = setting(False, "bfloat16 autocast on CUDA (changes numerics).")
    compile: bool = setting(False, "torch.compile the model (slow first epoch, faster after).")
    cuda_graph: bool = setting(True, "On CUDA, capture each full-size step once and replay it; ignored elsewhere.")


# The seed document's own recipe: SGD at a constant 0.02, momentum 0.9, rotation only, dropout 0.15.
RECIPES: dict[str, TrainConfig] = {
    "default": TrainConfig(),
    "original": TrainConfig(
        lr=0.02,
        schedule="constant",
        nesterov=False,
        weight_decay=0.0,
        dropout=0.15,
        translate=0.0,
    ),
    # 6 epochs: the best trial of a study on validation images, two seeds a trial judged by the lower
    # (benchmarks/results/tune-base-e6b-cpu.json), kept to the digit; its confirming sweep ends every seed at
    # 99.4%+ (sweep-base-e6b-tuned-cpu.json). Little rotation, a short warm-up, light label smoothing.
    "fast": TrainConfig(
        epochs=6,
        lr=0.05950862221108485,
        warmup=0.23704996731841335,
        weight_decay=2.5970825624867197e-05,
        rotate=0.2058688132033195,
        translate=1.881619687301273,
        label_smoothing=0.033585145305428034,
    ),
}

# The default recipe's settings that differ by model. tiny's are the best trial of a study on validation
# images (benchmarks/results/tune-tiny-e15-cpu.json), kept to the digit so that its confirming sweep
# (sweep-tiny-e15-tuned-cpu.json: every seed at 99.4%+ on each of its last 3 epochs) is what a user runs.
# micro settles best from a higher peak than base (0.2 did no better than 0.1:
# benchmarks/results/explore/sweep-micro-lr0.2-cpu.json).
MODEL_DEFAULTS: dict[str, dict] = {
    "tiny": {
        "epochs": 15,
        "batch_size": 64,
        "lr": 0.081868372487028,
        "weight_decay": 1.147247281078155e-05,
        "rotate": 5.496624778787091,
        "translate": 1.3059671778548307,
    },
    "micro": {"lr": 0.1},
}

SCHEDULES = ("onecycle", "constant")
CHOICES = {"schedule": SCHEDULES}  # settings with a fixed set of values
DEVICES = ("auto", "cpu", "cuda", "mps")  # "cuda:1" names one of several GPUs
EXPORT_FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}  # and the file each writes by default
TRAIN_IMAGES = 60_000
MAX_VAL = 59_000  # a validation split leaves at least 1,000 images to train on
PARAM_BUDGET = 20_000  # the challenge: under 20,000 parameters


def parse_device(name: str) -> tuple[str, int | None]:
    """'cuda:1' -> ('cuda', 1), 'cpu' -> ('cpu', None): the spelling checked, not whether the device is here."""
    kind, colon, index = name.partition(":")
    if kind not in DEVICES or (colon and (kind != "cuda" or not index.isdigit())):
        raise UsageError(f"{name!r} is not one of {', '.join(DEVICES)}, cuda:N")
    return kind, int(index) if colon else None


# Old names, still understood: the base network and the original recipe were both called "seed", as is the
# random seed (--seed, --seeds). A command that uses one gets a note with the new name.
RENAMED = {"model": {"seed": "base"}, "recipe": {"seed": "original"}}


def current_name(kind: str, name: str) -> str:
    """The name a network (kind "model") or recipe goes by now; a Renamed warning says so when it changed."""
    new = RENAMED[kind].get(name)
    if new is not None:
        warnings.warn(Renamed(f"--{kind} {name} is now called {new}"), stacklevel=3)
    return new or name


def make_config(recipe: str = "default", **overrides: object) -> TrainConfig:
    """The named recipe with every override that is not None applied, checked for sense."""
    recipe = current_name("recipe", recipe)
    if isinstance(overrides.get("model"), str):
        overrides["model"] = current_name("model", overrides["model"])
    if recipe not in RECIPES:
        raise UsageError(f"unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise UsageError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    given = {k: v for k, v in overrides.items() if v is not None}
    # 0, the default, is what every config.json of a network of your own records: no dropout of ours
    if given.get("dropout", 0.0) != 0.0 and is_reference(given.get("model", "")):
        raise UsageError("--dropout sets the built-in networks' dropout; a network of your own has its own")
    base = RECIPES[recipe]
    if recipe == "default":  # the other recipes are the same for every network
        base = replace(base, **MODEL_DEFAULTS.get(given.get("model", base.model), {}))
    config = replace(base, **given)
    validate(config)
    return config


def validate(c: TrainConfig) -> None:
    """Raise UsageError for settings no run can use, before any data is read."""
    from mnist20k.model import MODELS

    if is_reference(c.model):
        check_reference(c.model)  # the text only: the code is imported when the network is built
    checks = [
        (
            c.model in MODELS or is_reference(c.model),
            f"unknown model {c.model!r}; choose one of: {', '.join(MODELS)}, or give {SHAPES}",
        ),
        (c.epochs >= 1, f"--epochs must be at least 1, got {c.epochs}"),
        (
            1 <= c.batch_size <= TRAIN_IMAGES,
            f"--batch-size must be between 1 and {TRAIN_IMAGES:,}, got {c.batch_size}",
        ),
        (math.isfinite(c.lr) and c.lr > 0, f"--lr must be a positive number, got {c.lr}"),
        (c.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}"),
        (0 < c.warmup < 1, f"--warmup must be between 0 and 1, got {c.warmup}"),
        (0 <= c.momentum < 1, f"--momentum must be in [0, 1), got {c.momentum}"),
        (math.isfinite(c.weight_decay) and c.weight_decay >= 0, "--weight-decay must be >= 0"),
        (0 <= c.dropout < 1, f"--dropout must be in [0, 1), got {c.dropout}"),
        (0 <= c.rotate <= 180, f"--rotate must be between 0 and 180 degrees, got {c.rotate}"),
        (0 <= c.translate <= 14, f"--translate must be between 0 and 14 pixels, got {c.translate}"),
        (0 <= c.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
        (c.max_batches >= 0, f"--max-batches must be >= 0, got {c.max_batches}"),
        (0 <= c.val <= MAX_VAL, f"--val must be between 1 and {MAX_VAL:,} images (0: none), got {c.val}"),
        (
            c.batch_size <= TRAIN_IMAGES - c.val,
            f"--batch-size is over the {TRAIN_IMAGES - c.val:,} images --val leaves",
        ),
        (
            isinstance(c.args, dict) and all(isinstance(k, str) and k.isidentifier() for k in c.args),
            f"args must map argument names to values, got {c.args!r:.80}",
        ),
        (_is_json(c.args), f"--arg values must be numbers, text, true/false, or lists of them: {c.args!r:.80}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)


def _is_json(value: object) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


# ---- the settings' schema: each TrainConfig field's type, and how a value of it is read ---------------

KINDS = {"int": int, "float": float, "str": str, "bool": bool}  # the fields' annotations are strings
KIND_WORDS = {"int": "a whole number", "float": "a number", "str": "text", "bool": "on or off"}
TRUE, FALSE = ("1", "true", "t", "yes", "y", "on"), ("0", "false", "f", "no", "n", "off")  # click's words
SETTINGS = {f.name: f.type for f in fields(TrainConfig) if f.type in KINDS}  # name -> kind; args is no flag


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
    """A Python literal's value, or the text itself when it is none (a bare word). Tuples become lists, as
    config.json keeps them, so that a run trained again from its config.json builds the very same network."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):  # a set, bytes, a complex number: refused with the run's other settings
        return value


def read_config(path: Path | str, **overrides: object) -> TrainConfig:
    """The run a config.json describes: a run folder's, or one written by hand, where a setting left out
    takes the default recipe's value for its network. `overrides` that are not None replace the file's."""
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
        args = d.pop("args", {})
        if not isinstance(args, dict):
            raise UsageError(f"args takes an object of the network's arguments, not {json.dumps(args)}")
        settings = {setting_name(key): value for key, value in d.items()}
        settings = {name: check_setting(name, value) for name, value in settings.items()}
        given = {k: v for k, v in overrides.items() if v is not None}
        return make_config("default", **{**settings, **given, "args": {**args, **given.get("args", {})}})
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


def from_dict(d: dict) -> TrainConfig:
    """Rebuild a config saved by an earlier version: unknown keys are dropped, missing ones default."""
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in d.items() if k in known})
