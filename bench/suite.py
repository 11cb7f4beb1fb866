"""The published-style suite: `python -m bench.suite` (also `python -m bench.run --suite`).

Cross-gateway benchmarks are published as added latency at a few concurrencies against an upstream
with a fixed time to first byte, the highest load a gateway sustains before its tail latency grows,
and how many streams it holds. This runs that suite on this machine, for the direct upstream (the
reference every "added" figure is taken from), the aiohttp passthrough, hubproxy and, where their
commands are given and found, LiteLLM and Portkey:

- added p50/p99 latency at concurrency 1, 4, 16 and 64: each target's latency minus the direct
  upstream's at the same concurrency, against a fake upstream that answers after `--ttfb-ms` (20);
- the highest sustained requests/s whose p99 stays within 20 ms of the direct p99: closed-loop load
  at growing concurrency, the best rate that still meets the bound;
- the most concurrent streams served with no chunk delayed more than 50 ms (from the upstream's send
  to the client's read), over growing stream counts;
- CPU µs per call (the target's processes' user + system time over the calls) and resident memory.

The load generator is Python (aiohttp) on the upstream's core, the target on the other: at high
concurrency it, not the target, may be what limits the rate; the direct row shows where that is.
Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench import peers
from bench.run import (
    BODY,
    cpu_seconds,
    free_port,
    open_streams,
    rss_mb,
    setup_hubproxy_home,
    start,
    stop_all,
    wait_ready,
)

CONCURRENCY = (1, 4, 16, 64)
SUSTAIN_LEVELS = (1, 4, 16, 64, 128, 256)
STREAM_LEVELS = (100, 250, 500, 1000, 2000)
TAIL_BOUND_MS = 20.0
CHUNK_BOUND_MS = 50.0


@dataclass
class SuiteTarget:
    name: str
    url: str
    pid: int
    headers: dict[str, str] = field(default_factory=dict)
    levels: dict[int, dict[str, float]] = field(default_factory=dict)  # concurrency → rps, p50, p99
    streams: dict[int, float] = field(default_factory=dict)  # streams → worst chunk delay (ms)
    cpu_us: float = float("nan")
    rss_mb: float = float("nan")


async def closed_loop(target: SuiteTarget, concurrency: int, seconds: float) -> dict[str, float]:
    """`concurrency` clients calling back to back for `seconds` (after a short warm-up): req/s, p50, p99 ms."""
    headers = {"Content-Type": "application/json", **target.headers}
    samples: list[float] = []
    warm_until = time.monotonic() + min(1.0, seconds / 4)
    stop_at = warm_until + seconds
    failures = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        while (now := time.monotonic()) < stop_at:
            t0 = time.perf_counter()
            async with session.post(target.url + "/chat/completions", data=BODY, headers=headers) as resp:
                await resp.read()
                failures += resp.status != 200
            if now >= warm_until:
                samples.append((time.perf_counter() - t0) * 1000)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    if failures:
        print(f"  warning: {target.name}: {failures} calls were not 200", file=sys.stderr)
    samples.sort()
    if not samples:
        return {"rps": 0.0, "p50": float("nan"), "p99": float("nan")}
    return {
        "rps": len(samples) / seconds,
        "p50": statistics.median(samples),
        "p99": samples[max(int(len(samples) * 0.99) - 1, 0)],
    }


async def worst_chunk_delay(target: SuiteTarget, streams: int, chunks: int, gap: float) -> float:
    """Open `streams` streams at once; the worst delay (ms) of a chunk sent once all were open
    (infinite if a stream failed)."""
    seen = await open_streams(target.url, target.headers, streams, chunks, gap)
    return float("inf") if seen.failed or not seen.delays else seen.delays[-1]


def measure(target: SuiteTarget, args: argparse.Namespace) -> None:
    print(f"suite: {target.name} …", file=sys.stderr)
    levels = sorted(set(CONCURRENCY) | set(SUSTAIN_LEVELS))
    cpu_before, calls = cpu_seconds(target.pid), 0.0
    for concurrency in levels:
        result = asyncio.run(closed_loop(target, concurrency, args.seconds))
        target.levels[concurrency] = result
        calls += result["rps"] * args.seconds
    target.cpu_us = (cpu_seconds(target.pid) - cpu_before) / max(calls, 1) * 1e6
    for streams in STREAM_LEVELS:
        if streams > args.max_streams:
            break
        worst = asyncio.run(worst_chunk_delay(target, streams, args.chunks, args.gap))
        target.streams[streams] = worst
        if worst > CHUNK_BOUND_MS:
            break  # more streams will not do better
    target.rss_mb = rss_mb(target.pid)


def sustained(target: SuiteTarget, direct: SuiteTarget) -> float:
    """The best req/s at a concurrency whose p99 is within TAIL_BOUND_MS of the direct p99 there."""
    best = 0.0
    for concurrency, result in target.levels.items():
        reference = direct.levels.get(concurrency)
        if reference and result["p99"] - reference["p99"] <= TAIL_BOUND_MS:
            best = max(best, result["rps"])
    return best


def most_streams(target: SuiteTarget) -> int:
    return max((n for n, worst in target.streams.items() if worst <= CHUNK_BOUND_MS), default=0)


def report(targets: list[SuiteTarget], args: argparse.Namespace) -> dict:
    direct = targets[0]
    rows: dict[str, dict] = {}
    for target in targets:
        row: dict[str, float | int] = {}
        for concurrency in CONCURRENCY:
            mine, reference = target.levels[concurrency], direct.levels[concurrency]
            row[f"added_p50_ms_c{concurrency}"] = mine["p50"] - reference["p50"]
            row[f"added_p99_ms_c{concurrency}"] = mine["p99"] - reference["p99"]
        row["sustained_rps"] = sustained(target, direct)
        row["most_streams"] = most_streams(target)
        row["cpu_us_per_call"] = target.cpu_us
        row["rss_mb"] = target.rss_mb
        rows[target.name] = row
    head = "added p50 / p99 ms at concurrency " + ", ".join(map(str, CONCURRENCY))
    print(f"\nupstream time to first byte {args.ttfb_ms:g} ms; {head}")
    width = max(len(t.name) for t in targets) + 2
    columns = [f"c={c} p50/p99" for c in CONCURRENCY] + ["sustained req/s", "streams ≤50ms", "CPU µs/call", "RSS MB"]
    print(f"{'target':<{width}}" + "".join(f"{c:>17}" for c in columns))
    for target in targets:
        row = rows[target.name]
        cells = [f"{row[f'added_p50_ms_c{c}']:.2f}/{row[f'added_p99_ms_c{c}']:.2f}" for c in CONCURRENCY]
        cells += [f"{row['sustained_rps']:,.0f}", f"{row['most_streams']:,}", f"{row['cpu_us_per_call']:.0f}"]
        cells.append(f"{row['rss_mb']:.0f}")
        print(f"{target.name:<{width}}" + "".join(f"{c:>17}" for c in cells))
    print("\nreq/s and p99 ms at each concurrency (closed loop):")
    for target in targets:
        each = ", ".join(f"c={c}: {r['rps']:,.0f} req/s, p99 {r['p99']:.1f}" for c, r in sorted(target.levels.items()))
        print(f"  {target.name}: {each}")
    print("worst chunk delay ms by streams open:")
    for target in targets:
        print(f"  {target.name}: " + ", ".join(f"{n}: {w:.1f}" for n, w in target.streams.items()))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttfb-ms", type=float, default=20.0, help="the fake upstream's time to first byte")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds of load at each concurrency")
    parser.add_argument("--chunks", type=int, default=10, help="chunks per stream")
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between a stream's chunks")
    parser.add_argument("--max-streams", type=int, default=max(STREAM_LEVELS))
    parser.add_argument("--smoke", action="store_true", help="a few seconds in all, for tests")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--litellm-cmd", help="measure LiteLLM's proxy too, started with this command")
    parser.add_argument("--portkey-cmd", help="measure Portkey's gateway too, started with this command")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.chunks, args.gap, args.max_streams = 0.5, 2, 0.05, 100
    procs = []
    with tempfile.TemporaryDirectory(prefix="hubproxy-suite-") as tmp:
        try:
            up_port, pass_port, hub_port = free_port(), free_port(), free_port()
            upstream = f"http://127.0.0.1:{up_port}/v1"
            procs.append(
                start(
                    [sys.executable, "-m", "bench.upstream", "--port", str(up_port), "--ttfb-ms", str(args.ttfb_ms)],
                    core=0,
                )
            )
            wait_ready(up_port)
            home = Path(tmp) / "hubproxy"
            home.mkdir()
            key = setup_hubproxy_home(home, upstream)
            procs.append(
                start([sys.executable, "-m", "bench.passthrough", "--port", str(pass_port), "--upstream", upstream], 1)
            )
            procs.append(
                start([sys.executable, "-m", "hubproxy", "--home", str(home), "serve", "--port", str(hub_port)], 1)
            )
            for port in (pass_port, hub_port):
                wait_ready(port)
            targets = [
                SuiteTarget("upstream, direct", upstream, procs[0].pid),
                SuiteTarget("aiohttp passthrough", f"http://127.0.0.1:{pass_port}/v1", procs[1].pid),
                SuiteTarget(
                    "hubproxy", f"http://127.0.0.1:{hub_port}/v1", procs[2].pid, {"Authorization": f"Bearer {key}"}
                ),
            ]
            for target in targets:
                measure(target, args)
            for name, command in (("litellm", args.litellm_cmd), ("portkey", args.portkey_cmd)):
                if command is None:
                    continue
                port = free_port()
                peer = peers.litellm(command, home, upstream, port) if name == "litellm" else None
                if name == "portkey":
                    peer = peers.portkey(command, upstream, port)
                if peer is None:
                    print(f"{name} not found, skipped; to install: {peers.INSTALL_HINTS[name]}", file=sys.stderr)
                    continue
                proc = start(peer.cmd, core=1, env=peer.env)
                try:
                    wait_ready(peer.port, timeout=180)
                    target = SuiteTarget(peer.name, peer.url, proc.pid, peer.headers)
                    measure(target, args)
                    targets.append(target)
                finally:
                    stop_all([proc])
            rows = report(targets, args)
            if args.json:
                args.json.write_text(json.dumps({"ttfb_ms": args.ttfb_ms, "targets": rows}, indent=2))
        finally:
            stop_all(procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
