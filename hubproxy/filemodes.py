"""Owner-only files: the hubproxy home holds emails, key hashes, the ledger and maybe provider keys.

Directories are made 0700 and files 0600 as they are created; `fix_modes` tightens what an earlier
version (or a copy made with a loose umask) left readable by others, and says what it changed.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def make_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)


def create_private(path: Path) -> None:
    """Create `path` empty and 0600 if it does not exist (SQLite gives its -wal and -shm files the
    database file's mode, so creating the database this way makes all three private).

    An existing file is never opened here: closing any descriptor of a database file drops every
    POSIX lock this process holds on it, SQLite's own included."""
    if path.exists():
        return
    make_private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically (temp file + rename) with a file that is 0600 from its first byte,
    so a running server never reads half a file and nobody else ever reads any of it."""
    make_private_dir(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, PRIVATE_FILE)  # a temp file left by a crash keeps its old mode through O_CREAT
    os.replace(tmp, path)


def fix_modes(directories: list[Path], files: list[Path]) -> list[Path]:
    """Take group and other permissions off these directories and files; returns those changed."""
    fixed = []
    for path, mode in [*((d, PRIVATE_DIR) for d in directories), *((f, PRIVATE_FILE) for f in files)]:
        try:
            current = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        if current & 0o077:
            os.chmod(path, current & mode)
            fixed.append(path)
    return fixed
