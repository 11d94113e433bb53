"""deploy/grafana/xinbao.json: valid JSON a Grafana can import, and every metric it queries is
one the processes export. The names come from real scrapes of an API app and a controller's
kiosk (both in this process; the controller is not started, so no bus is opened): a metric
renamed in the code without the dashboard fails here."""

import json
import re

import pytest
from fastapi.testclient import TestClient

from cloud_api.core.config import Settings
from cloud_api.core.db import migrate
from cloud_api.main import create_app
from locker_controller.app import Controller
from locker_controller.config import parse_config
from locker_controller.kiosk import build_app
from tests.locker_controller.conftest import controller_toml
from tests.support.compose import REPO

DASHBOARD = REPO / "deploy/grafana/xinbao.json"
_TYPE = re.compile(r"^# TYPE (\S+) (\S+)$", re.M)
_SUFFIXES = {
    "counter": ("", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
}
LOOPBACK = ("127.0.0.1", 50000)


def exported(text: str) -> set[str]:
    """Every sample name a scrape can carry, from its # TYPE lines (a labelled metric with
    nothing observed yet has no sample, but has its TYPE line)."""
    names = set()
    for family, kind in _TYPE.findall(text):
        base = family.removesuffix("_total") if kind == "counter" else family
        for suffix in _SUFFIXES.get(kind, ("",)):
            names.add(family if suffix == "" else base + suffix)
    return names


@pytest.fixture(scope="module")
def metric_names(tmp_path_factory) -> set[str]:
    work = tmp_path_factory.mktemp("grafana")
    url = f"sqlite:///{work / 'api.db'}"
    migrate(url)
    app = create_app(Settings(demo=True, database_url=url, run_background=False))
    with TestClient(app, client=LOOPBACK) as api:
        r = api.get("/metrics")
        assert r.status_code == 200, r.text
        names = exported(r.text)
    config = parse_config(controller_toml(work / "data", "/dev/null", kiosk_port=0))
    controller = Controller(config)
    try:
        with TestClient(build_app(controller), client=LOOPBACK) as kiosk:
            r = kiosk.get("/metrics")
            assert r.status_code == 200, r.text
            names |= exported(r.text)
    finally:
        controller.store.close()
    return names


def queried(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expression) of every query of every panel, rows' panels included."""
    found = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                found.append((inner["title"], target["expr"]))
    return found


def test_the_dashboard_is_importable_json():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"] == "Xinbao"
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_every_metric_the_dashboard_queries_is_exported(metric_names):
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    used = set()
    for title, expr in queried(dashboard):
        names = set(re.findall(r"\bxinbao_[a-z0-9_]+", expr))
        assert names, f"{title}: queries no xinbao metric"
        missing = names - metric_names
        assert not missing, f"{title}: {sorted(missing)} not exported"
        used |= names
    # And the dashboard shows each part the issue asks for.
    for wanted in (
        "xinbao_http_requests_total",
        "xinbao_http_request_duration_seconds_bucket",
        "xinbao_backlog_depth",
        "xinbao_backlog_oldest_age_seconds",
        "xinbao_events_ingested_total",
        "xinbao_ingest_lag_seconds_bucket",
        "xinbao_alarms_open",
        "xinbao_lockouts_active",
        "xinbao_controller_outbox_depth",
        "xinbao_controller_bus_timeouts_total",
        "xinbao_controller_events_total",
        "xinbao_controller_keypad_pulse_seconds_bucket",
    ):
        assert wanted in used, wanted
