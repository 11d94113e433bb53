"""What an API process counts as it works: requests, ingested events, ingest lag.

Counters and histograms only: they add up across uvicorn workers (prometheus-client's
multiprocess mode, see ``cloud_api.metrics.scrape``). Everything that is a level rather than
a count (outbox depth, open alarms, lockouts) is read from the database when scraped
(``cloud_api.metrics.levels``), so every worker answers the same.

Labels stay bounded: routes by their template (``/api/v1/records/{number}``, never the raw
path: a scanner would make a series per URL it tried), methods from a fixed list, event types
and outcomes from the contract, lockers up to ``locker_labels`` per process (the rest share
``locker="_other"``).
"""

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram

OTHER_LOCKER = "_other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Seconds. Requests: a code check is milliseconds, a remote open waits for the cabinet (10 s).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Door closed at the cabinet -> row in the cloud: the target is p99 <= 0.5 s (DESIGN.md §8);
# the long buckets catch a cabinet replaying its outbox after hours off line. Few buckets:
# this one has a series set per locker.
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 600.0)


class LockerLabels:
    """The locker label for an observation: the locker's id for the first ``limit`` lockers
    this process sees, ``_other`` after that, so a national network cannot make a series set
    per locker (300,000 x 11 series). A city (1,354 lockers) fits under the default."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, locker_id: str) -> str:
        with self._lock:
            if locker_id in self._known:
                return locker_id
            if len(self._known) < self.limit:
                self._known.add(locker_id)
                return locker_id
        return OTHER_LOCKER


class CloudMetrics:
    """One API process's instruments, in ``registry`` (one per app, so tests that build many
    apps in one process each count their own)."""

    def __init__(self, registry: CollectorRegistry, locker_labels: int = 2000) -> None:
        self.registry = registry
        self.locker_label = LockerLabels(locker_labels)
        self.requests = Counter(
            "xinbao_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "xinbao_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status code.",
            ["method", "route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.events_ingested = Counter(
            "xinbao_events_ingested",
            "Locker events taken in from MQTT, by event type and outcome (applied, stored, "
            "refused, ignored, duplicate).",
            ["type", "outcome"],
            registry=registry,
        )
        self.ingest_lag = Histogram(
            "xinbao_ingest_lag_seconds",
            "From the event's time at the cabinet to its row committed in the cloud, per "
            "locker (the first XINBAO_METRICS_LOCKER_LABELS lockers; the rest as _other).",
            ["locker"],
            buckets=LAG_BUCKETS,
            registry=registry,
        )

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "other"
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.request_seconds.labels(*labels).observe(seconds)

    def event(self, locker_id: str, type_: str, outcome: str, lag_s: float | None) -> None:
        self.events_ingested.labels(type_, outcome).inc()
        if lag_s is not None:
            # A cabinet clock a little ahead of ours gives a negative lag: it is none.
            self.ingest_lag.labels(self.locker_label(locker_id)).observe(max(0.0, lag_s))
