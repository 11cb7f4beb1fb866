"""The live feed of settled calls (metadata only, never content) for the dashboard's admin page.

Publishing costs one attribute test per call while nobody watches. Each watcher has a bounded
queue: one that cannot keep up loses events (and is told how many), the calls never wait for it.
"""

from __future__ import annotations

import asyncio

QUEUE_SIZE = 2_000


class CallFeed:
    def __init__(self) -> None:
        self.listeners: list[asyncio.Queue] = []
        self.dropped: dict[int, int] = {}

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(QUEUE_SIZE)
        self.listeners.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        if queue in self.listeners:
            self.listeners.remove(queue)
        self.dropped.pop(id(queue), None)

    def publish(self, event: dict) -> None:
        for queue in self.listeners:
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self.dropped[id(queue)] = self.dropped.get(id(queue), 0) + 1

    def take_dropped(self, queue: asyncio.Queue) -> int:
        return self.dropped.pop(id(queue), 0)

    def close(self) -> None:
        """Tell every watcher the server is stopping (a None each), so their streams end."""
        for queue in self.listeners:
            try:
                queue.put_nowait(None)
            except asyncio.QueueFull:
                queue.get_nowait()
                queue.put_nowait(None)
