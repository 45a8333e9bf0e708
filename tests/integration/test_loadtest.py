"""The load generator on small, bounded runs against a real server."""

from __future__ import annotations

import json
import subprocess
import sys

from google.protobuf import json_format

from slatewise_client import build_request


def _loadtest(*args):
    out = subprocess.run([sys.executable, "-m", "slatewise_client.cli", "loadtest", *args],
                         capture_output=True, text=True, timeout=120)
    return out


def test_closed_loop_json_summary(pointwise_server):
    out = _loadtest("--target", pointwise_server.target, "--requests", "30", "--concurrency", "4",
                    "--strategy", "pointwise", "--json")
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["requests"] == 30 and s["status_codes"] == {"OK": 30}
    assert s["strategies"] == {"POINTWISE": 30}
    lat = s["latency_seconds"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert s["throughput_rps"] > 0 and 0 < s["mean_category_coverage"] <= 1


def test_open_loop_streaming_from_a_mix_file(pointwise_server, tmp_path):
    mix = tmp_path / "mix.jsonl"
    mix.write_text("\n".join(json_format.MessageToJson(build_request(q, 3, strategy="pointwise"), indent=None)
                             for q in ["beach holiday", "gym session"]) + "\n")
    out = _loadtest("--target", pointwise_server.target, "--rate", "20", "--requests", "20",
                    "--duration", "30", "--stream", "--mix", str(mix))
    assert out.returncode == 0, out.stderr
    assert "requests        20" in out.stdout
    assert "first item      p50" in out.stdout and "status codes    {'OK': 20}" in out.stdout
    assert "done" in out.stderr  # live progress


def test_refuses_non_loopback_targets():
    out = _loadtest("--target", "example.invalid:50051", "--requests", "1")
    assert out.returncode == 2 and "not a loopback" in out.stderr
