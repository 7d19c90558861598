"""The receiver's data directory: one receiver at a time (an exclusive lock held for the process's life), and the
problems that stop a start, each in one line saying what and where."""
from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

LOCK_FILE = "receiver.lock"


class DataDirError(RuntimeError):
    """The data directory (or a file in it) cannot be used; the message says what, where, and what to do."""


class DataDirLock:
    """An exclusive lock on DATA_DIR/receiver.lock, holding this process's pid, released by release()."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "DataDirLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise DataDirError(f"{self.path.parent}: cannot use the data directory ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DataDirError(f"{self.path.parent}: already in use by another receiver "
                                   f"(pid {holder or 'unknown'}); one receiver per data directory") from None
            raise DataDirError(f"{self.path}: cannot lock ({exc.strerror})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None


def _read_pid(fd: int) -> str | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return None
    return text if text.isdigit() else None


def writable_file(path: Path, what: str) -> None:
    """Raise DataDirError unless PATH can be opened for appending (it is created if missing)."""
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise DataDirError(f"{path}: cannot write the {what} ({exc.strerror})") from None
