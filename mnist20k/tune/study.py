"""Where a study lives and how its workers share it: Optuna's journal file in the study's folder on one machine,
or a PostgreSQL or MySQL database for many (../docs/tune.md). Trials are claimed under a lock, so that the
study ends with exactly `trials` trials however many workers share it, and a trial whose worker died is
failed and queued again with the same values.

A trial's outcome is one of OUTCOMES, kept in its user attributes: those count toward the study's total. A
trial that failed with no outcome was interrupted or lost its worker; it is retried and does not count.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from mnist20k.errors import Mnist20kError, UsageError

JOURNAL = "study.log"  # the study's journal file in its folder
OUTCOMES = ("complete", "pruned", "over budget", "diverged", "failed")
HEARTBEAT_S, GRACE_S = 20, 60  # a database trial whose worker is silent this long is failed and retried
SEARCH_ATTR = "mnist20k.search"  # the study's description, to refuse another search under its name
WORKER_ATTR = "mnist20k.worker"  # host:pid of the worker running a trial


class StorageError(Mnist20kError):
    """The study's database or journal file cannot be reached or opened."""


def open_storage(url: str | None, folder: Path):
    """The journal file in `folder` (made by the caller), or the database at `url`."""
    if url is None:
        return JournalStorage(JournalFileBackend(str(folder / JOURNAL)))
    try:
        return RDBStorage(
            url,
            engine_kwargs={"pool_pre_ping": True},
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(),
        )
    except ImportError as e:
        raise StorageError(f"--storage {_safe(url)} needs its database driver: {e}; see docs/tune.md") from None
    except Exception as e:  # SQLAlchemy's OperationalError, ArgumentError, ...: one line either way
        raise StorageError(f"cannot open --storage {_safe(url)}: {_first_line(e)}") from None


def load_study(storage, name: str, search: dict, overwrite: bool) -> optuna.Study:
    """The study `name`, made for `search` if it is new, continued if it holds this search. Another search under
    that name is refused; `overwrite` deletes the study first and starts afresh."""
    try:
        existing = next((s for s in optuna.get_all_study_summaries(storage) if s.study_name == name), None)
        if existing is not None:
            held = existing.user_attrs.get(SEARCH_ATTR)
            if held != search and not overwrite:
                raise UsageError(
                    f"study {name!r} holds another search ({_difference(held, search)}); run that search, "
                    "or pass --overwrite to delete the study and start this one"
                )
            if overwrite:
                optuna.delete_study(study_name=name, storage=storage)
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
        study.set_user_attr(SEARCH_ATTR, search)
        return study
    except Mnist20kError:
        raise
    except Exception as e:  # a database that went away between open and use
        raise StorageError(f"cannot use the study's storage: {_first_line(e)}") from None


def open_study(storage, name: str, pruner, sampler) -> optuna.Study:
    """The study a worker joins, already made by load_study; Optuna keeps no pruner or sampler in storage."""
    return optuna.load_study(study_name=name, storage=storage, pruner=pruner, sampler=sampler)


PRUNERS = ("median", "hyperband", "none")


def make_pruner(name: str, steps: int, epochs: int):
    """Optuna's pruner for a trial that reports `steps` epochs in all, `epochs` per seed. The median pruner
    waits for 3 finished trials, and lets every trial train half its first seed's epochs: while the one-cycle lr
    still rises, a trial's accuracy says little of its end (in benchmarks/results/tune-tiny-e15-cpu.json, pruning
    from epoch 3 of 15 stopped 14 trials in a row, some of them level at epoch 3 with the best finisher)."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=max(1, epochs // 2))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=steps)
    return optuna.pruners.NopPruner()


def counted(trial) -> bool:
    """Trials that count toward the total: finished with an outcome, or running now."""
    return trial.state is TrialState.RUNNING or trial.user_attrs.get("outcome") in OUTCOMES


def finished(study: optuna.Study) -> list:
    """Trials told, with an outcome (set just before the telling, so a RUNNING trial may hold one already)."""
    return [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.user_attrs.get("outcome")]


@contextlib.contextmanager
def claim_lock(storage, folder: Path) -> Iterator[None]:
    """One worker at a time counts the study's trials and asks for a new one: an exclusive lock on a file in
    the study's folder on one machine, or the database's own advisory lock across machines."""
    if isinstance(storage, RDBStorage):
        with _database_lock(storage):
            yield
        return
    with open(folder / "claim.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _database_lock(storage: RDBStorage) -> Iterator[None]:
    import sqlalchemy

    key = zlib.crc32(b"mnist20k-claim")
    dialect = storage.engine.dialect.name
    with storage.engine.connect() as db:
        if dialect == "postgresql":
            db.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            unlock = sqlalchemy.text("SELECT pg_advisory_unlock(:k)")
        elif dialect == "mysql":
            db.execute(sqlalchemy.text("SELECT GET_LOCK(:k, -1)"), {"k": str(key)})
            unlock = sqlalchemy.text("SELECT RELEASE_LOCK(:k)")
        else:  # SQLite: its own lock serialises writers, one machine only
            unlock = None
        try:
            yield
        finally:
            if unlock is not None:
                db.execute(unlock, {"k": key if dialect == "postgresql" else str(key)})


def claim(study: optuna.Study, storage, folder: Path, trials: int):
    """A new trial of the study, or None once `trials` are finished or running. Trials left running by a dead
    worker are failed and queued again first, so that their values are tried again."""
    with claim_lock(storage, folder):
        fail_stale_trials(study)  # a database's heartbeat; the journal file has none
        _retry_dead_workers(study)
        if sum(counted(t) for t in study.get_trials(deepcopy=False)) >= trials:
            return None
        with warnings.catch_warnings():  # that the heartbeat is meant for optimize(): heartbeat() below beats it
            warnings.simplefilter("ignore", UserWarning)
            trial = study.ask()
        trial.set_user_attr(WORKER_ATTR, WORKER)
        return trial


WORKER = f"{socket.gethostname()}:{os.getpid()}"


def _retry_dead_workers(study: optuna.Study) -> None:
    """A trial RUNNING under a process of this machine that no longer exists: failed, its values queued again."""
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = str(t.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
        if worker_host == host and pid.isdigit() and not _alive(int(pid)):
            retry(study, t)


def retry(study: optuna.Study, trial) -> None:
    """Fail a trial that did not finish, and queue its values for the next worker that asks."""
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError):
        study.tell(trial.number, state=TrialState.FAIL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def heartbeat(storage, trial) -> Iterator[None]:
    """While a trial runs, tell a database it is alive (the journal file has no heartbeat)."""
    if not isinstance(storage, RDBStorage):
        yield
        return
    stop = threading.Event()

    def beat():
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a missed beat is retried at the next
                storage.record_heartbeat(trial._trial_id)

    storage.record_heartbeat(trial._trial_id)
    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _difference(held, search: dict) -> str:
    """The keys two searches differ in, a setting of the fixed config by its own name: `lr: 0.05 there, 0.1 here`."""
    if not isinstance(held, dict):
        return "not made by mnist20k tune"
    theirs, ours = _flat(held), _flat(search)
    keys = [k for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]
    told = [f"{k}: {_short(theirs.get(k))} there, {_short(ours.get(k))} here" for k in keys[:4]]
    return "; ".join(told) + (f"; and {len(keys) - 4} more" if len(keys) > 4 else "")


def _flat(search: dict) -> dict:
    """A search's description with the fixed settings (its "config") as keys of their own."""
    flat = {k: v for k, v in search.items() if k != "config"}
    return {**flat, **(search.get("config") or {})}


def _short(value) -> str:
    text = json.dumps(value) if value is not None else "none"
    return text if len(text) <= 60 else text[:57] + "..."


def _safe(url: str) -> str:
    """A database URL without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def _first_line(e: Exception) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__
