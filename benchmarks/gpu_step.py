"""Where a GPU training run's time goes: the loop seconds of each epoch of one run, and the kernels of
the captured step as torch.profiler sees them.

    python benchmarks/gpu_step.py --recipe fast [--cudnn-benchmark] [--profile-steps 50]

The first epoch carries the one-off costs (CUDA and cuDNN start-up, warm-up, capture); the later ones
are the steady state. With --profile-steps, the kernels of that many replayed steps, summed by name.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from mnist20k.config import make_config
from mnist20k.data import load_split
from mnist20k.nets import build
from mnist20k.step import BatchStep, make_optimizer, make_scheduler, steps_per_epoch
from mnist20k.train import train


def profile_steps(config, data_dir: str | None, n: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    dev = torch.device("cuda")
    images, labels = load_split(data_dir, train=True, device=dev)
    model = build(config.model, config.args, dropout=config.dropout).module
    model = model.to(dev, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config, lr_on_device=True)
    scheduler = make_scheduler(optimizer, config, config.epochs * steps_per_epoch(len(images), config))
    gen = torch.Generator(device=dev).manual_seed(1)
    step = BatchStep(model, optimizer, images, labels, config, gen, capture=config.cuda_graph)
    order = torch.randperm(len(images), device=dev, generator=gen)
    batches = [order[i * config.batch_size : (i + 1) * config.batch_size] for i in range(n + 10)]
    for idx in batches[:10]:  # warm-up and capture
        step(idx)
        scheduler.step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for idx in batches[10:]:
            step(idx)
            scheduler.step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels = sum(e.count for e in events)
    gpu_us = sum(e.self_device_time_total for e in events)
    print(f"profile: {n} steps, {kernels / n:.0f} GPU ops a step, {gpu_us / n / 1000:.3f} ms of GPU time a step")
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=60))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="default")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON", help="config overrides, values as JSON")
    p.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN time its kernels and pick the fastest")
    p.add_argument("--profile-steps", type=int, default=0, help="profile this many steps instead of a run")
    p.add_argument("--data-dir", default=os.environ.get("MNIST20K_DATA_DIR"))
    args = p.parse_args()
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    sets = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    config = make_config(args.recipe, **sets)
    if args.profile_steps:
        profile_steps(config, args.data_dir, args.profile_steps)
        return
    metrics = train(config, data_dir=args.data_dir, device="cuda")
    seconds = [r["seconds"] for r in metrics]
    print(
        json.dumps(
            {
                "recipe": args.recipe,
                "set": sets,
                "cudnn_benchmark": args.cudnn_benchmark,
                "loop_seconds": round(sum(seconds), 3),
                "first_epoch": round(seconds[0], 3),
                "later_epochs_mean": round(sum(seconds[1:]) / max(1, len(seconds) - 1), 4),
                "final_accuracy": metrics[-1]["test_accuracy"],
            }
        )
    )


if __name__ == "__main__":
    main()
