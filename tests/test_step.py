"""The training step's CUDA-graph path: its buffers, its optimizer form and its checkpoints on the CPU;
capture and replay themselves where a CUDA device is present."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from mnist20k.cli import app
from mnist20k.config import make_config
from mnist20k.data import MEAN, STD, augment
from mnist20k.model import build_model
from mnist20k.train import (
    BatchStep,
    _checkpoint_state,
    _restore,
    make_optimizer,
    make_scheduler,
    train,
    train_step,
)

CONFIG = make_config(batch_size=16, dropout=0.1, epochs=2)


def setup(dev: str = "cpu", lr_on_device: bool = False, steps: int = 12, config=CONFIG):
    torch.manual_seed(0)
    model = build_model("seed", dropout=config.dropout).to(dev, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config, lr_on_device=lr_on_device)
    scheduler = make_scheduler(optimizer, config, total_steps=steps)
    gen = torch.Generator(device=dev).manual_seed(1)
    return model, optimizer, scheduler, gen


def batches(dev: str = "cpu", n: int = 200):
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g).to(dev)
    labels = torch.randint(0, 10, (n,), generator=g).to(dev)
    order = torch.randperm(n, generator=g).to(dev)
    # full batches of 16, then a smaller one, as an epoch ends
    return images, labels, [order[i : i + 16] for i in range(0, 16 * 11, 16)] + [order[176:186]]


def reference_step(model, optimizer, images, labels, gen):
    """What one training step must do, written plainly: scale, augment, normalize, NLL, SGD."""
    x = (augment(images.float() / 255, CONFIG.rotate, CONFIG.translate, gen) - MEAN) / STD
    loss = F.nll_loss(model(x), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


def test_batch_step_without_capture_is_a_plain_training_step_on_the_indexed_images():
    images, labels, idxs = batches()
    model_a, opt_a, _, gen_a = setup()  # seeds the global generator too, which draws dropout masks
    losses_a = [reference_step(model_a, opt_a, images[idx], labels[idx], gen_a) for idx in idxs]
    model_b, opt_b, _, gen_b = setup()
    step = BatchStep(model_b, opt_b, images, labels, CONFIG, gen_b, capture=False)
    losses_b = [step(idx) for idx in idxs]
    torch.testing.assert_close(torch.stack(losses_a), torch.stack(losses_b), rtol=1e-4, atol=1e-5)
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    assert torch.equal(gen_a.get_state(), gen_b.get_state())  # the same draws of augmentation


def test_device_lr_follows_the_schedule_and_trains_as_the_float_lr_does():
    images, labels, idxs = batches()
    runs = []
    for lr_on_device in (False, True):
        model, opt, sched, gen = setup(lr_on_device=lr_on_device)
        lr = opt.param_groups[0]["lr"]
        assert isinstance(lr, torch.Tensor) is lr_on_device
        if lr_on_device:
            assert opt.param_groups[0]["fused"] is True  # the fused kernel reads the lr tensor on the device
        lrs = []
        for idx in idxs:
            train_step(model, opt, images[idx], labels[idx], CONFIG, gen)
            sched.step()
            if lr_on_device:
                assert opt.param_groups[0]["lr"] is lr  # filled in place: a captured graph keeps reading it
            lrs.append(float(opt.param_groups[0]["lr"]))
        runs.append((model.state_dict(), lrs))
    (plain, plain_lrs), (device, device_lrs) = runs
    assert device_lrs == pytest.approx(plain_lrs, rel=1e-6)
    for name, a in plain.items():
        assert torch.allclose(a.float(), device[name].float(), rtol=1e-4, atol=1e-5), name


@pytest.mark.parametrize("into_device_lr", [False, True])
def test_checkpoint_holds_float_lr_and_resumes_into_either_optimizer(into_device_lr, tmp_path):
    images, labels, idxs = batches()
    model, opt, sched, gen = setup(lr_on_device=True)
    for idx in idxs[:5]:
        train_step(model, opt, images[idx], labels[idx], CONFIG, gen)
        sched.step()
    run = SimpleNamespace(
        config=CONFIG, dev=torch.device("cpu"), model=model, optimizer=opt, scheduler=sched, gen=gen, source=None
    )
    state = _checkpoint_state(run, [])
    torch.save(state, tmp_path / "c.pt")
    ckpt = torch.load(tmp_path / "c.pt", weights_only=True)
    assert isinstance(ckpt["optimizer_state"]["param_groups"][0]["lr"], float)
    assert all(isinstance(v, float) for v in ckpt["scheduler_state"]["_last_lr"])

    _, opt2, sched2, gen2 = setup(lr_on_device=into_device_lr)
    lr_before = opt2.param_groups[0]["lr"]
    _restore(ckpt, opt2, sched2, gen2, torch.device("cpu"))
    lr_after = opt2.param_groups[0]["lr"]
    assert float(lr_after) == pytest.approx(float(opt.param_groups[0]["lr"]))
    if into_device_lr:
        assert opt2.param_groups[0]["fused"] is True
    if into_device_lr:
        assert lr_after is lr_before
    else:
        assert isinstance(lr_after, float)
    sched.step()
    sched2.step()
    assert float(opt2.param_groups[0]["lr"]) == pytest.approx(float(opt.param_groups[0]["lr"]))


def test_cuda_graph_is_a_cuda_setting_that_changes_nothing_elsewhere(data_dir, tmp_path):
    """Capture is on by default and only on CUDA: a CPU run with it gives the numbers of one without."""
    runs = {}
    for flag in ("--cuda-graph", "--no-cuda-graph"):
        out = tmp_path / flag
        args = ["train", flag, "--device", "cpu", "--epochs", "2", "--max-batches", "3", "--batch-size", "16"]
        result = CliRunner().invoke(app, [*args, "--data-dir", str(data_dir), "--out", str(out)])
        assert result.exit_code == 0, result.output
        runs[flag] = [
            {k: v for k, v in r.items() if k != "seconds"} for r in map(json.loads, open(out / "metrics.jsonl"))
        ]
    assert runs["--cuda-graph"] == runs["--no-cuda-graph"]
    assert make_config().cuda_graph is True


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_captured_steps_train_as_eager_steps_do(dropout, monkeypatch):
    """Warm-up, capture and replays: the same weights (to float tolerance) as eager steps, the same
    augmentation stream (the generator advances on each replay) and the same lr schedule."""
    # cuDNN's fastest weight-gradient kernels sum in a varying order: two eager runs drift apart too
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    images, labels, idxs = batches("cuda")
    config = replace(CONFIG, dropout=dropout)
    results = []
    for capture in (False, True):
        model, opt, sched, gen = setup("cuda", lr_on_device=True, config=config)
        step = BatchStep(model, opt, images, labels, config, gen, capture=capture)
        losses = []
        for idx in idxs:
            losses.append(step(idx).clone())
            sched.step()
        assert (step.graph is not None) is capture
        results.append((model.state_dict(), torch.stack(losses), gen.get_state()))
    (eager, eager_losses, eager_gen), (graphed, graphed_losses, graphed_gen) = results
    assert torch.allclose(eager_losses, graphed_losses, rtol=1e-3, atol=1e-4)
    assert torch.equal(eager_gen, graphed_gen)
    for name, a in eager.items():
        assert torch.allclose(a.float(), graphed[name].float(), rtol=1e-3, atol=1e-4), name


@pytest.mark.parametrize("total_steps", range(1, 12))
def test_one_cycle_schedule_runs_for_any_number_of_steps(total_steps):
    """Smoke-test runs (--epochs 1 --max-batches 5) are short enough to break OneCycleLR's arithmetic."""
    _, opt, sched, _ = setup(steps=total_steps)
    lrs = []  # the lr each optimizer step runs with
    for _ in range(total_steps):
        lrs.append(float(opt.param_groups[0]["lr"]))
        opt.step()
        sched.step()
    assert all(0 < lr <= CONFIG.lr * (1 + 1e-6) for lr in lrs)
    if total_steps >= 3:
        assert max(lrs) > 0.9 * CONFIG.lr and lrs[-1] < CONFIG.lr / 100  # the peak may fall between steps


def test_an_epochs_logged_lr_is_the_one_its_last_step_used(data_dir):
    config = make_config(epochs=2, max_batches=3, batch_size=16)
    metrics = train(config, data_dir=data_dir, device="cpu")
    _, opt, sched, _ = setup(steps=6, config=config)
    used = []
    for _ in range(6):
        used.append(float(opt.param_groups[0]["lr"]))
        opt.step()
        sched.step()
    assert [r["lr"] for r in metrics] == pytest.approx([used[2], used[5]])
