"""Prometheus series for operators: commands, events, projection lag, streams, outbox and relay lag."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class Metrics:
    """One registry per process (or per app in tests), so series never leak between instances."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.commands = Counter(
            "progressd_commands",
            "Commands handled, by command and outcome (ok, replayed, rejected, unavailable, error).",
            ["command", "outcome"],
            registry=self.registry,
        )
        self.events = Counter(
            "progressd_events_appended", "Events appended to the log by this process.", registry=self.registry
        )
        self.commits = Counter(
            "progressd_store_commits",
            "Transactions that appended events (group commit puts many commands in one).",
            registry=self.registry,
        )
        self.websockets = Gauge(
            "progressd_websocket_connections", "Open WebSocket streams.", registry=self.registry
        )
        self._probes: dict[str, Callable[[], Iterable[tuple[dict[str, str], float]]]] = {}
        self.registry.register(_Probes(self._probes))

    def probe(
        self, name: str, help_text: str, read: Callable[[], Iterable[tuple[dict[str, str], float]]]
    ) -> None:
        """A gauge read at scrape time, e.g. projection lag: `read()` yields (labels, value)."""
        self._probes[f"{name}|{help_text}"] = read


class _Probes(Collector):
    def __init__(self, probes: dict[str, Callable[[], Iterable[tuple[dict[str, str], float]]]]) -> None:
        self.probes = probes

    def collect(self) -> Iterable[Metric]:
        for key, read in list(self.probes.items()):
            name, _, help_text = key.partition("|")
            samples = list(read())
            labels = sorted({k for sample_labels, _ in samples for k in sample_labels})
            family = GaugeMetricFamily(name, help_text, labels=labels)
            for sample_labels, value in samples:
                family.add_metric([sample_labels[k] for k in labels], value)
            yield family
