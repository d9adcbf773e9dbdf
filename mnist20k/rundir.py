"""A run's folder: config.json, metrics.jsonl and checkpoint.pt, checked before training starts."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path

from mnist20k.checkpoint import CHECKPOINT_NAME, atomic_write, save_checkpoint
from mnist20k.errors import OutputError, UsageError

RUN_FILES = ("config.json", "metrics.jsonl", CHECKPOINT_NAME)


def new_run_path(parent: Path | str = "runs", prefix: str = "") -> Path:
    """runs/2026-01-31_12-00-00, with a suffix when two runs start in the same second."""
    base = Path(parent) / (prefix + datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


class RunDir:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.checkpoint = self.path / CHECKPOINT_NAME
        self.metrics = self.path / "metrics.jsonl"
        self.config = self.path / "config.json"

    def holds_run(self) -> bool:
        return any((self.path / name).exists() for name in RUN_FILES)

    def check(self, overwrite: bool = False) -> None:
        """Fail now, not after 20 epochs: the folder must be writable and must not hold another run."""
        if self.holds_run() and not overwrite:
            raise UsageError(
                f"{self.path} already holds a run; pick another --out, pass --overwrite to replace it, "
                f"or --resume {self.path} to continue it"
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.path, prefix=".write-test-")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise UsageError(f"cannot write to output folder {self.path}: {e.strerror or e}") from None

    def start(self, config: dict, metrics: list[dict]) -> None:
        """Write config.json and metrics.jsonl as of `metrics`: empty for a new run, the checkpoint's
        epochs for a resumed one (dropping any line written after that checkpoint)."""
        try:
            _write_text(self.config, json.dumps(config, indent=2) + "\n")
            _write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in metrics))
        except OSError as e:
            raise OutputError(f"cannot write to {self.path}: {e.strerror or e}") from None

    def save_epoch(self, state: dict, record: dict) -> None:
        """The epoch's checkpoint, then its metrics line: a failure between the two leaves a metrics
        line missing, never one too many, and a failed checkpoint write leaves the previous one whole."""
        epoch = record["epoch"]
        try:
            save_checkpoint(self.checkpoint, state)
        except OSError as e:
            kept = f"{self.checkpoint} is kept as it was" if self.checkpoint.exists() else "no checkpoint was written"
            raise OutputError(f"cannot save epoch {epoch} in {self.path}: {e.strerror or e}; {kept}") from None
        try:
            with open(self.metrics, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise OutputError(
                f"cannot write {self.metrics}: {e.strerror or e}; epoch {epoch}'s checkpoint is saved, "
                f"and --resume {self.path} continues after it"
            ) from None


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))
