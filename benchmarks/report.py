"""Markdown tables for the README from the sweep results in benchmarks/results/.

python benchmarks/report.py benchmarks/results/seed-default.json benchmarks/results/tiny-default.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from mnist20k.results import loop_seconds, lowest_of_last, time_to_target


def table(path: Path) -> str:
    d = json.loads(path.read_text())
    c = d["config"]
    lines = [
        f"**{path.name}**: model `{d['model']}`, {d['epochs']} epochs, recipe `{d['recipe']}` "
        f"(lr {c['lr']}, {c['schedule']}, dropout {c['dropout']}, rotate {c['rotate']}, translate {c['translate']}), "
        f"{d['device']}, torch {d['torch']}",
        "",
        "| seed | final-epoch accuracy | lowest of the last 5 epochs | time to 99.4% (epoch) | training loop |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    finals = []
    for run in d["runs"]:
        epochs = run["epochs"]
        finals.append(epochs[-1]["test_accuracy"])
        reached = time_to_target(epochs)
        when = f"{reached.seconds:.1f} s ({reached.epoch})" if reached else "never"
        lines.append(
            f"| {run['seed']} | {finals[-1]:.2f}% | {lowest_of_last(epochs, 5):.2f}% | {when} "
            f"| {loop_seconds(epochs):.1f} s |"
        )
    std = statistics.stdev(finals) if len(finals) > 1 else 0.0
    lines.append(f"| mean ± std | **{statistics.mean(finals):.2f}% ± {std:.2f}** | | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(table(Path(p)) for p in sys.argv[1:]))
