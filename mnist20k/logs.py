"""Each epoch's record where people already watch training: TensorBoard's event files, and metrics.csv beside
metrics.jsonl, both in the run folder. Fed from train()'s on_epoch callback: the loop knows nothing of them.

`tensorboard --logdir` on a sweep's or a study's folder shows every seed or trial side by side, each named by
its folder.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from mnist20k.errors import Mnist20kError
from mnist20k.files import write_file
from mnist20k.results import split

LOGS = ("tensorboard", "csv")
CSV_NAME = "metrics.csv"
HINT = "pip install 'mnist20k[tensorboard]'"


def check_logs(kinds: list[str]) -> None:
    """Refuse, before anything trains, a log whose library is not installed."""
    if "tensorboard" in kinds:
        try:
            import tensorboard  # noqa: F401  (torch's SummaryWriter needs it)
        except ImportError:
            raise Mnist20kError(f"--log tensorboard needs TensorBoard: {HINT}") from None


class EpochLogs:
    """An on_epoch callback that hands each epoch's record to the logs asked for (`kinds`, of LOGS); close()
    when the run ends. The event file is made with the first epoch, so a folder refused before training
    gets none."""

    def __init__(self, kinds: list[str], folder: Path | str):
        check_logs(kinds)
        self.kinds, self.folder, self.writer = list(kinds), Path(folder), None

    def __call__(self, record: dict) -> None:
        if "tensorboard" in self.kinds:
            self._scalars(record)
        if "csv" in self.kinds:
            self._csv()

    def _scalars(self, record: dict) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.folder))
        scored = split(record)  # "test", or "val" with --val
        tags = {
            "train/loss": "train_loss",
            f"{scored}/loss": f"{scored}_loss",
            f"{scored}/accuracy": f"{scored}_accuracy",
        }
        for tag, key in {**tags, "lr": "lr", "seconds": "seconds"}.items():
            self.writer.add_scalar(tag, record[key], global_step=record["epoch"])
        self.writer.flush()

    def _csv(self) -> None:
        """metrics.csv made again from metrics.jsonl, which the run folder has just written: a resumed run's
        earlier epochs are in it too."""
        records = [json.loads(line) for line in (self.folder / "metrics.jsonl").read_text().splitlines() if line]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(k for r in records for k in r)))
        writer.writeheader()
        writer.writerows(records)
        write_file(self.folder / CSV_NAME, text.getvalue().encode())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
