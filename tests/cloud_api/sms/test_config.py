import pytest
from pydantic import ValidationError

from cloud_api.sms.config import SmsSettings
from cloud_api.sms.errors import SmsConfigError
from cloud_api.sms.providers import ConsoleProvider, TwilioProvider, build_provider


def test_console_is_the_default(monkeypatch):
    for name in ("PROVIDER", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM"):
        monkeypatch.delenv(f"XINBAO_SMS_{name}", raising=False)
    provider = build_provider(SmsSettings())
    assert isinstance(provider, ConsoleProvider)


def test_twilio_without_credentials_refuses_with_names(monkeypatch):
    monkeypatch.setenv("XINBAO_SMS_PROVIDER", "twilio")
    monkeypatch.setenv("XINBAO_SMS_TWILIO_ACCOUNT_SID", "AC123")
    monkeypatch.delenv("XINBAO_SMS_TWILIO_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("XINBAO_SMS_TWILIO_FROM", raising=False)
    with pytest.raises(SmsConfigError) as caught:
        SmsSettings()
    assert "XINBAO_SMS_TWILIO_AUTH_TOKEN" in str(caught.value)
    assert "XINBAO_SMS_TWILIO_FROM" in str(caught.value)
    assert "XINBAO_SMS_TWILIO_ACCOUNT_SID" not in str(caught.value)


def test_twilio_settings_build_a_twilio_provider(monkeypatch):
    monkeypatch.setenv("XINBAO_SMS_PROVIDER", "twilio")
    monkeypatch.setenv("XINBAO_SMS_TWILIO_ACCOUNT_SID", "AC123")
    monkeypatch.setenv("XINBAO_SMS_TWILIO_AUTH_TOKEN", "secret")
    monkeypatch.setenv("XINBAO_SMS_TWILIO_FROM", "+15005550006")
    settings = SmsSettings()
    assert "secret" not in repr(settings)
    provider = build_provider(settings)
    try:
        assert isinstance(provider, TwilioProvider)
    finally:
        provider.close()


@pytest.mark.parametrize(
    "env, error",
    [
        ({"XINBAO_SMS_PROVIDER": "carrier-pigeon"}, ValidationError),
        ({"XINBAO_SMS_MAX_ATTEMPTS": "0"}, ValidationError),
        ({"XINBAO_SMS_MAX_ATTEMPTS": "many"}, ValidationError),
        (
            {"XINBAO_SMS_BACKOFF_BASE_SECONDS": "600", "XINBAO_SMS_BACKOFF_MAX_SECONDS": "60"},
            SmsConfigError,
        ),
        ({"XINBAO_SMS_CLAIM_LEASE_SECONDS": "5"}, SmsConfigError),
    ],
)
def test_bad_settings_are_refused(monkeypatch, env, error):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(error):
        SmsSettings()


def test_bad_api_base_is_refused():
    with pytest.raises(SmsConfigError, match="not an http"):
        TwilioProvider("AC1", "t", "+15005550006", api_base="ftp:/nowhere")
