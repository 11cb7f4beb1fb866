"""Several instances on PostgreSQL and Redis against one on SQLite: `python -m bench.instances`.

In one run, on the same fake upstream: hubproxy on its SQLite file; one instance on PostgreSQL
(direct, and behind nginx); two instances on one PostgreSQL database behind nginx. The key has an rpm
limit (far above the load) so that every call goes through the rate limiter: SQLite's process counts
in memory, the PostgreSQL instances through Redis (`--no-limit`: a key without, so no Redis). The
targets take turns over `--rounds`, so a slow
spell of a shared machine falls on each. Printed per target: requests/s (median of the rounds), CPU
µs per call (all its hubproxy processes), PostgreSQL statements per call (the settlements of a batch
go in one pipeline: a few round trips for all of them) and Redis calls per call
(from the instances' admin /health counters over the calls their databases recorded).

Needs wrk, nginx (`apt-get install wrk nginx-light`), PostgreSQL and Redis
(HUBPROXY_TEST_POSTGRES_URL / HUBPROXY_TEST_REDIS_URL, defaults 127.0.0.1). The database it makes is
dropped at the end. On a 2-core machine the two instances, nginx, PostgreSQL, the upstream and wrk
share the cores: the figures show the cost per call more than the scaling a team gets from hosts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.run import BODY, Target, cpu_seconds, free_port, run_wrk, setup_hubproxy_home, start, stop_all, wait_ready
from hubproxy.store.sql import accounts, usage

POSTGRES_URL = os.environ.get("HUBPROXY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("HUBPROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NGINX_CONF = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    upstream hubproxy {{ {servers} keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://hubproxy;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


@dataclass
class Setup:
    """One measured setup: where wrk points, its hubproxy processes and homes, its database."""

    name: str
    url: str
    pids: list[int]
    homes: list[Path]
    ports: list[int]
    database: str | Path
    results: dict[str, float] = field(default_factory=dict)


def admin_stats(home: Path, port: int) -> dict:
    token = (home / "admin-token").read_text().strip()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/health", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def usage_rows(database: str | Path) -> int:
    from hubproxy.store import open_store

    store = open_store(database)
    try:
        return sum(row["requests"] for row in store.run(usage.usage_report, "model"))
    finally:
        store.close()


def counters(setup: Setup) -> tuple[float, int, int, int]:
    """CPU seconds of its processes, database statements, Redis calls, calls recorded."""
    stats = [admin_stats(home, port) for home, port in zip(setup.homes, setup.ports, strict=True)]
    return (
        sum(cpu_seconds(pid) for pid in setup.pids),
        sum(s.get("database_statements", 0) for s in stats),
        sum(s.get("redis_calls", 0) for s in stats),
        usage_rows(setup.database),
    )


def home_for(tmp: Path, name: str, upstream: str, database: str | None, rpm: int | None) -> tuple[Path, dict[str, str]]:
    """A home with the bench config; its user and key in `database` (or its SQLite file)."""
    from hubproxy.money import parse_usd
    from hubproxy.store import open_store

    home = tmp / name
    home.mkdir()
    setup_hubproxy_home(home, upstream)
    store = open_store(database or home / "hubproxy.db", create=True)
    try:
        store.run(accounts.add_user, "limited@example.com", parse_usd("100000"))
        _, key = store.run(accounts.create_key, "limited@example.com", "bench", {"rpm": rpm} if rpm else None)
    finally:
        store.close()
    return home, {"Authorization": f"Bearer {key}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of load per setup, in all rounds")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--smoke", action="store_true", help="a few seconds in all, for tests")
    parser.add_argument(
        "--no-limit", action="store_true", help="a key without an rpm limit: no rate limiter, no Redis on the path"
    )
    parser.add_argument("--json", default=str(Path(__file__).parent / "instances.json"))
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.rounds = 2.0, 1
    rpm = None if args.no_limit else 100_000_000
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]
    if missing:
        print(f"needs {' and '.join(missing)}: apt-get install wrk nginx-light", file=sys.stderr)
        return 2
    import psycopg

    name = f"hubproxy_bench_{os.getpid()}"
    admin = psycopg.connect(POSTGRES_URL, autocommit=True)
    admin.execute(f"CREATE DATABASE {name}")
    database = urllib.parse.urlsplit(POSTGRES_URL)._replace(path=f"/{name}").geturl()
    procs: list[subprocess.Popen] = []
    try:
        with tempfile.TemporaryDirectory(prefix="hubproxy-instances-") as tmp_name:
            tmp = Path(tmp_name)
            up_port = free_port()
            upstream = f"http://127.0.0.1:{up_port}/v1"
            procs.append(start([sys.executable, "-m", "bench.upstream", "--port", str(up_port)], core=0))
            wait_ready(up_port)

            def serve(home: Path, env: dict[str, str]) -> tuple[int, int]:
                port = free_port()
                cmd = [sys.executable, "-m", "hubproxy", "--home", str(home), "serve", "--port", str(port)]
                procs.append(start(cmd, None, env))
                wait_ready(port)
                return procs[-1].pid, port

            def nginx(ports: list[int], label: str) -> str:
                where = tmp / f"nginx-{label}"
                where.mkdir()
                port = free_port()
                servers = " ".join(f"server 127.0.0.1:{p};" for p in ports)
                (where / "nginx.conf").write_text(NGINX_CONF.format(tmp=where, servers=servers, port=port))
                procs.append(start(["nginx", "-c", str(where / "nginx.conf"), "-g", "daemon off;"], None))
                wait_ready(port)
                return f"http://127.0.0.1:{port}/v1"

            sqlite_home, sqlite_auth = home_for(tmp, "sqlite", upstream, None, rpm)
            pid, port = serve(sqlite_home, {"HUBPROXY_DATABASE_URL": ""})
            setups = [
                Setup(
                    "1 on SQLite",
                    f"http://127.0.0.1:{port}/v1",
                    [pid],
                    [sqlite_home],
                    [port],
                    sqlite_home / "hubproxy.db",
                )
            ]
            shared = {"HUBPROXY_DATABASE_URL": database, "HUBPROXY_REDIS_URL": REDIS_URL}
            first_home, auth = home_for(tmp, "pg-a", upstream, database, rpm)
            second_home = tmp / "pg-b"
            second_home.mkdir()
            shutil.copy(first_home / "config.toml", second_home / "config.toml")
            pid_a, port_a = serve(first_home, shared)
            setups.append(
                Setup("1 on PostgreSQL", f"http://127.0.0.1:{port_a}/v1", [pid_a], [first_home], [port_a], database)
            )
            setups.append(
                Setup("1 on PostgreSQL, nginx", nginx([port_a], "one"), [pid_a], [first_home], [port_a], database)
            )
            pid_b, port_b = serve(second_home, shared)
            setups.append(
                Setup(
                    "2 on PostgreSQL, nginx",
                    nginx([port_a, port_b], "two"),
                    [pid_a, pid_b],
                    [first_home, second_home],
                    [port_a, port_b],
                    database,
                )
            )
            rounds: dict[str, list[dict]] = {s.name: [] for s in setups}
            for number in range(1, args.rounds + 1):
                for setup in setups:
                    print(f"round {number}/{args.rounds}: {setup.name} …", file=sys.stderr)
                    target = Target(
                        setup.name,
                        setup.url,
                        setup.pids[0],
                        sqlite_auth if setup.database == sqlite_home / "hubproxy.db" else auth,
                    )
                    before = counters(setup)
                    started = time.monotonic()
                    rps = run_wrk(target, BODY, args.connections, args.duration / args.rounds, core=0)
                    time.sleep(0.5)  # the last settlements commit
                    after = counters(setup)
                    calls = max(after[3] - before[3], 1)
                    rounds[setup.name].append(
                        {
                            "rps": rps,
                            "cpu_us": (after[0] - before[0]) / calls * 1e6,
                            "db_statements": (after[1] - before[1]) / calls,
                            "redis_calls": (after[2] - before[2]) / calls,
                            "seconds": time.monotonic() - started,
                        }
                    )
            header = ("req/s", "vs SQLite", "CPU µs/call", "PG stmts/call", "Redis/call")
            print(f"\n{'setup':28} {header[0]:>8} {header[1]:>10} {header[2]:>12} {header[3]:>14} {header[4]:>11}")
            base = statistics.median(r["rps"] for r in rounds[setups[0].name])
            for setup in setups:
                runs = rounds[setup.name]
                for measure in ("rps", "cpu_us", "db_statements", "redis_calls"):
                    setup.results[measure] = statistics.median(r[measure] for r in runs)
                r = setup.results
                print(
                    f"{setup.name:28} {r['rps']:8.0f} {r['rps'] / base:9.0%} {r['cpu_us']:12.0f} "
                    f"{r['db_statements']:14.3f} {r['redis_calls']:11.2f}"
                )
            Path(args.json).write_text(json.dumps({s.name: s.results for s in setups}, indent=2))
            print(f"\nresults written to {args.json}")
    finally:
        stop_all(procs)
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
