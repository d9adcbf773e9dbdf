"""A study run: `--jobs` worker processes started through sweep's runner, the study watched for finished
trials, and the record written at the end. Ctrl-C or SIGTERM stops every worker; their unfinished trials are
queued again, so the same command continues the study."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, wait

from optuna.trial import TrialState

from mnist20k import process
from mnist20k.errors import Mnist20kError, OutputError
from mnist20k.files import reason
from mnist20k.sweep.jobs import Interrupted
from mnist20k.sweep.runner import Runner
from mnist20k.tune.prepare import Tune
from mnist20k.tune.record import write_record
from mnist20k.tune.study import finished, load_study, open_storage
from mnist20k.tune.worker import worker_env

POLL_S = 1.0
STOP_WAIT_S = 60.0  # a worker saves its trial's last epoch before it stops


def run(tune: Tune, on_start: Callable | None = None, on_trial: Callable | None = None) -> dict:
    """Every trial the study still needs, by `tune.jobs` workers; on_trial gets each trial as it finishes
    (Optuna's FrozenTrial). Returns tune.json's record."""
    storage = tune.spec.storage
    if storage is not None:
        storage = open_storage(storage, tune.folder)  # a database out of reach: refused before a folder is made
    try:
        tune.folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot write to {tune.folder}: {reason(e)}") from None
    storage = storage or open_storage(None, tune.folder)
    study = load_study(storage, tune.spec.study, tune.search(), tune.overwrite)
    seen = {t.number for t in finished(study)}
    if on_start is not None:
        on_start(study, len(seen))
    command = [sys.executable, "-m", "mnist20k.tune", tune.spec.to_json()]
    runner = Runner(tune.jobs, env=worker_env(tune.jobs))
    logs = [tune.folder / f"worker-{i}.log" for i in range(tune.jobs)]

    def report() -> None:
        for trial in finished(study):
            if trial.number not in seen:
                seen.add(trial.number)
                if on_trial is not None:
                    on_trial(trial)

    try:
        waiting = {runner.submit([*command, str(i)], log) for i, log in enumerate(logs)}
        while waiting:
            _, waiting = wait(waiting, timeout=POLL_S, return_when=FIRST_COMPLETED)
            report()
        # This machine's workers found every trial claimed; on a shared study, others may still be training.
        while len(seen) < tune.spec.trials and study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            time.sleep(POLL_S)
            report()
    except process.INTERRUPTS as e:
        runner.stop(STOP_WAIT_S)
        write_record(tune, study)
        raise Interrupted(process.exit_code(e)) from None
    except BaseException:
        runner.stop(STOP_WAIT_S)
        raise
    runner.close()
    record = write_record(tune, study)
    if record["finished"] < tune.spec.trials:
        raise Mnist20kError(
            f"the workers stopped with {record['finished']} of {tune.spec.trials} trials finished: {_why(logs)}; "
            "run the same command to continue"
        )
    return record


def _why(logs) -> str:
    """The last line a worker wrote: its error."""
    for log in logs:
        try:
            lines = [line for line in log.read_text().splitlines() if line.strip()]
        except OSError:
            continue
        if lines:
            return f"{lines[-1]} (see {log})"
    return "no worker said why"
