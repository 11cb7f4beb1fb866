"""The benchmark harness runs end to end (a few seconds); timings are printed, never asserted."""

import json
import subprocess
import sys
from pathlib import Path


def test_bench_smoke_run_reports_every_target(tmp_path):
    out = tmp_path / "results.json"
    root = Path(__file__).parent.parent
    missing_peer = ["--compare", "litellm", "--litellm-cmd", str(tmp_path / "no-litellm-here")]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--no-wrk", "--workers", "2", "--json", str(out), *missing_peer],
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
