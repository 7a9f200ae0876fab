"""Notification endpoints as records (:mod:`.records`), their health and shared rate.

Each endpoint has its own ``whsec_`` secret, the event types it takes, a status (``active``
or ``disabled``, and why) and an optional rate, as Svix, Convoy and Hookdeck keep them.
"""

from __future__ import annotations

from receiver.flows.endpoints.health import FAILING_REMINDER, HealthChange, record_health
from receiver.flows.endpoints.rate import give_back, take_allowance
from receiver.flows.endpoints.records import (
    ACTIVE,
    ALL_TYPES,
    DISABLED,
    ENDPOINT_TYPES,
    OPERATIONAL_TYPES,
    ROTATION_OVERLAP,
    SUBMISSION_TYPES,
    EndpointError,
    EndpointSpec,
    add_endpoint,
    default_specs,
    disable_endpoint,
    enable_endpoint,
    endpoint_json,
    ensure_defaults,
    get_endpoint,
    list_endpoints,
    new_endpoint_id,
    new_secret,
    parse_event_types,
    remove_endpoint,
    rotate_secret,
    signing_keys,
    takes,
    update_endpoint,
)

__all__ = [
    "ACTIVE",
    "ALL_TYPES",
    "DISABLED",
    "ENDPOINT_TYPES",
    "FAILING_REMINDER",
    "OPERATIONAL_TYPES",
    "ROTATION_OVERLAP",
    "SUBMISSION_TYPES",
    "EndpointError",
    "EndpointSpec",
    "HealthChange",
    "add_endpoint",
    "default_specs",
    "disable_endpoint",
    "enable_endpoint",
    "endpoint_json",
    "ensure_defaults",
    "get_endpoint",
    "give_back",
    "list_endpoints",
    "new_endpoint_id",
    "new_secret",
    "parse_event_types",
    "record_health",
    "remove_endpoint",
    "rotate_secret",
    "signing_keys",
    "take_allowance",
    "takes",
    "update_endpoint",
]
