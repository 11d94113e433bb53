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
