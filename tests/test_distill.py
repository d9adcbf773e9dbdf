"""--teacher: the loss is the weighted sum of the labels' and the teacher's terms on the batch the student sees; a
teacher that trained on the student's validation images is refused; with a weight of 0 nothing changes; and a
student's checkpoint, config.json and tables name its teacher and count its training time."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import StopAfter, one_error_line
from typer.testing import CliRunner

from mnist20k.cli import app
from mnist20k.config import make_config
from mnist20k.nets import build
from mnist20k.step import train_step
from mnist20k.train import train

runner = CliRunner()
SHORT = {"model": "micro", "epochs": 1, "max_batches": 3, "batch_size": 64}


@pytest.fixture(scope="module")
def teacher(data_dir, tmp_path_factory):
    """A finished run that held out the last 100 training images."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    train(make_config(**SHORT, val=100), data_dir=data_dir, out_dir=out, device="cpu")
    return out


def invoke(*words):
    return runner.invoke(app, [str(w) for w in words])


class Seen(torch.nn.Module):
    """A network that keeps the batches it is given."""

    def __init__(self, module):
        super().__init__()
        self.module, self.inputs = module, []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.module(x)


def test_the_loss_is_the_weighted_sum_of_both_terms(data_dir):
    c = make_config(**SHORT, teacher="unused here", distill_weight=0.3, temperature=2.5)
    torch.manual_seed(0)
    student, teacher = Seen(build("micro", {}).module), Seen(build("micro", {}).module.eval())
    before = build("micro", {}).module
    before.load_state_dict(student.module.state_dict())
    images, labels = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (16,))
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    loss = train_step(student, optimizer, images, labels, c, torch.Generator().manual_seed(1), teacher)
    (x,), (x_teacher,) = student.inputs, teacher.inputs
    assert torch.equal(x, x_teacher)  # the very batch, augmented once
    # by hand: KL(p_teacher || p_student) of the softened answers, per image, times T squared
    with torch.no_grad():
        log_s, log_t = before(x), teacher.module(x)
        p_t = F.softmax(log_t / 2.5, dim=1)
        kl = (p_t * (torch.log(p_t) - F.log_softmax(log_s / 2.5, dim=1))).sum(1).mean()
        expected = 0.7 * F.nll_loss(log_s, labels) + 0.3 * 2.5**2 * kl
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("held_out", [0, 50])
def test_a_teacher_that_trained_on_the_validation_images_is_refused(held_out, teacher, data_dir, tmp_path):
    other = tmp_path / "teacher"
    train(make_config(**SHORT, val=held_out), data_dir=data_dir, out_dir=other, device="cpu")
    for command in ("train", "sweep", "tune"):
        out = tmp_path / command
        words = [command, "--model", "micro", "--teacher", other, "--val", 100, "--epochs", 1, "--max-batches", 2]
        words += {"sweep": ["--seeds", "1"], "tune": ["--search", "lr=0.1,0.2"]}.get(command, [])
        result = invoke(*words, "--data-dir", data_dir, "--device", "cpu", "--out", out)
        one_error_line(result, 2, "among them this run's 100 validation images: give a teacher trained with --val 100")
        assert not out.exists()
    # the same images held out, or more of the last ones: accepted
    result = invoke("train", *["--model", "micro", "--teacher", teacher, "--val", 60, "--max-batches", 2], "--epochs",
                    1, "--data-dir", data_dir, "--device", "cpu", "--out", tmp_path / "student")  # fmt: skip
    assert result.exit_code == 0, result.output


def test_with_a_weight_of_0_training_is_bit_identical_to_training_without_a_teacher(teacher, data_dir, tmp_path):
    plain, taught = tmp_path / "plain", tmp_path / "taught"
    train(make_config(**{**SHORT, "epochs": 2}, val=100), data_dir=data_dir, out_dir=plain, device="cpu")
    config = make_config(**{**SHORT, "epochs": 2}, val=100, teacher=str(teacher), distill_weight=0.0)
    train(config, data_dir=data_dir, out_dir=taught, device="cpu")
    a, b = (torch.load(f / "checkpoint.pt", weights_only=True) for f in (plain, taught))
    for name, tensor in a["model_state"].items():
        assert torch.equal(tensor, b["model_state"][name]), name
    assert [r["val_loss"] for r in a["metrics"]] == [r["val_loss"] for r in b["metrics"]]
    # and with a weight, the teacher changes what is learnt
    train(make_config(**SHORT, val=100, teacher=str(teacher)), data_dir=data_dir, out_dir=tmp_path / "t2", device="cpu")
    c = torch.load(tmp_path / "t2" / "checkpoint.pt", weights_only=True)
    assert not torch.equal(c["model_state"]["classify.weight"], a["model_state"]["classify.weight"])


def test_a_student_names_its_teacher_and_its_tables_say_so(teacher, data_dir, tmp_path):
    student = tmp_path / "student"
    common = ["--data-dir", data_dir, "--device", "cpu"]
    result = invoke("train", "--model", "micro", "--teacher", teacher, "--val", 100, "--epochs", 1, "--max-batches",
                    3, "--distill-weight", 0.7, "--temperature", 3, *common, "--out", student)  # fmt: skip
    assert result.exit_code == 0, result.output
    record = torch.load(student / "checkpoint.pt", weights_only=True)["distilled_from"]
    theirs = torch.load(teacher / "checkpoint.pt", weights_only=True)
    assert record["folder"] == str(teacher.resolve()) and record["config"] == theirs["config"]
    assert record["sha256"] == hashlib.sha256((teacher / "checkpoint.pt").read_bytes()).hexdigest()
    assert record["seconds"] == round(sum(r["seconds"] for r in theirs["metrics"]), 3) > 0
    config = json.loads((student / "config.json").read_text())
    assert config["distilled_from"] == record and (config["teacher"], config["distill_weight"]) == (str(teacher), 0.7)
    said = " ".join(result.stdout.split())  # the table's title may wrap
    assert f"distilled from {teacher.resolve()}" in said and f"the teacher's {record['seconds']:.1f} s included" in said
    scored = invoke("eval", student, *common)
    assert scored.exit_code == 0 and f"distilled from {teacher.resolve()}" in " ".join(scored.stdout.split())
    # the config.json trains again, its record of the teacher read as no setting
    again = invoke("train", "--config", student / "config.json", *common, "--out", tmp_path / "again")
    assert again.exit_code == 0, again.output
    sweep = invoke("sweep", "--model", "micro", "--teacher", teacher, "--val", 100, "--epochs", 1, "--max-batches", 3,
                   "--seeds", "1", *common, "--out", tmp_path / "sweep")  # fmt: skip
    assert sweep.exit_code == 0, sweep.output
    assert f"distilled from {teacher.resolve()}" in " ".join(sweep.stdout.split())
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["configurations"][0]["distilled_from"] == record


def test_a_resumed_student_refuses_a_teacher_that_changed(teacher, data_dir, tmp_path):
    import shutil

    mine = tmp_path / "teacher"
    shutil.copytree(teacher, mine)
    out = tmp_path / "student"
    config = make_config(**{**SHORT, "epochs": 2}, val=100, teacher=str(mine))
    with pytest.raises(KeyboardInterrupt):
        train(
            config,
            data_dir=data_dir,
            out_dir=out,
            device="cpu",
            on_epoch=StopAfter(1),
        )
    train(make_config(**SHORT, val=100, seed=5), data_dir=data_dir, out_dir=mine, device="cpu", overwrite=True)
    one_error_line(
        invoke("train", "--resume", out, "--data-dir", data_dir, "--device", "cpu"), 2, "it has changed since"
    )


def test_distill_settings_without_a_teacher_are_refused(data_dir, tmp_path):
    result = invoke("train", "--distill-weight", 0.9, "--data-dir", data_dir, "--out", tmp_path / "run")
    one_error_line(result, 2, "give one with --teacher RUN")
    assert not (tmp_path / "run").exists()


def test_one_study_searches_the_average_the_teachers_weight_and_the_shape(teacher, data_dir, tmp_path):
    out = tmp_path / "study"
    words = ["tune", "--model", "cnn", "--teacher", teacher, "--val", 100, "--epochs", 1, "--max-batches", 2]
    words += ["--search", "ema=0.9,0.99", "--search", "distill-weight=0.3:0.9", "--search", "arg.conv2=plain,separable"]
    result = invoke(*words, "--trials", 3, "--data-dir", data_dir, "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "tune.json").read_text())
    for t in record["trials"]:
        config = json.loads((out / t["folder"] / "config.json").read_text())
        assert config["ema"] == t["params"]["ema"] and config["distill_weight"] == t["params"]["distill_weight"]
        assert config["args"]["conv2"] == t["params"]["arg.conv2"] and config["teacher"] == str(teacher)
        assert t["distilled_from"]["folder"] == str(teacher.resolve())
    best = record["best"][0]
    assert f"--teacher {teacher}" in record["confirm"] and f"--ema {best['params']['ema']}" in record["confirm"]
    assert "distilled from" in " ".join(result.stdout.split())
