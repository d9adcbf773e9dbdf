"""--ema: the saved network is the average of the weights every step left, with BatchNorm's statistics measured
for those weights; each epoch is scored with it, eval scores it, and a run resumed with it on ends bit for bit as
one never stopped."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import StopAfter, one_error_line
from torch.optim.optimizer import register_optimizer_step_post_hook
from typer.testing import CliRunner

from mnist20k.cli import app
from mnist20k.config import make_config
from mnist20k.data import augment, load_split, normalize
from mnist20k.nets import build_model
from mnist20k.train import prepare, run_epochs, train

runner = CliRunner()
DECAY = 0.8  # far from 1, so that the average of a few steps is far from the last weights
SHORT = {"model": "micro", "epochs": 2, "max_batches": 3, "batch_size": 64, "ema": DECAY}


def test_the_saved_weights_are_an_average_of_every_steps_weights(data_dir, tmp_path):
    out = tmp_path / "run"
    run = prepare(make_config(**SHORT), data_dir, out, "cpu", None, False)
    model = run.network.module
    # computed here, apart from the run: the network as built, then after each step a share of the new weights
    average = {k: v.detach().clone() for k, v in model.named_parameters()}
    steps = []

    def after_step(optimizer, args, kwargs):
        steps.append(1)
        for k, v in model.named_parameters():
            average[k] = DECAY * average[k] + (1 - DECAY) * v.detach()

    hook = register_optimizer_step_post_hook(after_step)
    try:
        metrics = run_epochs(run)
    finally:
        hook.remove()
    assert len(steps) == 6
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    for k, v in average.items():
        torch.testing.assert_close(saved["model_state"][k], v, rtol=1e-5, atol=1e-6, msg=k)
        assert torch.equal(saved["trained_state"][k], model.state_dict()[k]), k  # and the weights trained on
    assert not torch.equal(saved["model_state"]["classify.weight"], saved["trained_state"]["classify.weight"])
    assert json.loads((out / "config.json").read_text())["ema"] == DECAY
    # the epoch was scored with the average, and eval scores the same network
    score = runner.invoke(app, ["eval", str(out), "--data-dir", str(data_dir), "--device", "cpu", "--json"])
    assert score.exit_code == 0, score.output
    assert json.loads(score.stdout)["correct"] == metrics[-1]["test_correct"]


def test_the_averages_batchnorm_statistics_are_measured_for_its_own_weights(data_dir, tmp_path):
    """Not averaged: the statistics of weights that moved do not describe their average (ema.py). The first
    BatchNorm's running mean is the mean of what reaches it from the averaged weights, on the first 2,048
    training images augmented as training augments them."""
    out = tmp_path / "run"
    config = make_config(**SHORT)
    train(config, data_dir=data_dir, out_dir=out, device="cpu")
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    network = build_model("micro").eval()
    network.load_state_dict(saved["model_state"])
    images = load_split(data_dir, train=True)[0][:2048].float() / 255
    images = normalize(augment(images, config.rotate, config.translate, torch.Generator().manual_seed(config.seed)))
    reaching = []
    hook = network.block1[2].register_forward_hook(lambda module, args, output: reaching.append(args[0]))
    with torch.no_grad():
        network(images)
    hook.remove()
    (x,) = reaching
    torch.testing.assert_close(network.block1[2].running_mean, x.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(network.block1[2].running_var, x.var((0, 2, 3)), rtol=1e-2, atol=1e-5)
    # and not the average of the statistics the trained weights kept
    trained = saved["trained_state"]["block1.2.running_mean"]
    assert not torch.allclose(network.block1[2].running_mean, trained, rtol=1e-2)


def test_a_run_resumed_with_ema_on_ends_bit_for_bit_as_one_never_stopped(data_dir, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    train(make_config(**SHORT), data_dir=data_dir, out_dir=whole, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        train(make_config(**SHORT), data_dir=data_dir, out_dir=cut, device="cpu", on_epoch=StopAfter(1))
    train(data_dir=data_dir, out_dir=cut, device="cpu", resume=cut)
    a, b = (torch.load(f / "checkpoint.pt", weights_only=True) for f in (whole, cut))
    for key in ("model_state", "trained_state"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), (key, name)
    assert [r["test_loss"] for r in a["metrics"]] == [r["test_loss"] for r in b["metrics"]]


def test_without_ema_the_checkpoint_holds_the_trained_weights_alone(data_dir, tmp_path):
    out = tmp_path / "run"
    train(make_config(**{**SHORT, "ema": 0.0, "epochs": 1}), data_dir=data_dir, out_dir=out, device="cpu")
    assert "trained_state" not in torch.load(out / "checkpoint.pt", weights_only=True)


@pytest.mark.parametrize("decay", ["1", "-0.1", "1.5"])
def test_a_decay_outside_0_to_1_is_refused(decay, data_dir, tmp_path):
    argv = ["train", "--ema", decay, "--data-dir", str(data_dir), "--out", str(tmp_path / "run")]
    one_error_line(runner.invoke(app, argv), 2, "--ema is the average's decay")
    assert not (tmp_path / "run").exists()
