import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from conftest import one_error_line
from typer.testing import CliRunner

from mnist20k import __version__
from mnist20k.cli import app
from mnist20k.config import RECIPES, make_config
from mnist20k.nets import build_model, count_params
from mnist20k.settings import config_from_dict

ROOT = Path(__file__).resolve().parent.parent

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"mnist20k {__version__}"


def test_summary_shows_the_seed_table_and_budget():
    result = invoke("summary")
    assert result.exit_code == 0
    assert f"Total params: {count_params(build_model('base')):,}" in result.stdout
    assert "Budget: 18,448 / 20,000 parameters (1,552 to spare)" in result.stdout
    assert "Total mult-adds (M): 4.07" in result.stdout and "Units." not in result.stdout
    for shape, params in [("[1, 32, 24, 24]", "4,608"), ("[1, 32, 10, 10]", "5,760"), ("[1, 10, 1, 1]", "160")]:
        assert re.search(re.escape(shape) + r"\s+" + params, result.stdout)


@pytest.mark.parametrize("name, budget", [("tiny", 20_000), ("micro", 4_000)])
def test_summary_of_the_smaller_presets_within_their_budgets(name, budget):
    """The counts themselves are test_model.py's; here, that the table is the network's."""
    result = invoke("summary", "--model", name, "--budget", budget)
    params = count_params(build_model(name))
    assert result.exit_code == 0 and f"Total params: {params:,}" in result.stdout
    assert f"Budget: {params:,} / {budget:,} parameters" in result.stdout
    assert "Receptive field: 18×18" in result.stdout  # the seed's shape: 3, 5, pool 6, then +4 three times


@pytest.mark.parametrize(
    "recipe, model, study, sweep, confirmed_below",
    [
        ("default", "tiny", "tune-tiny-e15-cpu.json", "sweep-tiny-e15-tuned-cpu.json", {}),
        ("fast", "base", "tune-base-e5-cpu.json", "sweep-base-e5-tuned-cpu.json",
         {32: "explore/sweep-base-e5-trial32-cpu.json"}),
    ],
)  # fmt: skip
def test_a_searched_recipe_is_the_best_trial_of_its_study_that_its_sweep_held(
    recipe, model, study, sweep, confirmed_below
):
    """Chosen on validation images (the study), confirmed on the test set by its sweep. A trial ranked above it
    is named with the sweep that confirmed it below the target."""
    results = ROOT / "benchmarks" / "results"
    study = json.loads((results / study).read_text())
    ranked = study["best"]
    assert ranked[0]["value"] == max(t["value"] for t in study["trials"] if t["outcome"] == "complete")
    chosen = next(t for t in ranked if t["number"] not in confirmed_below)
    assert {t["number"] for t in ranked[: ranked.index(chosen)]} == set(confirmed_below)
    # a setting newer than a record takes its default, as config_from_dict gives it to an older config.json
    config = make_config(recipe, model=model)
    assert asdict(config) == asdict(config_from_dict({**study["config"], **chosen["params"], "val": 0}))

    def confirmed(name: str, params: dict) -> dict:
        record = json.loads((results / name).read_text())
        (configuration,) = record["configurations"]
        assert {k: configuration["config"][k] for k in params} == params and configuration["config"]["val"] == 0
        return record

    held = confirmed(sweep, chosen["params"])
    assert held["holds"] and held["seeds"] == list(range(1, len(held["seeds"]) + 1)) and len(held["seeds"]) >= 5
    assert asdict(config) == asdict(config_from_dict({**held["configurations"][0]["config"], "seed": config.seed}))
    for number, name in confirmed_below.items():
        record = confirmed(name, next(t for t in ranked if t["number"] == number)["params"])
        assert record["configurations"][0]["summary"]["min"] < record["target"]


@pytest.mark.parametrize("name", ["tiny", "micro"])
def test_a_smaller_preset_trains_at_its_own_recipe(name, data_dir, tmp_path):
    out = tmp_path / name
    short = ("--epochs", 1, "--max-batches", 3, "--device", "cpu", "--data-dir", data_dir)
    result = invoke("train", "--model", name, *short, "--out", out)
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "config.json").read_text())
    assert recorded == asdict(make_config(model=name, epochs=1, max_batches=3))
    assert recorded["lr"] != make_config().lr  # the network's own, not base's


@pytest.mark.parametrize("recipe", sorted(set(RECIPES) - {"default"}))
def test_the_other_recipes_are_the_same_for_every_network(recipe):
    assert make_config(recipe, model="tiny") == replace(make_config(recipe), model="tiny")


def test_summary_exits_1_for_a_model_over_budget(monkeypatch):
    from mnist20k.nets import builtin

    monkeypatch.setitem(builtin.PRESETS, "wide", (builtin.BaseNet, {"widths": (32, 64, 40, 64, 32, 32)}))
    result = invoke("summary", "--model", "wide")
    assert result.exit_code == 1 and "OVER" in result.stdout


def test_train_then_eval_agree(data_dir, tmp_path):
    out = tmp_path / "run"
    result = invoke("train", "--epochs", 2, "--max-batches", 4, "--device", "cpu", "--data-dir", data_dir, "--out", out)
    assert result.exit_code == 0, result.output
    # One line per epoch, also when stdout is not a terminal (as here).
    lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2  train_loss")
    assert f"checkpoint: {out / 'checkpoint.pt'}" in result.stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 2 and config["max_batches"] == 4
    last = records[-1]
    assert f"test_acc {last['test_correct']}/{last['test_total']}" in lines[1]

    result = invoke("eval", out / "checkpoint.pt", "--data-dir", data_dir, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert f"accuracy {last['test_correct']}/200" in result.stdout
    assert "confusion" in result.stdout and "per class" in result.stdout

    result = invoke("eval", out, "--data-dir", data_dir, "--device", "cpu", "--json")
    assert result.exit_code == 0
    score = json.loads(result.stdout)
    assert score["correct"] == last["test_correct"] and score["total"] == 200
    assert score["loss"] == pytest.approx(last["test_loss"], rel=1e-5)
    assert sum(map(sum, score["confusion"])) == 200 and len(score["per_class"]) == 10


def test_seed_recipe_is_reachable(data_dir, tmp_path):
    out = tmp_path / "run"
    result = invoke(
        "train", "--recipe", "original", "--epochs", 1, "--max-batches", 2, "--data-dir", data_dir, "--out", out
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["lr"], config["schedule"], config["dropout"], config["translate"]) == (0.02, "constant", 0.15, 0)
    assert config["momentum"] == 0.9 and config["nesterov"] is False and config["weight_decay"] == 0


def test_help_does_not_import_torch():
    code = (
        "import sys; sys.argv = ['mnist20k', '--help']\n"
        "from mnist20k.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300).stdout
    assert "Commands" in out and out.strip().endswith("NO-TORCH")


@pytest.mark.parametrize(
    "args, text",
    [
        (["train", "--lr", "abc"], "Invalid value for '--lr'"),
        (
            ["train", "--schedule", "cosine"],
            "'cosine' is not one of 'onecycle', 'constant'",
        ),
        (
            ["train", "--recipe", "slow"],
            "'slow' is not one of 'default', 'original', 'fast'",
        ),
        (["eval", "x.pt", "--device", "gpu"], "Invalid value for '--device'"),
        (["eval", "x.pt", "--device", "cuda:x"], "cuda:N"),
        (["eval", "x.pt", "--device", "cpu:1"], "cuda:N"),
    ],
)
def test_usage_errors_the_option_parser_finds_are_one_line(args, text):
    """What click refuses before any command runs, from a real process: one line, exit 2, the choices named."""
    done = subprocess.run([sys.executable, "-m", "mnist20k", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: ") and text in done.stderr


@pytest.mark.parametrize(
    "args, text",
    [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--epochs", "-3"], "--epochs must be at least 1"),
        (["--batch-size", "0"], "--batch-size must be between 1 and 60,000"),
        (["--batch-size", "60001"], "--batch-size must be between 1 and 60,000"),
        (["--lr", "0"], "--lr must be a positive number"),
        (["--lr", "-0.1"], "--lr must be a positive number"),
        (["--lr", "nan"], "--lr must be a positive number"),
        (["--lr", "inf"], "--lr must be a positive number"),
        (["--model", "resnet"], "unknown model 'resnet'"),
        (["--warmup", "1.5"], "--warmup must be between 0 and 1"),
        (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
        (["--max-batches", "-1"], "--max-batches must be >= 0"),
    ],
)
def test_impossible_train_options(args, text, data_dir, tmp_path):
    out = tmp_path / "run"
    one_error_line(invoke("train", *args, "--data-dir", data_dir, "--out", out), 2, text)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu(data_dir, tmp_path):
    one_error_line(invoke("train", "--device", "cuda", "--data-dir", data_dir, "--out", tmp_path / "r"), 2, "no CUDA")
    one_error_line(invoke("eval", tmp_path / "x.pt", "--device", "cuda"), 2, "no CUDA")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_where_there_is_none(data_dir, tmp_path):
    one_error_line(invoke("train", "--device", "mps", "--data-dir", data_dir, "--out", tmp_path / "r"), 2, "MPS")


def test_missing_data_names_the_files_and_leaves_nothing_behind(tmp_path):
    """A mistyped --data-dir: the download into it fails (offline, in a test), one line names the four files and
    the folder, and neither a data folder nor a run folder is left."""
    from mnist20k.data import ALL_FILES

    data = tmp_path / "nodata" / "deeper"
    result = invoke("train", "--data-dir", data, "--out", tmp_path / "run", "--device", "cpu")
    line = one_error_line(result, 1, f"MNIST is not in {data / 'MNIST' / 'raw'}: put the four files ")
    assert all(name in line for name in ALL_FILES) and "(download failed: " in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_eval_rejects_a_bad_batch_size(tmp_path):
    one_error_line(invoke("eval", tmp_path / "nope.pt", "--batch-size", "0"), 2, "Invalid value for '--batch-size'")


@pytest.mark.mnist
def test_short_run_on_real_mnist(real_mnist, tmp_path):
    out = tmp_path / "run"
    result = invoke(
        "train", "--epochs", 1, "--max-batches", 60, "--device", "cpu", "--data-dir", real_mnist, "--out", out
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "metrics.jsonl").read_text())
    assert record["test_total"] == 10_000 and record["test_accuracy"] > 90.0


def test_compile_path_compiles_trains_and_saves_plain_weights(data_dir, tmp_path):
    """--compile (and --amp, a no-op off CUDA) run the same loop through a graph torch.compile made; the
    checkpoint holds the plain module's keys."""
    from torch._dynamo.utils import counters

    compiled_before = counters["stats"]["unique_graphs"]
    out = tmp_path / "run"
    result = invoke("train", "--compile", "--amp", "--epochs", 1, "--max-batches", 2, "--data-dir", data_dir,
                    "--out", out, "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert counters["stats"]["unique_graphs"] > compiled_before
    state = torch.load(out / "checkpoint.pt", weights_only=True)["model_state"]
    assert not any(key.startswith("_orig_mod.") for key in state)
    assert invoke("eval", out, "--data-dir", data_dir, "--device", "cpu").exit_code == 0


# A value other than the default for every training setting (compile aside: the test above runs it)
EVERY_SETTING = {
    "model": "tiny",
    "args": {"widths": [8, 16, 10, 16, 16, 12]},
    "epochs": 1,
    "batch_size": 64,
    "lr": 0.07,
    "schedule": "constant",
    "warmup": 0.3,
    "momentum": 0.8,
    "nesterov": False,
    "weight_decay": 1e-4,
    "dropout": 0.05,
    "rotate": 5.0,
    "translate": 1.0,
    "label_smoothing": 0.1,
    "ema": 0.9,
    "teacher": "",  # a finished run the test trains first
    "distill_weight": 0.6,
    "temperature": 3.0,
    "seed": 7,
    "val": 100,
    "max_batches": 1,
    "amp": True,
    "compile": False,
    "cuda_graph": False,
}


def test_every_training_setting_is_a_train_option_and_is_recorded(data_dir, tmp_path):
    """Each setting is an option of train, and what was given is what config.json and the checkpoint record; what
    each one changes in training is test_options.py's."""
    from dataclasses import fields

    from mnist20k.config import TrainConfig

    assert set(EVERY_SETTING) == {f.name for f in fields(TrainConfig)}
    teacher = tmp_path / "teacher"
    assert invoke("train", "--epochs", 1, "--max-batches", 1, "--val", 100, "--device", "cpu", "--data-dir",
                  data_dir, "--out", teacher).exit_code == 0  # fmt: skip
    every = {**EVERY_SETTING, "teacher": str(teacher)}
    help_text = invoke("train", "--help").stdout
    args = []
    for name, value in every.items():
        flag = "--" + name.replace("_", "-")
        if name == "args":  # the network's arguments, each an --arg
            args += [a for k, v in value.items() for a in ("--arg", f"{k}={','.join(map(str, v))}")]
            continue
        assert flag in help_text, name
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    out = tmp_path / "run"
    result = invoke("train", *args, "--device", "cpu", "--data-dir", data_dir, "--out", out)
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "config.json").read_text())
    assert recorded.pop("distilled_from")["folder"] == str(teacher.resolve()) and recorded == every
    assert torch.load(out / "checkpoint.pt", weights_only=True)["config"] == every


def test_the_old_names_of_the_base_network_and_the_original_recipe_still_work_with_a_note(data_dir, tmp_path):
    out = tmp_path / "run"
    old = invoke("train", "--recipe", "seed", "--model", "seed", "--epochs", 1, "--max-batches", 2,
                 "--data-dir", data_dir, "--device", "cpu", "--out", out)  # fmt: skip
    assert old.exit_code == 0, old.output
    notes = [line for line in old.stderr.splitlines() if line.startswith("note:")]
    assert notes == ["note: --recipe seed is now called original", "note: --model seed is now called base"]
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"] == "base" and saved["lr"] == 0.02 and saved["dropout"] == 0.15  # the original recipe
    # a checkpoint and a config.json written under the old name load as they are
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    ckpt["model"]["name"], ckpt["config"]["model"] = "seed", "seed"
    torch.save(ckpt, out / "checkpoint.pt")
    scored = invoke("eval", out, "--data-dir", data_dir, "--device", "cpu")
    assert scored.exit_code == 0 and "note:" not in scored.stderr
    (out / "config.json").write_text(json.dumps({**saved, "model": "seed"}))
    again = invoke("train", "--config", out / "config.json", "--data-dir", data_dir, "--out", tmp_path / "again")
    assert again.exit_code == 0 and "note: --model seed is now called base" in again.stderr


def help_text(*command: str) -> str:
    """`mnist20k COMMAND --help` at 100 columns, in a real process, its lines joined and runs of spaces and
    box borders squeezed, so that a phrase wrapped across lines is found whole."""
    env = {**os.environ, "COLUMNS": "100", "TERM": "dumb"}
    done = subprocess.run([sys.executable, "-m", "mnist20k", *command, "--help"], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def squeezed(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def test_help_tells_each_default_one_way_and_the_ones_a_network_brings():
    text = help_text("train")
    flat = squeezed(text)
    assert "[default:" not in text and "(default: 20; tiny 15)" in flat and "(default: 128; tiny 64)" in flat
    assert "(default: 0.05; tiny 0.08187, micro 0.1)" in flat and "(default: on)" in flat
    assert [line for line in text.splitlines() if "<bool>" in line and "--help" not in line] == []  # flags: none
    assert "seed'" not in flat and "see d" not in flat  # the old name of a recipe is taken, not listed
    for panel in ("Network", "Recipe", "Augmentation", "Data and device", "Output"):
        assert f"─ {panel} ─" in text, panel
    tune = squeezed(help_text("tune"))
    assert "(default: 10,000 for tune)" in tune and "─ Study ─" in help_text("tune")
    assert "Usage: mnist20k eval [OPTIONS] CHECKPOINT" in help_text("eval")
    assert "Usage: mnist20k predict [OPTIONS] CHECKPOINT IMAGE..." in help_text("predict")


def test_the_header_rounds_the_lr_and_says_what_shortens_the_run(data_dir, tmp_path):
    out = tmp_path / "run"
    result = invoke("train", "--model", "tiny", "--epochs", 1, "--max-batches", 2, "--device", "cpu",
                    "--data-dir", data_dir, "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "for 1 epoch (batch 64, lr 0.08187, onecycle, seed 1, at most 2 batches an epoch) -> " in result.stdout
    assert json.loads((out / "config.json").read_text())["lr"] == 0.081868372487028  # every digit kept


@pytest.mark.parametrize(
    "env, command, said",
    [
        ({"MNIST20K_DEVICE": "cuda:x"}, ["train", "--epochs", "1"], "'cuda:x' is not one of auto, cpu, cuda, mps"),
        ({"MNIST20K_DEVICE": "cuda:x"}, ["eval", "no-such-run"], "'cuda:x' is not one of auto, cpu, cuda, mps"),
        ({"MNIST20K_DATA_DIR": "{empty}"}, ["train", "--epochs", "1", "--device", "cpu"], "{empty}"),
    ],
)
def test_each_environment_variable_reaches_its_command_and_help_names_it(env, command, said, tmp_path, no_download):
    """MNIST20K_DEVICE and MNIST20K_DATA_DIR are the options' own (typer's envvar=), shown in --help; the
    storage's MNIST20K_STORAGE is tune's (test_tune_workers)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v.format(empty=empty) for k, v in env.items()}
    result = runner.invoke(app, command, env=env)
    one_error_line(result, 2 if "DEVICE" in next(iter(env)) else 1, said.format(empty=empty))
    assert not list(empty.iterdir())
    assert f"[env var: {next(iter(env))}]" in squeezed(help_text(command[0]))


def test_the_shell_completes_the_networks_and_the_recipes():
    """Typer's completion (mnist20k --install-completion), as bash asks for it: --model lists the built-in
    networks, --recipe the recipes by their current names."""

    def completed(words: str) -> list[str]:
        env = {**os.environ, "_MNIST20K_COMPLETE": "complete_bash", "COMP_WORDS": words}
        env["COMP_CWORD"] = str(len(words.split()) - (0 if words.endswith(" ") else 1))
        done = subprocess.run([sys.executable, "-m", "mnist20k"], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert completed("mnist20k train --model ") == ["base", "tiny", "micro", "cnn"]
    assert completed("mnist20k sweep --model t") == ["tiny"]
    assert completed("mnist20k tune --recipe ") == ["default", "original", "fast"]
    assert "--install-completion" in help_text()
    assert "<bool>" not in help_text() + help_text("train") + help_text("tune")
