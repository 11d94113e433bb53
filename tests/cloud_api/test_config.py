"""Settings refuse to start with a default secret outside the demo."""

import pytest
from typer.testing import CliRunner

from cloud_api.cli import api_command
from cloud_api.core.config import DEMO_MASTER_SECRET, Settings, load_settings
from cloud_api.errors import ConfigError

STRONG = "s" * 40


def test_default_or_demo_secret_refused_outside_demo(monkeypatch, db_url):
    for name in ("XINBAO_DEMO", "XINBAO_MASTER_SECRET", "XINBAO_TOKEN_SECRET"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="XINBAO_MASTER_SECRET"):
        Settings(database_url=db_url)
    with pytest.raises(ConfigError, match="demo value"):
        Settings(database_url=db_url, master_secret=DEMO_MASTER_SECRET, token_secret=STRONG)
    with pytest.raises(ConfigError, match="at least 32"):
        Settings(database_url=db_url, master_secret="short", token_secret=STRONG)
    ok = Settings(database_url=db_url, master_secret=STRONG, token_secret=STRONG + "t")
    assert ok.master_key == STRONG.encode()
    demo = Settings(database_url=db_url, demo=True)
    assert demo.master_key == DEMO_MASTER_SECRET.encode()


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
