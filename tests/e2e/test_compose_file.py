"""docker-compose.yml itself: its structure, as compose would enforce it (health checks,
``depends_on`` conditions, secrets that fail when unset, files the bind mounts need), and the
deploy scripts refusing bad input. No Docker engine runs here; test_compose_stack.py starts
the same commands as plain processes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from tests.support.compose import (
    COMPOSE_FILE,
    REFERENCE,
    REPO,
    UnsetVariable,
    interpolate,
    load_compose,
    make_env,
)

LOCKER = "XA-0001"
SERVICES = {"mosquitto", "postgres", "api-1", "api-2", "sim", "controller"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY")


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return make_env(LOCKER)


# --- the file itself -----------------------------------------------------------------------


def test_services_images_and_commands(compose):
    services = compose["services"]
    assert set(services) == SERVICES
    assert services["mosquitto"]["image"] == "eclipse-mosquitto:2"
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["api-1"]["command"][:2] == ["xinbao", "api"]
    # Only the first API process migrates; the second waits for it (no concurrent migrations).
    assert "--no-migrate" not in services["api-1"]["command"]
    assert services["api-2"]["command"][-1] == "--no-migrate"
    assert services["sim"]["command"][:3] == ["xinbao", "sim", "boards"]
    assert "--tcp" in services["sim"]["command"]
    env = services["controller"]["environment"]
    assert env["XINBAO_CABINET_BUS"] == "socket://sim:7000"
    assert "0.0.0.0:7000" in services["sim"]["command"]


def test_health_checks_probe_what_the_command_serves(compose):
    services = compose["services"]
    postgres = services["postgres"]["environment"]
    assert (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"]) == ("xinbao", "xinbao")
    assert "-U xinbao -d xinbao" in services["postgres"]["healthcheck"]["test"][1]
    for name in ("api-1", "api-2"):
        command = services[name]["command"]
        port = command[command.index("--port") + 1]
        assert f"http://127.0.0.1:{port}/" in " ".join(services[name]["healthcheck"]["test"])
    sim = services["sim"]["command"]
    control_port = sim[sim.index("--control") + 1].rsplit(":", 1)[1]
    assert f"http://127.0.0.1:{control_port}/" in " ".join(services["sim"]["healthcheck"]["test"])
    controller = services["controller"]
    kiosk = controller["environment"]["XINBAO_KIOSK_PORT"]
    assert f"http://127.0.0.1:{kiosk}/api/status" in controller["healthcheck"]["test"]
    # Issue 11: the kiosk is the cabinet's own screen; published anywhere but loopback, any
    # host on the network could flood its keypad API.
    assert controller["ports"] == [f"127.0.0.1:{kiosk}:{kiosk}"]
    assert "-p 1883" in services["mosquitto"]["healthcheck"]["test"][1]
    conf = (REPO / "deploy/mosquitto/mosquitto.conf").read_text()
    assert re.search(r"^listener 1883$", conf, re.M)
    assert re.search(r"^allow_anonymous false$", conf, re.M)


def test_mqtt_is_published_only_on_loopback_or_with_tls(compose):
    """Plain MQTT (1883) only on the host's loopback; the cloud's listener (1884, client ids
    not bound to accounts) never published; every listener a locker reaches binds the client
    id to the account (use_username_as_clientid), so no account can take over another's
    session."""
    conf = (REPO / "deploy/mosquitto/mosquitto.conf").read_text()
    listeners: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in conf.splitlines():
        words = line.split()
        if words[:1] == ["listener"]:
            current = listeners.setdefault(words[1], [])
        elif current is not None and words:
            current.append(line.strip())
    assert re.search(r"^per_listener_settings true$", conf, re.M)
    assert set(listeners) >= {"1883", "1884"}
    for port, settings in listeners.items():
        assert "allow_anonymous false" in settings, port
        if port != "1884":
            assert "use_username_as_clientid true" in settings, port
    for published in compose["services"]["mosquitto"]["ports"]:
        parts = str(published).split(":")
        container_port = parts[-1]
        assert container_port != "1884", "the cloud's listener is published"
        tls = any(s.startswith("certfile ") for s in listeners.get(container_port, []))
        assert tls or (len(parts) == 3 and parts[0] == "127.0.0.1"), published
    for service in compose["services"].values():
        for published in service.get("ports", []):
            assert not str(published).endswith(":1884"), published
    api = compose["services"]["api-1"]["environment"]["XINBAO_MQTT_URL"]
    assert api.endswith("@mosquitto:1884")


def test_the_api_runs_as_a_role_that_owns_no_table(compose):
    """Only api-1 knows the owner's URL (for its migrations); every API process's own
    connection is the API's role, which deploy/postgres/init-api-role.sh creates."""
    services = compose["services"]
    owner = services["postgres"]["environment"]["POSTGRES_USER"]
    for name in ("api-1", "api-2"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://xinbao_api:"), name
        assert not env["DATABASE_URL"].startswith(f"postgresql://{owner}:"), name
    assert services["api-1"]["environment"]["XINBAO_OWNER_DATABASE_URL"].startswith(
        f"postgresql://{owner}:"
    )
    assert "XINBAO_OWNER_DATABASE_URL" not in services["api-2"]["environment"]
    mounts = [v.split(":")[:2] for v in services["postgres"]["volumes"]]
    assert ["./deploy/postgres/init-api-role.sh", "/docker-entrypoint-initdb.d/10-api-role.sh"] in (
        mounts
    )


def test_every_service_has_a_health_check(compose):
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert len(check["test"]) > 1, name


def test_depends_on_waits_for_healthy_services(compose):
    services = compose["services"]
    expected = {
        "api-1": {"postgres", "mosquitto"},
        "api-2": {"postgres", "mosquitto", "api-1"},
        "controller": {"mosquitto", "sim"},
    }
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions, not a list"
        assert set(depends) == expected.get(name, set()), name
        for target, rule in depends.items():
            assert rule == {"condition": "service_healthy"}, f"{name} -> {target}"
            assert "healthcheck" in services[target]


@pytest.mark.slow
def test_every_secret_is_required(compose, env):
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    references = REFERENCE.findall(text)
    secrets = {name for name, _ in references if SECRET_NAME.search(name)}
    assert secrets >= {
        "POSTGRES_PASSWORD",
        "POSTGRES_API_PASSWORD",
        "XINBAO_MASTER_SECRET",
        "XINBAO_TOKEN_SECRET",
        "XINBAO_FIRST_ADMIN_PASSWORD",
        "MQTT_CLOUD_PASSWORD",
        "MQTT_HEALTH_PASSWORD",
        "MQTT_LOCKER_PASSWORD",
        "XINBAO_LOCKER_KEY_HEX",
    }
    for name, operator in references:
        if name in secrets:
            assert operator == ":?", f"${{{name}}} must fail when unset (use :?)"
    # No secret is written into the file: every secret-named setting is a reference.
    for service_name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", str(value)), f"{service_name}.{key}"
    # Compose refuses to start without each one, naming it; with all of them, nothing is left.
    assert set(env) >= secrets, "deploy/make_env.py must provide every secret"
    for name in sorted(secrets):
        missing = {k: v for k, v in env.items() if k != name}
        with pytest.raises(UnsetVariable) as refused:
            interpolate(compose, missing)
        assert refused.value.name == name
    resolved = json.dumps(interpolate(compose, env))
    assert "${" not in resolved


def test_twilio_override_requires_its_secrets():
    override = REPO / "deploy/compose.twilio.yml"
    text = override.read_text(encoding="utf-8")
    references = REFERENCE.findall(text)
    assert {"TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID"} <= {name for name, _ in references}
    assert all(operator == ":?" for _, operator in references)
    services = yaml.safe_load(text)["services"]
    assert set(services) == {"api-1", "api-2"}
    assert services["api-1"]["environment"]["XINBAO_SMS_PROVIDER"] == "twilio"


def test_bind_mounts_exist_in_the_repository(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO / source).is_file(), f"{name}: {source} is missing"
    assert (REPO / "Dockerfile").is_file()


# --- deploy scripts refuse bad input -----------------------------------------------------


@pytest.mark.slow
def test_controller_start_refuses_missing_or_bad_settings(tmp_path, env):
    target = tmp_path / "controller.toml"
    base = {"PATH": os.environ["PATH"], "XINBAO_CONTROLLER_CONFIG": str(target)}
    script = [sys.executable, str(REPO / "deploy/controller/start.py"), "--render-only"]
    missing = subprocess.run(script, env=base, capture_output=True, text=True)
    assert missing.returncode == 2
    assert "XINBAO_LOCKER_KEY_HEX" in missing.stderr and "MQTT_LOCKER_PASSWORD" in missing.stderr
    good = {
        **base,
        "XINBAO_LOCKER_ID": LOCKER,
        "XINBAO_LOCKER_KEY_HEX": env["XINBAO_LOCKER_KEY_HEX"],
        "MQTT_LOCKER_PASSWORD": 'has "quotes" and \\ backslash',
        "XINBAO_CONTROLLER_MQTT_URL": "mqtt://127.0.0.1:1883",
        "XINBAO_CABINET_BUS": "socket://127.0.0.1:7000",
        "XINBAO_DATA_DIR": str(tmp_path / "data"),
        "XINBAO_KIOSK_HOST": "127.0.0.1",
        "XINBAO_KIOSK_PORT": "8080",
        "XINBAO_METRICS_TOKEN": env["XINBAO_METRICS_TOKEN"],
    }
    bad_key = subprocess.run(
        script, env={**good, "XINBAO_LOCKER_KEY_HEX": "xyz"}, capture_output=True, text=True
    )
    assert bad_key.returncode == 2 and "locker_key_hex" in bad_key.stderr
    assert not target.exists()
    ok = subprocess.run(script, env=good, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert target.stat().st_mode & 0o077 == 0, "the config holds a password: owner only"
    assert 'password = "has \\"quotes\\" and \\\\ backslash"' in target.read_text()


@pytest.mark.slow
def test_broker_entrypoint_refuses_missing_secrets(tmp_path):
    result = subprocess.run(
        ["/bin/sh", str(REPO / "deploy/mosquitto/entrypoint.sh"), "true"],
        env={"PATH": os.environ["PATH"], "MQTT_RUN_DIR": str(tmp_path / "run")},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "MQTT_CLOUD_PASSWORD" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_make_env_never_overwrites(tmp_path):
    target = tmp_path / ".env"
    target.write_text("KEEP=1\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "deploy/make_env.py"), "--out", str(target)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "exists" in result.stderr
    assert target.read_text() == "KEEP=1\n"
