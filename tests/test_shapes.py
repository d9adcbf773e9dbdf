"""Searching shapes: the `cnn` family's parameters against hand counts, every shape that cannot work refused in
one line naming its argument, such a shape in a study recorded as invalid and not tried again, and a study of
accuracy and parameters whose Pareto front is the one its own trials make."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from conftest import make_mnist_dir, one_error_line
from typer.testing import CliRunner

from mnist20k.cli import app
from mnist20k.nets import build, count_params

runner = CliRunner()
SMALL = ["--model", "cnn", "--epochs", "1", "--val", "100", "--batch-size", "64", "--device", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_mnist_dir(tmp_path_factory.mktemp("shapes-data"), n_train=600, n_test=100)


def tune(data: Path, out: Path, *words: str):
    return runner.invoke(app, ["tune", "--data-dir", str(data), "--out", str(out), *SMALL, *words])


# Each count by hand, block by block: a plain 3x3 conv i->o is 9io weights, a separable one 9i + io, a factorised
# one 3io + 3oo; BatchNorm 2 a channel with its affine weights, none without; no conv has a bias.
HAND_COUNTS = {
    # micro's shape: 1->8 72 + BN 16, 8->8 576 + 16 | pool | 8->12 864 + 24, 12->12 1296 + 24 | 3x3 12->10 1080
    "defaults": ({}, 72 + 16 + 576 + 16 + 864 + 24 + 1296 + 24 + 1080),
    # tiny's: 72 + 16, 1152 + 32 | 1x1 16->10 160 | 1440 + 32, 2304 + 32, 2304 + 32 | gap, 1x1 16->10 160
    "tiny's shape": (
        {"stage1": [8, 16], "transition": 10, "stage2": [16, 16, 16], "head": "gap"},
        72 + 16 + 1152 + 32 + 160 + 1440 + 32 + 2304 + 32 + 2304 + 32 + 160,
    ),
    # separable 1->8 9 + 8, 8->8 72 + 64 | factorised 8->12 288 + 432, 12->12 432 + 432, run 3 times on its
    # own weights | 3x3 12->10 1080; no BatchNorm weights
    "separable, factorised, shared": (
        {"conv1": "separable", "conv2": "factorised", "affine": False, "shared": 3, "pad": 1},
        9 + 8 + 72 + 64 + 288 + 432 + 432 + 432 + 1080,
    ),
}


@pytest.mark.parametrize("shape", HAND_COUNTS)
def test_cnn_parameters_match_a_hand_count(shape):
    args, expected = HAND_COUNTS[shape]
    assert count_params(build("cnn", args).module) == expected


def test_a_shared_block_adds_depth_and_no_parameters_and_each_pass_keeps_its_own_statistics():
    import torch

    once = build("cnn", {"shared": 1}).module.eval()
    thrice = build("cnn", {"shared": 3}).module
    thrice.load_state_dict(once.state_dict(), strict=False)  # the same weights: shared adds none
    assert count_params(once) == count_params(thrice)
    x = torch.randn(2, 1, 28, 28)
    assert not torch.equal(once(x), thrice.eval()(x))  # the shared block runs three times, not once
    # a training step's statistics: the block's own from its first pass, each further pass's from its input
    block_norm = thrice.stage2[-1][2]
    thrice.train()(torch.randn(8, 1, 28, 28))
    means = [block_norm.running_mean, *(p.running_mean for p in thrice.passes)]
    assert len(means) == 3 and not torch.equal(means[1], means[2]) and not torch.equal(means[0], means[1])


INVALID = {
    "a zero width": (["stage1=0"], "stage1"),
    "a width in stage2 below 1": (["stage2=12,-1"], "stage2"),
    "no blocks at all": (["stage1=[]"], "stage1"),
    "an unknown conv": (["conv1=dense"], "conv1"),
    "an unknown head": (["head=linear"], "head"),
    "a padding other than 0 or 1": (["pad=2"], "pad"),
    "a negative transition": (["transition=-4"], "transition"),
    "a map shrunk below 1x1 before the pool": (["stage1=" + ",".join(["8"] * 14)], "stage1"),
    "a map shrunk below 1x1 after the pool": (["stage2=" + ",".join(["12"] * 6)], "stage2"),
    "a shared block that widens its input": (["stage2=8,12", "shared=2", "stage1=8"], "shared"),
    "shared below 1": (["shared=0"], "shared"),
    "affine as a word": (["affine=maybe"], "affine"),
}


@pytest.mark.parametrize("case", INVALID)
def test_every_shape_that_cannot_work_is_refused_in_one_line_naming_its_argument(case, data, tmp_path):
    args, name = INVALID[case]
    words = [w for a in args for w in ("--arg", a)]
    line = one_error_line(runner.invoke(app, ["summary", "--model", "cnn", *words]), 2, "cnn cannot be built")
    assert f": {name}" in line or f" {name}=" in line.split(": ", 2)[-1], line
    out = tmp_path / "run"
    train = runner.invoke(app, ["train", "--data-dir", str(data), "--out", str(out), *SMALL, *words])
    one_error_line(train, 2, "cnn cannot be built")
    assert not out.exists()  # refused before anything trained or was made


def test_a_shape_that_cannot_work_in_a_study_is_invalid_and_not_tried_again(data, tmp_path):
    out = tmp_path / "study"
    deep = "(" + ",".join(["8"] * 6) + ")"  # 6 blocks leave a 16x16 map, 8x8 after the pool: room for 2 more
    words = ["--search", f"arg.stage1=(8,8),{deep}", "--search", "arg.stage2=(8,8),(8,8,8,8)", "--trials", "6"]
    result = tune(data, out, *words, "--sampler-seed", "3", "--max-batches", "2")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "tune.json").read_text())
    assert len(record["trials"]) == 6  # none tried again
    invalid = [t for t in record["trials"] if t["outcome"] == "invalid"]
    assert invalid and len(invalid) < 6
    # a tuple of choices is held as its JSON text (tune/space.py)
    assert all(json.loads(t["params"]["arg.stage1"]) == [8] * 6 for t in invalid)
    assert all(json.loads(t["params"]["arg.stage2"]) == [8] * 4 for t in invalid)
    assert all("stage2" in t["message"] and t["retry_of"] is None for t in invalid)
    assert not any((out / t["folder"]).exists() for t in invalid)  # nothing trained
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "study.log")))
    states = {t.number: t.state for t in optuna.load_study(study_name="study", storage=storage).get_trials()}
    # pruned without a value: what Optuna's samplers rank below every complete trial (tune/study.py)
    assert all(states[t["number"]] is optuna.trial.TrialState.PRUNED for t in invalid)
    assert f"trial {invalid[0]['number']}: invalid: cnn cannot be built" in result.output


def test_a_shape_that_cannot_work_searched_alone_is_refused_before_the_study(data, tmp_path):
    out = tmp_path / "study"
    result = tune(data, out, "--search", "arg.stage2=(8,8),(8,8,8,8,8,8)")
    one_error_line(result, 2, "--search arg.stage2=")
    assert not out.exists()


def pareto_by_brute_force(trials: list[dict]) -> set[int]:
    """The complete trials no other complete trial beats on one objective without losing on the other."""
    done = [t for t in trials if t["outcome"] == "complete"]

    def beats(a, b):
        (acc_a, p_a), (acc_b, p_b) = a["values"], b["values"]
        return acc_a >= acc_b and p_a <= p_b and (acc_a > acc_b or p_a < p_b)

    return {t["number"] for t in done if not any(beats(o, t) for o in done)}


def test_a_two_objective_study_reports_the_pareto_front_of_its_own_trials(data, tmp_path):
    out = tmp_path / "study"
    words = ["--objectives", "accuracy,params", "--trials", "8", "--sampler-seed", "2", "--budget", "4000"]
    words += ["--search", "arg.stage1=4,8,12", "--search", "arg.conv2=plain,separable,factorised"]
    result = tune(data, out, *words, "--epochs", "2", "--max-batches", "3", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    record = json.loads((out / "tune.json").read_text())
    assert summary["pareto"] == record["pareto"] and record["objectives"] == ["accuracy", "params"]
    front = {t["number"] for t in record["pareto"]}
    assert front and front == pareto_by_brute_force(record["trials"])
    for t in record["pareto"]:
        assert t["values"][1] == t["parameters"] <= 4000 and t["params"]
        assert "--seeds 1-5" in t["confirm"] and t["confirm"].endswith(f"--out {out}/confirm-{t['number']}")
    outcomes = {t["outcome"] for t in record["trials"]}
    # no pruner: every trial within the budget trains all its epochs; --budget still caps the parameters
    assert record["pruner"] == "none" and outcomes <= {"complete", "over budget"}, outcomes
    for t in record["trials"]:
        if t["outcome"] == "complete":
            assert len((out / t["folder"] / "metrics.jsonl").read_text().splitlines()) == 2
    over = [t for t in record["trials"] if t["outcome"] == "over budget"]
    assert all(t["parameters"] > 4000 for t in over)
    assert (out / "study.png").is_file()


def test_a_pruner_is_refused_with_two_objectives(data, tmp_path):
    out = tmp_path / "study"
    result = tune(data, out, "--objectives", "accuracy,params", "--pruner", "median", "--search", "lr=0.1,0.2")
    one_error_line(result, 2, "--pruner median judges one objective")
    assert not out.exists()


def test_objectives_other_than_accuracy_and_params_are_refused(data, tmp_path):
    out = tmp_path / "study"
    one_error_line(tune(data, out, "--objectives", "params", "--search", "lr=0.1,0.2"), 2, "--objectives is")
    assert not out.exists()


def test_the_cnn_lines_of_the_docs_draw_the_counts_they_state():
    """docs/your-own-network.md spells base, tiny and micro (and one smaller shape) as cnn's --arg lines, each with
    its parameter count: the lines build, to those counts, which are the built-in networks' own."""
    import re

    from mnist20k.settings import parse_network_args

    doc = (Path(__file__).parents[1] / "docs" / "your-own-network.md").read_text()
    rows = re.findall(r"^\| `?(\w[\w ]*?)`? \| (`[^|]*`|`--model cnn`[^|]*) \| ([\d,]+) \|$", doc, re.M)
    assert {name for name, _, _ in rows} >= {"base", "tiny", "micro"}, rows
    for name, line, count in rows:
        args = parse_network_args(re.findall(r"--arg (\S+?)`?(?=\s|$)", line.replace("`", " "))) or {}
        assert count_params(build("cnn", args).module) == int(count.replace(",", "")), (name, line)
        if name in ("base", "tiny", "micro"):
            assert count_params(build(name, {}).module) == int(count.replace(",", "")), name
