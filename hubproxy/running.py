"""The running server's mark in its home: one `hubproxy serve` per home, and where it listens.

`hubproxy serve` holds an exclusive lock on `serving.lock` in the home for as long as it runs (the
parent, under --workers) and writes its address to `serving.json`. A second `serve` on the same home
finds the lock taken and refuses: two processes holding one balance each in their own memory would
let a user spend it twice (`--workers` shares it through leases instead). The CLI reads the address
to reach the server or print its URL; the file is removed at exit, and one a killed server left
behind is ignored, since the kernel released its lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import ssl
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hubproxy.config import Config, Paths

CLAIM_TRIES = 10  # a CLI command may hold the lock shared for a moment while it checks for a server


@dataclass(frozen=True)
class Address:
    """Where a running `hubproxy serve` listens."""

    pid: int
    scheme: str
    host: str
    port: int
    workers: int = 1
    tls_cert: str | None = None  # the certificate it serves HTTPS with: what a local client trusts

    @property
    def base_url(self) -> str:
        """The address as a client on this machine reaches it (no /v1)."""
        return f"{self.scheme}://{display_host(self.host)}:{self.port}"

    def trust(self) -> ssl.SSLContext | None:
        """For a call from this machine over HTTPS: trust exactly the certificate the server was given
        (often self-signed), whatever name it was made for; None over plain HTTP."""
        if self.scheme != "https" or not self.tls_cert:
            return None
        context = ssl.create_default_context(cafile=self.tls_cert)
        context.check_hostname = False  # the one trusted certificate is the check; we dial the loopback
        return context

    @property
    def local_url(self) -> str:
        """The address to call from this machine: a wildcard listener answers on the loopback."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"{self.scheme}://{host}:{self.port}"


class AlreadyServing(Exception):
    """Another `hubproxy serve` holds this home; `address` is where it listens (None: not known yet)."""

    def __init__(self, address: Address | None) -> None:
        super().__init__()
        self.address = address


def display_host(host: str) -> str:
    return "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host


def lock_path(paths: Paths) -> Path:
    return paths.data_dir / "serving.lock"


def address_path(paths: Paths) -> Path:
    return paths.data_dir / "serving.json"


class ServingMark:
    """This process serves the home: the lock held until `release`, the address written by `announce`."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        paths.data_dir.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(lock_path(paths), os.O_RDWR | os.O_CREAT, 0o600)
        for attempt in range(CLAIM_TRIES):
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if attempt == CLAIM_TRIES - 1:
                    os.close(self.fd)
                    raise AlreadyServing(read_address(paths)) from None
                time.sleep(0.05)

    def announce(self, address: Address) -> None:
        path = address_path(self.paths)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(asdict(address), fh)
        os.replace(tmp, path)

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            address_path(self.paths).unlink()
        os.close(self.fd)


def read_address(paths: Paths) -> Address | None:
    """The address in the home's `serving.json`, whoever wrote it (None: none, or unreadable)."""
    try:
        raw = json.loads(address_path(paths).read_text(encoding="utf-8"))
        return Address(**raw)
    except (OSError, ValueError, TypeError):
        return None


def running_server(paths: Paths) -> Address | None:
    """The address of the server running on this home now; None when none runs (a file left by a
    killed server is stale: nobody holds the lock)."""
    try:
        fd = os.open(lock_path(paths), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_address(paths)  # held: a server runs
    finally:
        os.close(fd)  # closing drops a shared lock taken just now
    return None


def server_url(paths: Paths, config: Config) -> str:
    """The gateway's address without /v1: the running server's, else what config.toml says it will be."""
    running = running_server(paths)
    if running is not None:
        return running.base_url
    scheme = "https" if config.server.tls_cert else "http"
    return f"{scheme}://{display_host(config.server.host)}:{config.server.port}"
