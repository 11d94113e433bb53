"""The cabinet's operator metrics, served as ``GET /metrics`` on the kiosk's HTTP server.

Counted as they happen: every event the controller records (door events among them) and
the keypad's latency. Read at scrape time from the objects that know them: the outbox
(depth, in flight, held until the cloud speaks), each board's health from firmware_bridge
(timeouts per board since start, reachable or not), the lockout and the doors out of
service. One process per cabinet, so no multiprocess mode here; the registry is the
controller's own (tests run several controllers' objects in one process).

Labels: event ``type`` (the contract's event types), ``bus`` and ``board`` (the cabinet's
wiring, a handful), ``result`` of a keypad entry (opened / refused). No code, no mobile
digits, no handover: docs/deploy.md "Metrics".
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from locker_controller.app import Controller

# Code typed -> unlock frame on the wire: the target is p99 <= 25 ms (DESIGN.md §8).
PULSE_BUCKETS = (0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# The whole answer to the keypad includes the lock pulse and the read after it (~0.5-1.5 s).
ANSWER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0)


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "xinbao_controller_events",
            "Events the controller recorded for its outbox, by type; door events are the "
            "door_* types.",
            ["type"],
            registry=self.registry,
        )
        self.keypad_pulse = Histogram(
            "xinbao_controller_keypad_pulse_seconds",
            "From a code received at the kiosk to its unlock frame written to the bus.",
            buckets=PULSE_BUCKETS,
            registry=self.registry,
        )
        self.keypad_answer = Histogram(
            "xinbao_controller_keypad_answer_seconds",
            "From a code received at the kiosk to the answer, by result (opened, refused).",
            ["result"],
            buckets=ANSWER_BUCKETS,
            registry=self.registry,
        )

    def event(self, type_: str) -> None:
        self.events.labels(type_).inc()

    def keypad(self, started: float, result: str, frame_sent_at: float | None = None) -> None:
        """``started`` and ``frame_sent_at`` are time.monotonic() values."""
        self.keypad_answer.labels(result).observe(max(0.0, time.monotonic() - started))
        if frame_sent_at is not None:
            self.keypad_pulse.observe(max(0.0, frame_sent_at - started))

    def watch(self, controller: Controller) -> None:
        self.registry.register(ControllerLevels(controller))


class ControllerLevels(Collector):
    """What the controller's objects know right now, read at each scrape."""

    def __init__(self, controller: Controller) -> None:
        self._controller = controller

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        c = self._controller
        publisher = c.publisher
        outbox = GaugeMetricFamily(
            "xinbao_controller_outbox_depth",
            "Events not yet acknowledged by the broker (what telemetry reports).",
            value=publisher.depth,
        )
        yield outbox
        yield GaugeMetricFamily(
            "xinbao_controller_outbox_in_flight",
            "Events and replies published and waiting for the broker's PUBACK.",
            value=publisher.in_flight,
        )
        yield GaugeMetricFamily(
            "xinbao_controller_outbox_held",
            "1 while the outbox waits for the cloud to speak on this connection.",
            value=1 if publisher.held else 0,
        )
        yield GaugeMetricFamily(
            "xinbao_controller_online",
            "1 while the controller is connected to the broker.",
            value=1 if c.link is not None and c.link.connected else 0,
        )
        timeouts = CounterMetricFamily(
            "xinbao_controller_bus_timeouts",
            "Requests a board left unanswered (after retries) since the controller started, "
            "per bus and board address.",
            labels=["bus", "board"],
        )
        reachable = GaugeMetricFamily(
            "xinbao_controller_board_reachable",
            "1 while the board answers, 0 once it missed several requests in a row.",
            labels=["bus", "board"],
        )
        for bus, health in c.cabinet.healths():
            labels = [str(bus), str(health.address)]
            timeouts.add_metric(labels, health.timeouts)
            reachable.add_metric(labels, 1 if health.reachable else 0)
        yield timeouts
        yield reachable
        yield GaugeMetricFamily(
            "xinbao_controller_lockout_remaining_seconds",
            "Seconds left of the keypad lockout (0: none running).",
            value=c.lockout.remaining(),
        )
        yield GaugeMetricFamily(
            "xinbao_controller_doors_out_of_service",
            "Compartments that cannot open now (their board is silent, or jammed).",
            value=len(c.doors.out_of_service()),
        )
