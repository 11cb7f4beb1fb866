"""The dashboard on a big database: `python -m bench.dashboard --seed-rows 10000000`.

Seeds a fresh SQLite home with `--seed-rows` calls over 30 days (`bench/history.py`: 20 users, one
making 40% of them, 3 keys each, 5 models, 3% failed, each call's ledger charge too), starts
`hubproxy serve` on it, and times each page as the heaviest user and as the admin (the median and
the slowest of `--repeat` loads, in ms, measured at the client: server time plus one local round
trip). Then the hot path with and without a browser open on the live feed: wrk on the proxy for
`--duration` seconds in alternating rounds, once with no watcher and once with Debian's Chromium
(Playwright) showing /admin/live, which receives every call. Printed as requests/s and their ratio.
Needs wrk (`apt-get install wrk`) and chromium for the second part; times are never asserted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from http.client import HTTPConnection
from pathlib import Path

from bench.history import seed_history
from bench.run import BODY, Target, free_port, run_wrk, setup_hubproxy_home, start, stop_all, wait_ready
from hubproxy.dashboard.sessions import login_link_token
from hubproxy.passwords import hash_password
from hubproxy.store import open_store
from hubproxy.store.sql import accounts

PASSWORD = "bench password"
USERS = 20


def get(port: int, path: str, cookie: str = "") -> tuple[int, bytes, dict[str, str]]:
    conn = HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        answer = conn.getresponse()
        return answer.status, answer.read(), {k.lower(): v for k, v in answer.getheaders()}
    finally:
        conn.close()


def log_in(port: int, email: str) -> str:
    """Through the login form, as a browser: its CSRF token and the cookie that token is tied to."""
    _, form, headers = get(port, "/login")
    csrf = form.decode().split('name="csrf" value="', 1)[1].split('"', 1)[0]
    nonce = headers["set-cookie"].split(";")[0]
    body = urllib.parse.urlencode({"email": email, "password": PASSWORD, "csrf": csrf})
    conn = HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded", "Cookie": nonce})
    answer = conn.getresponse()
    answer.read()
    conn.close()
    return answer.getheader("Set-Cookie").split(";")[0]


def admin_cookie(home: Path, port: int) -> str:
    token = login_link_token((home / "admin-token").read_text().strip())
    status, _, headers = get(port, f"/login/link?token={token}")
    assert status == 303, status
    return headers["set-cookie"].split(";")[0]


def older_link(port: int, path: str, cookie: str) -> str:
    """The page's "Older »" link (where a search that matched nothing stopped, if it stopped), or the
    page itself when it has none (a database small enough to search at once)."""
    page = get(port, path, cookie)[1].decode()
    if 'id="older" href="' not in page:
        return path
    return page.split('id="older" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")


def timed(port: int, path: str, cookie: str, repeat: int) -> tuple[float, float, int]:
    times = []
    size = 0
    for _ in range(repeat):
        began = time.perf_counter()
        status, body, _ = get(port, path, cookie)
        times.append((time.perf_counter() - began) * 1000)
        if status != 200:
            raise RuntimeError(f"{path}: {status} {body[:200]!r}")
        size = len(body)
    return statistics.median(times), max(times), size


def prepare(home: Path, upstream: str, rows: int) -> tuple[str, float]:
    """The home, its users and keys, the history; returns the bench key and the seconds seeding took."""
    key = setup_hubproxy_home(home, upstream)
    store = open_store(home / "hubproxy.db")
    hashed = hash_password(PASSWORD)
    store.run(accounts.set_password, "bench@example.com", hashed)
    for n in range(1, USERS):
        store.run(accounts.add_user, f"user{n:02d}@example.com")
    for user in store.run(accounts.list_users):
        for name in ("laptop", "ci", "notebook"):
            store.run(accounts.create_key, user.email, name)
    store.close()
    seconds = seed_history(home / "hubproxy.db", rows)
    store = open_store(home / "hubproxy.db")
    store.run(
        accounts.create_key, "bench@example.com", "fresh"
    )  # a key without calls: its filter must not read the user's
    store.close()
    return key, seconds


def pages(port: int, home: Path, repeat: int) -> list[tuple[str, str, float, float, int]]:
    user = log_in(port, "bench@example.com")
    admin = admin_cookie(home, port)
    older = older_link(port, "/usage", user)
    keys = get(port, "/keys", user)[1].decode()
    key_ids = [part.split("<", 1)[0] for part in keys.split('<small class="muted">')[1:]]
    second_key, fresh_key = key_ids[1], key_ids[-1]
    day = (datetime.now(UTC) - timedelta(days=20)).date().isoformat()
    checks = [
        ("user", "/", user),
        ("user", "/keys", user),
        ("user", "/usage", user),
        ("user", older, user),
        ("user", "/usage?model=claude-sonnet", user),
        ("user", "/usage?status=error", user),
        ("user", f"/usage?key={second_key}", user),
        ("user", f"/usage?key={fresh_key}", user),
        ("user", "/usage?model=no-such-model", user),
        ("user", f"/usage?since={day}&until={day}", user),
        ("admin", "/", admin),
        ("admin", "/keys", admin),
        ("admin", "/usage", admin),
        ("admin", "/usage?user=user07%40example.com", admin),
        ("admin", "/usage?status=error&model=kimi-k2", admin),
        ("admin", older_link(port, "/usage?status=error&model=kimi-k2", admin), admin),
        ("admin", "/admin/users", admin),
        ("admin", "/admin/ledger", admin),
        ("admin", "/admin/ledger?charges=1", admin),
        ("admin", "/admin/providers", admin),
    ]
    results = []
    for who, path, cookie in checks:
        median, worst, size = timed(port, path, cookie, repeat)
        results.append((who, path, median, worst, size))
        print(f"  {who:5} {path[:60]:60} {median:8.1f} ms  (slowest {worst:7.1f})  {size / 1024:6.0f} KB", flush=True)
    began = time.perf_counter()
    status, body, _ = get(port, f"/usage.csv?since={day}&until={day}", user)
    if status != 200:
        raise RuntimeError(f"/usage.csv: {status}")
    lines = body.count(b"\n") - 1
    seconds = time.perf_counter() - began
    print(f"  user  CSV export of one day: {lines:,} rows in {seconds:.2f} s", flush=True)
    return results


def live_feed(port: int, home: Path, key: str, duration: float, rounds: int, browser_path: str) -> dict[str, float]:
    """wrk on the proxy without a watcher and with Chromium open on /admin/live, alternating."""
    from playwright.sync_api import sync_playwright

    target = Target("hubproxy", f"http://127.0.0.1:{port}/v1", 0, {"Authorization": f"Bearer {key}"})
    cookie = admin_cookie(home, port)
    without, with_browser = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context()
        name, value = cookie.split("=", 1)
        context.add_cookies([{"name": name, "value": value, "url": f"http://127.0.0.1:{port}"}])
        for _ in range(rounds):
            without.append(run_wrk(target, BODY, 32, duration / rounds, None))
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{port}/admin/live")
            page.wait_for_function("document.getElementById('feed-state').textContent.startsWith('live')")
            with_browser.append(run_wrk(target, BODY, 32, duration / rounds, None))
            page.wait_for_timeout(500)
            shown = page.locator("#feed tr").count()
            state = page.locator("#feed-state").inner_text()
            page.close()
            print(f"  round: {without[-1]:,.0f} req/s alone, {with_browser[-1]:,.0f} watched ({shown} rows, {state})")
        browser.close()
    alone, watched = statistics.median(without), statistics.median(with_browser)
    print(f"  live feed: {alone:,.0f} req/s without a browser, {watched:,.0f} with one ({watched / alone:.2f}x)")
    return {"rps_without_browser": alone, "rps_with_browser": watched}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed-rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="loads of each page")
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of wrk per setting, over all rounds")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="20,000 rows and a few seconds, for tests")
    parser.add_argument("--json", default=str(Path(__file__).parent / "dashboard.json"))
    args = parser.parse_args(argv)
    if args.smoke:
        args.seed_rows, args.repeat, args.duration, args.rounds = 20_000, 1, 2.0, 1
    chromium = shutil.which("chromium")
    procs: list[subprocess.Popen] = []
    report: dict = {"seed_rows": args.seed_rows}
    try:
        with tempfile.TemporaryDirectory(prefix="hubproxy-dashboard-") as tmp:
            home = Path(tmp)
            up_port = free_port()
            procs.append(start([sys.executable, "-m", "bench.upstream", "--port", str(up_port)], core=0))
            wait_ready(up_port)
            key, seconds = prepare(home, f"http://127.0.0.1:{up_port}/v1", args.seed_rows)
            size = (home / "hubproxy.db").stat().st_size / 2**30
            print(f"seeded {args.seed_rows:,} calls in {seconds:.0f} s ({size:.1f} GB database)", flush=True)
            report["seed_seconds"] = seconds
            port = free_port()
            procs.append(start([sys.executable, "-m", "hubproxy", "--home", tmp, "serve", "--port", str(port)], None))
            wait_ready(port, timeout=120)
            print("page load times (client-side, median of the loads):")
            report["pages"] = [
                {"who": who, "path": path, "median_ms": median, "slowest_ms": worst, "bytes": size}
                for who, path, median, worst, size in pages(port, home, args.repeat)
            ]
            if shutil.which("wrk") is None or chromium is None:
                print("live feed part skipped: needs wrk and chromium (apt-get install wrk chromium)", file=sys.stderr)
            else:
                print("hot path with and without a browser on the live feed:")
                report["live_feed"] = live_feed(port, home, key, args.duration, args.rounds, chromium)
    finally:
        stop_all(procs)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
