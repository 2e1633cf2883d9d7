"""Reading /metrics in tests: by series name and labels, whatever their order."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of series ``name`` with exactly ``labels``, or None."""
    return samples(text).get((name, frozenset(labels.items())))


def names(text: str) -> set[str]:
    """Every family and sample name on the page."""
    found = set()
    for family in text_string_to_metric_families(text):
        found.add(family.name)
        found.update(s.name for s in family.samples)
    return found
