"""A run's folder: config.json, metrics.jsonl and checkpoint.pt, checked before training starts."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path

from mnist20k.checkpoint import CHECKPOINT_NAME, save_checkpoint
from mnist20k.errors import OutputError, UsageError
from mnist20k.files import reason, remove_unfinished, write_file

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
        self.made = False  # check() made the folder: a run that never saves an epoch takes it away again
        self.saved = False  # an epoch's checkpoint is on disk

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
            self.made = not self.path.exists()
            self.path.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.path, prefix=".write-test-")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise OutputError(f"cannot write to output folder {self.path}: {reason(e)}") from None

    def start(self, config: dict, metrics: list[dict]) -> None:
        """Write config.json and metrics.jsonl as of `metrics`: empty for a new run, the checkpoint's
        epochs for a resumed one (dropping any line written after that checkpoint). A run killed in the
        middle of a write left a temporary file beside the one it was replacing: it goes now."""
        for name in RUN_FILES:
            remove_unfinished(self.path / name)
        write_config(self.config, config)
        write_file(self.metrics, _jsonl(metrics))

    def save_epoch(self, state: dict) -> None:
        """The epoch's checkpoint, then metrics.jsonl with every epoch up to it, each file replaced whole: a
        failure between the two leaves a metrics line missing, never one too many or half a one, and a
        failed checkpoint write leaves the previous checkpoint as it was."""
        epoch = state["epoch"]
        try:
            save_checkpoint(self.checkpoint, state)
        except OutputError as e:
            if epoch == 1:
                raise OutputError(f"{e}; no epoch of this run was saved, and nothing of it is kept") from None
            raise OutputError(
                f"{e}; {self.checkpoint} still holds epoch {epoch - 1}, and --resume {self.path} continues after it"
            ) from None
        self.saved = True
        try:
            write_file(self.metrics, _jsonl(state["metrics"]))
        except OutputError as e:
            raise OutputError(
                f"{e}; epoch {epoch}'s checkpoint is saved, and --resume {self.path} continues after it"
            ) from None

    def discard(self) -> None:
        """Take back what start() wrote for a new run that ended before its first checkpoint: its config.json
        and metrics.jsonl, and the folder if check() made it and nothing else is in it. The same command then
        starts the run again, instead of being refused for a folder that holds a run."""
        for path in (self.config, self.metrics):
            with contextlib.suppress(OSError):
                path.unlink()
        if self.made:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only if empty: what else is there is not the run's


def write_config(path: Path, config: dict) -> None:
    """A run's config.json: every setting of the run (asdict(TrainConfig)), the file `train --config` reads."""
    write_file(path, (json.dumps(config, indent=2) + "\n").encode())


def _jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()
