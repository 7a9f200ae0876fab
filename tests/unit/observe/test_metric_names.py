"""Every metric follows Prometheus naming and is listed in the README with its type and labels.

Prometheus' conventions (https://prometheus.io/docs/practices/naming/): one prefix, base
units (``_seconds``, ``_bytes``), ``_total`` on counters, and no ids in labels: each label
value is a time series of its own. Notification endpoints are the one exception (few, and
what an operator asks about).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from sqlalchemy.engine import Engine

from receiver.flows.endpoints import add_endpoint
from receiver.observe.metrics import get_metrics
from receiver.store.models import utcnow

README = Path(__file__).resolve().parents[3] / "README.md"
#: Names that say "a time" and so must be in seconds.
_DURATION = re.compile(r"(duration|latency|elapsed|_age|_time|timeout|delay|wait)")
#: Names of other units than the base ones.
_NOT_BASE_UNIT = re.compile(
    r"_(ms|milliseconds|microseconds|minutes|hours|days|kb|mb|kilobytes)(_|$)"
)
#: Labels that would hold an id: one series per submission, job, user, message…
_ID_LABEL = re.compile(r"(^|_)(id|ids|submission|job|user|message|delivery|event_id|token)$")
_ALLOWED_ID_LABELS = {"endpoint"}


@dataclass(frozen=True)
class Described:
    """A metric as exposed: its name (counters with ``_total``), type and label names."""

    name: str
    type: str
    labels: frozenset[str]


def exposed(metrics: list[Metric], label_names: dict[str, tuple[str, ...]]) -> list[Described]:
    """Describe each family as a scrape shows it; ``label_names`` adds labels no sample
    has shown yet (a counter never incremented)."""
    described = []
    for family in metrics:
        labels = {key for sample in family.samples for key in sample.labels}
        labels |= set(label_names.get(family.name, ()))
        labels -= {"le", "quantile"}  # a histogram's own
        suffix = "_total" if family.type == "counter" else ""
        sample_names = {sample.name for sample in family.samples}
        if family.type == "counter" and sample_names - {
            f"{family.name}{s}" for s in ("_total", "_created")
        }:
            suffix = ""  # a counter exposed without _total: the check below says so
        described.append(Described(family.name + suffix, family.type, frozenset(labels)))
    return described


def naming_problems(described: list[Described]) -> list[str]:
    """Say what breaks the conventions, one line per problem."""
    problems = []
    for metric in described:
        name = metric.name
        if not name.startswith("jobhooks_"):
            problems.append(f"{name}: no jobhooks_ prefix")
        if metric.type == "counter" and not name.endswith("_total"):
            problems.append(f"{name}: a counter without _total")
        if metric.type != "counter" and name.endswith("_total"):
            problems.append(f"{name}: _total on a {metric.type}")
        base = name.removesuffix("_total")
        if _DURATION.search(base) and not base.endswith("_seconds"):
            problems.append(f"{name}: a duration not in _seconds")
        if _NOT_BASE_UNIT.search(base):
            problems.append(f"{name}: not in a base unit")
        for label in sorted(metric.labels - _ALLOWED_ID_LABELS):
            if _ID_LABEL.search(label):
                problems.append(f"{name}: label {label!r} would hold an id")
    return problems


def registry_metrics(app: Flask) -> list[Described]:
    metrics = get_metrics(app)
    # A labelled metric shows its labels in samples only once used: ask the wrapper.
    label_names = {
        wrapper._name: wrapper._labelnames
        for wrapper in vars(metrics).values()
        if isinstance(wrapper, MetricWrapperBase)
    }
    return exposed(list(metrics.registry.collect()), label_names)


def readme_metrics() -> dict[str, tuple[str, frozenset[str]]]:
    """The README's Metrics table: name → (type, label names)."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n### Metrics\n", 1)[1].split("\n### ", 1)[0]
    listed = {}
    for line in section.splitlines():
        match = re.match(r"\| `(jobhooks_\w+)` \| (\w+) \|([^|]*)\|", line)
        if match:
            name, kind, labels = match.groups()
            # Label names are in backquotes; the values some list are in parentheses.
            names = re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", labels))
            listed[name] = (kind, frozenset(names))
    return listed


def test_every_metric_follows_prometheus_naming(app: Flask) -> None:
    described = registry_metrics(app)
    assert len(described) >= 15
    assert naming_problems(described) == []


def test_the_readme_lists_every_metric_with_its_type_and_labels(app: Flask, engine: Engine) -> None:
    # Each endpoint's gauges are read from the database: one endpoint shows their labels.
    with engine.begin() as conn:
        add_endpoint(conn, "https://app.example.com/hooks", now=utcnow())
    in_registry = {m.name: (m.type, m.labels) for m in registry_metrics(app)}
    assert readme_metrics() == in_registry


def bad(name: str, kind: str = "gauge", *labels: str) -> Described:
    return Described(name, kind, frozenset(labels))


@pytest.mark.parametrize(
    ("metric", "problem"),
    [
        (bad("jobhooks_things", "counter"), "a counter without _total"),
        (bad("jobhooks_things_total"), "_total on a gauge"),
        (bad("jobhooks_pass_duration"), "a duration not in _seconds"),
        (bad("jobhooks_pass_duration_ms"), "a duration not in _seconds"),
        (bad("jobhooks_oldest_age_minutes"), "a duration not in _seconds"),
        (bad("jobhooks_body_kb"), "not in a base unit"),
        (bad("things_seconds"), "no jobhooks_ prefix"),
        (bad("jobhooks_x_total", "counter", "submission_id"), "label 'submission_id'"),
        (bad("jobhooks_x_total", "counter", "job"), "label 'job'"),
        (bad("jobhooks_x_total", "counter", "submission"), "label 'submission'"),
        (bad("jobhooks_x_total", "counter", "user_id"), "label 'user_id'"),
    ],
)
def test_the_naming_check_sees_each_kind_of_mistake(metric: Described, problem: str) -> None:
    found = naming_problems([metric])
    assert any(problem in line for line in found), found


def test_a_counter_exposed_without_total_is_seen() -> None:
    raw = Metric("jobhooks_things", "", "counter")
    raw.add_sample("jobhooks_things", {}, 1)
    proper = CounterMetricFamily("jobhooks_others", "", value=1)
    assert exposed([raw, proper], {}) == [
        bad("jobhooks_things", "counter"),
        bad("jobhooks_others_total", "counter"),
    ]


def test_an_endpoint_label_is_the_one_id_allowed() -> None:
    metric = bad("jobhooks_notification_deliveries_total", "counter", "endpoint", "result")
    assert naming_problems([metric]) == []
