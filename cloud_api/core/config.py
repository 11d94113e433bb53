"""Typed settings (env prefix ``XINBAO_``; the database URL is plain ``DATABASE_URL``).

Outside the demo the service refuses to start with an empty, weak or shared secret: a locker
key derived from a known or guessable master secret would let anyone compute every code, and a
guessable token secret lets anyone sign a staff token. Both must hold 128 bits of entropy
(xinbao/secret_strength.py) and differ. The demo makes up strong random ones, once per process,
unless it is given its own (a demo that starts several processes passes them on).
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Literal, Self
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloud_api.errors import ConfigError
from xinbao.codes import DEFAULT_DIGITS, MAX_DIGITS, MIN_DIGITS
from xinbao.secret_strength import MIN_BITS, weakness

# Random for each process: no demo shares a master secret with anything it did not start.
DEMO_MASTER_SECRET = secrets.token_urlsafe(32)
DEMO_TOKEN_SECRET = secrets.token_urlsafe(32)
_MIN_SECRET_LENGTH = 32
RATING_URL_MAX = 80
_HOW_TO_MAKE = "e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`"


@dataclass(frozen=True)
class MqttEndpoint:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None = field(repr=False, default=None)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="XINBAO_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./xinbao.db",
        validation_alias=AliasChoices("DATABASE_URL", "XINBAO_DATABASE_URL", "database_url"),
    )
    # PostgreSQL: the tables' owner, for migrations only (``xinbao api`` migrates with it,
    # then grants DATABASE_URL's role the rows-only rights it needs, core/db.py). Unset: the
    # migrations run as DATABASE_URL's role, which then owns the tables (SQLite, tests).
    owner_database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("XINBAO_OWNER_DATABASE_URL", "owner_database_url"),
        repr=False,
    )
    demo: bool = False
    master_secret: SecretStr = SecretStr("")
    token_secret: SecretStr = SecretStr("")
    # The audit chain's HMAC key (services/audit.py); unset = derived from the master secret.
    # Never stored in the database. Set it on its own to let an inspector verify the trail
    # without holding the master secret (which derives every locker key).
    audit_key_secret: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("XINBAO_AUDIT_KEY", "audit_key")
    )
    # Signed audit head checkpoints are appended here (outside the database) every
    # audit_checkpoint_seconds; `xinbao audit verify --checkpoint FILE` checks them.
    audit_checkpoint_file: str | None = None
    audit_checkpoint_seconds: float = Field(default=300, gt=0, le=24 * 3600)

    code_digits: int = Field(default=DEFAULT_DIGITS, ge=MIN_DIGITS, le=MAX_DIGITS)
    token_ttl_minutes: int = Field(default=480, ge=1, le=7 * 24 * 60)
    dropoff_reservation_hours: float = Field(default=48, gt=0, le=24 * 30)
    pickup_load_hours: float = Field(default=2, gt=0, le=24 * 7)
    retention_days: float = Field(default=7, gt=0, le=365)
    reminder_hours: list[float] = Field(default=[24, 72])
    overdue_code_keeps_working: bool = True

    lockout_threshold: int = Field(default=5, ge=1, le=10)
    lockout_base_seconds: float = Field(default=30, gt=0)
    lockout_max_seconds: float = Field(default=3600, gt=0)
    # Staff log-in throttle, per user name (services/staff_login.py).
    login_lockout_threshold: int = Field(default=5, ge=1, le=100)
    login_lockout_base_seconds: float = Field(default=30, gt=0)
    login_lockout_max_seconds: float = Field(default=900, gt=0)
    resend_min_interval_seconds: float = Field(default=60, ge=0)
    resend_max_per_handover: int = Field(default=5, ge=0, le=100)
    # A lost code asked for again at a kiosk (docs/codes.md "Lost codes"): requests a record
    # may make a day (wrong digits count: they are guesses), a locker's kiosk an hour, and
    # how old a request may be when it reaches the cloud (a cabinet that lost its link just
    # after it was typed sends it later; the applicant has gone by then).
    lost_code_per_record_per_day: int = Field(default=3, ge=1, le=100)
    lost_code_per_locker_per_hour: int = Field(default=10, ge=1, le=10_000)
    lost_code_max_age_seconds: float = Field(default=900, gt=0, le=24 * 3600)

    service_phone: str = "12345"
    # The applicant's rating page (满意度评价, docs/ratings.md): the public address of this
    # API's /rate. The thank-you SMS links to {rating_url}/{signed token}, good for
    # rating_valid_days after the pickup.
    rating_url: str = "https://xinbao.example.cn/rate"
    rating_valid_days: float = Field(default=30, gt=0, le=365)

    first_admin_username: str | None = None
    first_admin_password: SecretStr | None = None

    run_background: bool = True
    scheduler_interval_seconds: float = Field(default=30, gt=0)
    sms_interval_seconds: float = Field(default=2, gt=0)
    # A bare endpoint doing the same single-row query as the code check, for bench/api_bench.py.
    bench_routes: bool = False

    # Webhooks to integrators (cloud_api/webhooks, docs/integrators.md): how often the
    # delivery worker looks for due events, and when it gives up on one (a dead letter).
    webhook_interval_seconds: float = Field(default=1, gt=0, le=3600)
    webhook_max_attempts: int = Field(default=20, ge=1, le=1000)
    webhook_backoff_base_seconds: float = Field(default=5, gt=0, le=3600)
    webhook_backoff_max_seconds: float = Field(default=3600, gt=0, le=7 * 24 * 3600)
    webhook_max_age_hours: float = Field(default=72, gt=0, le=24 * 90)
    webhook_timeout_seconds: float = Field(default=10, gt=0, le=120)

    # MQTT link to the lockers (cloud_api.mqtt); unset = this process runs without one.
    mqtt_url: str | None = None
    mqtt_group: str = Field(default="cloud", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    # Stable per process, so a restarted process resumes its persistent session; the default
    # (host name and pid) suits one-off runs, deployments set it per API process.
    mqtt_client_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # auto: probe whether the broker honours $share (amqtt accepts the filter but never
    # delivers on it) and fall back to plain subscriptions; on/off: trust the setting.
    mqtt_shared: Literal["auto", "on", "off"] = "auto"
    mqtt_command_timeout_seconds: float = Field(default=10, gt=0, le=300)
    mqtt_command_ttl_seconds: float = Field(default=300, ge=10, le=7 * 24 * 3600)
    # Each locker's ingest budget per API process (mqtt/intake.py): messages a second, and at
    # once. Beyond it a locker's messages are counted and refused (a "flooding" alarm). Keep
    # the burst well below the broker's max_inflight_messages (100): the messages a locker has
    # waiting in the worker hold the cloud's in-flight window, and a full window would stop
    # every other locker's messages at the broker. 0: no budget.
    mqtt_locker_rate: float = Field(default=20, ge=0, le=100_000)
    mqtt_locker_burst: int = Field(default=40, ge=1, le=1_000_000)
    # How often the bridge looks for staff changes to push to on-line lockers.
    mqtt_staff_round_seconds: float = Field(default=5, gt=0, le=3600)
    # How often each on-line locker is asked for its view (a ping whose reply the cloud
    # reconciles, cloud_api/mqtt/reconcile.py) when no full sync did so meanwhile.
    mqtt_view_round_seconds: float = Field(default=600, ge=1, le=24 * 3600)

    # Who may read GET /metrics (cloud_api/metrics/scrape.py, docs/deploy.md "Metrics"). With
    # a token, a scrape must send it (Authorization: Bearer ...); without one, only the
    # addresses in metrics_allow may scrape, by default this machine's loopback only.
    metrics_token: SecretStr = SecretStr("")
    # Comma-separated addresses or networks (10.0.0.0/8, ::1); with a token as well, both
    # must match.
    metrics_allow: str | None = None
    # Lockers that get a label of their own on the ingest lag histogram, per API process;
    # the ones seen after these are counted as locker="_other" (bounded cardinality).
    metrics_locker_labels: int = Field(default=2000, ge=0, le=100_000)

    @field_validator("database_url", "owner_database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        from cloud_api.core.db import check_url

        return value if value is None else check_url(value)

    @field_validator("rating_url")
    @classmethod
    def _rating_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        # The link goes into an SMS of at most three parts (tests/cloud_api/test_ratings.py
        # checks it): the token adds up to 45 characters.
        if (
            parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.query
            or parts.fragment
            or len(value) > RATING_URL_MAX
            or any(c.isspace() or ord(c) < 0x21 or ord(c) > 0x7E for c in value)
        ):
            raise ValueError(
                f"XINBAO_RATING_URL must be an http(s) address of at most {RATING_URL_MAX} "
                "characters, without spaces, query or fragment (this API's /rate, as applicants "
                "reach it, e.g. https://zwfw.example.gov.cn/rate)"
            )
        return value

    @model_validator(mode="after")
    def _secrets(self) -> Self:
        for name, demo_value in (
            ("master_secret", DEMO_MASTER_SECRET),
            ("token_secret", DEMO_TOKEN_SECRET),
        ):
            value = getattr(self, name).get_secret_value()
            env = f"XINBAO_{name.upper()}"
            if not value:
                if not self.demo:
                    raise ConfigError(
                        f"{env} is not set: set it to a long random string, {_HOW_TO_MAKE}, "
                        "or set XINBAO_DEMO=1 for a demo"
                    )
                setattr(self, name, SecretStr(demo_value))
                continue
            if len(value) < _MIN_SECRET_LENGTH:
                raise ConfigError(
                    f"{env} must be at least {_MIN_SECRET_LENGTH} characters, {_HOW_TO_MAKE}"
                )
            why = weakness(value)
            if why is not None:
                raise ConfigError(
                    f"{env} is not a strong secret ({why}): it needs {MIN_BITS} bits of "
                    f"entropy, {_HOW_TO_MAKE}"
                )
        if self.master_secret.get_secret_value() == self.token_secret.get_secret_value():
            raise ConfigError(
                "XINBAO_MASTER_SECRET and XINBAO_TOKEN_SECRET must differ: whoever sees one "
                "must not hold the other"
            )
        audit_key = self.audit_key_secret.get_secret_value()
        if audit_key and len(audit_key) < _MIN_SECRET_LENGTH:
            raise ConfigError(f"XINBAO_AUDIT_KEY must be at least {_MIN_SECRET_LENGTH} characters")
        if any(not 0 < h < 24 * 365 for h in self.reminder_hours):
            raise ConfigError("XINBAO_REMINDER_HOURS must be hours between 0 and a year")
        if self.lockout_max_seconds < self.lockout_base_seconds:
            raise ConfigError("XINBAO_LOCKOUT_MAX_SECONDS must not be below the base")
        if self.webhook_backoff_max_seconds < self.webhook_backoff_base_seconds:
            raise ConfigError("XINBAO_WEBHOOK_BACKOFF_MAX_SECONDS must not be below the base")
        if self.login_lockout_max_seconds < self.login_lockout_base_seconds:
            raise ConfigError("XINBAO_LOGIN_LOCKOUT_MAX_SECONDS must not be below the base")
        if self.mqtt_url is not None:
            self.mqtt_url = self.mqtt_url.strip() or None
        if self.mqtt_url is not None:
            parts = urlsplit(self.mqtt_url)
            try:
                parts.port  # noqa: B018 - raises ValueError on a bad port
            except ValueError:
                raise ConfigError("XINBAO_MQTT_URL has a bad port") from None
            if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
                raise ConfigError(
                    "XINBAO_MQTT_URL must look like mqtt://user:password@host:1883 "
                    "(or mqtts:// for TLS)"
                )
        self._check_metrics_gate()
        if (self.first_admin_username is None) != (self.first_admin_password is None):
            raise ConfigError(
                "set both XINBAO_FIRST_ADMIN_USERNAME and XINBAO_FIRST_ADMIN_PASSWORD, or neither"
            )
        return self

    def _check_metrics_gate(self) -> None:
        token = self.metrics_token.get_secret_value()
        if token:
            if len(token) < _MIN_SECRET_LENGTH:
                raise ConfigError(
                    f"XINBAO_METRICS_TOKEN must be at least {_MIN_SECRET_LENGTH} characters, "
                    f"{_HOW_TO_MAKE}"
                )
            why = weakness(token)
            if why is not None:
                raise ConfigError(f"XINBAO_METRICS_TOKEN is not a strong secret ({why})")
            if token in (
                self.master_secret.get_secret_value(),
                self.token_secret.get_secret_value(),
            ):
                raise ConfigError(
                    "XINBAO_METRICS_TOKEN must differ from the master and token secrets: "
                    "whoever scrapes metrics must not hold them"
                )
        self.metrics_networks  # noqa: B018 - raises ConfigError on a bad address

    @property
    def metrics_networks(self) -> "list[IPv4Network | IPv6Network] | None":
        """The networks metrics_allow names (None: not set)."""
        if self.metrics_allow is None or not self.metrics_allow.strip():
            return None
        networks = []
        for item in self.metrics_allow.split(","):
            try:
                networks.append(ip_network(item.strip(), strict=False))
            except ValueError:
                raise ConfigError(
                    f"XINBAO_METRICS_ALLOW: {item.strip()[:60]!r} is not an address or network "
                    "(e.g. 127.0.0.1, 10.0.0.0/8, ::1)"
                ) from None
        return networks

    def audit_key(self) -> bytes:
        """The audit chain's key: XINBAO_AUDIT_KEY, else derived from the master secret."""
        own = self.audit_key_secret.get_secret_value()
        if own:
            return hashlib.sha256(b"xinbao/audit-key/v1|" + own.encode()).digest()
        master = self.master_secret.get_secret_value().encode()
        return hmac.new(master, b"xinbao/audit-chain/v1", hashlib.sha256).digest()

    def rating_key(self) -> bytes:
        """The key that signs rating links: derived from the token secret, labelled, so a
        rating token can never pass as a staff token or the other way round."""
        token = self.token_secret.get_secret_value().encode()
        return hmac.new(token, b"xinbao/rating-link/v1", hashlib.sha256).digest()

    @property
    def master_key(self) -> bytes:
        return self.master_secret.get_secret_value().encode()

    @property
    def token_key(self) -> bytes:
        return self.token_secret.get_secret_value().encode()

    @property
    def mqtt_endpoint(self) -> "MqttEndpoint | None":
        if self.mqtt_url is None:
            return None
        parts = urlsplit(self.mqtt_url)
        tls = parts.scheme == "mqtts"
        return MqttEndpoint(
            host=parts.hostname or "",
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    @property
    def retention(self) -> timedelta:
        return timedelta(days=self.retention_days)


def load_settings(**overrides) -> Settings:
    """Settings from the environment; a ConfigError with a readable message if they are bad."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        )
        raise ConfigError(f"bad settings: {problems}") from None
