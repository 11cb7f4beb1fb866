"""Instructions per request under callgrind: `python -m bench.instructions` (needs valgrind).

Requests per second on a shared or virtual machine swing by ±15% from one run to the next, which
hides the few-percent changes hot-path work is made of. The number of instructions a server runs
per request barely moves, so this A/B measure is the one to use before and after a change:
the passthrough baseline and hubproxy each run under valgrind's callgrind, warmed up with
instrumentation off, then counted over a fixed number of calls, 32 at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from bench.run import BODY, MESSAGES_PROMPT, free_port, request_body, setup_hubproxy_home, start, wait_ready

# Streams: few at a time and chunks far apart, so that even slowed ~50x by callgrind a gateway gets
# each chunk on its own, as it would at full speed, rather than twenty in one read.
STREAM_CONCURRENCY = 4
STREAM_GAP = 0.2


async def drive(url: str, headers: dict[str, str], calls: int, body: bytes = BODY, concurrency: int = 32) -> int:
    """Make `calls` calls, `concurrency` at a time; returns how many were not 200."""
    left, bad = calls, 0
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            nonlocal left, bad
            while left > 0:
                left -= 1
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    bad += resp.status != 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return bad


def counted(out_dir: Path, pid: int) -> dict[int, int]:
    """Instructions callgrind counted in a process, by thread (1: the event loop's; hubproxy's store
    writer is another)."""
    threads: dict[int, int] = {}
    for dump in out_dir.glob(f"cg.{pid}*"):
        text = dump.read_text(errors="replace")
        number = 1
        for line in text.splitlines():
            if line.startswith("thread:"):
                number = int(line.split()[1])
            elif line.startswith(("summary:", "totals:")):
                threads[number] = threads.get(number, 0) + int(line.split()[1])
    return threads


def measure(
    name: str,
    cmd: list[str],
    port: int,
    headers: dict[str, str],
    calls: int,
    body: bytes,
    out_dir: Path,
    stream: bool,
    path: str = "/v1/chat/completions",
    env: dict | None = None,
) -> float:
    concurrency = STREAM_CONCURRENCY if stream else 32
    print(f"measuring {name} under callgrind …", file=sys.stderr)
    valgrind = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--separate-threads=yes",
        f"--callgrind-out-file={out_dir}/cg.%p",
    ]
    proc = start(valgrind + cmd, core=1, env=env)
    url = f"http://127.0.0.1:{port}{path}"
    try:
        wait_ready(port, timeout=180)
        asyncio.run(drive(url, headers, 40 if stream else 300, body, concurrency))
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
        bad = asyncio.run(drive(url, headers, calls, body, concurrency))
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
        time.sleep(1)
        if bad:
            print(f"  warning: {name}: {bad} calls were not 200", file=sys.stderr)
        threads = counted(out_dir, proc.pid)
        loop, rest = threads.pop(1, 0), sum(threads.values())
        print(
            f"  {name}: {loop / calls:,.0f} on the event loop's thread, {rest / calls:,.0f} on others", file=sys.stderr
        )
        return (loop + rest) / calls
    finally:
        proc.terminate()
        proc.wait(60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls counted per target")
    parser.add_argument("--prompt-kb", type=int, default=0, help="requests carry a conversation of about N KB")
    parser.add_argument(
        "--stream",
        type=int,
        metavar="CHUNKS",
        default=0,
        help="streamed calls of CHUNKS chunks each (0.2 s apart; try --stream 10 --calls 100)",
    )
    parser.add_argument(
        "--messages",
        choices=["native", "translated"],
        help="count hubproxy's /v1/messages calls instead: relayed to a Messages upstream, or translated to chat",
    )
    parser.add_argument(
        "--responses",
        choices=["native", "translated"],
        help="count hubproxy's /v1/responses calls instead: relayed to a Responses upstream, or translated to chat",
    )
    parser.add_argument(
        "--gemini",
        choices=["native", "translated"],
        help="count hubproxy's Gemini calls (:generateContent) instead: relayed to a Gemini upstream, or translated "
        "to chat",
    )
    parser.add_argument(
        "--proxy",
        metavar="URL",
        help="hubproxy reaches the upstream through this HTTP proxy (HTTP_PROXY), e.g. a tinyproxy on 127.0.0.1",
    )
    parser.add_argument("--keep", type=Path, help="keep callgrind's files here (read them with callgrind_annotate)")
    args = parser.parse_args(argv)
    body = request_body(args.prompt_kb)
    if args.stream:
        whole = orjson.loads(body)
        body = orjson.dumps({**whole, "stream": True, "bench_chunks": args.stream, "bench_gap": STREAM_GAP})
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind not found (apt-get install valgrind)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="hubproxy-ir-") as tmp:
        out_dir = Path(tmp)
        up_port, pass_port, hub_port = free_port(), free_port(), free_port()
        upstream_url = f"http://127.0.0.1:{up_port}/v1"
        upstream = start([sys.executable, "-m", "bench.upstream", "--port", str(up_port)], core=0)
        try:
            wait_ready(up_port)
            home = out_dir / "home"
            home.mkdir()
            key = setup_hubproxy_home(home, upstream_url)
            passthrough = [sys.executable, "-m", "bench.passthrough", "--port", str(pass_port)]
            stream = bool(args.stream)
            pass_cmd = [*passthrough, "--upstream", upstream_url]
            base = measure("passthrough", pass_cmd, pass_port, {}, args.calls, body, out_dir, stream)
            hub_cmd = [sys.executable, "-m", "hubproxy", "--home", str(home), "serve", "--port", str(hub_port)]
            auth = {"Authorization": f"Bearer {key}"}
            if args.gemini:
                model = "bench-gemini" if args.gemini == "native" else "bench"
                ask = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": MESSAGES_PROMPT[0]["content"]}]}]})
                path = f"/v1beta/models/{model}:generateContent"
                hub = measure("hubproxy", hub_cmd, hub_port, auth, args.calls, ask, out_dir, stream, path)
            elif args.responses:
                model = "bench-responses" if args.responses == "native" else "bench"
                ask = orjson.dumps({"model": model, "input": MESSAGES_PROMPT[0]["content"]})
                hub = measure("hubproxy", hub_cmd, hub_port, auth, args.calls, ask, out_dir, stream, "/v1/responses")
            elif args.messages:
                model = "bench-native" if args.messages == "native" else "bench"
                ask = orjson.dumps({"model": model, "max_tokens": 100, "messages": MESSAGES_PROMPT})
                hub = measure("hubproxy", hub_cmd, hub_port, auth, args.calls, ask, out_dir, stream, "/v1/messages")
            else:
                env = {"HTTP_PROXY": args.proxy, "NO_PROXY": ""} if args.proxy else None
                hub = measure("hubproxy", hub_cmd, hub_port, auth, args.calls, body, out_dir, stream, env=env)
        finally:
            upstream.terminate()
            upstream.wait(30)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for dump in out_dir.glob("cg.*"):
                shutil.copy(dump, args.keep)
    per = f"instructions/call ({args.stream} chunks)" if args.stream else "instructions/request"
    print(f"\n{'target':<14}{per:>24}")
    print(f"{'passthrough':<14}{base:>24,.0f}")
    route = f"  (/v1/messages, {args.messages})" if args.messages else ""
    route = f"  (/v1/responses, {args.responses})" if args.responses else route
    route = f"  (:generateContent, {args.gemini})" if args.gemini else route
    route = f"  (through the proxy {args.proxy.rpartition('@')[2]})" if args.proxy else route
    print(f"{'hubproxy':<14}{hub:>24,.0f}{route}")
    print(f"\npassthrough / hubproxy: {base / hub:.1%}  (the throughput ratio if both were CPU-bound on one core)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
