"""The benchmark harness runs end to end (a few seconds); timings are printed, never asserted."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def test_bench_smoke_run_reports_every_target(tmp_path):
    out = tmp_path / "results.json"
    root = Path(__file__).parent.parent
    missing_peer = ["--compare", "litellm", "--litellm-cmd", str(tmp_path / "no-litellm-here")]
    options = ["--smoke", "--no-wrk", "--workers", "2", "--stream-rounds", "2", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", *options, *missing_peer],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert set(report["targets"]) == {"upstream", "passthrough", "hubproxy", "hubproxy --workers 2"}
    for results in report["targets"].values():
        assert results["rps"] > 0 and results["stream_p50_ms"] == results["stream_p50_ms"]
    assert "throughput ratio" in proc.stdout and "--workers 2 vs one process" in proc.stdout
    assert "litellm not found, skipped; to install:" in proc.stderr
    assert "hubproxy: resident MB after each round of 5 streams:" in proc.stdout


def test_the_round_trip_bench_counts_postgresql_round_trips(postgres_url):
    """Smoke only: hubproxy on PostgreSQL through the counting relay; some round trips are counted."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.roundtrips", "--smoke"],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.strip()[:1].isdigit()]
    counted = [row for row in rows if row[1] != "wrk"]
    assert [row[0] for row in counted] == ["1", "32"] and all(int(row[2]) > 0 for row in counted)
    if shutil.which("wrk"):  # under wrk too; then the SQLite/PostgreSQL comparison, with each one's CPU per call
        under_wrk = [row for row in rows if row[1] == "wrk"]
        assert [row[0] for row in under_wrk] == ["32", "64"] and all(int(row[3]) > 0 for row in under_wrk)
        cpu = re.search(
            r"on SQLite hubproxy (\d+); on PostgreSQL hubproxy (\d+) \+ PostgreSQL's own processes (\d+)", done.stdout
        )
        assert cpu and int(cpu[1]) > 0 and int(cpu[2]) > 0, done.stdout


def test_the_suite_runs_and_reports_every_figure(tmp_path):
    """Smoke only: `bench.run --suite` measures the direct upstream, the passthrough and hubproxy."""
    out = tmp_path / "suite.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--suite", "--smoke", "--json", str(out)],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    targets = json.loads(out.read_text())["targets"]
    assert set(targets) == {"upstream, direct", "aiohttp passthrough", "hubproxy"}
    for row in targets.values():
        assert row["sustained_rps"] > 0 and row["cpu_us_per_call"] > 0 and "added_p99_ms_c64" in row
    assert "streams ≤50ms" in done.stdout


@pytest.mark.skipif(
    shutil.which("wrk") is None or shutil.which("nginx") is None, reason="bench.instances needs wrk and nginx"
)
def test_the_instances_bench_runs(postgres_url, redis_url, tmp_path):
    """Smoke only: it starts every setup and prints its table (times are never asserted)."""
    out = tmp_path / "instances.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.instances", "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert set(json.loads(out.read_text())) == {
        "1 on SQLite",
        "1 on PostgreSQL",
        "1 on PostgreSQL, nginx",
        "2 on PostgreSQL, nginx",
    }


@pytest.mark.skipif(shutil.which("wrk") is None, reason="bench.dashboard's live-feed part needs wrk")
def test_the_dashboard_bench_runs(tmp_path):
    """Smoke only: it seeds, times every page and loads the proxy with and without a browser watching."""
    out = tmp_path / "dashboard.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.dashboard", "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["seed_rows"] == 20_000 and len(report["pages"]) == 20
    assert all(page["bytes"] > 0 for page in report["pages"])
    if shutil.which("chromium"):
        assert report["live_feed"]["rps_with_browser"] > 0
