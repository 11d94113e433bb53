"""``xinbao api`` and ``xinbao audit ...``.

Both read the database from ``DATABASE_URL`` and the rest from ``XINBAO_*`` settings; bad
settings end with a one-line message and exit status 2, never a traceback.
"""

import ipaddress
import os
from pathlib import Path
from typing import Annotated

import typer

from cloud_api.errors import ConfigError

audit_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)


def describe_error(url: str, err: Exception) -> str:
    from cloud_api.core.db import describe_error as describe

    return describe(url, err)


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
    migrate_only: Annotated[
        bool, typer.Option(help="apply the migrations (and the API role's grants), then exit")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            envvar="XINBAO_API_WORKERS",
            help="worker processes on the port (default: one per core; one in the demo)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the cloud REST API (OpenAPI at /openapi.json)."""
    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from cloud_api import workers as api_workers
    from cloud_api.core.config import load_settings
    from cloud_api.core.db import migrate as run_migrations
    from cloud_api.sms.config import SmsSettings
    from cloud_api.sms.errors import SmsConfigError

    try:
        settings = load_settings()
        sms_settings = SmsSettings()
    except (ConfigError, SmsConfigError) as err:
        _fail(str(err))
    if settings.demo:
        refuse_demo_off_loopback(host)
    from sqlalchemy.engine import make_url

    from cloud_api.core.db import RoleError

    try:
        if (migrate or migrate_only) and settings.owner_database_url:
            # Migrations as the owner; the API itself runs as DATABASE_URL's role, which gets
            # rows-only rights and so cannot disable the audit triggers (docs/deploy.md).
            app_role = make_url(settings.database_url).username
            if not app_role:
                _fail("DATABASE_URL names no role to grant (XINBAO_OWNER_DATABASE_URL is set)")
            run_migrations(settings.owner_database_url, app_role=app_role)
        elif migrate or migrate_only:
            run_migrations(settings.database_url)
    except RoleError as err:
        _fail(f"cannot set up the API's database role: {err}")
    except SQLAlchemyError as err:
        _fail(f"cannot migrate the database: {describe_error(settings.database_url, err)}")
    if migrate_only:
        typer.echo("database migrated")
        return
    count = workers or api_workers.default_workers(settings.demo)
    if count == 1:
        if os.environ.get(api_workers.METRICS_DIR_ENV):
            # Set by the operator for one process too: start from zero all the same.
            api_workers.prepare_metrics_dir(Path(os.environ[api_workers.METRICS_DIR_ENV]))
        from cloud_api.main import create_app

        app = create_app(settings, sms_settings=sms_settings)
        uvicorn.run(app, host=host, port=port, log_level="info")
        return
    serve_workers(settings, host, port, count)


WORKER_HEALTHCHECK_S = 60


def serve_workers(settings, host: str, port: int, count: int, **uvicorn_options) -> None:
    """N uvicorn workers on one port (cloud_api/workers.py says what each one runs).
    ``uvicorn_options`` override its settings (bench/api_bench.py: no access log)."""
    import inspect
    import shutil
    import tempfile

    import uvicorn

    from cloud_api import workers as api_workers

    run_dir = Path(tempfile.mkdtemp(prefix="xinbao-api-"))
    try:
        # Before any worker imports prometheus_client: it picks its mode at import.
        api_workers.prepare_metrics_dir(run_dir)
        os.environ[api_workers.RUN_DIR_ENV] = str(run_dir)
        os.environ[api_workers.WORKERS_ENV] = str(count)
        if settings.demo:
            # The demo makes its secrets up per process: the workers must share this one's.
            os.environ["XINBAO_MASTER_SECRET"] = settings.master_secret.get_secret_value()
            os.environ["XINBAO_TOKEN_SECRET"] = settings.token_secret.get_secret_value()
        typer.echo(f"serving with {count} worker processes", err=True)
        options = {"log_level": "info"}
        if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
            # uvicorn kills a worker that does not answer its ping in time (5 s by default)
            # and starts another: on a busy host a worker still importing its modules was
            # killed, again and again, and never served.
            options["timeout_worker_healthcheck"] = WORKER_HEALTHCHECK_S
        uvicorn.run(
            "cloud_api.workers:app_from_environment",
            factory=True,
            workers=count,
            host=host,
            port=port,
            **(options | uvicorn_options),
        )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _session():
    from sqlmodel import Session

    from cloud_api.core.config import load_settings
    from cloud_api.core.db import existing_sqlite_file, make_engine
    from cloud_api.services import audit

    try:
        # Reading the trail needs only the audit key: XINBAO_AUDIT_KEY, or the master secret
        # it is derived from. Demo mode keeps the other secrets' checks quiet (and with
        # neither set, the demo key: a production trail then fails to verify, never passes).
        settings = load_settings(demo=True)
    except ConfigError as err:
        _fail(str(err))
    audit.use_key(settings.audit_key())
    # A read-only command never creates a database behind the user's back.
    sqlite_file = existing_sqlite_file(settings.database_url)
    if sqlite_file is not None and not sqlite_file.is_file():
        said = "DATABASE_URL" if _database_url_given() else "DATABASE_URL is not set and"
        _fail(
            f"{said} {settings.database_url} names no database file ({sqlite_file.resolve()}): "
            "point DATABASE_URL at the API's database"
        )
    engine = make_engine(settings.database_url)
    return engine, Session(engine)


def _database_url_given() -> bool:
    return any(os.environ.get(n) for n in ("DATABASE_URL", "XINBAO_DATABASE_URL"))


@audit_app.command("verify")
def audit_verify(
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="signed head checkpoints (XINBAO_AUDIT_CHECKPOINT_FILE): every entry they "
            "vouch for must still be there, unchanged",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Check every link of the audit chain; exit 1 at the first broken one."""
    from sqlalchemy.exc import SQLAlchemyError

    from cloud_api.services import audit

    checkpoints = None
    if checkpoint is not None:
        try:
            checkpoints = audit.read_checkpoints(checkpoint)
        except audit.CheckpointError as err:
            _fail(str(err), 1)
        if not checkpoints:
            _fail(f"{checkpoint} holds no checkpoint", 1)
    engine, session = _session()
    try:
        with session:
            verdict = audit.verify(session, checkpoints=checkpoints)
    except SQLAlchemyError as err:
        _fail(f"cannot read the audit trail: {describe_error(str(engine.url), err)}")
    finally:
        engine.dispose()
    if verdict.ok:
        typer.echo(f"audit trail intact: {verdict.checked} entries")
        if checkpoints is not None:
            typer.echo(
                f"every one of {verdict.checkpoints} signed checkpoints matches "
                f"(latest: entry {max(c.seq for c in checkpoints)})"
            )
        else:
            typer.echo("no checkpoint given: a cut-off tail is not detectable (--checkpoint)")
        if verdict.unkeyed:
            typer.echo(
                f"warning: entries 1..{verdict.unkeyed} predate the keyed chain (plain "
                "SHA-256 links): only a checkpoint taken since vouches for them"
            )
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


@audit_app.command("checkpoint")
def audit_checkpoint(
    file: Annotated[
        Path, typer.Option("--file", help="append-only file to add the signed head to")
    ],
) -> None:
    """Append the signed audit head to a checkpoint file (for a cron job; the API processes
    do it themselves when XINBAO_AUDIT_CHECKPOINT_FILE is set)."""
    from sqlalchemy.exc import SQLAlchemyError

    from cloud_api.services import audit

    engine, session = _session()
    try:
        with session:
            written = audit.write_checkpoint(session, file)
    except SQLAlchemyError as err:
        _fail(f"cannot read the audit trail: {describe_error(str(engine.url), err)}")
    except OSError as err:
        _fail(f"cannot write {file}: {err.strerror}")
    finally:
        engine.dispose()
    if written is None:
        typer.echo("the audit trail is empty: nothing to checkpoint")
        return
    typer.echo(f"checkpoint: entry {written.seq}, hash {written.hash}")


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
        _fail(f"cannot read the audit trail: {describe_error(str(engine.url), err)}")
    except OSError as err:
        tmp.unlink(missing_ok=True)
        _fail(f"cannot write {csv_path}: {err.strerror}")
    finally:
        engine.dispose()
    typer.echo(f"wrote {exported.count} entries to {csv_path}")
    typer.echo(f"head hash: {exported.head_hash}")
