"""Markdown tables for the docs from results: the sweep.json of `mnist20k sweep` (a table per configuration),
the tune.json of `mnist20k tune` (the best trials, the importances, how the trials ended), and the JSON files
of the earlier benchmarks/sweep.py committed in benchmarks/results/.

python benchmarks/report.py runs/sweep-seed-default/sweep.json benchmarks/results/seed-default.json
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mnist20k.results import TARGET, summarize


def tables(path: Path) -> list[str]:
    d = json.loads(path.read_text())
    if d.get("format") == "mnist20k-tune":
        return [study_table(path, d)]
    if d.get("format") == "mnist20k-sweep":
        where = f"{d['device']}, torch {d['torch']}, mnist20k {d['mnist20k']}"
        return [
            table(f"**{path}** {_grid(c['grid'])}", c["config"], where, c["runs"], d["last"], d["target"])
            for c in d["configurations"]
        ]
    where = f"{d['device']}, torch {d['torch']}"
    return [table(f"**{path.name}**: recipe `{d['recipe']}`", d["config"], where, d["runs"], 3, TARGET)]


def study_table(path: Path, d: dict) -> str:
    """A study: its search, how its trials ended, the best trials and the importances."""
    ends = Counter(t["outcome"] for t in d["trials"])
    lines = [
        f"**{path}**: `{d['config']['model']}`, {d['config']['epochs']} epochs, {d['finished']} trials "
        f"({', '.join(f'{n} {o}' for o, n in ends.most_common())}), pruner {d['pruner']}; value: {d['value']}; "
        f"{d['device']}, torch {d['torch']}, optuna {d['optuna']}",
        "",
        "| trial | value | " + " | ".join(d["best"][0]["params"]) + " | seconds |" if d["best"] else "",
        "| ---: | ---: | " + " | ".join("---:" for _ in (d["best"][0]["params"] if d["best"] else [])) + " | ---: |",
    ]
    for t in d["best"]:
        values = " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in t["params"].values())
        lines.append(f"| {t['number']} | {t['value']:.2f}% | {values} | {t['seconds']:.0f} |")
    if d["importances"]:
        lines += ["", "Importances: " + ", ".join(f"{k} {v:.2f}" for k, v in d["importances"].items())]
    return "\n".join(lines)


def _grid(grid: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in grid.items())


# settings most runs leave as they are: named in a table's heading only when a run changed them
RARER = {"batch_size": ("batch", 128), "weight_decay": ("weight decay", 5e-4), "warmup": ("warmup", 0.2),
         "label_smoothing": ("label smoothing", 0.0), "ema": ("EMA", 0.0), "teacher": ("teacher", "")}  # fmt: skip


def _rarer(c: dict) -> str:
    return "".join(f", {word} {c[k]}" for k, (word, usual) in RARER.items() if c.get(k, usual) != usual)


def table(title: str, c: dict, where: str, runs: list[dict], last: int, target: float) -> str:
    """One row a seed; the lowest of the last epochs has a column when the sweep judged more than the final one."""
    done = {r["seed"]: r["epochs"] for r in runs if r.get("status", "done") == "done"}
    s = summarize(done, target, last)
    lowest = last > 1
    lines = [
        f"{title}: model `{c['model']}`, {c['epochs']} epochs (lr {c['lr']}, {c['schedule']}, dropout {c['dropout']}, "
        f"rotate {c['rotate']}, translate {c['translate']}{_rarer(c)}), {where}",
        "",
        f"| seed | final-epoch accuracy |{f' lowest of the last {last} epochs |' if lowest else ''} "
        f"time to {target}% (epoch) | loop |",
        "| ---: | ---: |" + " ---: |" * (3 if lowest else 2),
    ]
    for seed in s["seeds"]:
        key = str(seed)
        reached = s["time_to_target"][key]
        when = f"{reached['seconds']:.1f} s ({reached['epoch']})" if reached else "never"
        low = f" {s['lowest_of_last'][key]:.2f}% |" if lowest else ""
        lines.append(f"| {seed} | {s['final_accuracy'][key]:.2f}% |{low} {when} | {s['loop_seconds'][key]:.1f} s |")
    std = f" ± {s['std']:.2f}" if s["std"] is not None else ""
    mean = f"| mean{' ± std' if std else ''} | **{s['mean']:.2f}%{std}**"
    lines.append(f"{mean} | min {s['min']:.2f}% | | |" if lowest else f"{mean}, min {s['min']:.2f}% | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    if not sys.argv[1:] or any(a.startswith("-") for a in sys.argv[1:]):
        sys.exit(f"usage: python benchmarks/report.py SWEEP.json ...\n\n{__doc__.strip()}")
    try:
        print("\n\n".join(t for p in sys.argv[1:] for t in tables(Path(p))))
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"error: {e}")
