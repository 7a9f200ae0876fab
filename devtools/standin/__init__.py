"""A local stand-in for the ittybit API: jobs, events and webhook deliveries with faults.

It implements what this service uses — ``POST /jobs`` (with ``Idempotency-Key``),
``GET /jobs``, ``GET /jobs/{id}``, ``GET /tasks/{id}`` and the event list, ``GET /events``
(newest first unless ``order=asc``; ``after``/``before`` cursors, ``limit`` 1 to 100,
``Has-More``, ``has_more`` and ``Link: rel="next"``) and ``GET /events/{id}`` —
runs each job through ``queued → processing → succeeded`` (``failed`` when the input
URL contains "fail", ``cancelled`` for "cancel", and never finishing for "stuck"),
and delivers a webhook for every status change after creation: the bare job to the
job's ``webhook_url`` and, when configured, an event envelope to a project-level URL.
With a ``whsec_`` secret every delivery carries Standard Webhooks headers.

Delivery faults come from options and are reproducible from a seed: each delivery's
fate is drawn from a generator seeded with (seed, job number, step, destination), where
the number counts the jobs created in this session, so the n-th job meets the same faults
for the same seed. Ids (jobs, tasks, events and so webhook-ids) are random and never
come back in a later session, whatever its seed. A job's deliveries go out one after
another (a retry holds the ones behind it), so the only reordering is the one asked
for: a ``processing`` delivery held back until after the final one.

It serves the webhook endpoints resource too (``/webhooks/endpoints``: create, list,
read, ``PATCH``, delete; each endpoint with a ``whsec_`` secret of its own and a status
``active | paused | disabled``): every event goes, as a signed envelope, to each active
endpoint, signed with that endpoint's secret. ``job_webhooks=False`` sends nothing to the
jobs' own URLs, as ittybit since 2025-12 with an endpoint registered.

Every event is listed with the id its deliveries carry: the envelope sent to a
project-level URL is the listed event, and its ``webhook-id`` is ``msg_`` and the
event id's suffix. With ``event_list=False`` the list answers 404, as an API without it.

What was sent is kept for tests: :meth:`Standin.stats`, :meth:`Standin.deliveries`,
:meth:`Standin.jobs` (the truth) and :meth:`Standin.request_counts` (per method and
path); over HTTP at
``GET /_standin/stats`` and ``GET /_standin/jobs``.

One module per concern: ``options`` (the settings), ``api`` (the WSGI jobs API),
``jobs`` (the jobs and their status clock), ``clock`` (timers), ``faults`` (the seeded
fault plan), ``delivery`` (signed deliveries, retries and backoff), ``server`` (all of
it as one object, served over HTTP) and ``cli`` (``python -m devtools.standin``).
"""

from __future__ import annotations

from devtools.standin.cli import main
from devtools.standin.options import DEFAULT_API_KEY, StandinConfig
from devtools.standin.records import DeliveryRecord, Stats
from devtools.standin.server import Standin, running

__all__ = [
    "DEFAULT_API_KEY",
    "DeliveryRecord",
    "Standin",
    "StandinConfig",
    "Stats",
    "main",
    "running",
]
