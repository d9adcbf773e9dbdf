"""Train one recipe on several seeds through mnist20k.train.train (the code path of `mnist20k train`)
and write every epoch's test accuracy and loss per seed to one JSON file.

    python benchmarks/sweep.py --model seed --epochs 20 --seeds 1 2 3 4 5 --device cuda \\
        --out benchmarks/results/seed-default.json [--recipe seed] [--set lr=0.05 dropout=0]

The reported accuracy of a run is its final epoch's; "min_last5" is the lowest of its last five.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, fields
from pathlib import Path

import torch

from mnist20k import __version__
from mnist20k.config import TrainConfig, make_config
from mnist20k.results import loop_seconds, lowest_of_last, time_to_target
from mnist20k.train import train


def parse_sets(pairs: list[str]) -> dict:
    """["lr=0.05", "nesterov=false"] -> {"lr": 0.05, "nesterov": False}, typed by TrainConfig."""
    types = {f.name: f.type for f in fields(TrainConfig)}
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        kind = types[key]
        if kind in ("bool", bool):
            out[key] = value.lower() in ("1", "true", "yes")
        else:
            out[key] = {"int": int, "float": float, "str": str}.get(kind, str)(value)
    return out


def summarize(runs: list[dict]) -> dict:
    finals = [r["epochs"][-1]["test_accuracy"] for r in runs]
    reached = {str(r["seed"]): time_to_target(r["epochs"]) for r in runs}
    return {
        "final_accuracy": {str(r["seed"]): r["epochs"][-1]["test_accuracy"] for r in runs},
        "min_last5": {str(r["seed"]): lowest_of_last(r["epochs"], 5) for r in runs},
        "min_last3": {str(r["seed"]): lowest_of_last(r["epochs"], 3) for r in runs},
        "loop_seconds": {str(r["seed"]): loop_seconds(r["epochs"]) for r in runs},
        # the first epoch at >= 99.4% and the loop seconds until its score was known; null if never
        "time_to_target": {seed: (asdict(x) if x else None) for seed, x in reached.items()},
        "mean_final": statistics.mean(finals),
        "std_final": statistics.stdev(finals) if len(finals) > 1 else 0.0,
        "min_final": min(finals),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="seed")
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--recipe", default="default")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override recipe settings")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=os.environ.get("MNIST20K_DATA_DIR"))
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--jobs", type=int, default=1, help="seeds trained at once, each in its own process")
    args = p.parse_args()

    configs = [
        make_config(args.recipe, **{"model": args.model, "epochs": args.epochs, **parse_sets(args.set), "seed": seed})
        for seed in args.seeds
    ]
    runs = []
    # Seeds run in parallel processes when --jobs > 1: on a GPU each run is bound by kernel launches
    # from its one Python thread, so several share the card well.
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_seed, c, args.data_dir, args.device) for c in configs]
        for future in as_completed(futures):
            run = future.result()
            runs = sorted([*runs, run], key=lambda r: r["seed"])
            print(f"{args.out.name} seed {run['seed']}: final {run['epochs'][-1]['test_accuracy']:.2f}%", flush=True)
            write(args, configs[0], runs)  # after every seed, so an interrupted sweep keeps what it finished
    s = summarize(runs)
    print(f"{args.out.name}: mean {s['mean_final']:.3f} std {s['std_final']:.3f} min {s['min_final']:.2f}", flush=True)


def run_seed(config: TrainConfig, data_dir: str | None, device: str) -> dict:
    t0 = time.perf_counter()
    metrics = train(config, data_dir=data_dir, device=device)
    return {"seed": config.seed, "seconds": time.perf_counter() - t0, "epochs": metrics}


def write(args: argparse.Namespace, config: TrainConfig, runs: list[dict]) -> None:
    on_cuda = torch.cuda.is_available() and args.device in ("auto", "cuda")
    result = {
        "model": args.model,
        "epochs": config.epochs,
        "recipe": args.recipe,
        "overrides": args.set,
        "config": asdict(config) | {"seed": None},
        "device": torch.cuda.get_device_name() if on_cuda else f"cpu ({platform.machine()})",
        "torch": torch.__version__,
        "mnist20k": __version__,
        "summary": summarize(runs),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
