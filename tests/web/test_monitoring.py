"""monitoring/: the alert rules and example config pass promtool, every Grafana query parses in a real
Prometheus, and that Prometheus scrapes a real call's latency from the gateway."""

from __future__ import annotations

import asyncio
import contextlib
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


@contextlib.contextmanager
def running_prometheus(config: Path, tmp: Path) -> Iterator[str]:
    """A real Prometheus on `config` and a free port, its data and log in `tmp`: its base URL once ready."""
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
    with running_prometheus(config, tmp) as base:
        yield base


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


# ---------------------------------------------------------------------------------------------- compose.yaml's
# Prometheus and Grafana. The Prometheus config and rules are loaded by the real promtool and prometheus, laid
# out as compose.yaml mounts them. Grafana is in no registry this machine reaches (not Debian, PyPI or npm), so
# its provisioning files are checked against what Grafana's provisioning readers accept (apiVersion 1: the
# fields of its datasource and dashboard-provider configs, one default datasource per org, unique provider
# names, file providers with a path), and against the compose file and the dashboard they must fit.

COMPOSE = ROOT / "compose.yaml"
GRAFANA_PROVISIONING = MONITORING / "grafana" / "provisioning"
# Grafana's provisioning config, apiVersion 1 (pkg/services/provisioning/{datasources,dashboards}/types.go).
GRAFANA_DATASOURCE_FIELDS = {"orgId", "orgName", "version", "name", "type", "access", "url", "user", "database",
                             "basicAuth", "basicAuthUser", "withCredentials", "isDefault", "correlations",
                             "jsonData", "secureJsonData", "editable", "uid"}
GRAFANA_PROVIDER_FIELDS = {"name", "type", "orgId", "folder", "folderUid", "editable", "options", "disableDeletion",
                           "updateIntervalSeconds", "allowUiUpdates"}


def compose() -> dict:
    import yaml

    return yaml.safe_load(COMPOSE.read_text())


def mounts(service: dict) -> dict[str, Path]:
    """A service's bind mounts: container path -> the file or directory of this repository."""
    out = {}
    for volume in service.get("volumes", ()):
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            out[target] = ROOT / source
    return out


def compose_prometheus_layout(tmp: Path) -> Path:
    """The files compose.yaml mounts into the Prometheus container, copied to where it mounts them."""
    service = compose()["services"]["prometheus"]
    config = next(a.split("=", 1)[1] for a in service["command"] if a.startswith("--config.file="))
    for target, source in mounts(service).items():
        assert source.is_file(), source
        placed = tmp / target.lstrip("/")
        placed.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, placed)
    return tmp / config.lstrip("/")


@needs_promtool
def test_the_compose_prometheus_config_is_valid_as_compose_mounts_it(tmp_path):
    config = compose_prometheus_layout(tmp_path)
    checked = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True, timeout=60)
    out = checked.stdout.decode() + checked.stderr.decode()
    assert checked.returncode == 0, out
    assert "SUCCESS: 5 rules found" in out, out  # the alert rules, found beside it as the mounts put them


@needs_prometheus
def test_prometheus_runs_the_compose_config_with_the_alert_rules(tmp_path):
    config = compose_prometheus_layout(tmp_path)
    targets_deadline = time.monotonic() + PROMETHEUS_READY_S + SCRAPE_WAIT_S
    with running_prometheus(config, tmp_path) as base:
        _, _, body = http(base + "/api/v1/rules")
        rules = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
        assert {r["name"] for r in rules} == {"VoicegateVoiceLatencyHigh", "VoicegateErrorRateHigh",
                                             "VoicegateReplyQualityLow", "VoicegateCircuitBreakerOpen", "VoicegateDown"}
        while True:  # the scrape manager takes its targets a moment after the server is ready
            _, _, body = http(base + "/api/v1/targets")
            targets = json.loads(body)["data"]["activeTargets"]
            if targets or time.monotonic() > targets_deadline:
                break
            time.sleep(0.2)
        # The gateway service of compose.yaml (no such host here: the target is listed, not up).
        assert [(t["labels"]["job"], t["labels"]["instance"]) for t in targets] == [("voicegate", "gateway:8000")]


def test_the_compose_prometheus_scrapes_the_gateway_service_as_the_example_does():
    import yaml

    example = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    composed = yaml.safe_load((MONITORING / "prometheus-compose.yml").read_text())
    assert composed["rule_files"] == example["rule_files"]
    (job,) = composed["scrape_configs"]
    assert job["job_name"] == example["scrape_configs"][0]["job_name"] == "voicegate"
    services = compose()["services"]
    host, port = job["static_configs"][0]["targets"][0].split(":")
    assert host in services and host == "gateway"
    assert any(str(p).endswith(f":{port}") for p in services["gateway"]["ports"])  # the container's port
    assert f"EXPOSE {port}" in (ROOT / "Dockerfile").read_text()


def grafana_file(kind: str) -> dict:
    import yaml

    (path,) = sorted((GRAFANA_PROVISIONING / kind).glob("*.y*ml"))
    return yaml.safe_load(path.read_text())


def test_the_grafana_datasource_provisioning_is_what_grafana_reads():
    config = grafana_file("datasources")
    assert config["apiVersion"] == 1 and set(config) <= {"apiVersion", "datasources", "deleteDatasources"}
    defaults: dict[int, int] = {}
    for source in config["datasources"]:
        assert set(source) <= GRAFANA_DATASOURCE_FIELDS, set(source) - GRAFANA_DATASOURCE_FIELDS
        assert source["name"] and source["type"] and source.get("access", "proxy") in ("proxy", "direct")
        org = source.get("orgId", 1)
        defaults[org] = defaults.get(org, 0) + bool(source.get("isDefault"))
    assert all(count <= 1 for count in defaults.values())  # Grafana refuses two defaults in one org
    (prometheus,) = [s for s in config["datasources"] if s["type"] == "prometheus"]
    # The dashboard's datasource variable lists Prometheus datasources and starts on the default one.
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    variable = dashboard["templating"]["list"][0]
    assert variable["type"] == "datasource" and variable["query"] == prometheus["type"] and prometheus["isDefault"]
    # It reaches the compose Prometheus service on the port Prometheus listens on by default.
    url = urllib.parse.urlsplit(prometheus["url"])
    assert url.hostname in compose()["services"] and url.hostname == "prometheus" and url.port == 9090
    # $__rate_interval is at least four of these: it must be the scrape interval Prometheus uses.
    import yaml

    composed = yaml.safe_load((MONITORING / "prometheus-compose.yml").read_text())
    assert prometheus["jsonData"]["timeInterval"] == composed["global"]["scrape_interval"]


def test_the_grafana_dashboard_provisioning_finds_the_dashboard_compose_mounts():
    config = grafana_file("dashboards")
    assert config["apiVersion"] == 1 and set(config) == {"apiVersion", "providers"}
    names = [p["name"] for p in config["providers"]]
    assert len(names) == len(set(names))  # Grafana: "dashboard name is not unique"
    (provider,) = config["providers"]
    assert set(provider) <= GRAFANA_PROVIDER_FIELDS, set(provider) - GRAFANA_PROVIDER_FIELDS
    assert provider.get("type", "file") == "file" and provider["options"]["path"].startswith("/")
    grafana = compose()["services"]["grafana"]
    mounted = mounts(grafana)
    assert mounted["/etc/grafana/provisioning"] == GRAFANA_PROVISIONING  # where Grafana looks by default
    (dashboard_target,) = [t for t, s in mounted.items() if s == MONITORING / "grafana-dashboard.json"]
    assert dashboard_target.endswith(".json") and str(Path(dashboard_target).parent) == provider["options"]["path"]
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dashboard["title"] and dashboard["uid"]  # Grafana refuses a provisioned dashboard without a title
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == dashboard_target
