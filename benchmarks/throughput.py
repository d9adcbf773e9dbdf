"""Training throughput of the seed's pipeline and of mnist20k's, side by side in one run.

(a) seed: torchvision MNIST + DataLoader, per-image PIL RandomRotation((-7, 7)), ToTensor, Normalize,
    batch 128, shuffle, SGD(lr=0.02, momentum=0.9), as the seed document trains.
(b) mnist20k: the same network and batch size through mnist20k.train's own step: uint8 images held
    on the device, rotation (and shift) of the whole batch with affine_grid/grid_sample.
Both time N optimizer steps after a warm-up; also timed: scoring the 10,000 test images.
Each pipeline runs in a fresh process, and with --rounds R they take turns R times: a machine whose
speed drifts then slows both alike, and the medians and their ratio are what is reported.

    python benchmarks/throughput.py --device cpu --steps 150 --rounds 3 [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from mnist20k.config import make_config
from mnist20k.data import MEAN, STD, load_split
from mnist20k.device import keep_freed_memory, resolve_device
from mnist20k.evaluate import evaluate
from mnist20k.model import build_model, model_kwargs
from mnist20k.train import BatchStep, make_optimizer


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def seed_pipeline(data_dir, dev, steps: int, warmup: int, workers: int) -> float:
    """Images/s of the seed's DataLoader + PIL pipeline."""
    from torchvision import datasets, transforms

    tf = transforms.Compose(
        [
            transforms.RandomRotation((-7.0, 7.0), fill=(0,)),
            transforms.ToTensor(),
            transforms.Normalize((MEAN,), (STD,)),
        ]
    )
    ds = datasets.MNIST(str(data_dir), train=True, download=False, transform=tf)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=128,
        shuffle=True,
        num_workers=workers,
        pin_memory=dev.type == "cuda",
    )
    model = build_model("seed").to(dev)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    model.train()
    batches = iter(loader)

    def step():
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        loss = F.nll_loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    images_per_s = _time(step, dev, steps, warmup)
    del batches  # stops the worker processes before anything else is timed
    return images_per_s


def mnist20k_pipeline(
    data_dir, dev, steps: int, warmup: int, amp: bool, compile: bool, cuda_graph: bool, profile: bool = False
):
    """Images/s of mnist20k's own training step, seconds to score the test set, and with `profile`
    the convolutions' share of the step (see conv_share)."""
    config = make_config(amp=amp, compile=compile, cuda_graph=cuda_graph)
    train_x, train_y = load_split(data_dir, train=True, device=dev)
    test_x, test_y = load_split(data_dir, train=False, device=dev)
    model = build_model(config.model, **model_kwargs(config.model, config.dropout)).to(dev)
    model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compile else model
    optimizer = make_optimizer(model, config, lr_on_device=cuda_graph)
    gen = torch.Generator(device=dev).manual_seed(0)
    batch_step = BatchStep(net, optimizer, train_x, train_y, config, gen, capture=cuda_graph)
    model.train()

    def step():
        batch_step(torch.randint(0, len(train_x), (config.batch_size,), device=dev, generator=gen))

    images_per_s = _time(step, dev, steps, warmup)
    share = conv_share(step, steps) if profile else {}
    evaluate(net, test_x, test_y)  # warm-up
    sync(dev)
    t0 = time.perf_counter()
    evaluate(net, test_x, test_y)
    sync(dev)
    return images_per_s, time.perf_counter() - t0, share


# The CPU kernels of every convolution, forward and backward (oneDNN's, through these two ops).
CONV_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward")


def conv_share(step, steps: int) -> dict:
    """How much of a CPU step the convolutions take, from torch.profiler's self times: the rest is
    BatchNorm, ReLU, pooling, augmentation, loss and SGD. images/s with the rest free is the ceiling
    that faster glue code alone could reach."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    conv_us = sum(e.self_cpu_time_total for e in events if e.key in CONV_OPS)
    total_us = sum(e.self_cpu_time_total for e in events)
    return {
        "profiled_step_ms": round(total_us / steps / 1e3, 2),
        "conv_ms_per_step": round(conv_us / steps / 1e3, 2),
        "conv_only_images_per_s": round(128 * steps / (conv_us / 1e6), 1),
    }


def _time(step, dev, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    return steps * 128 / (time.perf_counter() - t0)


def run_alone(which: str, args: argparse.Namespace) -> dict:
    """One pipeline in a fresh process: no allocator setting, DataLoader worker or cache carries over
    from the other one."""
    cmd = [sys.executable, __file__, "--only", which, "--device", args.device, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--workers", str(args.workers)]  # fmt: skip
    cmd += ["--data-dir", args.data_dir] if args.data_dir else []
    cmd += [
        f"--{flag.replace('_', '-')}" for flag in ("amp", "compile", "cuda_graph", "profile") if getattr(args, flag)
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the {which} pipeline failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(which: str, args: argparse.Namespace) -> dict:
    """The numbers of one pipeline, in this process (the --only side of run_alone)."""
    dev = resolve_device(args.device)
    data_dir = args.data_dir or os.environ.get("MNIST20K_DATA_DIR")
    if which == "seed":
        return {"images_per_s": seed_pipeline(data_dir, dev, args.steps, args.warmup, args.workers)}
    if dev.type == "cpu":
        keep_freed_memory()  # mnist20k's own setting; the seed's code runs without it
    ours, eval_s, share = mnist20k_pipeline(
        data_dir, dev, args.steps, args.warmup, args.amp, args.compile, args.cuda_graph, args.profile
    )
    return {"images_per_s": ours, "eval_seconds": eval_s, **share}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--steps", type=int, default=100, help="timed optimizer steps per pipeline and round")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rounds", type=int, default=1, help="times each pipeline runs, taking turns")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for the seed pipeline")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--cuda-graph", action="store_true", help="capture mnist20k's step in a CUDA graph (CUDA only)")
    p.add_argument("--profile", action="store_true", help="also time the convolutions' share of the step (CPU only)")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.add_argument("--only", choices=("seed", "mnist20k"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.only:
        print(json.dumps(measure(args.only, args)))
        return
    dev = resolve_device(args.device)
    if args.cuda_graph and dev.type != "cuda":
        p.error("--cuda-graph needs a CUDA device")
    if args.profile and dev.type != "cpu":
        p.error("--profile reads CPU kernel times: use it with --device cpu")
    if args.rounds < 1 or args.steps < 1:
        p.error("--rounds and --steps must be at least 1")
    rounds = [(run_alone("seed", args), run_alone("mnist20k", args)) for _ in range(args.rounds)]
    seed = statistics.median(s["images_per_s"] for s, _ in rounds)
    ours = statistics.median(o["images_per_s"] for _, o in rounds)
    medians = {k: round(statistics.median(o[k] for _, o in rounds), 3) for k in rounds[0][1] if k != "images_per_s"}
    result = {
        "device": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "steps": args.steps,
        "batch_size": 128,
        "rounds": args.rounds,
        "seed_images_per_s": round(seed, 1),
        "mnist20k_images_per_s": round(ours, 1),
        "ratio": round(ours / seed, 2),
        "round_ratios": [round(o["images_per_s"] / s["images_per_s"], 2) for s, o in rounds],
        **medians,
        "amp": args.amp,
        "compile": args.compile,
        "cuda_graph": args.cuda_graph,
        "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>22}: {v}")


if __name__ == "__main__":
    main()
