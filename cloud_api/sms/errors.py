"""Errors of the SMS package, drawn once.

    SmsError
    ├── SmsInputError          bad number, template or params: the caller's mistake, nothing stored
    ├── SmsConfigError         settings that cannot work (twilio without credentials, ...)
    └── SmsProviderError       a provider refused or failed a send
        ├── SmsTemporaryError  worth retrying later (HTTP 429/5xx, network down)
        └── SmsPermanentError  retrying cannot help (invalid number, body rejected)

The dispatcher reacts differently to the two provider errors: back-off and retry, or ``dead``.
"""


class SmsError(Exception):
    pass


class SmsInputError(SmsError, ValueError):
    pass


class SmsConfigError(SmsError):
    pass


class SmsProviderError(SmsError):
    def __init__(self, message: str, *, code: int | None = None, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status


class SmsTemporaryError(SmsProviderError):
    pass


class SmsPermanentError(SmsProviderError):
    pass
