"""A sweep's record, DIR/sweep.json: the settings, the device and versions, every run's epochs as its
metrics.jsonl holds them, and each configuration's summary. Rewritten whole as runs finish."""

from __future__ import annotations

import functools
import json
from dataclasses import asdict
from pathlib import Path

from mnist20k import __version__
from mnist20k.distill import RECORD, recorded
from mnist20k.files import write_file
from mnist20k.results import summarize
from mnist20k.sweep.plan import SWEEP_FILE, Job, Planned, Sweep

FORMAT = "mnist20k-sweep"


def write_record(sweep: Sweep) -> dict:
    """DIR/sweep.json: settings, device, versions, every run's epochs and the summary, written atomically."""
    record = build_record(sweep)
    write_file(sweep.out / SWEEP_FILE, (json.dumps(record, indent=1) + "\n").encode())
    return record


def build_record(sweep: Sweep) -> dict:
    import torch

    configurations = []
    states = {id(j.run): j for j in sweep.tracked}
    for grid, runs in _by_configuration(sweep.runs):
        entries = []
        for r in runs:
            job = states.get(id(r))
            entries.append(
                {
                    "seed": r.seed,
                    "folder": str(r.folder.relative_to(sweep.out)),
                    "status": _status(job),
                    "epochs": read_metrics(r.folder),
                }
            )
        config = asdict(runs[0].config) | {"seed": None}
        finished = {e["seed"]: e["epochs"] for e in entries if e["status"] == "done"}
        summary = summarize(finished, sweep.target, sweep.last)
        configurations.append({"grid": grid, "config": config, "runs": entries, "summary": summary})
        if config["teacher"]:  # every seed learns from the one teacher: its record, as the first run's says it
            teacher = next(filter(None, (recorded(r.folder) for r in runs)), None)
            configurations[-1][RECORD] = teacher
    everyone = [c["summary"] for c in configurations]
    complete = all(e["status"] == "done" for c in configurations for e in c["runs"])
    return {
        "format": FORMAT,
        "format_version": 1,
        "settings": sweep.settings,
        "seeds": sorted({r.seed for r in sweep.runs}, key=[r.seed for r in sweep.runs].index),
        "target": sweep.target,
        "last": sweep.last,
        "device": _device_name(sweep.device),
        "torch": torch.__version__,
        "mnist20k": __version__,
        "complete": complete,
        "holds": complete and all(s["holds"] for s in everyone),
        "configurations": configurations,
    }


def _status(job: Job | None) -> str:
    """pending (not trained yet, or in training), done, failed or stopped."""
    return "pending" if job is None else job.state.status


def _by_configuration(runs: list[Planned]) -> list[tuple[dict, list[Planned]]]:
    groups: dict[str, tuple[dict, list[Planned]]] = {}
    for r in runs:
        groups.setdefault(json.dumps(r.grid), (r.grid, []))[1].append(r)
    return list(groups.values())


def summary_object(record: dict) -> dict:
    """What --json prints: each configuration's summary and the verdict, without the per-epoch records."""
    keys = ("format", "settings", "seeds", "target", "last", "device", "torch", "mnist20k", "complete", "holds")
    return {
        **{k: record[k] for k in keys},
        "configurations": [{k: c[k] for k in ("grid", "summary", RECORD) if k in c} for c in record["configurations"]],
    }


@functools.cache  # sweep.json is rewritten after every run; the device does not change
def _device_name(device: str) -> str:
    from mnist20k.device import device_name  # torch, imported when a record is made, not with the package

    return device_name(device)


def read_metrics(folder: Path) -> list[dict]:
    """A run's records from its metrics.jsonl, as training wrote them (full precision)."""
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
