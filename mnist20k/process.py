"""What mnist20k changes in the whole process, in one place. The CLI's entry applies it when a command
starts (cli._main); the library never does, at import or inside a function, so a notebook or another
program that uses the library keeps its process as it was, unless it calls these itself."""

from __future__ import annotations

import contextlib
import ctypes
import signal


def configure() -> None:
    """Everything the CLI sets for its process: today, the allocator's handling of freed memory."""
    keep_freed_memory()


def keep_freed_memory() -> None:
    """Stop glibc from handing freed activation buffers back to the OS after every step.

    PyTorch has no caching allocator on the CPU: each step frees and re-allocates megabytes of
    activations, glibc returns them to the OS, and the next step faults them back in page by page.
    On two cores that was ~8 s of system time per 150 steps and 25-35% of training throughput;
    keeping up to 1 GiB mapped removes it. Process-wide and idempotent; a no-op off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    mallopt(m_mmap_threshold, 32 << 20)  # buffers up to 32 MiB come from the heap, not fresh mmaps
    mallopt(m_trim_threshold, 1 << 30)  # keep up to 1 GiB of freed heap instead of trimming it
    mallopt(m_top_pad, 256 << 20)  # grow the heap in large steps


class Terminated(BaseException):
    """SIGTERM, raised where the program is, as Ctrl-C raises KeyboardInterrupt: a killed job stops the way an
    interrupted one does, saving what it has."""


INTERRUPTS = (KeyboardInterrupt, Terminated)


def exit_code(interrupt: BaseException) -> int:
    """The shell's code for a process ended by the signal: 128 + SIGTERM (15) or SIGINT (2)."""
    return 143 if isinstance(interrupt, Terminated) else 130


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises Terminated; the handler before it is restored after."""

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
