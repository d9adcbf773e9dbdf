"""A study's record, DIR/tune.json: the search, the device and versions, every trial, the best ones, the
parameter importances, and the `mnist20k sweep` command that confirms the best settings on the test set. With
two objectives (accuracy and parameters) the best ones are the Pareto front, each with its confirm command.
DIR/study.png draws the optimization history, or every trial against its parameters with the front, and the
importances (matplotlib)."""

from __future__ import annotations

import itertools
import json
import shlex
import warnings

import optuna
from optuna.trial import TrialState

from mnist20k import __version__
from mnist20k.config import make_config
from mnist20k.device import device_name
from mnist20k.distill import RECORD
from mnist20k.files import write_figure, write_file
from mnist20k.settings import SETTINGS, flag
from mnist20k.tune.prepare import TUNE_FILE, Tune
from mnist20k.tune.space import split_params
from mnist20k.tune.study import finished, outcome
from mnist20k.tune.worker import worker_env

FORMAT = "mnist20k-tune"
BEST = 10  # trials in the table of the best


def write_record(tune: Tune, study: optuna.Study) -> dict:
    record = build_record(tune, study)
    write_file(tune.folder / TUNE_FILE, (json.dumps(record, indent=1) + "\n").encode())
    record["plot"] = save_plot(study, record["importances"], tune.folder / "study.png")
    return record


def build_record(tune: Tune, study: optuna.Study) -> dict:
    import torch

    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state is TrialState.COMPLETE]
    spec = tune.spec
    two = len(spec.objectives) > 1
    if two:  # the front, fewest parameters first; confirmed first: its most accurate trial
        best = sorted(study.best_trials, key=lambda t: (t.values[1], -t.values[0], t.number))
        top = max(best, key=lambda t: (t.values[0], -t.values[1]), default=None)
    else:
        best = sorted(done, key=lambda t: t.value, reverse=True)[:BEST]
        top = best[0] if best else None
    value = f"{spec.aggregate} over seeds of the final epoch's validation accuracy ({tune.config.val:,} images)"
    return {
        "format": FORMAT,
        "format_version": 1,
        "study": spec.study,
        "storage": "journal file study.log" if spec.storage is None else "database",
        **tune.search(),
        "trials_total": spec.trials,
        "finished": len(finished(study, spec.max_retry)),
        "max_retries": spec.max_retry,
        "pruner": spec.pruner,
        "objectives": spec.objectives,
        "value": value + (" and the network's parameters" if two else ""),
        "device": device_name(spec.device, int(worker_env(tune.jobs)["OMP_NUM_THREADS"])),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "mnist20k": __version__,
        "best": [trial_entry(t, spec.max_retry) for t in best],
        "pareto": [pareto_entry(tune, t) for t in best] if two else None,
        "importances": importances(study),
        "confirm": confirm_command(tune, top.params) if top else None,
        "trials": [trial_entry(t, spec.max_retry) for t in trials],
    }


_unfinished = {TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}


def _lost(history: list) -> str:
    tries = len(history) + 1
    return "its worker stopped once" if tries == 1 else f"its worker stopped {tries} times"


def trial_entry(t, max_retry: int) -> dict:
    attrs = t.user_attrs
    history = t.system_attrs.get("retry_history") or []  # Optuna's retry callback's: the tries before this one
    ended = outcome(t, max_retry)
    return {
        "number": t.number,
        "outcome": ended or _unfinished.get(t.state, "stopped, tried again"),
        "value": t.values[0] if t.values else None,  # validation accuracy (t.value is one objective's only)
        "values": t.values,
        "params": t.params,
        "seed_values": attrs.get("seed_values"),
        "pruned_at": attrs.get("pruned_at"),
        "parameters": attrs.get("params"),
        "message": _lost(history) if ended == "lost" else attrs.get("message"),
        "folder": attrs.get("folder"),
        "seconds": attrs.get("seconds"),
        RECORD: attrs.get(RECORD),  # a distilled trial's teacher: its folder and training seconds
        "epochs": {str(k): v for k, v in sorted(t.intermediate_values.items())},
        "retry_of": history[-1] if history else None,
    }


def pareto_entry(tune: Tune, t) -> dict:
    """A trial of the Pareto front: what it scored, what it costs, what it set, and how to confirm it."""
    return {
        "number": t.number,
        "parameters": t.user_attrs.get("params"),
        "values": t.values,
        "params": t.params,
        "confirm": confirm_command(tune, t.params, f"confirm-{t.number}"),
    }


def importances(study: optuna.Study) -> dict[str, float]:
    """PED-ANOVA's share of each searched key in the value (in validation accuracy, with two objectives); empty
    with too few trials. Named, not Optuna's default: that is PED-ANOVA from Optuna 5, and before it fANOVA,
    which needs scikit-learn."""
    # the parameter count follows from the settings, nothing to explain; with a target PED-ANOVA minimises
    target = (lambda t: -t.values[0]) if len(study.directions) > 1 else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            found = optuna.importance.get_param_importances(study, evaluator=evaluator, target=target)
            return {k: round(v, 4) for k, v in found.items()}
    except (ValueError, RuntimeError):  # fewer than two complete trials, or one value only
        return {}


def confirm_command(tune: Tune, params: dict, out: str = "confirm") -> str:
    """`mnist20k sweep` with the study's fixed settings and the trial's values, on all 60,000 training images
    (no --val) over seeds 1-5, into the study folder's `out`: the one place the settings meet the test set."""
    settings, args = split_params(params)
    config = tune.config
    default = make_config("default", model=config.model)
    words = ["mnist20k", "sweep", "--model", config.model]
    for name in SETTINGS:
        value = settings.get(name, getattr(config, name))
        if name in ("model", "seed", "val") or value == getattr(default, name):
            continue
        if isinstance(value, bool):
            words.append(flag(name) if value else f"--no-{flag(name)[2:]}")
        else:
            words += [flag(name), str(value)]
    for key, value in {**config.args, **args}.items():
        words += ["--arg", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    # where the study ran: a machine with no MNIST20K_DATA_DIR needs the data folder named
    if tune.spec.device != "auto":
        words += ["--device", tune.spec.device]
    if tune.spec.data_dir is not None:
        words += ["--data-dir", tune.spec.data_dir]
    words += ["--seeds", "1-5", "--out", str(tune.folder / out)]
    return shlex.join(words)


def save_plot(study: optuna.Study, importance: dict[str, float], path) -> bool:
    """Every complete trial's value and the best so far (or, with two objectives, every complete trial against its
    parameters on a log axis, the front drawn through it), beside the searched keys' importances (`importance`,
    as the record holds them), in one figure; False without matplotlib or with fewer than two complete trials."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    done = [t for t in study.get_trials(deepcopy=False) if t.state is TrialState.COMPLETE]
    if len(done) < 2:
        return False
    panels = 2 if importance else 1
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 4.5), layout="constrained", squeeze=False)
    if len(study.directions) > 1:
        _pareto_panel(axes[0][0], done, study.best_trials)
    else:
        _history_panel(axes[0][0], done)
    if importance:
        keys = list(importance)[::-1]  # the most important on top
        bars = axes[0][1]
        bars.barh(keys, [importance[k] for k in keys], color="C2")
        bars.set(title="Importance (PED-ANOVA)", xlabel="share of the validation accuracy's variation")
    write_figure(fig, path, "tune.json and the study itself are saved")
    return True


def _history_panel(ax, done: list) -> None:
    numbers, values = [t.number for t in done], [t.value for t in done]
    ax.scatter(numbers, values, s=20, color="C0", label="trial")
    best = list(itertools.accumulate(values, max))  # the study maximises
    ax.plot(numbers, best, color="C1", drawstyle="steps-post", label="best so far")
    ax.set(title="Optimization history", xlabel="trial", ylabel="validation accuracy (%)")
    ax.legend(loc="lower right")


def _pareto_panel(ax, done: list, front: list) -> None:
    import matplotlib.ticker

    params, accuracy = [t.values[1] for t in done], [t.values[0] for t in done]
    # the axis spans the best 5 points of accuracy: a trial far below is drawn on its floor, pointing down
    floor = max(min(accuracy), max(accuracy) - 5.0)
    shown = [(p, a) for p, a in zip(params, accuracy, strict=True) if a >= floor]
    below = [(p, floor) for p, a in zip(params, accuracy, strict=True) if a < floor]
    ax.scatter(*zip(*shown, strict=True), s=20, color="C0", label="trial")
    if below:
        ax.scatter(*zip(*below, strict=True), s=30, marker="v", color="C0", label=f"trial below {floor:.1f}%")
    front = sorted(front, key=lambda t: t.values[1])
    # a step for each front trial: the most accuracy any trial reached with at most that many parameters
    xs, ys = [t.values[1] for t in front], [max(t.values[0], floor) for t in front]
    ax.plot(xs, ys, color="C1", drawstyle="steps-post")
    on = [(x, y) for x, y, t in zip(xs, ys, front, strict=True) if t.values[0] >= floor]
    ax.scatter(*zip(*on, strict=True), s=30, color="C1", label="Pareto front", zorder=3)
    under = [(x, y) for x, y, t in zip(xs, ys, front, strict=True) if t.values[0] < floor]
    if under:
        ax.scatter(*zip(*under, strict=True), s=40, marker="v", color="C1", zorder=3)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    # between powers of ten, 2, 3 and 5 of them: labels that do not run into each other
    ax.xaxis.set_minor_formatter(
        matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}" if f"{v:.0e}"[0] in "235" else "")
    )
    ax.set_ylim(floor - 0.2, max(accuracy) + 0.2)
    ax.set(title="Accuracy and parameters", xlabel="parameters (log)", ylabel="validation accuracy (%)")
    ax.legend(loc="lower right")
