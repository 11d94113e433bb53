"""``xinbao api`` and ``xinbao audit ...``.

Both read the database from ``DATABASE_URL`` and the rest from ``XINBAO_*`` settings; bad
settings end with a one-line message and exit status 2, never a traceback.
"""

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from cloud_api.errors import ConfigError

audit_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


DEMO_WARNING = """\
******************************************************************************
*  DEMO MODE (XINBAO_DEMO=1): NOT FOR REAL USE.                               *
*  Secrets are made up for this run, the console SMS inbox shows every code,  *
*  and nothing here protects real applicants. Serving on loopback only.       *
******************************************************************************"""


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_demo_off_loopback(host: str) -> None:
    """The demo's secrets and console inbox are for one person at one machine: refuse to
    serve them to a network, and say loudly that this is a demo."""
    typer.echo(DEMO_WARNING, err=True)
    if not is_loopback(host):
        _fail(
            f"demo mode (XINBAO_DEMO=1) serves only on loopback (127.0.0.1, ::1), not on "
            f"{host!r}: unset XINBAO_DEMO and set real secrets to serve a network"
        )


def api_command(
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port")] = 8000,
    migrate: Annotated[bool, typer.Option(help="apply database migrations first")] = True,
) -> None:
    """Serve the cloud REST API (OpenAPI at /openapi.json)."""
    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from cloud_api.core.config import load_settings
    from cloud_api.core.db import migrate as run_migrations
    from cloud_api.main import create_app
    from cloud_api.sms.config import SmsSettings
    from cloud_api.sms.errors import SmsConfigError

    try:
        settings = load_settings()
        sms_settings = SmsSettings()
    except (ConfigError, SmsConfigError) as err:
        _fail(str(err))
    if settings.demo:
        refuse_demo_off_loopback(host)
    try:
        if migrate:
            run_migrations(settings.database_url)
    except SQLAlchemyError as err:
        _fail(f"cannot migrate the database: {err.__class__.__name__}: {err}")
    app = create_app(settings, sms_settings=sms_settings)
    uvicorn.run(app, host=host, port=port, log_level="info")


def _session():
    from sqlmodel import Session

    from cloud_api.core.config import load_settings
    from cloud_api.core.db import make_engine

    try:
        # Inspecting the trail needs no secrets: demo mode keeps their check quiet.
        settings = load_settings(demo=True)
    except ConfigError as err:
        _fail(str(err))
    engine = make_engine(settings.database_url)
    return engine, Session(engine)


@audit_app.command("verify")
def audit_verify() -> None:
    """Check every link of the audit chain; exit 1 at the first broken one."""
    from sqlalchemy.exc import SQLAlchemyError

    from cloud_api.services import audit

    engine, session = _session()
    try:
        with session:
            verdict = audit.verify(session)
    except SQLAlchemyError as err:
        _fail(f"cannot read the audit trail: {err.__class__.__name__}")
    finally:
        engine.dispose()
    if verdict.ok:
        typer.echo(f"audit trail intact: {verdict.checked} entries")
        # Noted by an inspector, this vouches for every entry up to now (docs/api.md).
        typer.echo(f"head hash: {verdict.head_hash}")
        return
    where = f"entry {verdict.broken_seq}" if verdict.broken_seq else "the chain head"
    typer.echo(
        f"audit trail BROKEN at {where}: {verdict.reason} "
        f"({verdict.checked} entries intact before it)",
        err=True,
    )
    raise typer.Exit(1)


@audit_app.command("export")
def audit_export(
    csv_path: Annotated[Path, typer.Option("--csv", help="file to write", dir_okay=False)],
) -> None:
    """Write the whole audit trail to a CSV file for inspectors."""
    from sqlalchemy.exc import SQLAlchemyError

    from cloud_api.services import audit

    engine, session = _session()
    tmp = csv_path.with_name(csv_path.name + ".part")
    try:
        with session, tmp.open("w", newline="", encoding="utf-8") as out:
            exported = audit.export_csv(session, out)
        tmp.replace(csv_path)
    except SQLAlchemyError as err:
        tmp.unlink(missing_ok=True)
        _fail(f"cannot read the audit trail: {err.__class__.__name__}")
    except OSError as err:
        tmp.unlink(missing_ok=True)
        _fail(f"cannot write {csv_path}: {err.strerror}")
    finally:
        engine.dispose()
    typer.echo(f"wrote {exported.count} entries to {csv_path}")
    typer.echo(f"head hash: {exported.head_hash}")
