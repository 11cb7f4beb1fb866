"""The live feed of settled calls (metadata only, never content) for the dashboard's admin page.

Publishing costs one attribute test per call while nobody watches (`active`). Each watcher has a
bounded queue: one that cannot keep up loses events (and is told how many), the calls never wait.

Under `serve --workers N` a page is served by one worker, so the workers pass events to each other
(`WorkerExchange`): each listens on a Unix datagram socket in the home's `feed/` folder and marks
there whether it has watchers; the others send it their calls, batched every quarter second, only
while it does. A datagram that cannot be sent at once is dropped, as a slow watcher's events are.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path

import orjson

QUEUE_SIZE = 2_000
EXCHANGE_SECONDS = 0.25
WATCHERS_POLL_SECONDS = 0.5
DATAGRAM_EVENTS = 100  # events per datagram: well under the socket's size limit


class CallFeed:
    def __init__(self) -> None:
        self.listeners: list[asyncio.Queue] = []
        self.dropped: dict[int, int] = {}
        self.exchange: WorkerExchange | None = None
        self.active = False  # anyone watching, here or (with workers) in another worker

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(QUEUE_SIZE)
        self.listeners.append(queue)
        self._watchers_changed()
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        if queue in self.listeners:
            self.listeners.remove(queue)
        self.dropped.pop(id(queue), None)
        self._watchers_changed()

    def publish(self, event: dict) -> None:
        """A settled call: to this process's watchers, and to the other workers' if any watch."""
        self.deliver(event)
        if self.exchange is not None and self.exchange.peers:
            self.exchange.pending.append(event)

    def deliver(self, event: dict) -> None:
        for queue in self.listeners:
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self.dropped[id(queue)] = self.dropped.get(id(queue), 0) + 1

    def take_dropped(self, queue: asyncio.Queue) -> int:
        return self.dropped.pop(id(queue), 0)

    def refresh(self) -> None:
        """Whether anyone watches, here or (with workers) in another worker."""
        exchange = self.exchange
        self.active = bool(self.listeners) or bool(exchange is not None and exchange.peers)

    def _watchers_changed(self) -> None:
        """A page opened or closed here: tell the other workers whether this one now has watchers."""
        self.refresh()
        if self.exchange is not None:
            self.exchange.mark_watching(bool(self.listeners))

    def close(self) -> None:
        """Tell every watcher the server is stopping (a None each), so their streams end."""
        for queue in self.listeners:
            try:
                queue.put_nowait(None)
            except asyncio.QueueFull:
                queue.get_nowait()
                queue.put_nowait(None)


class WorkerExchange:
    """One worker's end of the exchange: its socket, the peers that watch, the events to send them."""

    def __init__(self, feed: CallFeed, folder: Path) -> None:
        self.feed = feed
        self.folder = folder
        self.name = str(os.getpid())
        self.peers: list[str] = []  # socket paths of the other workers that have watchers
        self.pending: list[dict] = []
        self.inbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.inbox.setblocking(False)
        self.out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.out.setblocking(False)

    @property
    def address(self) -> Path:
        return self.folder / f"{self.name}.sock"

    def start(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.address.unlink(missing_ok=True)
        self.inbox.bind(str(self.address))
        asyncio.get_running_loop().add_reader(self.inbox.fileno(), self._receive)
        self.feed.exchange = self

    def _receive(self) -> None:
        while True:
            try:
                data = self.inbox.recv(1 << 20)
            except OSError:  # nothing more waiting (BlockingIOError), or the socket closed
                return
            try:
                events = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(events, list):
                for event in events:
                    if isinstance(event, dict):
                        self.feed.deliver(event)

    def mark_watching(self, watching: bool) -> None:
        marker = self.folder / f"{self.name}.watching"
        with contextlib.suppress(OSError):
            if watching:
                marker.touch()
            else:
                marker.unlink(missing_ok=True)

    async def run(self) -> None:
        """Learn which peers watch (twice a second) and send them what settled (four times)."""
        loop = asyncio.get_running_loop()
        tick = 0
        while True:
            await asyncio.sleep(EXCHANGE_SECONDS)
            tick += 1
            if tick % round(WATCHERS_POLL_SECONDS / EXCHANGE_SECONDS) == 0:
                self.peers = await loop.run_in_executor(None, self._watching_peers)
                self.feed.refresh()
            if self.pending:
                events, self.pending = self.pending, []
                if self.peers:
                    self._send(events)

    def _watching_peers(self) -> list[str]:
        found = []
        for marker in self.folder.glob("*.watching"):
            name = marker.name.removesuffix(".watching")
            if name != self.name and (self.folder / f"{name}.sock").exists():
                found.append(str(self.folder / f"{name}.sock"))
        return found

    def _send(self, events: list[dict]) -> None:
        for start in range(0, len(events), DATAGRAM_EVENTS):
            data = orjson.dumps(events[start : start + DATAGRAM_EVENTS])
            for peer in self.peers:
                with contextlib.suppress(OSError):  # a full or vanished peer loses these, as a slow page does
                    self.out.sendto(data, peer)

    def close(self) -> None:
        self.feed.exchange = None
        with contextlib.suppress(RuntimeError):  # the loop may be closing
            asyncio.get_running_loop().remove_reader(self.inbox.fileno())
        self.inbox.close()
        self.out.close()
        for path in (self.address, self.folder / f"{self.name}.watching"):
            path.unlink(missing_ok=True)
