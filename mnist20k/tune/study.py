"""Where a study lives and how its workers share it: Optuna's journal file in the study's folder on one machine,
or a PostgreSQL database for many (../docs/tune.md). Trials are claimed under a lock, so that the study ends
with exactly `trials` trials however many workers share it.

A trial's outcome is one of OUTCOMES, kept in its user attributes: those count toward the study's total. A
trial whose worker stopped before it ended (interrupted, killed, its machine gone) is failed and tried again
with the same values, through Optuna's RetryHeartbeatStaleTrialCallback on either storage, so that every retry
is recorded the same way (the system attributes `failed_trial` and `retry_history`). After `max_retry` tries
it is not tried again: it counts, as "lost".

Whether a trial's worker still lives:
- on a journal file, each worker holds an flock on its lease file, DIR/workers/ID.lease, for its whole life,
  and a trial records the ID of its worker. The kernel drops the lock when the process ends, however it ends,
  so a free lease is a dead worker: a reused pid or a host name shared by two containers cannot fool it.
  (Optuna's JournalStorage has no heartbeat of its own: optuna/optuna#6615.)
- on a database, Optuna's heartbeat: a trial whose worker has been silent for GRACE_S is stale.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import functools
import inspect
import json
import os
import threading
import time
import uuid
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import MISSING, fields
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from mnist20k.config import TrainConfig
from mnist20k.errors import Mnist20kError, UsageError
from mnist20k.tune.limits import MAX_RETRIES

JOURNAL = "study.log"  # the study's journal file in its folder
LEASES = "workers"  # DIR/workers/ID.lease: one per live worker of a journal study
OUTCOMES = ("complete", "pruned", "over budget", "invalid", "diverged", "failed", "lost")
HEARTBEAT_S, GRACE_S = 20, 60  # a database trial whose worker is silent this long is failed and retried
RECONNECT_S = 120  # a database out of reach this long (a restart takes seconds) ends the worker
SEARCH_ATTR = "mnist20k.search"  # the study's description, to refuse another search under its name
WORKER_ATTR = "mnist20k.worker"  # the ID of the worker running a trial


class StorageError(Mnist20kError):
    """The study's database or journal file cannot be reached or opened."""


def quiet_optuna() -> None:
    """Optuna logs every trial at INFO; tune prints its own line per trial instead. Optuna also marks the
    heartbeat and stale-trial recovery experimental, on every call: they are what recovers a dead worker's
    trials, and the warning tells a user nothing to do."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def new_worker_id() -> str:
    return uuid.uuid4().hex[:12]


def open_storage(url: str | None, folder: Path, max_retry: int = MAX_RETRIES):
    """The journal file in `folder` (made by the caller), or the PostgreSQL database at `url`."""
    if url is None:
        return JournalStorage(JournalFileBackend(str(folder / JOURNAL)))
    try:
        from sqlalchemy.engine import make_url

        backend = make_url(url).get_backend_name()
    except Exception:
        raise StorageError(
            f"--storage {safe_url(url)} is not a database URL: postgresql+psycopg://user@host/db"
        ) from None
    if backend != "postgresql":
        raise StorageError(
            f"--storage {safe_url(url)}: a study shared by many machines lives in PostgreSQL "
            "(postgresql+psycopg://user@host/db); on one machine, leave --storage out"
        )
    try:
        with _schema_lock(url), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat: what recovers
            return Database(
                url,
                engine_kwargs={"pool_pre_ping": True},  # a connection the server dropped is replaced, not used
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
            )
    except ImportError as e:
        raise StorageError(f"--storage {safe_url(url)} needs its database driver: {e}; see docs/tune.md") from None
    except Exception as e:  # SQLAlchemy's OperationalError, ArgumentError, ...: one line either way
        raise StorageError(f"cannot open --storage {safe_url(url)}: {_first_line(e)}") from None


@contextlib.contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """Optuna makes its tables when a storage opens, and two processes that do so at once on an empty database
    race (UniqueViolation on pg_type, "relation already exists": optuna/optuna#1092). One at a time under an
    advisory lock of the database's own, on a connection of its own: the ones after find the tables made. The
    lock goes with the connection, so a process that dies holding it holds nothing."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as db:
            db.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _key("schema")})
            yield
    finally:
        engine.dispose()


def _lost_connection(e: BaseException) -> bool:
    """A database error that a reconnect may cure: the server went away or restarted, not a bad query."""
    import sqlalchemy.exc

    if isinstance(e, optuna.exceptions.StorageInternalError):
        e = e.__cause__
    if isinstance(e, sqlalchemy.exc.PendingRollbackError):  # a session whose connection died mid-transaction
        return True
    return isinstance(e, sqlalchemy.exc.DBAPIError) and (
        e.connection_invalidated or isinstance(e, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError)
    )


def reconnecting(call):
    """`call`, tried again while the database is out of reach, for up to RECONNECT_S; then one line. A write whose
    answer was lost may be applied twice (the window is the moment of the restart)."""

    @functools.wraps(call)
    def again(*args, **kwargs):
        deadline = time.monotonic() + RECONNECT_S
        while True:
            try:
                return call(*args, **kwargs)
            except Exception as e:
                if not _lost_connection(e):
                    raise
                if time.monotonic() > deadline:
                    raise StorageError(f"lost the study's database for {RECONNECT_S} s: {_first_line(e)}") from None
                _drop_session(args[0] if args else None)
                time.sleep(1.0)

    return again


def _drop_session(owner) -> None:
    """Optuna keeps one SQLAlchemy session a thread; one whose connection died mid-transaction refuses every
    call after ("Can't reconnect until invalid transaction is rolled back"), so the next try gets a new one."""
    storage = owner if isinstance(owner, RDBStorage) else getattr(owner, "_storage", None)
    storage = getattr(storage, "_backend", storage)  # a Study's storage is Optuna's cache in front of the database
    if isinstance(storage, RDBStorage):
        with contextlib.suppress(Exception):
            storage.scoped_session.remove()


class Database(RDBStorage):
    """Optuna's RDBStorage, every call of which rides out a restart of the server (pool_pre_ping alone replaces
    a dropped connection, but a call made while the server is down still fails)."""


# Its storage API as BaseStorage has it, and the private calls that Optuna's cache in front of it (_CachedStorage,
# which every Study uses) makes of it directly.
_CALLED_BY_THE_CACHE = {
    "_create_new_trial",
    "_get_best_trial_id",
    "_get_stale_trial_ids",
    "_get_trials",
    "_set_trial_param",
}
for _name, _call in vars(RDBStorage).items():
    if inspect.isfunction(_call) and (not _name.startswith("_") or _name in _CALLED_BY_THE_CACHE):
        setattr(Database, _name, reconnecting(_call))


def load_study(storage, folder: Path, name: str, search: dict, overwrite: bool, directions: list[str]) -> optuna.Study:
    """The study `name`, made for `search` if it is new, continued if it holds this search. Another search under
    that name is refused; `overwrite` deletes the study first and starts afresh. Under the study's lock, so that
    machines started at once make it once."""
    try:
        with study_lock(storage, folder, name):
            existing = next((s for s in optuna.get_all_study_summaries(storage) if s.study_name == name), None)
            if existing is not None:
                held = as_now(existing.user_attrs.get(SEARCH_ATTR))
                if held != search and not overwrite:
                    raise UsageError(
                        f"study {name!r} holds another search ({_difference(held, search)}); run that search, "
                        "or pass --overwrite to delete the study and start this one"
                    )
                if overwrite:
                    optuna.delete_study(study_name=name, storage=storage)
            study = optuna.create_study(study_name=name, storage=storage, directions=directions, load_if_exists=True)
            study.set_user_attr(SEARCH_ATTR, search)
            return study
    except Mnist20kError:
        raise
    except Exception as e:  # a database that went away between open and use
        raise StorageError(f"cannot use the study's storage: {_first_line(e)}") from None


def open_study(storage, name: str, pruner, sampler) -> optuna.Study:
    """The study a worker joins, already made by load_study; Optuna keeps no pruner or sampler in storage."""
    return optuna.load_study(study_name=name, storage=storage, pruner=pruner, sampler=sampler)


def make_sampler(seed: int | None):
    """TPE, told to treat the trials running on other workers as if they had ended badly (`constant_liar`), so
    that parallel workers do not all sample next to the best point; the default has changed between Optuna
    versions, so it is set here. TPE takes two objectives as well (its multi-objective mode), and in either mode
    it ranks pruned trials without a value below every complete one: so a trial over budget or invalid, told
    as pruned, teaches it where not to sample. (NSGA-II breeds from complete trials alone, and a failed trial is
    ignored by both.)"""
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


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


def outcome(trial, max_retry: int = MAX_RETRIES) -> str | None:
    """How a trial ended, if it counts: its own word, or "lost" for one that failed without a word after its
    last try. None for a trial still running, waiting, or failed and tried again."""
    told = trial.user_attrs.get("outcome")
    if told in OUTCOMES:
        return told
    if trial.state is TrialState.FAIL and len(trial.system_attrs.get("retry_history", [])) >= max_retry:
        return "lost"
    return None


def counted(trial, max_retry: int = MAX_RETRIES) -> bool:
    """Trials that count toward the total: finished with an outcome, or running now."""
    return trial.state is TrialState.RUNNING or outcome(trial, max_retry) is not None


def finished(study: optuna.Study, max_retry: int = MAX_RETRIES) -> list:
    """Trials ended with an outcome (set just before the telling, so a RUNNING trial may hold one already)."""
    return [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and outcome(t, max_retry)]


def _key(what: str) -> int:
    """An advisory-lock key of the database: one per purpose and study, so that studies do not queue behind
    one another."""
    return zlib.crc32(f"mnist20k:{what}".encode())


@contextlib.contextmanager
def study_lock(storage, folder: Path, name: str) -> Iterator[None]:
    """One worker at a time counts the study's trials and asks for a new one: an exclusive lock on a file in
    the study's folder on one machine, or the database's advisory lock for this study across machines."""
    if isinstance(storage, RDBStorage):
        import sqlalchemy

        with storage.engine.connect() as db:
            key = {"k": _key(f"study:{name}")}
            db.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), key)
            try:
                yield
            finally:
                with contextlib.suppress(Exception):  # a connection lost on the way took its lock with it
                    db.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), key)
        return
    with open(folder / "claim.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@reconnecting
def claim(study: optuna.Study, storage, folder: Path, trials: int, worker: str, max_retry: int = MAX_RETRIES):
    """A new trial of the study, or None once `trials` are finished or running. Trials left running by a dead
    worker are failed and queued again first, so that their values are tried again."""
    with study_lock(storage, folder, study.study_name):
        _retry_dead(study, storage, folder, max_retry, workers=())
        if sum(counted(t, max_retry) for t in study.get_trials(deepcopy=False)) >= trials:
            return None
        with warnings.catch_warnings():  # that the heartbeat is meant for optimize(): heartbeat() below beats it
            warnings.simplefilter("ignore", UserWarning)
            trial = study.ask()
        trial.set_user_attr(WORKER_ATTR, worker)
        return trial


@reconnecting
def retry_dead(study: optuna.Study, storage, folder: Path, max_retry: int, workers: set[str] = frozenset()) -> None:
    """Fail and queue again the trials whose worker is gone: on a journal file, those whose lease is free; on a
    database, those whose heartbeat stopped; on either, those of `workers`, which the caller saw end."""
    with study_lock(storage, folder, study.study_name):
        _retry_dead(study, storage, folder, max_retry, workers)


def _retry_dead(study: optuna.Study, storage, folder: Path, max_retry: int, workers) -> None:
    fail_stale_trials(study)  # a database's heartbeat; its callback queues the trial again
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(t.user_attrs.get(WORKER_ATTR, ""))
        if worker in workers or (not isinstance(storage, RDBStorage) and not lease_held(folder, worker)):
            retry(study, t, max_retry)


def retry(study: optuna.Study, trial, max_retry: int = MAX_RETRIES) -> None:
    """Fail a trial that did not finish, and queue its values again unless it has had its tries."""
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError):
        study.tell(trial.number, state=TrialState.FAIL)  # raises if another process failed it first
        # A FrozenTrial, and a copy: the callback appends to its retry_history list, which would be the storage's own
        failed = copy.deepcopy(next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number))
        RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, failed)


@contextlib.contextmanager
def lease(folder: Path, worker: str) -> Iterator[None]:
    """This worker's lease on a journal study, held for as long as the block runs (and the process lives)."""
    path = folder / LEASES / f"{worker}.lease"
    path.parent.mkdir(exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # its trials are told by now; a checker that opened it finds it free


def lease_held(folder: Path, worker: str) -> bool:
    """Whether the worker `worker` of a journal study still lives: its lease file exists and is locked."""
    try:
        fd = os.open(folder / LEASES / f"{worker}.lease", os.O_RDONLY)
    except OSError:  # no lease: the worker never lived here, or ended
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # a lock taken here goes with the descriptor
    return False


@contextlib.contextmanager
def heartbeat(storage, trial) -> Iterator[None]:
    """While a trial runs, tell a database it is alive (the journal file's liveness is the worker's lease)."""
    if not isinstance(storage, RDBStorage):
        yield
        return
    stop = threading.Event()

    def beat():
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a missed beat is tried at the next, not waited on here
                RDBStorage.record_heartbeat(storage, trial._trial_id)

    storage.record_heartbeat(trial._trial_id)
    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def as_now(held):
    """A search as the mnist20k that made the study recorded it, with each setting newer than the study at its
    default, as an older config.json reads: so the same command continues a study made before --ema existed."""
    if not isinstance(held, dict) or not isinstance(held.get("config"), dict):
        return held
    newer = {
        f.name: f.default for f in fields(TrainConfig) if f.name not in held["config"] and f.default is not MISSING
    }
    return {**held, "config": {**held["config"], **newer}}


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


def safe_url(url: str) -> str:
    """A database URL without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__
