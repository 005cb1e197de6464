"""The benchmark cannot rot: its quick run (``python -m bench --quick``) runs here and must produce
every figure. Only that it ran and measured is asserted, never a time or a threshold: times
belong in the benchmark's own report (docs/benchmark.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.once

EXPECTED = {
    ("probe-bare", "ws"),
    ("probe-streamchat", "ws"),
    ("direct", "http"),
    ("bare", "ws"),
    ("streamchat", "ws"),
    ("streamchat", "sse"),
    ("streamchat", "openai"),
}


def test_quick_benchmark_runs_and_measures(tmp_path: Path) -> None:
    out = tmp_path / "results"
    command = [sys.executable, "-m", "bench", "--quick", "--out", str(out)]
    done = subprocess.run(
        [*command, "--var", str(tmp_path / "var")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results = json.loads((out / "latest.json").read_text())
    assert (out / "latest.md").read_text().count("## Targets") == 1

    rounds = results["rounds"]
    assert {(r["variant"], r["front"]) for r in rounds} == EXPECTED
    for r in rounds:
        name = f"{r['variant']} {r['front']} {r['db']} C={r['c']}"
        assert not r.get("failed") and not r.get("skipped"), (name, r)
        assert r["errors"] == 0 and not r["cut"] and not r["warmup_errors"], (name, r)
        assert r["replies"] == r["c"] and r["ttft_ms"]["n"] == r["c"], (name, r["ttft_ms"])
        assert r["duration_ms"]["n"] == r["c"], (name, r["duration_ms"])
        assert r["upstream_deltas"] == r["c"] * r["tokens"], (name, r["upstream_deltas"])
        if r["variant"] != "direct":
            assert r["cpu_us_per_delta"] is not None and r["cpu_us_per_delta"] > 0, (name, r)
            assert r["rss_peak_kb"] is not None, (name, r)
        if "streamchat" in r["variant"]:
            assert r["statements_per_reply"] > 0, (name, r)
            assert r["statements_by_kind"], (name, r)
    summary = results["summary"]
    assert {s["front"] for s in summary} == {"ws", "sse", "openai"}
    for s in summary:
        assert None not in s["ttft_p50_ms"].values(), s
        assert s["cpu_ratio"] is not None, s
    assert results["targets"], results
