"""Errors of the cloud service, drawn once.

    CloudError                  (status: the HTTP status the API answers with)
    ├── ConfigError             settings that cannot work (default secret outside the demo, ...)
    ├── InputError         422  well-formed request that makes no sense (unknown size, bad code)
    ├── NotFound           404  the thing named does not exist (or is not yours to see)
    ├── AuthError          401  no or bad credentials
    │   └── Forbidden      403  good credentials, not allowed to do this
    ├── Conflict           409  the request clashes with the current state
    │   ├── IllegalTransition   a state machine refused from -> to
    │   └── NoFreeCompartment   every candidate compartment is taken
    └── TooManyRequests    429  rate limit or code lockout; carries retry_after seconds

Services raise these; only ``cloud_api.api.problems`` turns them into HTTP answers, so no
service imports FastAPI.
"""


class CloudError(Exception):
    status = 500
    title = "Internal error"
    slug = "internal"

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail
        # More members of the problem document (e.g. an applicant's message in zh and en).
        self.extra: dict = {}


class ConfigError(CloudError):
    title = "Configuration error"
    slug = "config"


class InputError(CloudError, ValueError):
    status = 422
    title = "Invalid request"
    slug = "invalid-request"


class NotFound(CloudError):
    status = 404
    title = "Not found"
    slug = "not-found"


class AuthError(CloudError):
    status = 401
    title = "Not authenticated"
    slug = "not-authenticated"


class Forbidden(AuthError):
    status = 403
    title = "Forbidden"
    slug = "forbidden"


class Conflict(CloudError):
    status = 409
    title = "Conflict"
    slug = "conflict"


class IllegalTransition(Conflict):
    title = "Illegal state transition"
    slug = "illegal-transition"

    def __init__(self, machine: str, current: str, wanted: str, detail: str | None = None):
        super().__init__(detail or f"{machine} cannot go from '{current}' to '{wanted}'")
        self.machine = machine
        self.current = current
        self.wanted = wanted


class NoFreeCompartment(Conflict):
    title = "No free compartment"
    slug = "no-free-compartment"


class TooManyRequests(CloudError):
    status = 429
    title = "Too many requests"
    slug = "too-many-requests"

    def __init__(self, detail: str, retry_after: int):
        super().__init__(detail)
        self.retry_after = max(1, int(retry_after))
