"""Small MNIST-shaped data the tests write themselves, and helpers to run the CLI in-process."""

from __future__ import annotations

import contextlib
import os
import pwd
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mnist20k.data import FILES

# A network of your own that builds and scores, but fails once it trains: found only by a run itself
FAILS_IN_TRAINING = """from torch import nn


class Net(nn.Linear):
    def __init__(self):
        super().__init__(784, 10)

    def forward(self, x):
        assert not self.training, "no training"
        return super().forward(x.flatten(1))
"""


def write_idx_images(path: Path, images: torch.Tensor) -> None:
    n, rows, cols = images.shape
    path.write_bytes(struct.pack(">4i", 2051, n, rows, cols) + images.to(torch.uint8).numpy().tobytes())


def write_idx_labels(path: Path, labels: torch.Tensor) -> None:
    path.write_bytes(struct.pack(">2i", 2049, len(labels)) + labels.to(torch.uint8).numpy().tobytes())


def synthetic_digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose label is where a bright block sits: learnable in a few dozen steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    labels = labels[torch.randperm(n, generator=g)]
    images = (torch.rand(n, 28, 28, generator=g) * 40).to(torch.uint8)
    for i, label in enumerate(labels.tolist()):
        r, c = 4 + (label // 5) * 12, 3 + (label % 5) * 5
        images[i, r : r + 8, c : c + 4] = 255
    return images, labels


def make_mnist_dir(root: Path, n_train: int = 512, n_test: int = 200) -> Path:
    """A data folder in torchvision's layout (root/MNIST/raw/) holding synthetic IDX files."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for train, n in ((True, n_train), (False, n_test)):
        images, labels = synthetic_digits(n, seed=int(train))
        write_idx_images(raw / FILES[train][0], images)
        write_idx_labels(raw / FILES[train][1], labels)
    return root


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return make_mnist_dir(tmp_path_factory.mktemp("data"))


@pytest.fixture
def fresh_data_dir(tmp_path) -> Path:
    """A data folder a test may damage."""
    return make_mnist_dir(tmp_path / "data")


@pytest.fixture(scope="session")
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound for the whole session, so nothing else takes it, and
    never listening, so a connection to it is refused at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture(autouse=True)
def no_download(monkeypatch, closed_port):
    """Tests never reach the network: torchvision's mirrors point at a closed port, so a download fails at once
    with the error urllib really gives offline."""
    from torchvision.datasets import MNIST

    monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{closed_port}/"])


@pytest.fixture
def real_mnist() -> Path:
    path = os.environ.get("MNIST20K_DATA_DIR")
    if not path:
        pytest.skip("needs real MNIST: set MNIST20K_DATA_DIR to a folder holding MNIST/raw/")
    return Path(path)


class StopAfter:
    """An on_epoch callback that interrupts a run after `epoch`, as Ctrl-C would."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def __call__(self, record):
        if record["epoch"] == self.epoch:
            raise KeyboardInterrupt


def one_error_line(result, code: int, text: str) -> str:
    """The CLI failed with `code` and one line on stderr that holds `text`, and no traceback; that line."""
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# ---- child processes: started, read and always ended by the test that started them -------------


class Lines:
    """A child's output, line by line, read by a thread: next() waits at most `timeout` seconds, so a child that
    prints nothing fails the test instead of hanging it."""

    def __init__(self, stream):
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.queue.put(line)
        self.queue.put(None)  # end of output

    def next(self, timeout: float = 120) -> str | None:
        """The next line, or None once the child has closed its output."""
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output for {timeout} s") from None

    def rest(self, timeout: float = 120) -> str:
        """Every line still to come, until the child closes its output."""
        lines = []
        while (line := self.next(timeout)) is not None:
            lines.append(line)
        return "".join(lines)


@pytest.fixture
def spawn():
    """subprocess.Popen for a test: every child it starts is ended at teardown, by its pid (and, when it runs in
    a session of its own, its process group, whose id is that pid), even when an assertion failed first."""
    children: list[subprocess.Popen] = []

    def start(command, **kwargs) -> subprocess.Popen:
        child = subprocess.Popen([str(c) for c in command], **kwargs)
        children.append(child)
        return child

    yield start
    for child in children:
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if child.pid == os.getpgid(child.pid):
                    os.killpg(child.pid, signal.SIGKILL)
                else:
                    child.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=30)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()


def children_of(pid: int) -> list[int]:
    """The pids of the processes `pid` started that are alive now, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[1]) == pid:  # the field after the state is the parent's pid
                found.append(int(stat.parent.name))
    return found


# ---- an unprivileged user: file modes hold for it, as they do not for root ------------------------

CLONE_NEWUSER = 0x10000000


def drop_privileges() -> None:
    """preexec_fn of a child that file modes hold for. Run by root, the child enters a user namespace of its own:
    it is nobody there and holds no capability over the machine's files, so root's override of modes is gone,
    while the owner's bits of root's own folders still let it reach the interpreter (which may lie under /root,
    where setuid(nobody) could not run it). Where no namespace can be made it becomes nobody outright. Run by
    any other user, it stays that user."""
    if os.getuid() != 0:
        return
    import ctypes

    if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWUSER) != 0:
        user = pwd.getpwnam("nobody")
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)


def unprivileged(args: list, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`python ARGS` as a user without privileges (drop_privileges), its output captured, with a timeout."""
    command = [sys.executable, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, preexec_fn=drop_privileges, timeout=timeout,
                          **kwargs)  # fmt: skip


@pytest.fixture(scope="session")
def modes_hold(tmp_path_factory) -> None:
    """Skip (or fail, where CI requires it) unless an unprivileged child runs mnist20k here and a read-only
    folder refuses it."""
    folder = tmp_path_factory.mktemp("read-only")
    folder.chmod(0o555)
    probe = "import sys, mnist20k.cli; open(sys.argv[1] + '/x', 'w')"
    done = unprivileged(["-c", probe, folder], timeout=120)
    folder.chmod(0o755)
    if done.returncode != 0 and "PermissionError" in done.stderr:
        return
    why = f"no unprivileged child here that file modes hold for: {done.stderr.strip().splitlines()[-1:]}"
    if os.environ.get("MNIST20K_UNPRIVILEGED_TESTS") == "required":
        pytest.fail(why + ", though MNIST20K_UNPRIVILEGED_TESTS=required")
    pytest.skip(why)


# ---- images no one should decode -------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb(path, side: int = 20_000) -> None:
    """A valid grey PNG that declares side x side pixels, white but for one thick stroke: its rows repeat,
    so it compresses to a few hundred KB and would decode to side**2 bytes."""
    white = b"\x00" + b"\xff" * side  # filter byte 0, then the row
    stroke = b"\x00" + b"\xff" * (side // 2) + b"\x00" * (side // 20) + b"\xff" * (side - side // 2 - side // 20)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(stroke if side // 10 < i < side - side // 10 else white) for i in range(side))
    idat += z.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )
