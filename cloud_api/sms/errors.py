"""Errors of the SMS package, drawn once.

    SmsError
    ├── SmsInputError          bad number, template or params: the caller's mistake, nothing stored
    ├── SmsConfigError         settings that cannot work (twilio without credentials, ...)
    └── SmsProviderError       a provider refused or failed a send
        ├── SmsTemporaryError  worth retrying later; counts toward giving up (a garbled answer)
        │   └── SmsProviderUnavailable  the provider as a whole cannot take messages now
        │                      (credentials refused, HTTP 429/5xx, unreachable, timeout): does
        │                      not count, however long it lasts
        └── SmsPermanentError  this message will never go (invalid number, body rejected)

The dispatcher reacts differently to each: back off and retry (giving up after max_attempts
counted failures), keep backing off without counting, or mark the message ``failed``.
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


class SmsProviderUnavailable(SmsTemporaryError):
    pass


class SmsPermanentError(SmsProviderError):
    pass
