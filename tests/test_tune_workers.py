"""tune's workers as a cluster meets them: many started at once on a fresh PostgreSQL database, a worker killed
mid-trial, a dead worker's pid taken by a live process, a worker that fails, a database restarted mid-study, and
the database's password kept out of sight. The PostgreSQL tests start a server of their own (postgres.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import postgres
import pytest
from conftest import children_of, make_mnist_dir
from optuna.trial import TrialState
from test_tune import SMALL, study_trials, tune_command, wait_for


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_mnist_dir(tmp_path_factory.mktemp("workers-data"), n_train=600, n_test=100)


@pytest.fixture(scope="module")
def pg():
    with postgres.server() as server:
        yield server


def db_command(data: Path, out: Path, study: str, trials: int, epochs: int = 2) -> list:
    """A study in the database of $MNIST20K_STORAGE: the URL, password and all, is in no argument."""
    words = [sys.executable, "-m", "mnist20k", "tune", "--data-dir", data, "--out", out, *SMALL, "--epochs", epochs,
             "--search", "lr=0.05:0.1", "--trials", trials, "--pruner", "none", "--study", study]  # fmt: skip
    return [str(word) for word in words]


def env_with(url: str) -> dict[str, str]:
    return {**os.environ, "MNIST20K_STORAGE": url, "OMP_NUM_THREADS": "1"}


def counted(trials: list) -> list:
    return [t for t in trials if "outcome" in t.user_attrs]


def command_lines_holding(secret: bytes) -> list[str]:
    """The command lines of this machine's processes that hold `secret`, as `ps` shows them to any user."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes()
        except OSError:  # ended while being read
            continue
        if secret in words:
            found.append(words.replace(b"\0", b" ").decode(errors="replace"))
    return found


def test_four_machines_at_once_on_a_fresh_database_share_it_unseen(data, tmp_path, pg, spawn):
    """A batch job's launch: four machines start the same study at the same instant on a database with no table in
    it yet. None dies, trials are counted once, and the password is in no command line and no file."""
    url = pg.url(pg.create_database())
    machines = [spawn(db_command(data, tmp_path / f"machine-{i}", "cold", trials=6), env=env_with(url),
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]  # fmt: skip
    deadline, shown = time.monotonic() + 300, []
    while any(m.poll() is None for m in machines) and time.monotonic() < deadline:
        shown += command_lines_holding(pg.password.encode())
        time.sleep(0.1)
    assert shown == []
    for machine in machines:
        stdout, stderr = machine.communicate(timeout=60)
        assert machine.returncode == 0, stderr
        assert pg.password not in stdout + stderr
    trials = optuna.load_study(study_name="cold", storage=url).get_trials()
    assert len(trials) == 6 and len(counted(trials)) == 6
    folders = {p.name for i in range(4) for p in (tmp_path / f"machine-{i}").glob("trial-*")}
    assert folders == {f"trial-{n:04d}" for n in range(6)}  # each trial trained once, on one of the machines
    for path in tmp_path.rglob("*"):  # logs, tune.json, study.png, the trials' runs
        assert not path.is_file() or pg.password.encode() not in path.read_bytes(), path


OPEN_AT_ONCE = """
import sys, time
from mnist20k.tune.study import StorageError, open_storage
start = float(sys.argv[1])
while time.time() < start:  # every process opens the storage at the same instant
    pass
try:
    open_storage(sys.argv[2], None)
except StorageError as e:
    sys.exit(str(e))
"""


def test_eight_workers_opening_a_fresh_database_at_one_instant_all_get_its_one_schema(pg, spawn):
    """The cold start itself, at its sharpest: eight processes open the same empty database at one instant, twice
    over; every one opens it (without the schema's lock, Optuna's CREATE TYPE races and some die)."""
    for _ in range(2):
        url = pg.url(pg.create_database())
        start = time.time() + 8  # after every process has imported Optuna and SQLAlchemy, on 2 loaded cores too
        opening = [spawn([sys.executable, "-c", OPEN_AT_ONCE, start, url], stderr=subprocess.PIPE, text=True)
                   for _ in range(8)]  # fmt: skip
        said = [p.communicate(timeout=60)[1] for p in opening]
        assert [p.returncode for p in opening] == [0] * 8, said


def test_every_call_to_the_database_rides_out_its_restarts(pg):
    """Two threads asking, telling and reading trials through the storage a worker uses, while the server stops
    and starts three times (down 1.5 s each): not one call fails, whichever of Optuna's calls it is."""
    import threading

    from mnist20k.tune.study import open_storage

    study = optuna.create_study(storage=open_storage(pg.url(pg.create_database()), None), study_name="x")
    failed, done, stop = [], [0], threading.Event()

    def work() -> None:
        while not stop.is_set():
            try:
                study.get_trials(deepcopy=False)
                trial = study.ask()
                trial.set_user_attr("outcome", "complete")
                study.tell(trial, 0.5)
                done[0] += 1
            except Exception as e:
                failed.append(f"{e!r} from {e.__cause__!r}")

    threads = [threading.Thread(target=work, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(3):
            time.sleep(1)
            pg.restart(down_s=1.5)
        time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=150)
    assert failed == [] and done[0] > 0


def test_a_database_restarted_mid_study_is_ridden_out_with_exactly_its_trials(data, tmp_path, pg, spawn):
    """The server stops while trials train and is back 3 s later: the worker and its parent wait for it, the
    study ends with exactly --trials trials, none counted twice, and the same command again finds nothing to do."""
    url = pg.url(pg.create_database())
    out = tmp_path / "study"
    command = db_command(data, out, "restart", trials=3, epochs=6)
    child = spawn(command, env=env_with(url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(out / "trial-0001" / "metrics.jsonl")
    pg.restart()
    _, stderr = child.communicate(timeout=300)
    assert child.returncode == 0, stderr
    again = subprocess.run(command, env=env_with(url), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    trials = optuna.load_study(study_name="restart", storage=url).get_trials()
    ended = counted(trials)
    assert len(ended) == 3
    retried = {t.system_attrs["retry_history"][-1] for t in trials if "retry_history" in t.system_attrs}
    assert not retried & {t.number for t in ended}  # a trial tried again is not counted as well


def kill_the_worker_mid_trial(command: list, out: Path, spawn) -> list:
    """The study's only worker SIGKILLed while trial 0 trains; the parent must end the study by itself, exit 0."""
    child = spawn(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(out / "trial-0000" / "metrics.jsonl")
    (worker,) = children_of(child.pid)
    os.kill(worker, signal.SIGKILL)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 0, stderr
    return study_trials(out)


def test_a_worker_killed_mid_trial_is_started_again_and_the_parent_ends_the_study(data, tmp_path, spawn):
    """SIGKILL, as the OOM killer sends it, to the only worker: its parent sees it die, fails its trial and queues
    the values again, starts a new worker, and the study ends with its trials, without waiting on the dead one."""
    out = tmp_path / "study"
    trials = kill_the_worker_mid_trial(tune_command(data, out, trials=2), out, spawn)
    assert trials[0].state is TrialState.FAIL and "outcome" not in trials[0].user_attrs
    ended = counted(trials)
    assert len(ended) == 2 and [t.system_attrs.get("retry_history") for t in ended].count([0]) == 1
    assert len({t.user_attrs["mnist20k.worker"] for t in trials}) == 2  # the one killed, and the one started again


def test_a_trial_past_its_tries_counts_as_lost_and_is_not_tried_again(data, tmp_path, spawn):
    """--max-retries 0: the killed worker's trial is not tried again but counted, as lost, in tune.json; the worker
    started again trains a new trial in its place."""
    out = tmp_path / "study"
    trials = kill_the_worker_mid_trial([*tune_command(data, out, trials=2), "--max-retries", "0"], out, spawn)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert all("retry_history" not in t.system_attrs for t in trials)  # trial 1 is a new one, not trial 0 again
    record = json.loads((out / "tune.json").read_text())
    assert record["finished"] == 2 and record["max_retries"] == 0
    lost = record["trials"][0]
    assert (lost["outcome"], lost["message"], lost["retry_of"]) == ("lost", "its worker stopped once", None)


def test_studies_in_one_database_do_not_wait_on_each_others_lock(pg, tmp_path):
    """The claim lock is the study's own: while one study's is held, another's is taken at once."""
    import threading

    from mnist20k.tune.study import open_storage, study_lock

    storage = open_storage(pg.url(pg.create_database()), tmp_path)
    taken = threading.Event()

    def other() -> None:
        with study_lock(storage, tmp_path, "b"):
            taken.set()

    with study_lock(storage, tmp_path, "a"):
        thread = threading.Thread(target=other, daemon=True)
        thread.start()
        assert taken.wait(timeout=10)
    thread.join(timeout=10)


def test_the_sampler_treats_running_trials_as_ended_badly():
    """constant_liar: parallel workers do not all sample next to the best point (its default differs by version)."""
    from mnist20k.tune.study import make_sampler

    assert make_sampler(1)._constant_liar is True


def take_pid(pid: int, spawn) -> subprocess.Popen:
    """A live process with the pid of one that died: the kernel gives the next process ns_last_pid + 1 (root)."""
    for _ in range(50):
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        holder = spawn(["sleep", "600"])
        if holder.pid == pid:
            return holder
        holder.kill()
        holder.wait(timeout=10)
    pytest.fail(f"pid {pid} could not be taken again")


def test_a_dead_workers_trial_is_tried_again_though_its_pid_is_a_live_process(data, tmp_path, spawn):
    """The worker and its parent SIGKILLed together, and the worker's pid then taken by a live process: the next
    run still finds the trial's worker dead (its lease is free) and tries its values again."""
    out = tmp_path / "study"
    command = tune_command(data, out, trials=2)
    child = spawn(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(out / "trial-0000" / "metrics.jsonl")
    (worker,) = children_of(child.pid)
    child.kill()  # the parent first, so that it does not see its worker die
    child.wait(timeout=60)
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:  # until init has reaped it
        time.sleep(0.1)
    if os.geteuid() == 0:
        take_pid(worker, spawn)
    else:
        print("not root: the dead worker's pid is not taken again (ns_last_pid needs root)")
    assert [t.number for t in study_trials(out) if t.state is TrialState.RUNNING] == [0]
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    trials = study_trials(out)
    assert trials[0].state is TrialState.FAIL
    ended = counted(trials)
    assert len(ended) == 2 and [t.system_attrs.get("retry_history") for t in ended].count([0]) == 1


def test_a_worker_that_fails_ends_the_study_with_one_line_naming_its_log(data, tmp_path):
    """A worker that stops with an error (here, a file where its next trial's folder goes) is not started again:
    the parent stops, says which worker and where its log is, and exits 1; the trial is queued again."""
    out = tmp_path / "study"
    command = tune_command(data, out, trials=1)
    assert subprocess.run(command, capture_output=True, timeout=300).returncode == 0
    (out / "trial-0001").write_text("in the way")
    command[command.index("--trials") + 1] = "2"
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: worker 0 stopped: FileExistsError") and f"(see {out / 'worker-0.log'})" in line
    assert [t.state for t in study_trials(out)][1:] == [TrialState.FAIL, TrialState.WAITING]
