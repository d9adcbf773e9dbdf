"""Whole-run time: the seed document's 20-epoch pipeline (seed_pipeline.py) against `mnist20k train`, each a
fresh process started and waited for, back to back on the same machine; wall-clock from start to exit, so
imports, data loading, every epoch's test pass and saving all count. The ratio is the seed's seconds over
mnist20k's.

    python benchmarks/whole_run.py --device cpu --recipe fast [--json]

Other `mnist20k train` options follow `--`: `python benchmarks/whole_run.py -- --epochs 6`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def timed(cmd: list[str]) -> tuple[float, str]:
    """Seconds from start to exit of a command, and its stdout; the benchmark stops if it fails."""
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr.strip()}")
    return seconds, done.stdout


def run_seed(args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(HERE / "seed_pipeline.py"), "--epochs", str(args.seed_epochs), "--device", args.device,
           "--workers", str(args.workers)]  # fmt: skip
    cmd += ["--data-dir", args.data_dir] if args.data_dir else []
    seconds, out = timed(cmd)
    return {"seconds": seconds, **json.loads(out.strip().splitlines()[-1])}


def run_mnist20k(args: argparse.Namespace, out_dir: Path) -> dict:
    cmd = [sys.executable, "-m", "mnist20k", "train", "--recipe", args.recipe, "--device", args.device,
           "--out", str(out_dir), *args.train_options]  # fmt: skip
    cmd += ["--data-dir", args.data_dir] if args.data_dir else []
    seconds, _ = timed(cmd)
    last = json.loads((out_dir / "metrics.jsonl").read_text().splitlines()[-1])
    config = json.loads((out_dir / "config.json").read_text())
    return {"seconds": seconds, "epochs": last["epoch"], "test_correct": last["test_correct"],
            "test_accuracy": last["test_accuracy"], "config": config}  # fmt: skip


def cpu_name() -> str:
    """The CPU's model name where Linux tells it (another model gives other seconds), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", default=None, help="default: $MNIST20K_DATA_DIR, as for mnist20k")
    p.add_argument("--recipe", default="fast")
    p.add_argument("--seed-epochs", type=int, default=20, help="the seed document trains 20")
    p.add_argument("--workers", type=int, default=2, help="the seed pipeline's DataLoader workers, as its notebook's")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("train_options", nargs="*", help="more `mnist20k train` options, after --")
    args = p.parse_args()
    args.data_dir = args.data_dir or os.environ.get("MNIST20K_DATA_DIR")
    seed = run_seed(args)
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_mnist20k(args, Path(tmp) / "run")
    import torch  # only for the record: the runs above are their own processes

    result = {
        "machine": f"{cpu_name()}, {os.cpu_count()} CPUs",
        "device": args.device,
        "torch": torch.__version__,
        "seed_pipeline": seed,
        "mnist20k": {"recipe": args.recipe, "options": args.train_options, **ours},
        "ratio": round(seed["seconds"] / ours["seconds"], 2),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"seed pipeline: {seed['epochs']} epochs, {seed['seconds']:.1f} s, final {seed['test_accuracy']:.2f}%")
    print(f"mnist20k --recipe {args.recipe}: {ours['epochs']} epochs, {ours['seconds']:.1f} s, "
          f"final {ours['test_accuracy']:.2f}%")  # fmt: skip
    print(f"ratio: {result['ratio']}x")


if __name__ == "__main__":
    main()
