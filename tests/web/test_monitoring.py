"""monitoring/: the alert rules and example config pass promtool, every Grafana query parses in a real
Prometheus, and that Prometheus scrapes a real call's latency from the gateway."""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Iterator

import pytest

from loadgen.simcaller import CallerTurn, run_call
from tests.support import ROOT, RunningGateway, free_port, stop_process
from tests.web.web_helpers import http

MONITORING = ROOT / "monitoring"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")
needs_prometheus = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (Debian package prometheus)")
PROMETHEUS_READY_S = 30
SCRAPE_WAIT_S = 40  # a few 1 s scrapes, with room for a busy 2-core machine

# Grafana fills these in before a query reaches Prometheus.
GRAFANA_MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def _promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, timeout=60, cwd=MONITORING)


@needs_promtool
def test_alert_rules_pass_promtool_check_and_unit_tests():
    checked = _promtool("check", "rules", "prometheus-alerts.yml")
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    tested = _promtool("test", "rules", "prometheus-alerts.test.yml")
    assert tested.returncode == 0, tested.stdout.decode() + tested.stderr.decode()


@needs_promtool
def test_the_example_prometheus_config_is_valid():
    checked = _promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def _panels(dashboard: dict) -> Iterator[dict]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", ())


def grafana_queries() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    queries = []
    for panel in _panels(dashboard):
        for target in panel.get("targets", ()):
            expr = target["expr"]
            for macro, value in GRAFANA_MACROS.items():
                expr = expr.replace(macro, value)
            queries.append(expr)
    return queries


def alert_expressions() -> list[str]:
    # Each rule's expr is one line in the file (promtool has checked the YAML as a whole).
    text = (MONITORING / "prometheus-alerts.yml").read_text()
    exprs = re.findall(r"^\s+expr:\s*(.+)$", text, flags=re.MULTILINE)
    assert len(exprs) == text.count("- alert:")
    return exprs


def test_the_grafana_dashboard_covers_the_product_metrics():
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    panels = list(_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] and dashboard["templating"]["list"][0]["type"] == "datasource"
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
    queries = grafana_queries()
    assert all("$" not in q for q in queries), [q for q in queries if "$" in q]
    text = "\n".join(queries)
    for needed in ("histogram_quantile(0.95, sum by (le) (rate(voicegate_voice_to_voice_seconds_bucket",
                   "voicegate_active_calls", "voicegate_errors_total", "voicegate_turns_total",
                   'voicegate_response_cache_total{result="hit"}', "voicegate_vad_end_delay_seconds",
                   "voicegate_stt_latency_seconds", "voicegate_llm_first_token_seconds",
                   "voicegate_tts_first_byte_seconds",
                   "voicegate_gateway_overhead_seconds", "voicegate_circuit_breaker_state",
                   "voicegate_provider_errors_total"):
        assert needed in text, needed
    # Every metric the dashboard names exists in the gateway (a typo would be an empty panel forever).
    from gateway import metrics

    known = {family.name for collector in vars(metrics).values() if hasattr(collector, "collect")
             and hasattr(collector, "_name") for family in collector.collect()}
    named = set(re.findall(r"voicegate_[a-z_]+", text))
    suffixes = ("_bucket", "_sum", "_count", "_total")
    for name in named:
        base = next((name[: -len(s)] for s in suffixes if name.endswith(s) and name[: -len(s)] in known), name)
        assert base in known or name in known, name


@pytest.fixture(scope="module")
def prometheus(offline_gateway: RunningGateway, tmp_path_factory) -> Iterator[str]:
    """A real Prometheus scraping the gateway every second, with the alert rules loaded."""
    if PROMETHEUS is None:
        pytest.skip("prometheus not installed (Debian package prometheus)")
    tmp = tmp_path_factory.mktemp("prometheus")
    config = tmp / "prom.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {MONITORING / 'prometheus-alerts.yml'}\n"
        "scrape_configs:\n  - job_name: voicegate\n    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{offline_gateway.port}']\n"
    )
    port = free_port()
    log_path = tmp / "prometheus.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + PROMETHEUS_READY_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {log_path.read_text()[-2000:]}")
            try:
                if http(base + "/-/ready", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        yield base
    finally:
        stop_process(process)


def query(base: str, expr: str) -> tuple[int, dict]:
    status, _, body = http(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    return status, json.loads(body)


def wait_for(base: str, expr: str, timeout: float = SCRAPE_WAIT_S) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = query(base, expr)
        assert status == 200, body
        result = body["data"]["result"]
        if result and not math.isnan(float(result[0]["value"][1])):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"no data for {expr} after {timeout}s")
        time.sleep(0.5)


async def test_prometheus_scrapes_the_latency_of_a_real_call(offline_gateway, prometheus):
    # A scrape before the call, so rate() sees the histogram count go up.
    await asyncio.to_thread(wait_for, prometheus, 'up{job="voicegate"} == 1')
    report = await run_call(offline_gateway.media_url, [CallerTurn(text="Hello, I would like to book an appointment")],
                            max_call_s=90)
    assert report.ok and report.completed, report.to_json()

    p50 = await asyncio.to_thread(
        wait_for, prometheus, "histogram_quantile(0.5, sum(rate(voicegate_voice_to_voice_seconds_bucket[1m])) by (le))")
    seconds = float(p50[0]["value"][1])
    # Between the smallest and largest finite bucket: a real turn of whisper + rules + piper.
    assert 0.05 <= seconds <= 5.0, seconds
    stt = await asyncio.to_thread(wait_for, prometheus, "sum(increase(voicegate_stt_latency_seconds_count[1m]))")
    assert float(stt[0]["value"][1]) > 0
    turns = await asyncio.to_thread(wait_for, prometheus, "sum(voicegate_turns_total)")
    assert float(turns[0]["value"][1]) >= 1


async def test_every_grafana_and_alert_query_parses_in_prometheus(prometheus):
    def check_all() -> list[str]:
        bad = []
        for expr in grafana_queries() + alert_expressions():
            status, body = query(prometheus, expr)
            if status != 200 or body.get("status") != "success":
                bad.append(f"{expr}: {status} {body.get('error')}")
        return bad

    assert await asyncio.to_thread(check_all) == []
    # Sanity of the check itself: a broken expression is a 400 from this API.
    status, body = await asyncio.to_thread(query, prometheus, "sum(rate(voicegate_turns_total[1m])")
    assert status == 400 and body["errorType"] == "bad_data"


async def test_prometheus_loads_and_evaluates_the_alert_rules(prometheus):
    def rules_health() -> list[dict]:
        deadline = time.monotonic() + SCRAPE_WAIT_S
        while True:
            _, _, body = http(prometheus + "/api/v1/rules")
            rules = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
            if rules and all(r["health"] == "ok" for r in rules) or time.monotonic() > deadline:
                return rules
            time.sleep(0.5)

    rules = await asyncio.to_thread(rules_health)
    assert {r["name"] for r in rules} == {"VoicegateVoiceLatencyHigh", "VoicegateErrorRateHigh",
                                         "VoicegateReplyQualityLow", "VoicegateCircuitBreakerOpen", "VoicegateDown"}
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]


@needs_promtool
def test_the_gateway_exposition_passes_promtool_check_metrics(offline_gateway):
    status, body = offline_gateway.get("/metrics")
    assert status == 200 and b"voicegate_voice_to_voice_seconds_bucket" in body
    checked = _promtool("check", "metrics", stdin=body)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
