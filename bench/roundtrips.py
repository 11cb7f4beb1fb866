"""PostgreSQL round trips per call, and one instance on PostgreSQL against SQLite: `python -m bench.roundtrips`.

A statement count says little about waiting: a batch's statements sent in one pipeline cost one
round trip. Here hubproxy reaches PostgreSQL through a relay on 127.0.0.1 that counts round trips as
the database sees them: each time PostgreSQL answers after hubproxy sent something since its last
answer (every connection: the writer's, the readers', the heartbeat). Calls are made `--calls` at a
time over 1 and 32 connections, then (where wrk is installed) as many as hubproxy serves over 32 and
64. Then, in the same run, hubproxy on SQLite and on PostgreSQL directly (no relay) under wrk:
requests/s each, the ratio, and each store's CPU per call (hubproxy's, and PostgreSQL's own
processes' where they run on this machine). Needs PostgreSQL (HUBPROXY_TEST_POSTGRES_URL, default
postgresql://postgres@127.0.0.1:5432/test; a database is made and dropped). Last, Redis's own CPU
time and commands per call of a rate-limited key, and hubproxy's CPU per call (hubproxy on SQLite
with `--redis`; Redis at HUBPROXY_TEST_REDIS_URL, default redis://127.0.0.1:6379/0).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from bench.instructions import drive
from bench.run import (
    BODY,
    Target,
    cpu_seconds,
    free_port,
    own_cpu_seconds,
    run_wrk,
    setup_hubproxy_home,
    start,
    stop_all,
    wait_ready,
    wrk_seconds,
)

POSTGRES_URL = os.environ.get("HUBPROXY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("HUBPROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class CountingRelay:
    """A TCP relay to PostgreSQL, on its own thread and loop, counting round trips."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self.round_trips = 0
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)
        self._ready.set()
        async with server:
            await server.serve_forever()

    async def _connection(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.target)
        asked = [False]  # the client sent something the server has not answered yet

        async def upward() -> None:
            while data := await client_r.read(65536):
                asked[0] = True
                server_w.write(data)
                await server_w.drain()
            server_w.close()

        async def downward() -> None:
            while data := await server_r.read(65536):
                if asked[0]:
                    asked[0] = False
                    self.round_trips += 1
                client_w.write(data)
                await client_w.drain()
            client_w.close()

        await asyncio.gather(upward(), downward(), return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000, help="calls counted at each concurrency")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of wrk load per store")
    parser.add_argument("--smoke", action="store_true", help="a few seconds in all, for tests")
    args = parser.parse_args(argv)
    if args.smoke:
        args.calls, args.duration = 200, 1.0
    import psycopg

    name = f"hubproxy_trips_{os.getpid()}"
    admin = psycopg.connect(POSTGRES_URL, autocommit=True)
    admin.execute(f"CREATE DATABASE {name}")
    parts = urllib.parse.urlsplit(POSTGRES_URL)
    relay = CountingRelay(parts.hostname or "127.0.0.1", parts.port or 5432)
    user = f"{parts.username}@" if parts.username else ""
    relayed = f"postgresql://{user}127.0.0.1:{relay.port}/{name}"
    direct = parts._replace(path=f"/{name}").geturl()
    procs = []
    try:
        with tempfile.TemporaryDirectory(prefix="hubproxy-trips-") as tmp_name:
            tmp = Path(tmp_name)
            up_port = free_port()
            upstream = f"http://127.0.0.1:{up_port}/v1"
            procs.append(start([sys.executable, "-m", "bench.upstream", "--port", str(up_port)], core=0))
            wait_ready(up_port)
            sqlite_home, pg_home = tmp / "sqlite", tmp / "postgres"
            sqlite_home.mkdir()
            pg_home.mkdir()
            sqlite_key = setup_hubproxy_home(sqlite_home, upstream)
            (pg_home / "config.toml").write_text((sqlite_home / "config.toml").read_text())
            pg_key = key_in(direct)
            port = free_port()
            serve = [sys.executable, "-m", "hubproxy", "--home", str(pg_home), "serve", "--port", str(port)]
            proc = start([*serve, "--database", relayed], core=1)
            try:
                wait_ready(port, timeout=60)
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                auth = {"Authorization": f"Bearer {pg_key}"}
                asyncio.run(drive(url, auth, 200, BODY, 8))  # warm-up
                print(f"{'connections':>12} {'calls':>8} {'round trips':>12} {'per call':>9}")
                for concurrency in (1, 32):
                    before = relay.round_trips
                    bad = asyncio.run(drive(url, auth, args.calls, BODY, concurrency))
                    trips = relay.round_trips - before
                    print(f"{concurrency:>12} {args.calls:>8} {trips:>12} {trips / args.calls:>9.3f}")
                    if bad:
                        print(f"  warning: {bad} calls were not 200", file=sys.stderr)
                if shutil.which("wrk") is not None:  # as many calls as the gateway serves: larger batches
                    target = Target("PostgreSQL", f"http://127.0.0.1:{port}/v1", proc.pid, auth)
                    for connections in (32, 64):
                        before = relay.round_trips
                        rate = run_wrk(target, BODY, connections, args.duration, core=0)
                        calls = max(round(rate * wrk_seconds(args.duration)), 1)
                        trips = relay.round_trips - before
                        print(f"{connections:>8} wrk {calls:>8} {trips:>12} {trips / calls:>9.3f}")
            finally:
                stop_all([proc])
            redis_cost(sqlite_home, args.calls)
            if shutil.which("wrk") is None:
                print("wrk not found (apt-get install wrk): the SQLite/PostgreSQL comparison is skipped")
                return 0
            rates, costs = {}, {}
            for store, home, key, database in (
                ("SQLite", sqlite_home, sqlite_key, None),
                ("PostgreSQL", pg_home, pg_key, direct),
            ):
                port = free_port()
                serve = [sys.executable, "-m", "hubproxy", "--home", str(home), "serve", "--port", str(port)]
                proc = start([*serve, *(["--database", database] if database else [])], core=1)
                try:
                    wait_ready(port, timeout=60)
                    target = Target(store, f"http://127.0.0.1:{port}/v1", proc.pid, {"Authorization": f"Bearer {key}"})
                    before = cpu_seconds(proc.pid), postgres_cpu_seconds()
                    rates[store] = run_wrk(target, BODY, 32, args.duration, core=0)
                    calls = max(rates[store] * wrk_seconds(args.duration), 1)
                    costs[store] = (
                        (cpu_seconds(proc.pid) - before[0]) / calls * 1e6,
                        (postgres_cpu_seconds() - before[1]) / calls * 1e6,
                    )
                finally:
                    stop_all([proc])
            ratio = rates["PostgreSQL"] / max(rates["SQLite"], 1)
            sqlite, postgres = rates["SQLite"], rates["PostgreSQL"]
            print(f"\nwrk, 32 connections: SQLite {sqlite:,.0f} req/s, PostgreSQL {postgres:,.0f} ({ratio:.0%})")
            print(
                f"CPU µs per call: on SQLite hubproxy {costs['SQLite'][0]:.0f}; on PostgreSQL hubproxy "
                f"{costs['PostgreSQL'][0]:.0f} + PostgreSQL's own processes {costs['PostgreSQL'][1]:.0f} "
                "(on this machine's cores too, where the database runs here)"
            )
    finally:
        stop_all(procs)
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
    return 0


def redis_cost(home: Path, calls: int) -> None:
    """Redis CPU µs and commands per call of a key with an rpm limit (every call admitted and finished)."""
    import redis

    from hubproxy.store import open_store
    from hubproxy.store.sql import accounts

    store = open_store(home / "hubproxy.db")
    try:
        key = store.run(accounts.create_key, "bench@example.com", "limited", {"rpm": 10_000_000})[1]
    finally:
        store.close()
    client = redis.Redis.from_url(REDIS_URL)
    port = free_port()
    serve = [sys.executable, "-m", "hubproxy", "--home", str(home), "serve", "--port", str(port), "--redis", REDIS_URL]
    proc = start(serve, core=1)
    try:
        wait_ready(port, timeout=60)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        auth = {"Authorization": f"Bearer {key}"}
        asyncio.run(drive(url, auth, 200, BODY, 8))
        for concurrency in (1, 32):
            before_cpu, before_commands = redis_counters(client)
            before_hub = cpu_seconds(proc.pid)
            asyncio.run(drive(url, auth, calls, BODY, concurrency))
            time.sleep(0.5)  # the last finishes are sent after their answers
            cpu, commands = redis_counters(client)
            hub = (cpu_seconds(proc.pid) - before_hub) / calls * 1e6
            print(
                f"Redis, {concurrency:>2} connections: {(cpu - before_cpu) / calls * 1e6:6.1f} µs CPU and "
                f"{(commands - before_commands) / calls:.2f} commands per rate-limited call "
                f"(hubproxy: {hub:.0f} µs CPU per call)"
            )
    finally:
        stop_all([proc])
        client.close()


def postgres_cpu_seconds() -> float:
    """User + system CPU time of this machine's PostgreSQL processes so far (0 where none can be seen:
    a database on another machine)."""
    total = 0.0
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().startswith("postgres"):
                total += own_cpu_seconds(int(entry.name))  # the postmaster's children are counted each once
        except OSError:
            continue
    return total


def redis_counters(client) -> tuple[float, int]:
    """Redis's CPU seconds (user + system) and commands processed so far."""
    cpu, stats = client.info("cpu"), client.info("stats")
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"], stats["total_commands_processed"]


def key_in(database: str) -> str:
    """The bench user and key, made in the PostgreSQL database."""
    from hubproxy.money import parse_usd
    from hubproxy.store import open_store
    from hubproxy.store.sql import accounts

    store = open_store(database, create=True)
    try:
        store.run(accounts.add_user, "bench@example.com", parse_usd("100000"))
        return store.run(accounts.create_key, "bench@example.com", "bench")[1]
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
