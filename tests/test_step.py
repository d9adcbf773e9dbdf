"""The training step's CUDA-graph path: its buffers, its optimizer form and its checkpoints on the CPU;
capture and replay themselves where a CUDA device is present."""

from __future__ import annotations

import copy
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from mnist20k.config import make_config
from mnist20k.data import MEAN, STD, augment
from mnist20k.nets import Network, build_model
from mnist20k.step import BatchStep, make_optimizer, make_scheduler, train_step
from mnist20k.train import _checkpoint_state, _restore, prepare, run_epochs, train

CONFIG = make_config(batch_size=16, dropout=0.1, epochs=2)


def setup(dev: str = "cpu", lr_on_device: bool = False, steps: int = 12, config=CONFIG):
    torch.manual_seed(0)
    model = build_model("base", dropout=config.dropout).to(dev, memory_format=torch.channels_last)
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


def test_batch_step_without_capture_is_train_step_on_the_indexed_images():
    """The same operations in the same order on the same images: equal to the last bit, on any CPU."""
    images, labels, idxs = batches()
    model_a, opt_a, _, gen_a = setup()  # seeds the global generator too, which draws dropout masks
    losses_a = [train_step(model_a, opt_a, images[idx], labels[idx], CONFIG, gen_a) for idx in idxs]
    model_b, opt_b, _, gen_b = setup()
    step = BatchStep(model_b, opt_b, images, labels, CONFIG, gen_b, capture=False)
    losses_b = [step(idx) for idx in idxs]
    assert torch.equal(torch.stack(losses_a), torch.stack(losses_b))
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(gen_a.get_state(), gen_b.get_state())  # the same draws of augmentation


def test_a_training_step_is_sgd_on_the_nll_of_the_augmented_normalized_batch():
    """train_step in float32 against the step written plainly in float64, from the same weights and
    the same augmentation draws. The two differ only by float32's rounding: ~1e-7 of each value, and
    sums over a batch's thousands of terms lose a few digits more, so a gradient is held to 1e-4 of its
    largest entry. A wrong step (no augmentation, no normalization, the wrong images) is off by far more."""
    config = replace(CONFIG, dropout=0.0)  # dropout masks are drawn per dtype; the step is what is tested
    images, labels, idxs = batches()
    idx = idxs[0]
    model, opt, _, gen = setup(config=config)
    reference = copy.deepcopy(model).double()
    ref_opt = torch.optim.SGD(
        reference.parameters(),
        lr=opt.param_groups[0]["lr"],  # the schedule's first lr
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )
    ref_gen = torch.Generator().set_state(gen.get_state())

    # augment draws its angles and shifts in float32 whatever the images' dtype: the same draws here
    x = (augment(images[idx].double() / 255, config.rotate, config.translate, ref_gen) - MEAN) / STD
    ref_loss = F.nll_loss(reference(x), labels[idx])
    ref_opt.zero_grad()
    ref_loss.backward()
    ref_opt.step()

    loss = train_step(model, opt, images[idx], labels[idx], config, gen)
    assert float(loss) == pytest.approx(ref_loss.item(), rel=1e-5)
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        scale = q.grad.abs().max()
        torch.testing.assert_close(p.grad.double(), q.grad, rtol=0, atol=1e-4 * scale, msg=name)
        torch.testing.assert_close(p.double(), q, rtol=1e-5, atol=1e-6, msg=name)
    assert torch.equal(gen.get_state(), ref_gen.get_state())


def test_device_lr_follows_the_schedule_and_updates_as_the_float_lr_does():
    """The two optimizer forms on the same gradients, in float64. The lr tensor is float32 (it is what
    the fused kernel reads on a GPU), so each update may differ by float32's rounding of the lr, ~6e-8 of
    itself: the weights are held to 1e-6 of how far they moved."""
    g = torch.Generator().manual_seed(3)
    grads = [
        [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in setup()[0].parameters()] for _ in range(12)
    ]
    start = {name: p.double() for name, p in setup()[0].state_dict().items()}
    runs = []
    for lr_on_device in (False, True):
        model, _, _, _ = setup()
        model.double()
        opt = make_optimizer(model, CONFIG, lr_on_device=lr_on_device)
        sched = make_scheduler(opt, CONFIG, total_steps=12)
        lr = opt.param_groups[0]["lr"]
        assert isinstance(lr, torch.Tensor) is lr_on_device
        if lr_on_device:
            assert opt.param_groups[0]["fused"] is True  # the fused kernel reads the lr tensor on the device
        lrs = []
        for step_grads in grads:
            for p, grad in zip(model.parameters(), step_grads, strict=True):
                p.grad = torch.empty_like(p).copy_(grad)  # in the weight's layout, as autograd makes it
            opt.step()
            sched.step()
            if lr_on_device:
                assert opt.param_groups[0]["lr"] is lr  # filled in place: a captured graph keeps reading it
            lrs.append(float(opt.param_groups[0]["lr"]))
        runs.append((model.state_dict(), lrs))
    (plain, plain_lrs), (device, device_lrs) = runs
    assert device_lrs == pytest.approx(plain_lrs, rel=1e-6)
    assert len(set(plain_lrs)) > 5  # the schedule moved
    for name, a in plain.items():
        moved = (a - start[name]).abs().max()
        torch.testing.assert_close(a, device[name], rtol=0, atol=1e-6 * moved, msg=name)


@pytest.mark.parametrize("into_device_lr", [False, True])
def test_checkpoint_holds_float_lr_and_resumes_into_either_optimizer(into_device_lr, tmp_path):
    images, labels, idxs = batches()
    model, opt, sched, gen = setup(lr_on_device=True)
    for idx in idxs[:5]:
        train_step(model, opt, images[idx], labels[idx], CONFIG, gen)
        sched.step()
    run = SimpleNamespace(
        config=CONFIG, dev=torch.device("cpu"), model=model, optimizer=opt, scheduler=sched, gen=gen,
        network=Network(model, "base", {}), scored_network=model, average=None, teacher=None,
    )  # fmt: skip
    state = _checkpoint_state(run, [])
    torch.save(state, tmp_path / "c.pt")
    ckpt = torch.load(tmp_path / "c.pt", weights_only=True)
    assert isinstance(ckpt["optimizer_state"]["param_groups"][0]["lr"], float)
    assert all(isinstance(v, float) for v in ckpt["scheduler_state"]["_last_lr"])

    _, opt2, sched2, gen2 = setup(lr_on_device=into_device_lr)
    lr_before = opt2.param_groups[0]["lr"]
    _restore(ckpt, None, opt2, sched2, gen2, torch.device("cpu"))
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


def test_cuda_graph_is_on_by_default_and_never_captures_off_cuda(data_dir):
    """--cuda-graph is a CUDA setting: on the CPU prepare() makes a plain step with a float lr."""
    assert make_config().cuda_graph is True
    run = prepare(make_config(cuda_graph=True, epochs=1, max_batches=2), data_dir, None, "cpu", None, False)
    assert run.batch_step.capture is False
    assert isinstance(run.optimizer.param_groups[0]["lr"], float)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("settings, captured", [({}, True), ({"cuda_graph": False}, False), ({"compile": True}, False)])
def test_cuda_graph_setting_reaches_the_step_that_prepare_makes(settings, captured, data_dir):
    """--cuda-graph on CUDA: the step is captured after its warm-up, with the lr as a device tensor;
    --no-cuda-graph, or --compile (which makes graphs of its own), leaves it eager."""
    config = make_config(epochs=1, max_batches=BatchStep.WARMUP_STEPS + 2, batch_size=16, **settings)
    run = prepare(config, data_dir, None, "cuda", None, False)
    assert run.batch_step.capture is captured
    assert isinstance(run.optimizer.param_groups[0]["lr"], torch.Tensor) is captured
    run_epochs(run)
    assert (run.batch_step.graph is not None) is captured


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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_weights_average_and_a_teacher_run_inside_the_captured_step(monkeypatch):
    """--ema and --teacher on CUDA: the average is updated and the teacher scores the batch by the replays
    themselves (nothing of theirs is read back on the host), as the eager steps do."""
    from mnist20k.ema import WeightAverage, calibration_images

    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    images, labels, idxs = batches("cuda")
    config = replace(CONFIG, ema=0.9, teacher="in memory", distill_weight=0.5)
    torch.manual_seed(3)
    teacher = build_model("micro").to("cuda", memory_format=torch.channels_last).eval().requires_grad_(False)
    results = []
    for capture in (False, True):
        model, opt, sched, gen = setup("cuda", lr_on_device=True, config=config)
        average = WeightAverage(model, config.ema, calibration_images(images, config.rotate, config.translate, 1))
        step = BatchStep(model, opt, images, labels, config, gen, capture, average, teacher)
        for idx in idxs:
            step(idx)
            sched.step()
        assert (step.graph is not None) is capture and int(average.averaged.n_averaged) == len(idxs)
        results.append(average.module.state_dict())
    eager, graphed = results
    first = next(iter(setup("cuda", config=config)[0].state_dict().items()))
    assert not torch.allclose(graphed[first[0]], first[1])  # the replays moved the average
    for name, a in eager.items():
        assert torch.allclose(a.float(), graphed[name].float(), rtol=1e-3, atol=1e-4), name
