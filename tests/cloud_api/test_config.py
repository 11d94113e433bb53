"""Settings refuse to start with a missing, weak or shared secret."""

import secrets

import pytest
from typer.testing import CliRunner

from cloud_api.cli import api_command
from cloud_api.core.config import DEMO_MASTER_SECRET, DEMO_TOKEN_SECRET, Settings, load_settings
from cloud_api.errors import ConfigError

STRONG = secrets.token_urlsafe(32)
OTHER = secrets.token_urlsafe(32)


def test_missing_secret_refused_outside_demo(monkeypatch, db_url):
    for name in ("XINBAO_DEMO", "XINBAO_MASTER_SECRET", "XINBAO_TOKEN_SECRET"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="XINBAO_MASTER_SECRET is not set"):
        Settings(database_url=db_url)
    with pytest.raises(ConfigError, match="XINBAO_TOKEN_SECRET is not set"):
        Settings(database_url=db_url, master_secret=STRONG)
    with pytest.raises(ConfigError, match="at least 32"):
        Settings(database_url=db_url, master_secret="short", token_secret=STRONG)
    ok = Settings(database_url=db_url, master_secret=STRONG, token_secret=OTHER)
    assert ok.master_key == STRONG.encode()


@pytest.mark.parametrize(
    "weak",
    [
        "a" * 40,  # the example: long, one character
        "s" * 40,
        "ab" * 20,
        "0123456789" * 4,  # one piece repeated
        "xinbao-secret",  # short
        "password-password-password-password",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab",  # little variety
        "1111111111111111111111111111111122",
        "deadbeefdeadbeefdeadbeefdeadbeef",
        "00000000000000000000000000000001",
    ],
)
def test_low_entropy_secrets_are_refused(weak, db_url):
    """A guessable master secret gives every locker's codes away; a guessable token secret
    lets anyone sign an admin's token. Both are refused with the reason, in and out of the
    demo (a demo given a secret checks it like any other)."""
    refused = "(is not a strong|must be at least)"
    for demo in (False, True):
        with pytest.raises(ConfigError, match=f"XINBAO_MASTER_SECRET {refused}"):
            Settings(database_url=db_url, demo=demo, master_secret=weak, token_secret=STRONG)
        with pytest.raises(ConfigError, match=f"XINBAO_TOKEN_SECRET {refused}"):
            Settings(database_url=db_url, demo=demo, master_secret=STRONG, token_secret=weak)


@pytest.mark.parametrize(
    "make",
    [
        lambda: secrets.token_urlsafe(32),
        lambda: secrets.token_hex(16),
        lambda: secrets.token_hex(32),
    ],
    ids=["urlsafe-32", "hex-16", "hex-32"],
)
def test_random_secrets_pass(make, db_url):
    for _ in range(200):  # fresh values each run (ids stay fixed for xdist)
        strong = make()
        settings = Settings(database_url=db_url, master_secret=strong, token_secret=OTHER)
        assert settings.master_key == strong.encode()


def test_master_and_token_secret_must_differ(db_url):
    with pytest.raises(ConfigError, match="must differ"):
        Settings(database_url=db_url, master_secret=STRONG, token_secret=STRONG)


def test_demo_makes_up_strong_secrets_of_its_own(db_url):
    demo = Settings(database_url=db_url, demo=True)
    assert demo.master_key == DEMO_MASTER_SECRET.encode()
    assert demo.token_key == DEMO_TOKEN_SECRET.encode()
    assert DEMO_MASTER_SECRET != DEMO_TOKEN_SECRET
    for value in (DEMO_MASTER_SECRET, DEMO_TOKEN_SECRET):
        assert len(value) >= 32 and "demo" not in value
        # Strong by the same rule: the same settings accept them outside the demo.
    Settings(database_url=db_url, master_secret=DEMO_MASTER_SECRET, token_secret=DEMO_TOKEN_SECRET)


def test_settings_from_environment(monkeypatch, db_url):
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("XINBAO_DEMO", "1")
    monkeypatch.setenv("XINBAO_CODE_DIGITS", "11")
    with pytest.raises(ConfigError, match="code_digits"):
        load_settings()
    monkeypatch.setenv("XINBAO_CODE_DIGITS", "10")
    assert load_settings().code_digits == 10
    assert load_settings().database_url == db_url


def test_api_command_refuses_with_a_clear_message(db_url):
    import typer

    app = typer.Typer()
    app.command()(api_command)
    result = CliRunner().invoke(
        app, [], env={"DATABASE_URL": db_url, "XINBAO_DEMO": "0", "XINBAO_MASTER_SECRET": ""}
    )
    assert result.exit_code == 2
    assert "XINBAO_MASTER_SECRET" in result.output and "Traceback" not in result.output


def _api_cli():
    import typer

    app = typer.Typer()
    app.command()(api_command)
    return app


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org", ""])
def test_demo_refuses_to_serve_a_network(host, db_url, monkeypatch):
    """The attack: `XINBAO_DEMO=1 xinbao api --host 0.0.0.0` puts made-up secrets and a
    console SMS inbox full of codes on the network. Refused, loudly, before serving."""
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(kw))
    result = CliRunner().invoke(
        _api_cli(),
        ["--host", host, "--no-migrate"],
        env={"DATABASE_URL": db_url, "XINBAO_DEMO": "1"},
    )
    assert result.exit_code == 2, result.output
    assert "DEMO MODE" in result.output
    assert "only on loopback" in result.output and "Traceback" not in result.output
    assert served == []


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_demo_serves_on_loopback_with_a_warning(host, db_url, monkeypatch):
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(kw))
    result = CliRunner().invoke(
        _api_cli(),
        ["--host", host, "--no-migrate"],
        env={"DATABASE_URL": db_url, "XINBAO_DEMO": "1"},
    )
    assert result.exit_code == 0, result.output
    assert "DEMO MODE" in result.output
    assert [kw["host"] for kw in served] == [host]


def test_real_secrets_may_serve_a_network(db_url, monkeypatch):
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(kw))
    env = {
        "DATABASE_URL": db_url,
        "XINBAO_DEMO": "0",
        "XINBAO_MASTER_SECRET": STRONG,
        "XINBAO_TOKEN_SECRET": OTHER,
    }
    result = CliRunner().invoke(_api_cli(), ["--host", "0.0.0.0", "--no-migrate"], env=env)
    assert result.exit_code == 0, result.output
    assert "DEMO MODE" not in result.output
    assert [kw["host"] for kw in served] == ["0.0.0.0"]


@pytest.mark.parametrize(
    "url", ["mysql://root@localhost/xinbao", "mongodb://h/x", "not a url at all"]
)
def test_an_unsupported_database_url_is_one_clear_line(url, monkeypatch):
    """Issue 13: a DATABASE_URL the API cannot use was a 65-line traceback."""
    with pytest.raises(ConfigError) as err:
        monkeypatch.setenv("DATABASE_URL", url)
        load_settings(demo=True)
    message = str(err.value)
    assert message.startswith("bad settings: DATABASE_URL: ") and "\n" not in message
    assert "sqlite:///" in message and "postgresql://" in message


def test_a_read_only_command_never_creates_a_database(tmp_path, monkeypatch):
    """Issue 13: `xinbao audit verify` without DATABASE_URL said "OperationalError" and left
    an empty ./xinbao.db behind; now it says what to set and creates nothing."""
    from cloud_api.cli import audit_app

    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "XINBAO_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for command in (["verify"], ["export", "--csv", "out.csv"]):
        result = CliRunner().invoke(audit_app, command)
        assert result.exit_code == 2, result.output
        assert "DATABASE_URL is not set" in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_postgresql_is_named_by_host_and_port(monkeypatch, free_tcp_port):
    from cloud_api.cli import audit_app

    url = f"postgresql://postgres@127.0.0.1:{free_tcp_port}/xinbao"
    result = CliRunner().invoke(audit_app, ["verify"], env={"DATABASE_URL": url})
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: cannot read the audit trail: PostgreSQL at 127.0.0.1:{free_tcp_port} "
        "(database xinbao): "
    ), result.output
