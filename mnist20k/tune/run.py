"""A study run: `--jobs` worker processes started through mnist20k.children, watched until the study has its
trials, and the record written at the end.

The parent never waits on a dead worker. Each poll it looks at its workers' exit codes and at the study's trials:
- a worker killed by a signal it did not send (the OOM killer, a kill -9) has its running trial failed and
  queued again at once, and is started again, up to RESTARTS times;
- a worker that ends with an error, or dies once more than that, stops the study with one line that names its
  log and exit 1; the same command continues it;
- a trial whose worker is gone elsewhere (its lease free on a journal file, its heartbeat stale on a database)
  is failed and queued again, and once this machine's workers are done, one is started again for it.
Ctrl-C or SIGTERM stops every worker; their unfinished trials are queued again, so the same command continues
the study.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, wait

from optuna.trial import TrialState

from mnist20k import process
from mnist20k.children import Interrupted, Runner
from mnist20k.errors import Mnist20kError, OutputError
from mnist20k.files import reason
from mnist20k.tune.limits import OBJECTIVES
from mnist20k.tune.prepare import Tune
from mnist20k.tune.record import write_record
from mnist20k.tune.study import finished, load_study, new_worker_id, open_storage, retry_dead
from mnist20k.tune.worker import worker_env

POLL_S = 1.0
STOP_WAIT_S = 60.0  # a worker saves its trial's last epoch before it stops
RESTARTS = 2  # a worker slot whose process is killed is started again this many times


def run(tune: Tune, on_start: Callable | None = None, on_trial: Callable | None = None) -> dict:
    """Every trial the study still needs, by `tune.jobs` workers; on_trial gets each trial as it finishes
    (Optuna's FrozenTrial). Returns tune.json's record."""
    spec = tune.spec
    storage = None if spec.storage is None else open_storage(spec.storage, tune.folder, spec.max_retry)
    try:  # a database out of reach was refused above, before a folder is made
        tune.folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot write to {tune.folder}: {reason(e)}") from None
    storage = storage or open_storage(None, tune.folder)
    directions = [OBJECTIVES[goal] for goal in spec.objectives]
    study = load_study(storage, tune.folder, spec.study, tune.search(), tune.overwrite, directions)
    seen = {t.number for t in finished(study, spec.max_retry)}
    if on_start is not None:
        on_start(study, len(seen))
    runner = Runner(tune.jobs, env=worker_env(tune.jobs, spec.storage))
    logs = [tune.folder / f"worker-{i}.log" for i in range(tune.jobs)]
    command = [sys.executable, "-m", "mnist20k.tune", spec.to_json()]  # the storage URL travels in env alone
    workers = {}  # future -> (slot, worker id)
    restarts = [0] * tune.jobs

    def start(slot: int) -> None:
        worker = new_worker_id()
        workers[runner.submit([*command, str(slot), worker], logs[slot])] = (slot, worker)

    def report() -> None:
        for trial in finished(study, spec.max_retry):
            if trial.number not in seen:
                seen.add(trial.number)
                if on_trial is not None:
                    on_trial(trial)

    try:
        for slot in range(tune.jobs):
            start(slot)
        while True:
            if workers:
                done, _ = wait(set(workers), timeout=POLL_S, return_when=FIRST_COMPLETED)
            else:  # only trials of other machines are left, and wait() on no future returns at once
                done = set()
                time.sleep(POLL_S)
            ended, again, failed = set(), [], None
            for future in done:
                slot, worker = workers.pop(future)
                code = future.result().returncode
                if code == 0:
                    continue
                ended.add(worker)
                if code < 0 and restarts[slot] < RESTARTS:
                    restarts[slot] += 1
                    again.append(slot)
                elif failed is None:
                    failed = (slot, code)
            retry_dead(study, storage, tune.folder, spec.max_retry, ended)
            report()
            if failed is not None:
                raise WorkerFailed(_worker_failed(*failed, logs[failed[0]]))
            for slot in again:
                start(slot)
            if workers:
                continue
            if len(seen) >= spec.trials:
                break
            # This machine's workers are done, and the study is short: other machines' trials are waited for. With
            # none training anywhere (one of theirs died and was queued again, say), a worker here takes it.
            if not any(t.state is TrialState.RUNNING for t in study.get_trials(deepcopy=False)):
                slot = restarts.index(min(restarts))
                if restarts[slot] >= RESTARTS:
                    break  # the record below says how far the study got
                restarts[slot] += 1
                start(slot)
    except process.INTERRUPTS as e:
        runner.stop(STOP_WAIT_S)
        write_record(tune, study)
        raise Interrupted(process.exit_code(e)) from None
    except BaseException:
        runner.stop(STOP_WAIT_S)
        raise
    runner.close()
    record = write_record(tune, study)
    if record["finished"] < spec.trials:
        raise Mnist20kError(
            f"the workers stopped with {record['finished']} of {spec.trials} trials finished: {_why(logs)}; "
            "run the same command to continue"
        )
    return record


class WorkerFailed(Mnist20kError):
    """A worker of this machine ended with an error, or was killed more often than it is started again."""


def _worker_failed(slot: int, code: int, log) -> str:
    if code < 0:
        how = f"was killed ({signal.Signals(-code).name}) {RESTARTS + 1} times"
    else:
        how = f"stopped: {_last_line(log) or f'exit status {code}'}"
    return f"worker {slot} {how} (see {log}); run the same command to continue"


def _last_line(log) -> str | None:
    """The last line a worker wrote: its error."""
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    return lines[-1].strip() if lines else None


def _why(logs) -> str:
    for log in logs:
        if line := _last_line(log):
            return f"{line} (see {log})"
    return "no worker said why"
