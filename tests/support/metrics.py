"""Reading a Prometheus scrape in tests.

- ``samples(text)``: every sample of an exposition, ``(name, sorted labels) -> value``.
- ``value(found, name, **labels)``: one sample's value, 0 when it is absent (a counter no
  event has touched yet).
"""

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[tuple[str, tuple], float], name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)
