"""Training throughput of the seed's pipeline and of mnist20k's, side by side, and two ratios:

    same recipe:  the seed network and recipe through mnist20k's pipeline, against the seed's own
                  pipeline (what mnist20k's data path and step buy);
    default:      mnist20k's default recipe against the seed's pipeline (what a user gets).

(a) seed: torchvision MNIST + DataLoader, per-image PIL RandomRotation((-7, 7)), ToTensor, Normalize,
    batch 128, shuffle, the seed network with Dropout2d(0.15), SGD(lr=0.02, momentum=0.9), and the loss
    read every step for the progress bar, as the seed document trains.
(b) mnist20k, --recipe original: the same network, dropout and optimizer settings through mnist20k's own
    step: uint8 images held on the device, the batch rotated at once with affine_grid/grid_sample.
(c) mnist20k, default recipe: no dropout, Nesterov, weight decay, rotation and shifts, one-cycle.
(d) (c) with --ema 0.999: what keeping the average of the weights adds to a step (ema_step_cost: the share
    of (c)'s images/s it takes away).
(b) and (c) time what train() does every step: the step, the scheduler step and the loss added up.
Each times N optimizer steps after a warm-up (which holds the CUDA-graph capture); (c) also times
scoring the 10,000 test images. Each pipeline runs in a fresh process, and with --rounds R they take
turns R times: a machine whose speed drifts then slows all alike; medians and every round are reported.

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

from mnist20k import process
from mnist20k.config import make_config
from mnist20k.device import resolve_device
from mnist20k.evaluate import evaluate
from mnist20k.step import BatchStep
from mnist20k.train import prepare

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run as a script: its neighbour
import seed_pipeline  # noqa: E402

PIPELINES = {  # name -> recipe
    "seed": None,
    "mnist20k-seed-recipe": "original",
    "mnist20k-default": "default",
    "mnist20k-default-ema": "default",
}
SETTINGS = {"mnist20k-default-ema": {"ema": 0.999}}  # and the settings a pipeline changes in it
BATCH = 128


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def seed_step(data_dir, dev, workers: int):
    """One step of the seed's DataLoader + PIL pipeline, and its model (seed_pipeline.py)."""
    train_loader = seed_pipeline.loader(data_dir, dev, workers, train=True)
    model, optimizer = seed_pipeline.model_and_optimizer(dev)
    model.train()
    batches = iter(train_loader)

    def step():
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(train_loader)
            x, y = next(batches)
        seed_pipeline.train_step(model, optimizer, x, y, dev)

    return step, model, train_loader


def mnist20k_step(data_dir, dev, recipe: str, amp: bool, compile: bool, cuda_graph: bool, settings=None):
    """What train() does each step under `recipe` (and `settings`), on what train() sets up (prepare): the batch
    step, the scheduler step, the loss added up. Returns the step, the model, the generator and the test set."""
    config = make_config(recipe, amp=amp, compile=compile, cuda_graph=cuda_graph, **(settings or {}))
    r = prepare(config, data_dir, out_dir=None, device=str(dev), resume=None, overwrite=False)
    loss_sum = torch.zeros((), device=r.dev)
    r.network.module.train()

    def step():
        nonlocal loss_sum
        idx = torch.randint(0, r.train_images, (config.batch_size,), device=r.dev, generator=r.gen)
        loss_sum += r.batch_step(idx)
        r.scheduler.step()

    return step, r.network.module, r.gen, r.scored


def mnist20k_pipeline(data_dir, dev, which, steps, warmup, amp, compile, cuda_graph, profile=False):
    """Images/s of the mnist20k pipeline `which`, seconds to score the test set, and with `profile` the
    convolutions' share of the step (see conv_share)."""
    recipe, settings = PIPELINES[which], SETTINGS.get(which)
    step, model, _, (test_x, test_y) = mnist20k_step(data_dir, dev, recipe, amp, compile, cuda_graph, settings)
    images_per_s = _time(step, dev, steps, max(warmup, BatchStep.WARMUP_STEPS + 1))  # capture in warm-up
    share = conv_share(step, steps) if profile else {}
    evaluate(model, test_x, test_y)  # warm-up
    sync(dev)
    t0 = time.perf_counter()
    evaluate(model, test_x, test_y)
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
        "conv_only_images_per_s": round(BATCH * steps / (conv_us / 1e6), 1),
    }


def _time(step, dev, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    return steps * BATCH / (time.perf_counter() - t0)


def run_alone(which: str, args: argparse.Namespace) -> dict:
    """One pipeline in a fresh process: no allocator setting, DataLoader worker or cache carries over
    from another."""
    cmd = [sys.executable, __file__, "--only", which, "--device", args.device, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--workers", str(args.workers)]  # fmt: skip
    cmd += ["--data-dir", args.data_dir] if args.data_dir else []
    cmd += [f"--{flag}" for flag in ("amp", "compile", "profile") if getattr(args, flag)]
    cmd += [] if args.cuda_graph else ["--no-cuda-graph"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the {which} pipeline failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(which: str, args: argparse.Namespace) -> dict:
    """The numbers of one pipeline, in this process (the --only side of run_alone)."""
    dev = resolve_device(args.device)
    data_dir = args.data_dir or os.environ.get("MNIST20K_DATA_DIR")
    if which == "seed":
        step, _, loader = seed_step(data_dir, dev, args.workers)
        images_per_s = _time(step, dev, args.steps, args.warmup)
        del loader  # stops the worker processes
        return {"images_per_s": images_per_s}
    # mnist20k's own allocator setting, which its CLI applies to its process; the seed's code runs without it
    process.configure()
    ours, eval_s, share = mnist20k_pipeline(
        data_dir, dev, which, args.steps, args.warmup, args.amp, args.compile, args.cuda_graph, args.profile
    )
    return {"images_per_s": ours, "eval_seconds": eval_s, **share}


def summarize(rounds: list[dict]) -> dict:
    """Medians over the rounds, every round's images/s, the two ratios with each round's, and what --ema costs."""
    images = {name: [r[name]["images_per_s"] for r in rounds] for name in rounds[0]}
    result = {f"{name}_images_per_s": round(statistics.median(v), 1) for name, v in images.items()}
    result |= {f"{name}_rounds": [round(x, 1) for x in v] for name, v in images.items()}
    for label, name in (("same_recipe", "mnist20k-seed-recipe"), ("default", "mnist20k-default")):
        result[f"ratio_{label}"] = round(statistics.median(images[name]) / statistics.median(images["seed"]), 2)
        result[f"ratio_{label}_rounds"] = [round(o / s, 2) for o, s in zip(images[name], images["seed"], strict=True)]
    if "mnist20k-default-ema" in images:  # the share of the default step's speed the average takes
        slower = statistics.median(images["mnist20k-default-ema"]) / statistics.median(images["mnist20k-default"])
        result["ema_step_cost"] = round(1 - slower, 3)
    extra = [k for k in rounds[0]["mnist20k-default"] if k != "images_per_s"]
    result |= {k: round(statistics.median(r["mnist20k-default"][k] for r in rounds), 3) for k in extra}
    return result


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
    p.add_argument(
        "--cuda-graph", action=argparse.BooleanOptionalAction, default=True, help="capture mnist20k's step (CUDA only)"
    )
    p.add_argument("--profile", action="store_true", help="also time the convolutions' share of the step (CPU only)")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.add_argument("--only", choices=PIPELINES, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.only:
        print(json.dumps(measure(args.only, args)))
        return
    dev = resolve_device(args.device)
    if args.profile and dev.type != "cpu":
        p.error("--profile reads CPU kernel times: use it with --device cpu")
    if args.rounds < 1 or args.steps < 1:
        p.error("--rounds and --steps must be at least 1")
    rounds = [{name: run_alone(name, args) for name in PIPELINES} for _ in range(args.rounds)]
    result = {
        "device": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "steps": args.steps,
        "batch_size": BATCH,
        "rounds": args.rounds,
        **summarize(rounds),
        "amp": args.amp,
        "compile": args.compile,
        "cuda_graph": args.cuda_graph and dev.type == "cuda",
        "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>36}: {v}")


if __name__ == "__main__":
    main()
