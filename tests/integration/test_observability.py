"""The shipped dashboards and alert rules against a real Prometheus scraping a running streamer.

Prometheus (Debian's ``prometheus`` package, installed by ``.ci/run``) scrapes the streamer's
/metrics every second while it consumes simulated rows from the test broker; then every
panel expression must return data and every alert rule must be valid and evaluate, so no
panel of a real deployment shows "No data" for want of a metric the streamer exports.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from stream_helpers import (
    alerts_of,
    archiving,
    build_scenario,
    copy_bundle,
    produce_raw,
    produce_rows,
    read_all,
    running,
    scenario_rows,
    settings_for,
    wait_until,
)

from streamer.archive_settings import ArchiveSettings
from streamer.broker import create_topics
from streamer.bundle import Registry, load_bundle
from streamer.health import HealthServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
SHIPPED_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
K8S_CONFIG = ROOT / "deploy" / "k8s" / "prometheus-config.yaml"
JOB = "sheetbreak-streamer"
ARCHIVER_JOB = "sheetbreak-archiver"
HTTP_TIMEOUT = 5.0
CHUNKS = 6


def tool(name: str) -> str:
    """A Prometheus binary on PATH; absent, the test skips locally and fails in CI."""
    found = shutil.which(name)
    if found is not None:
        return found
    message = f"{name} is not on PATH (Debian: apt-get install prometheus; .ci/run does it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def panel_queries() -> list[tuple[str, str]]:
    """(dashboard / panel / refId, PromQL) of every target of every shipped dashboard."""
    found = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                where = f"{path.stem} / {panel['title']} / {target['refId']}"
                found.append((where, target["expr"]))
    return found


def rule_queries() -> list[tuple[str, str]]:
    """(rule name, PromQL) of every shipped alert rule."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]


def free_port() -> int:
    """A loopback port free at the time of asking."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str) -> Any:
    """GET a JSON document, whatever the status, within a bounded timeout."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return json.loads(exc.read())


def query(base: str, expr: str) -> Any:
    """Prometheus's answer to an instant query."""
    return get_json(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")


def has_finite_sample(answer: Any) -> bool:
    """Whether a successful query returned at least one finite sample."""
    if answer.get("status") != "success":
        return False
    data = answer["data"]
    if data["resultType"] == "scalar":
        return math.isfinite(float(data["result"][1]))
    return any(math.isfinite(float(item["value"][1])) for item in data["result"])


def scrape_config(folder: Path, targets: dict[str, str]) -> Path:
    """The shipped config, scraping each job's target every second, with the shipped rules."""
    config = yaml.safe_load(SHIPPED_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RULES)]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(targets), "every shipped scrape job gets a running target"
    for name, target in targets.items():
        jobs[name]["static_configs"] = [{"targets": [target]}]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def prometheus_server(config: Path, storage: Path) -> Iterator[str]:
    """A Prometheus server on a free loopback port; yields its base URL."""
    port = free_port()
    log = (storage.parent / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={storage}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(base, process), 30, "Prometheus to be ready")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


def _ready(base: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"prometheus exited with code {process.returncode}")
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=1.0) as reply:
            return reply.status == 200
    except OSError:
        return False


@dataclass(frozen=True)
class Stack:
    """Prometheus scraping a running streamer, and the streamer's own server."""

    prometheus: str
    streamer: str
    bootstrap: str
    alerts_topic: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Stack]:
    """A streamer fed simulated rows in chunks while Prometheus scrapes it, and reloading once."""
    tool("prometheus")
    root = tmp_path_factory.mktemp("observability")
    scenario = build_scenario(root)
    # The candidate in shadow: the same model with a lower threshold, so it warns earlier.
    threshold = load_bundle(scenario.registry / "v1").threshold
    candidate = copy_bundle(
        scenario.registry / "v1", Registry(root / "candidates"), "c1", threshold=0.8 * threshold
    )
    token = uuid.uuid4().hex[:8]
    settings = settings_for(
        kafka_bootstrap,
        scenario.registry,
        lambda p: f"{p}-obs-{token}",
        "o",
        shadow=candidate,
    )
    create_topics(
        kafka_bootstrap, {settings.topic: 4, settings.alerts_topic: 1, settings.dlq_topic: 1}
    )
    rows = scenario_rows(scenario, normal_machines=2, drift_machines=2)
    archive_registry = CollectorRegistry()
    archive = ArchiveSettings(
        settings.kafka,
        str(root / "archive"),
        settings.topic,
        f"archiver-obs-{token}",
        flush_rows=200,
        flush_seconds=1.0,
        session_timeout_ms=6000,
        poll_seconds=0.2,
        metrics_port=None,
    )
    with (
        running(settings) as run,
        HealthServer("127.0.0.1", 0, run.registry, run.streamer.health) as server,
        archiving(archive, archive_registry) as archiver,
        HealthServer("127.0.0.1", 0, archive_registry, archiver.health) as archive_server,
    ):
        target = f"127.0.0.1:{server.port}"
        targets = {JOB: target, ARCHIVER_JOB: f"127.0.0.1:{archive_server.port}"}
        with prometheus_server(scrape_config(root, targets), root / "tsdb") as base:
            # Rows arrive over several scrapes, so rates and quantiles see them change.
            size = math.ceil(len(rows) / CHUNKS)
            for start in range(0, len(rows), size):
                produce_rows(kafka_bootstrap, settings.topic, rows[start : start + size])
                time.sleep(1.2)
            produce_raw(kafka_bootstrap, settings.topic, [(b"N-1", b"not json")])
            registry = Registry(scenario.registry)
            copy_bundle(scenario.registry / "v1", registry, "v2")
            registry.set_current("v2")
            wait_until(
                lambda: (
                    run.value("sheetbreak_rows_consumed_total") >= len(rows) + 1
                    and run.value("sheetbreak_model_reloads_total", result="loaded") >= 1
                    and run.value("sheetbreak_warning_lead_seconds_count") >= 1
                    and run.value(
                        "sheetbreak_shadow_warning_lead_seconds_count", model_version="c1"
                    )
                    >= 1
                ),
                60,
                "every row consumed, the new model loaded and breaks judged by both models",
            )
            # The panels read Prometheus, not the registry: wait for a scrape after the reload
            # and after the archiver's first flush.
            wait_until(
                lambda: (
                    has_finite_sample(query(base, "sheetbreak_model_reloads_total"))
                    and has_finite_sample(
                        query(base, "sheetbreak_archive_last_flush_timestamp_seconds")
                    )
                ),
                30,
                "Prometheus to scrape the reload and the archiver's flush",
            )
            yield Stack(base, f"http://{target}", kafka_bootstrap, settings.alerts_topic)


def test_promtool_accepts_the_shipped_rules_and_configs(tmp_path: Path) -> None:
    promtool = tool("promtool")
    config_map = yaml.safe_load(K8S_CONFIG.read_text())
    in_cluster = tmp_path / "prometheus.yml"
    in_cluster.write_text(config_map["data"]["prometheus.yml"])
    for command in (
        ["check", "rules", str(RULES)],
        ["check", "config", str(SHIPPED_CONFIG)],
        ["check", "config", str(in_cluster)],
    ):
        result = subprocess.run(
            [promtool, *command], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_panel_returns_data(stack: Stack) -> None:
    queries = panel_queries()
    assert len(queries) >= 20
    empty: dict[str, str] = {}

    def all_have_data() -> bool:
        empty.clear()
        for where, expr in queries:
            if not has_finite_sample(query(stack.prometheus, expr)):
                empty[where] = expr
        return not empty

    with contextlib.suppress(AssertionError):
        wait_until(all_have_data, 45, "data for every panel")
    assert not empty, "panels without data:\n" + "\n".join(f"{w}: {e}" for w, e in empty.items())


def test_every_alert_rule_is_valid_and_evaluates(stack: Stack) -> None:
    rules = rule_queries()
    assert len(rules) >= 10
    for name, expr in rules:
        answer = query(stack.prometheus, expr)
        assert answer["status"] == "success", f"{name}: {answer}"

    def evaluated() -> list[dict[str, Any]]:
        groups = get_json(f"{stack.prometheus}/api/v1/rules")["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    wait_until(
        lambda: all(not r["lastEvaluation"].startswith("0001") for r in evaluated()),
        30,
        "every rule evaluated once",
    )
    loaded = evaluated()
    assert {r["name"] for r in loaded} == {name for name, _ in rules}
    assert [(r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok"] == []


def test_rules_and_panels_name_only_exported_metrics(stack: Stack) -> None:
    exported = set(get_json(f"{stack.prometheus}/api/v1/label/__name__/values")["data"])
    named = set()
    for _, expr in panel_queries() + rule_queries():
        named |= set(re.findall(r"\bsheetbreak_\w+", expr))
    assert named - exported == set()


def test_health_endpoints_of_the_running_streamer(stack: Stack) -> None:
    assert get_json(f"{stack.streamer}/healthz")["ok"] is True
    wait_until(lambda: get_json(f"{stack.streamer}/readyz")["ok"], 30, "/readyz to pass")
    ready = get_json(f"{stack.streamer}/readyz")
    assert ready["model_version"] == "v2" and ready["joined_group"]
    answer = query(stack.prometheus, f'sheetbreak_healthy{{job="{JOB}",probe="liveness"}}')
    assert [float(item["value"][1]) for item in answer["data"]["result"]] == [1.0]


def query_range(base: str, expr: str, seconds: float) -> list[dict[str, Any]]:
    """The series of a range query over the last ``seconds``, one step a second."""
    end = time.time()
    params = {"query": expr, "start": end - seconds, "end": end, "step": "1s"}
    answer = get_json(f"{base}/api/v1/query_range?{urllib.parse.urlencode(params)}")
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def legend(template: str, labels: dict[str, str]) -> str:
    """A Grafana legend format filled with a series' labels."""
    if template == "__auto":
        return ",".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def render_dashboard(base: str, path: Path, out: Path) -> Path:
    """One PNG with a small chart per panel of a dashboard, drawn from Prometheus's answers."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # noqa: PLC0415

    board = json.loads(path.read_text())
    panels = [p for p in board["panels"] if p["type"] != "row"]
    rows = math.ceil(len(panels) / 3)
    figure, axes = plt.subplots(rows, 3, figsize=(15, 3.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for target in panel["targets"]:
            for series in query_range(base, target["expr"], 90):
                stamps = [float(t) - time.time() for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                ax.plot(stamps, values, label=legend(target["legendFormat"], series["metric"]))
        ax.set_title(panel["title"], fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="upper left")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    figure.suptitle(f"{board['title']} (seconds before now, test data)", fontsize=11)
    figure.tight_layout()
    target = out / f"{path.stem}.png"
    figure.savefig(target, dpi=80)
    plt.close(figure)
    return target


def test_every_dashboard_renders_from_prometheus(stack: Stack, tmp_path: Path) -> None:
    # SHEETBREAK_PREVIEWS_DIR=deploy/grafana/previews refreshes the images the README shows.
    out = Path(os.environ.get("SHEETBREAK_PREVIEWS_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    for path in DASHBOARDS:
        image = render_dashboard(stack.prometheus, path, out)
        assert image.stat().st_size > 10_000


def test_the_shadow_candidate_is_measured_but_never_published(stack: Stack) -> None:
    answer = query(stack.prometheus, "sheetbreak_shadow_threshold")
    assert [item["metric"]["model_version"] for item in answer["data"]["result"]] == ["c1"]
    opened = query(stack.prometheus, 'sheetbreak_shadow_alerts_total{status="open"}')
    assert float(opened["data"]["result"][0]["value"][1]) >= 1
    published = alerts_of(read_all(stack.bootstrap, stack.alerts_topic))
    assert published
    assert {alert["model_version"] for alert in published} <= {"v1", "v2"}
