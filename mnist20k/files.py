"""Every file mnist20k writes goes through write_file: whole or not at all, and a failure is one line.

A file is made in memory first (a checkpoint, a PNG, JSON) and then written in one go to a temporary file
beside its destination, which is moved over the destination in one step. So the serializer never touches
the disk, and a full disk or a file-size limit shows up as the operating system's own error, not as
whatever a library's writer makes of a short write (torch.save's zip writer raises a RuntimeError
"unexpected pos"). The file it replaces stays whole until the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from mnist20k.errors import OutputError


def write_file(path: Path | str, data: bytes) -> None:
    """`data` as the whole of `path`, atomically; an OSError becomes OutputError('cannot write PATH: why')."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        # os.open with 0o666 lets the umask decide the permissions, as for any file the user makes
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        raise OutputError(f"cannot write {path}: {reason(e)}") from None
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: Path) -> None:
    """Remove a temporary file that may never have been made. Its folder may be a file, gone or read-only, so
    unlinking it fails in as many ways as the write did (NotADirectoryError, PermissionError, ...), not only
    with FileNotFoundError: the write's own error is the one to tell."""
    with contextlib.suppress(OSError):
        tmp.unlink()


def write_figure(fig, path: Path | str, kept: str) -> None:
    """A matplotlib figure as the PNG `path`, closed after; when it cannot be written, the one line says what is
    saved all the same (`kept`: "the run itself is saved"), since a picture is never the only record."""
    import io

    import matplotlib.pyplot as plt

    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    try:
        write_file(path, png.getvalue())
    except OutputError as e:
        raise OutputError(f"{e}; {kept}") from None


def check_writable(path: Path | str) -> None:
    """Fail now, before the work that makes the file: `path`'s folder takes a new file (one is made there and
    removed), or OutputError says why not, as write_file would."""
    path = Path(path)
    probe = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as e:
        raise OutputError(f"cannot write {path}: {reason(e)}") from None
    _discard(probe)


def remove_unfinished(path: Path | str) -> None:
    """Delete what a write_file(path) cut short by a kill left behind: its temporary files beside `path`."""
    path = Path(path)
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def reason(error: OSError) -> str:
    """The operating system's words for an OSError: 'No space left on device', 'File too large'."""
    return error.strerror or str(error)
