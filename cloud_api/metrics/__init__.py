"""Operator metrics of the cloud API (Prometheus): ``instruments`` counts what a process does,
``levels`` reads backlogs and alarms from the database at scrape time, ``scrape`` serves
``GET /metrics`` behind its gate. docs/deploy.md "Metrics" lists every metric."""

from cloud_api.metrics.instruments import CloudMetrics
from cloud_api.metrics.scrape import mount_metrics

__all__ = ["CloudMetrics", "mount_metrics"]
