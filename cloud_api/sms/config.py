"""SMS settings (env prefix ``XINBAO_SMS_``).

The console provider is the default so the demo runs with no account; choosing Twilio without
its credentials refuses to start instead of failing on the first message.
"""

from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloud_api.sms.errors import SmsConfigError


class SmsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="XINBAO_SMS_", extra="ignore")

    provider: Literal["console", "twilio"] = "console"
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = Field(default=None, description="sender number or Messaging SID")
    # Tests point this at a local fake; production leaves it unset (https://api.twilio.com).
    twilio_api_base: str | None = None
    twilio_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # The public URL of POST /api/v1/sms/twilio/status as Twilio reaches it (through any proxy).
    # Signatures are checked against this URL, so it must match what Twilio calls exactly.
    status_callback_url: str | None = None
    max_attempts: int = Field(default=8, ge=1, le=100)
    backoff_base_seconds: float = Field(default=30.0, gt=0)
    backoff_max_seconds: float = Field(default=3600.0, gt=0)
    # How long a dispatcher owns a claimed row; must exceed the provider timeout comfortably.
    claim_lease_seconds: float = Field(default=120.0, gt=0)
    batch_size: int = Field(default=50, ge=1, le=1000)
    poll_interval_seconds: float = Field(default=2.0, gt=0)
    console_inbox_size: int = Field(default=500, ge=1, le=100_000)

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.provider == "twilio":
            missing = [
                f"XINBAO_SMS_{name.upper()}"
                for name in ("twilio_account_sid", "twilio_auth_token", "twilio_from")
                if not getattr(self, name)
            ]
            if missing:
                raise SmsConfigError(
                    f"SMS provider 'twilio' needs {', '.join(missing)}; "
                    "set them or use XINBAO_SMS_PROVIDER=console"
                )
        if self.backoff_max_seconds < self.backoff_base_seconds:
            raise SmsConfigError("backoff_max_seconds must not be below backoff_base_seconds")
        if self.claim_lease_seconds <= self.twilio_timeout_seconds:
            raise SmsConfigError("claim_lease_seconds must exceed twilio_timeout_seconds")
        return self
