"""The writer thread against a real SQLite file: batching, and a write-ahead log that stays short."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import sys

from hubproxy.store.sqlite import db
from hubproxy.store.writer import WATCH_INTERVAL


def insert_note(text: str):
    def write(conn: sqlite3.Connection) -> int:
        return conn.execute("INSERT INTO notes (text) VALUES (?)", (text,)).lastrowid

    return write


def wal_frames(path) -> int:
    """Valid frames in the write-ahead log (mxFrame in the wal-index header), read without touching
    the database: a log restarted after a checkpoint holds only the frames written since."""
    header = path.with_name(path.name + "-shm").read_bytes()[:48]
    return int.from_bytes(header[16:20], sys.byteorder)


def test_writes_commit_in_order_and_the_log_is_checkpointed_when_idle(tmp_path):
    path = tmp_path / "hubproxy.db"
    db.connect(path, create=True).execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")

    async def scenario() -> tuple[list[int], int, int]:
        writer = db.SQLiteWriter(path)
        writer.start(asyncio.get_running_loop())
        ids = await asyncio.gather(*(writer.submit(insert_note("x" * 2000)) for _ in range(300)))
        grown = wal_frames(path)
        await asyncio.sleep(WATCH_INTERVAL * 3)
        ids.append(await writer.submit(insert_note("after an idle moment")))
        restarted = wal_frames(path)
        await writer.close()
        return ids, grown, restarted

    ids, grown, restarted = asyncio.run(scenario())
    assert ids == list(range(1, 302))
    assert grown > 150, "300 rows of 2 kB fill well over 150 pages of log"
    assert restarted < 10, "after the idle checkpoint the log starts again from its beginning"


def test_the_writer_never_lets_sqlite_checkpoint_inside_a_commit(tmp_path):
    path = tmp_path / "hubproxy.db"
    db.connect(path, create=True).close()

    async def scenario() -> int:
        writer = db.SQLiteWriter(path)
        writer.start(asyncio.get_running_loop())
        value = writer.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        await writer.close()
        return value

    assert asyncio.run(scenario()) == 0


def test_workers_writers_take_turns_through_the_lock_file(tmp_path):
    """With `serve --workers`, a writer waits on the other workers' file lock (woken as soon as it is
    let go) rather than in SQLite's sleep-and-retry; one holding it keeps the others out."""
    path = tmp_path / "hubproxy.db"
    db.connect(path, create=True).execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    other_worker = os.open(f"{path}.writers", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(other_worker, fcntl.LOCK_EX)

    async def scenario() -> tuple[bool, int]:
        writer = db.SQLiteWriter(path, shared=True)
        writer.start(asyncio.get_running_loop())
        write = writer.submit(insert_note("waits its turn"))
        await asyncio.sleep(0.3)
        waited = not write.done()
        fcntl.flock(other_worker, fcntl.LOCK_UN)
        row = await asyncio.wait_for(write, 2)
        await writer.close()
        return waited, row

    assert asyncio.run(scenario()) == (True, 1)
    os.close(other_worker)
