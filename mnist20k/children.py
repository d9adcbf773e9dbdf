"""Child processes, a few at a time: started, waited for and stopped. Nothing here knows what they train;
sweep runs `mnist20k train` children through it and tune its workers, siblings that share this and nothing else.

Each child is started and waited for by a worker thread of a ThreadPoolExecutor, so the caller's thread
(where Python delivers Ctrl-C and SIGTERM) only waits on futures. A child is started and registered under
one lock, which stop() takes too: a signal that lands while a child is being started stops that child as
well, and none starts after stop().
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Finished:
    returncode: int | None  # None: never started, because the runner was stopping
    seconds: float


class Runner:
    def __init__(self, at_once: int, env: dict[str, str]):
        self.env = env
        self._pool = ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="child")
        self._lock = threading.Lock()
        self._running: list[subprocess.Popen] = []
        self._stopping = False

    def submit(self, command: list[str], log: Path) -> Future[Finished]:
        """Run `command` when a worker is free, its output appended to `log`."""
        return self._pool.submit(self._run, command, log)

    def _run(self, command: list[str], log: Path) -> Finished:
        with open(log, "ab") as out:
            with self._lock:
                if self._stopping:
                    return Finished(None, 0.0)
                started = time.perf_counter()
                # A session of its own: a terminal's Ctrl-C reaches the caller alone, which passes it on to
                # each child once, as SIGTERM (a child that got it twice could stop in the middle of saving).
                child = subprocess.Popen(
                    command,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self.env,
                    start_new_session=True,
                )
                self._running.append(child)
            code = child.wait()
            with self._lock:
                self._running.remove(child)
        return Finished(code, time.perf_counter() - started)

    def stop(self, wait_s: float) -> None:
        """SIGTERM to every child, then up to `wait_s` seconds for all to end before the rest are killed;
        no child starts after this. Not SIGINT: a job started in the background by a script (`nohup ... &`)
        and its children have SIGINT ignored, as a shell starts every background job."""
        with self._lock:
            self._stopping = True
            children = list(self._running)
        for child in children:
            child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        self.close()

    def close(self) -> None:
        """Wait for the workers: every child has ended, and none is waiting to start."""
        self._pool.shutdown(wait=True, cancel_futures=True)


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped the children; each saved what it had finished (a run its last epoch, a tune
    worker its trial, queued again)."""

    def __init__(self, code: int):
        self.code = code
