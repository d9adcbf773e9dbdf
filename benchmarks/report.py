"""Markdown tables for the README from the sweep results in benchmarks/results/.

python benchmarks/report.py benchmarks/results/seed-default.json benchmarks/results/tiny-default.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def table(path: Path) -> str:
    d = json.loads(path.read_text())
    c = d["config"]
    lines = [
        f"**{path.name}**: model `{d['model']}`, {d['epochs']} epochs, recipe `{d['recipe']}` "
        f"(lr {c['lr']}, {c['schedule']}, dropout {c['dropout']}, rotate {c['rotate']}, translate {c['translate']}), "
        f"{d['device']}, torch {d['torch']}",
        "",
        "| seed | final-epoch accuracy | lowest of the last 5 epochs |",
        "| ---: | ---: | ---: |",
    ]
    finals = []
    for run in d["runs"]:
        accs = [e["test_accuracy"] for e in run["epochs"]]
        finals.append(accs[-1])
        lines.append(f"| {run['seed']} | {accs[-1]:.2f}% | {min(accs[-5:]):.2f}% |")
    std = statistics.stdev(finals) if len(finals) > 1 else 0.0
    lines.append(f"| mean ± std | **{statistics.mean(finals):.2f}% ± {std:.2f}** | |")
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(table(Path(p)) for p in sys.argv[1:]))
