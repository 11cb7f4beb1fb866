"""hubproxy benchmark: `python -m bench.run` prints one table and writes bench/results.json.

Starts a fast fake upstream, the plain aiohttp passthrough baseline and hubproxy (fresh home, key
auth, reservation and a durable usage row per call, access log off), each pinned to a core where
the OS allows it; loads each the same way in the same run; and reports requests/s (wrk where
installed, else an aiohttp load generator), added latency at one connection, streaming chunk
delay under many concurrent streams, resident memory, and hubproxy's ratios to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import orjson

from bench import peers
from bench.seed import seed
from hubproxy.store.sql import accounts

ROOT = Path(__file__).resolve().parent.parent
BODY = b'{"model":"bench","messages":[{"role":"user","content":"hello there, how are you today?"}]}'
MESSAGES_PROMPT = [{"role": "user", "content": "hello there, how are you today?"}]
CODE_LINE = "    total = sum(item.price * item.quantity for item in order.items)  # ünïcode\n"


def request_body(prompt_kb: int) -> bytes:
    """The benchmark's chat request: a one-line prompt, or a conversation of about `prompt_kb` KB of
    code and text, as coding tools send (their prompts are tens of KB; the gateway must not pay for
    the size)."""
    if prompt_kb <= 0:
        return BODY
    turns = max(1, prompt_kb // 4)
    messages = [{"role": "system", "content": "You are a careful coding assistant."}]
    for i in range(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": CODE_LINE * 50})
    return orjson.dumps({"messages": messages, "model": "bench"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(core: int | None):
    def pin() -> None:
        if core is not None and hasattr(os, "sched_setaffinity") and core < os.cpu_count():
            os.sched_setaffinity(0, {core})

    return pin


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (hubproxy --workers), in MB."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return float("nan")
    match = re.search(r"VmRSS:\s+(\d+) kB", text)
    own = int(match.group(1)) / 1024 if match else float("nan")
    return own + sum(rss_mb(int(child)) for child in children)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children so far: steadier than req/s on a shared VM."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        own = own_cpu_seconds(pid)
    except OSError:
        return float("nan")
    return own + sum(cpu_seconds(int(child)) for child in children)


def own_cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process itself so far (not its children's); OSError once it is gone."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


@dataclass
class Target:
    name: str
    url: str
    pid: int
    headers: dict[str, str] = field(default_factory=dict)
    results: dict[str, float] = field(default_factory=dict)
    path: str = "/chat/completions"
    body: bytes | None = None  # the request, when not the chat one


def start(cmd: list[str], core: int | None, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        preexec_fn=pinned(core),
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )


def setup_hubproxy_home(home: Path, upstream: str) -> str:
    """Fresh home with one provider, one priced model, one user and key; returns the key."""
    from hubproxy.config import Config, Model, Provider
    from hubproxy.money import parse_price, parse_usd
    from hubproxy.store import open_store

    config = Config()
    config.server.access_log = False
    config.providers["bench"] = Provider("bench", upstream)
    config.models["bench"] = Model("bench", "bench", "bench", parse_price("0.27"), parse_price("1.10"))
    # the same upstream as an Anthropic-compatible one, for `--messages`
    config.providers["bench-messages"] = Provider("bench-messages", upstream.removesuffix("/v1"), apis=("messages",))
    config.models["bench-native"] = Model(
        "bench-native", "bench-messages", "bench", parse_price("0.27"), parse_price("1.10")
    )
    config.providers["bench-responses"] = Provider("bench-responses", upstream, apis=("responses",))
    config.models["bench-responses"] = Model(
        "bench-responses", "bench-responses", "bench", parse_price("0.27"), parse_price("1.10")
    )
    config.providers["bench-gemini"] = Provider("bench-gemini", upstream.removesuffix("/v1"), apis=("gemini",))
    config.models["bench-gemini"] = Model(
        "bench-gemini", "bench-gemini", "bench", parse_price("0.27"), parse_price("1.10")
    )
    config.save(home / "config.toml")
    store = open_store(home / "hubproxy.db", create=True)
    store.run(accounts.add_user, "bench@example.com", parse_usd("100000"))
    _, key = store.run(accounts.create_key, "bench@example.com", "bench")
    store.close()
    return key


def wrk_seconds(duration: float) -> int:
    """How long `run_wrk` loads for: wrk takes whole seconds, at least one."""
    return max(1, int(duration))


def run_wrk(target: Target, body: bytes, connections: int, duration: float, core: int | None) -> float:
    headers = {"Content-Type": "application/json", **target.headers}
    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as body_file:
        body_file.write(body)
    lines = [
        'wrk.method = "POST"',
        f'local f = io.open("{body_file.name}", "rb")',
        "wrk.body = f:read('*a')",
        "f:close()",
    ]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lines) + "\n")
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{wrk_seconds(duration)}s",
        "-s",
        script.name,
        target.url + target.path,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=pinned(core)).stdout
    os.unlink(script.name)
    os.unlink(body_file.name)
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        print(f"  warning: {target.name}: {errors.group(1)} non-2xx responses", file=sys.stderr)
    return float(match.group(1)) if match else 0.0


async def aiohttp_load(target: Target, body: bytes, connections: int, duration: float) -> float:
    headers = {"Content-Type": "application/json", **target.headers}
    done = 0
    stop_at = time.monotonic() + duration

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            async with session.post(target.url + target.path, data=body, headers=headers) as r:
                await r.read()
                done += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        started = time.monotonic()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        return done / (time.monotonic() - started)


async def latency_one_connection(target: Target, body: bytes, requests: int, limit_s: float) -> tuple[float, float]:
    """p50/p99 ms at one connection, after 50 warm-up calls; stops early after limit_s (slow peers)."""
    headers = {"Content-Type": "application/json", **target.headers}
    samples = []
    stop_at = time.monotonic() + limit_s
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        for i in range(requests + 50):
            if i > 150 and time.monotonic() > stop_at:
                break
            t0 = time.perf_counter()
            async with session.post(target.url + target.path, data=body, headers=headers) as r:
                await r.read()
            if i >= 50:
                samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


@dataclass
class Streams:
    """What `open_streams` saw: each chunk's delay (ms, from the upstream's send to the client's read)
    among those sent once every stream was open, sorted; chunks per read; streams that failed."""

    delays: list[float]
    events_per_read: float
    failed: int


async def open_streams(url: str, headers: dict[str, str], streams: int, chunks: int, gap: float) -> Streams:
    """Open `streams` streamed chat calls at once through `url` (the fake upstream's chunks carry their
    send time). Each stream's chunks start at a random point of the gap, as independent conversations
    do, and only chunks sent once every stream is open count: the delay with `streams` in flight, not
    the time it takes to open them."""
    body = orjson.dumps(
        {
            "model": "bench",
            "stream": True,
            "bench_chunks": chunks,
            "bench_gap": gap,
            "bench_phase": True,
            "messages": [{"role": "user", "content": "hi"}],
        }
    )
    headers = {"Content-Type": "application/json", **headers}
    received: list[tuple[int, int]] = []  # (sent, received) in ns
    opened: list[int] = []
    reads = events = failed = 0

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal reads, events, failed
        try:
            async with session.post(url + "/chat/completions", data=body, headers=headers) as r:
                opened.append(time.time_ns())
                buffer = b""
                async for data in r.content.iter_any():
                    now = time.time_ns()
                    reads += 1
                    buffer += data
                    while b"\n\n" in buffer:
                        event, buffer = buffer.split(b"\n\n", 1)
                        match = re.search(rb'"content":\s*"(\d{19})"', event)
                        if match:
                            events += 1
                            received.append((int(match.group(1)), now))
        except (TimeoutError, aiohttp.ClientError):
            failed += 1

    timeout = aiohttp.ClientTimeout(total=chunks * gap + 60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        await asyncio.gather(*(one(session) for _ in range(streams)))
    all_open = max(opened, default=0)
    delays = sorted((got - sent) / 1e6 for sent, got in received if sent >= all_open)
    return Streams(delays, events / max(reads, 1), failed + streams - len(opened))


async def stream_delays(target: Target, streams: int, chunks: int, gap: float) -> tuple[float, float, float]:
    """Concurrent streams (`open_streams`); returns p50/p99 ms of the chunks' delay, and chunks per read."""
    seen = await open_streams(target.url, target.headers, streams, chunks, gap)
    delays = seen.delays
    if seen.failed:
        print(f"  warning: {target.name}: {seen.failed} of {streams} streams failed", file=sys.stderr)
    if not delays:
        print(f"  warning: {target.name}: no streamed chunk came through with every stream open", file=sys.stderr)
        return float("nan"), float("nan"), float("nan")
    return statistics.median(delays), delays[max(int(len(delays) * 0.99) - 1, 0)], seen.events_per_read


def load(target: Target, args: argparse.Namespace, use_wrk: bool, duration: float) -> tuple[float, float]:
    """Requests/s under `args.connections` connections for `duration`, and the target's CPU µs per request."""
    cpu_before = cpu_seconds(target.pid)
    body = target.body or args.body
    if use_wrk:
        duration = wrk_seconds(duration)
        rps = run_wrk(target, body, args.connections, duration, core=0)
    else:
        rps = asyncio.run(aiohttp_load(target, body, args.connections, duration))
    return rps, (cpu_seconds(target.pid) - cpu_before) / max(rps * duration, 1) * 1e6


def measure_throughput(targets: list[Target], args: argparse.Namespace, use_wrk: bool) -> None:
    """Throughput in `args.rounds` rounds with the targets taking turns, so that a slow spell of a
    shared machine falls on every target instead of on one; each target's figure is its median."""
    rounds: dict[str, list[float]] = {t.name: [] for t in targets}
    cpu: dict[str, list[float]] = {t.name: [] for t in targets}
    for number in range(1, args.rounds + 1):
        for target in targets:
            print(f"load round {number}/{args.rounds}: {target.name} …", file=sys.stderr)
            rps, cpu_us = load(target, args, use_wrk, args.duration / args.rounds)
            rounds[target.name].append(rps)
            cpu[target.name].append(cpu_us)
    for target in targets:
        target.results["rps"] = statistics.median(rounds[target.name])
        target.results["rps_rounds"] = rounds[target.name]
        target.results["cpu_us_per_request"] = statistics.median(cpu[target.name])
        target.results["rss_mb_after_load"] = rss_mb(target.pid)


def measure_rest(target: Target, args: argparse.Namespace) -> None:
    """Latency at one connection, stream chunk delay, memory."""
    print(f"measuring latency and streams of {target.name} …", file=sys.stderr)
    limit_s = max(10.0, 2 * args.duration)
    p50, p99 = asyncio.run(latency_one_connection(target, args.body, args.latency_requests, limit_s))
    target.results["p50_ms"], target.results["p99_ms"] = p50, p99
    s50, s99, per_read = asyncio.run(stream_delays(target, args.streams, args.chunks, args.gap))
    target.results["stream_p50_ms"], target.results["stream_p99_ms"] = s50, s99
    target.results["events_per_read"] = per_read
    target.results["rss_mb_after_streams"] = rss_mb(target.pid)
    if args.stream_rounds > 1:  # memory over many streamed calls: it should stay flat
        rounds = [target.results["rss_mb_after_streams"]]
        for _ in range(args.stream_rounds - 1):
            asyncio.run(stream_delays(target, args.streams, args.chunks, args.gap))
            rounds.append(rss_mb(target.pid))
        target.results["rss_mb_by_stream_round"] = rounds


def make_peer(name: str, args: argparse.Namespace, home: Path, upstream_url: str) -> peers.Peer | None:
    if name == "litellm":
        return peers.litellm(args.litellm_cmd, home, upstream_url, free_port())
    return peers.portkey(args.portkey_cmd, upstream_url, free_port())


def measure_peer(peer: peers.Peer, args: argparse.Namespace, use_wrk: bool) -> Target:
    """Start a peer on hubproxy's core, measure it like hubproxy, and stop it before the next one."""
    print(f"starting {peer.name} …", file=sys.stderr)
    proc = start(peer.cmd, core=1, env=peer.env)
    try:
        wait_ready(peer.port, timeout=180)
        target = Target(peer.name, peer.url, proc.pid, peer.headers)
        target.results["rps"], target.results["cpu_us_per_request"] = load(target, args, use_wrk, args.duration)
        measure_rest(target, args)
        return target
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def time_usage_report(home: Path) -> float:
    """Wall time of `hubproxy usage report --by model --json` as a user runs it (process start included)."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "hubproxy", "--home", str(home), "usage", "report", "--by", "model", "--json"],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def print_table(targets: list[Target], baseline: Target, direct: Target) -> None:
    cols = ["rps", "cpu_us_per_request", "p50_ms", "p99_ms", "stream_p50_ms", "stream_p99_ms", "rss_mb_after_streams"]
    width = max(12, *(len(t.name) + 2 for t in targets))
    print(f"\n{'target':<{width}}" + "".join(f"{c:>21}" for c in cols))
    for t in targets:
        print(f"{t.name:<{width}}" + "".join(f"{t.results.get(c, float('nan')):>21.3f}" for c in cols))
    hub = next(t for t in targets if t.name == "hubproxy")
    print("\nhubproxy vs passthrough, same run:")
    each = ", ".join(
        f"{h / b:.0%}" for h, b in zip(hub.results["rps_rounds"], baseline.results["rps_rounds"], strict=True)
    )
    print(f"  throughput ratio           {hub.results['rps'] / baseline.results['rps']:.2%}   (rounds: {each})")
    print(
        f"  CPU per request ratio      {baseline.results['cpu_us_per_request'] / hub.results['cpu_us_per_request']:.2%}"
        "   (passthrough CPU / hubproxy CPU: the throughput ratio on a quiet machine)"
    )
    print(
        f"  added p50 latency (ms)     {hub.results['p50_ms'] - direct.results['p50_ms']:.3f}"
        f"   (passthrough adds {baseline.results['p50_ms'] - direct.results['p50_ms']:.3f})"
    )
    print(
        f"  added p99 latency (ms)     {hub.results['p99_ms'] - direct.results['p99_ms']:.3f}"
        f"   (passthrough adds {baseline.results['p99_ms'] - direct.results['p99_ms']:.3f})"
    )
    print(
        f"  stream chunk delay p99 (ms) {hub.results['stream_p99_ms']:.3f}"
        f"   (passthrough {baseline.results['stream_p99_ms']:.3f}, direct {direct.results['stream_p99_ms']:.3f})"
    )
    for peer in targets[3:]:
        if peer.name.startswith("hubproxy"):
            continue
        print(
            f"hubproxy vs {peer.name}: {hub.results['rps'] / peer.results['rps']:.1f}x the throughput, "
            f"{peer.results['p50_ms'] - hub.results['p50_ms']:.3f} ms less p50 latency, "
            f"{peer.results['rss_mb_after_streams'] / hub.results['rss_mb_after_streams']:.1f}x less memory"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=12.0, help="seconds of load per target, in all rounds")
    parser.add_argument("--rounds", type=int, default=4, help="load rounds, the targets taking turns")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--latency-requests", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument(
        "--stream-rounds", type=int, default=1, help="open the streams this many times, resident memory after each"
    )
    parser.add_argument("--chunks", type=int, default=60, help="chunks per stream (long streams, as answers are)")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between upstream chunks")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results.json"))
    parser.add_argument("--no-wrk", action="store_true", help="use the aiohttp load generator even if wrk exists")
    parser.add_argument("--smoke", action="store_true", help="a few seconds in all, for tests")
    parser.add_argument(
        "--workers", type=int, default=1, help="also measure hubproxy serve --workers N (unpinned), on its own home"
    )
    parser.add_argument(
        "--unpinned", action="store_true", help="start the single hubproxy process on no core in particular"
    )
    parser.add_argument("--prompt-kb", type=int, default=0, help="requests carry a conversation of about N KB")
    parser.add_argument(
        "--messages",
        action="store_true",
        help="also load the same hubproxy on /v1/messages: relayed to a Messages upstream, and translated to chat",
    )
    parser.add_argument(
        "--responses",
        action="store_true",
        help="also load the same hubproxy on /v1/responses: relayed to a Responses upstream, and translated to chat",
    )
    parser.add_argument("--seed-keys", type=int, default=0, help="extra keys in hubproxy's database first")
    parser.add_argument("--seed-rows", type=int, default=0, help="usage rows in hubproxy's database first")
    parser.add_argument(
        "--compare", nargs="+", default=[], choices=["litellm", "portkey"], help="also measure these gateways"
    )
    parser.add_argument("--litellm-cmd", default="litellm", help="how to start LiteLLM's proxy")
    parser.add_argument("--portkey-cmd", default="npx --yes @portkey-ai/gateway", help="how to start Portkey")
    parser.add_argument(
        "--suite", action="store_true", help="run the published-style suite instead (`python -m bench.suite --help`)"
    )
    given = sys.argv[1:] if argv is None else argv
    if "--suite" in given:
        from bench import suite

        return suite.main([arg for arg in given if arg != "--suite"])
    args = parser.parse_args(argv)
    args.body = request_body(args.prompt_kb)
    if args.smoke:
        args.duration, args.rounds, args.latency_requests, args.streams, args.chunks = 1.0, 1, 50, 5, 3
    use_wrk = shutil.which("wrk") is not None and not args.no_wrk
    if not use_wrk and not args.no_wrk:
        print("wrk not found (apt-get install wrk): using the aiohttp load generator", file=sys.stderr)

    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="hubproxy-bench-") as tmp:
        try:
            up_port, pass_port, hub_port = free_port(), free_port(), free_port()
            upstream_url = f"http://127.0.0.1:{up_port}/v1"
            procs.append(start([sys.executable, "-m", "bench.upstream", "--port", str(up_port)], core=0))
            procs.append(
                start(
                    [sys.executable, "-m", "bench.passthrough", "--port", str(pass_port), "--upstream", upstream_url],
                    core=1,
                )
            )
            home = Path(tmp) / "hubproxy"
            homes = [home] + ([Path(tmp) / "hubproxy-workers"] if args.workers > 1 else [])
            extra: dict[str, float] = {}
            auth = []
            for where in homes:
                where.mkdir()
                auth.append({"Authorization": f"Bearer {setup_hubproxy_home(where, upstream_url)}"})
                if args.seed_keys or args.seed_rows:
                    print(f"seeding {args.seed_keys} keys and {args.seed_rows} usage rows …", file=sys.stderr)
                    extra.update(seed(where, args.seed_keys, args.seed_rows))
            hub_cmd = [sys.executable, "-m", "hubproxy", "--home", str(home), "serve", "--port", str(hub_port)]
            procs.append(start(hub_cmd, core=None if args.unpinned else 1))
            direct = Target("upstream", upstream_url, procs[0].pid)
            baseline = Target("passthrough", f"http://127.0.0.1:{pass_port}/v1", procs[1].pid)
            hub = Target("hubproxy", f"http://127.0.0.1:{hub_port}/v1", procs[2].pid, auth[0])
            for port in (up_port, pass_port, hub_port):
                wait_ready(port)
            targets = [direct, baseline, hub]
            if args.workers > 1:
                workers_port = free_port()
                workers_cmd = [sys.executable, "-m", "hubproxy", "--home", str(homes[1]), "serve"]
                procs.append(start([*workers_cmd, "--port", str(workers_port), "--workers", str(args.workers)], None))
                wait_ready(workers_port)
                name = f"hubproxy --workers {args.workers}"
                targets.append(Target(name, f"http://127.0.0.1:{workers_port}/v1", procs[-1].pid, auth[1]))
            if args.messages:
                for name, model in (("native", "bench-native"), ("translated", "bench")):
                    body = orjson.dumps({"model": model, "max_tokens": 100, "messages": MESSAGES_PROMPT})
                    url = f"http://127.0.0.1:{hub_port}/v1"
                    targets.append(
                        Target(f"hubproxy /v1/messages {name}", url, procs[2].pid, auth[0], path="/messages", body=body)
                    )
            if args.responses:
                for name, model in (("native", "bench-responses"), ("translated", "bench")):
                    body = orjson.dumps({"model": model, "input": MESSAGES_PROMPT[0]["content"]})
                    url = f"http://127.0.0.1:{hub_port}/v1"
                    targets.append(
                        Target(
                            f"hubproxy /v1/responses {name}", url, procs[2].pid, auth[0], path="/responses", body=body
                        )
                    )
            measure_throughput(targets, args, use_wrk)
            for target in targets:
                if target.body is None:
                    measure_rest(target, args)
            for name in args.compare:
                peer = make_peer(name, args, home, upstream_url)
                if peer is None:
                    print(f"{name} not found, skipped; to install: {peers.INSTALL_HINTS[name]}", file=sys.stderr)
                    continue
                targets.append(measure_peer(peer, args, use_wrk))
            print_table(targets, baseline, direct)
            for target in targets:
                if target.body is not None:
                    ratio = target.results["rps"] / hub.results["rps"]
                    print(f"  {target.name[9:]} vs the chat route: {ratio:.0%} of its throughput")
            if args.workers > 1:
                scaling = targets[3].results["rps"] / hub.results["rps"]
                print(f"  --workers {args.workers} vs one process: {scaling:.2f}x the throughput")
            for target in targets:
                if "rss_mb_by_stream_round" in target.results:
                    each = ", ".join(f"{mb:.0f}" for mb in target.results["rss_mb_by_stream_round"])
                    print(f"  {target.name}: resident MB after each round of {args.streams} streams: {each}")
            extra["usage_report_s"] = time_usage_report(home)
            print(f"  usage report --by model      {extra['usage_report_s']:.3f} s")
            report = {
                "load_generator": "wrk" if use_wrk else "aiohttp",
                "cores": os.cpu_count(),
                "args": {k: v for k, v in vars(args).items() if k != "body"},
                "targets": {t.name: asdict(t)["results"] for t in targets},
                "ratios": {
                    f"throughput_vs_{t.name}": hub.results["rps"] / t.results["rps"] for t in targets if t is not hub
                },
                "database": extra,
            }
            Path(args.json).write_text(json.dumps(report, indent=2))
            print(f"\nresults written to {args.json}")
        finally:
            stop_all(procs)
    return 0


def stop_all(procs: list[subprocess.Popen]) -> None:
    """SIGTERM to each (they flush and exit), then wait; kill what has not stopped in 30 s."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
