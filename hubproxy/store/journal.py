"""The call journal: one line per call, appended before the call goes upstream, so that a server
killed a millisecond later still has a record to bill it from.

Reservations reach the database only for calls open longer than 100 ms (a sweep writes them), and a
settlement only when the call ends. A kill -9 in between used to leave no trace of a call the
upstream was paid for. Appending one line to a file costs a `write` system call and no fsync: the
kernel keeps it through the death of the process (not through a power cut).

Each process writes its own segment files (`journal/<pid>-<n>.jsonl`), holding an exclusive `flock`
on each while it lives. A segment is deleted once every call in it is settled and a newer segment is
being written; a clean stop deletes them all. Whatever is left was written by a process that died:
the next start (or the parent of a dead worker) settles each call in it that has no usage row as
`interrupted`, billed at its estimated prompt cost, and deletes the file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

from hubproxy.filemodes import PRIVATE_FILE, make_private_dir
from hubproxy.store.records import Reservation

try:
    import fcntl
except ImportError:  # Windows: segments are left unlocked; a running server's are never settled there
    fcntl = None  # type: ignore[assignment]

SEGMENT_BYTES = 4 * 1024 * 1024


class CallJournal:
    """This process's journal: `opened` before a call goes upstream, `closed` once it is settled."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._pid = os.getpid()
        self._number = 0
        self._fd = -1
        self._size = 0
        self._open: dict[int, int] = {}  # segment number → calls in it not yet settled
        self._fds: dict[int, int] = {}  # segment number → its descriptor, holding its lock
        make_private_dir(directory)
        self._start_segment()

    def _path(self, number: int) -> Path:
        return self.directory / f"{self._pid}-{number}.jsonl"

    def _start_segment(self) -> None:
        previous = self._number
        self._number += 1
        self._fd = os.open(self._path(self._number), os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
        if fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._fds[self._number] = self._fd
        self._size = 0
        self._open[self._number] = 0
        if previous:
            self._forget_if_settled(previous)

    def opened(self, reservation: Reservation) -> int:
        """Record a call about to go upstream; returns the segment to pass to `closed`."""
        line = orjson.dumps((time.time(), *reservation.row())) + b"\n"
        os.write(self._fd, line)
        number = self._number
        self._open[number] += 1
        self._size += len(line)
        if self._size >= SEGMENT_BYTES:
            self._start_segment()
        return number

    def closed(self, number: int) -> None:
        """The call's settlement is committed: it needs its journal line no more."""
        self._open[number] -= 1
        if number != self._number:
            self._forget_if_settled(number)

    def _forget_if_settled(self, number: int) -> None:
        if self._open.get(number) == 0:
            del self._open[number]
            self._path(number).unlink(missing_ok=True)
            os.close(self._fds.pop(number))

    def close(self) -> None:
        """A clean stop, after every settlement was written: nothing in the journal is needed."""
        for number, fd in self._fds.items():
            self._path(number).unlink(missing_ok=True)
            os.close(fd)
        self._fds.clear()
        self._open.clear()


def leftover_segments(directory: Path, pid: int | None = None) -> list[Path]:
    """Segments no living process holds (a dead one wrote them); with `pid`, only that process's."""
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob(f"{pid}-*.jsonl" if pid is not None else "*.jsonl")):
        fd = os.open(path, os.O_RDONLY)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a running server's
            found.append(path)
        finally:
            os.close(fd)
    return found


def journaled_calls(segments: list[Path]) -> dict[str, tuple[float, Reservation]]:
    """The calls these segments hold, by request id: (when each started, its reservation)."""
    calls: dict[str, tuple[float, Reservation]] = {}
    for path in segments:
        for raw in path.read_bytes().splitlines():
            try:
                started, *fields = orjson.loads(raw)
                reservation = Reservation(*fields)
            except (orjson.JSONDecodeError, TypeError, ValueError):
                continue  # the last line of a process killed mid-write
            reservation.stream = bool(reservation.stream)
            calls[reservation.id] = (started, reservation)
    return calls
