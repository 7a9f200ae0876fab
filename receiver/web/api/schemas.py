"""The API's request and response bodies: pydantic models that validate and document.

The OpenAPI document is generated from these same models (``receiver.web.api.spec``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from receiver.core.fields import (
    MAX_METADATA_KEY,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE,
    SUBMISSION_ID_PATTERN,
)
from receiver.store.models import NotificationStatus, Status

__all__ = [
    "MAX_EVENTS_LIMIT",
    "MAX_LIMIT",
    "META_PREFIX",
    "AttemptList",
    "AttemptsQuery",
    "CreateEndpointBody",
    "CreateHeaders",
    "CreateSubmissionBody",
    "EndpointBody",
    "EndpointList",
    "EndpointWithSecret",
    "ErrorBody",
    "EventList",
    "EventsQuery",
    "ListQuery",
    "NotificationList",
    "NotificationsQuery",
    "RegisterSubmissionBody",
    "SubmissionBody",
    "SubmissionList",
    "UpdateEndpointBody",
]

#: The most rows one page may ask for.
MAX_LIMIT = 500
#: The most entries one page of a submission's timeline holds.
MAX_EVENTS_LIMIT = 100
#: Query parameters ``meta.KEY=VALUE`` filter on a metadata key.
META_PREFIX = "meta."

_StatusName = Literal["pending", "processing", "succeeded", "failed", "cancelled", "expired"]
#: A parameter that may be left out: absent is None, and the document shows no null.
_Absent = SkipJsonSchema[None]
_NotificationStatusName = Literal["pending", "delivered", "dead"]
assert set(_StatusName.__args__) == {status.value for status in Status}  # type: ignore[attr-defined]
assert set(_NotificationStatusName.__args__) == {  # type: ignore[attr-defined]
    status.value for status in NotificationStatus
}


#: What metadata may hold (receiver.core.fields checks it, naming the key at fault).
_METADATA: dict[str, Any] = {
    "maxProperties": MAX_METADATA_KEYS,
    "propertyNames": {"minLength": 1, "maxLength": MAX_METADATA_KEY},
    "additionalProperties": {"type": "string", "maxLength": MAX_METADATA_VALUE},
}
_METADATA_BOUNDS = (
    f"at most {MAX_METADATA_KEYS} string pairs, keys of 1-{MAX_METADATA_KEY} characters,"
    f" values of at most {MAX_METADATA_VALUE}"
)


def _absent_is_no_default(schema: dict[str, Any]) -> None:
    """Leave ``default: null`` out of parameters that may be absent (null is no value)."""
    for field in schema.get("properties", {}).values():
        if "default" in field and field["default"] is None:
            del field["default"]


def _in_utc(moment: datetime) -> datetime:
    """Return ``moment`` in UTC, or refuse one that UTC cannot hold (year 1 or 9999)."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError("datetime_range", "the time is out of range") from None


class ErrorBody(BaseModel):
    """Every error: a code, a message for people, and the failing field when there is one."""

    error: str = Field(description="A stable code, such as `validation_error` or `not_found`.")
    message: str
    field: str | None = Field(None, description="The request field that failed validation.")


class CreateSubmissionBody(BaseModel):
    """A submission to store and send to ittybit as a job."""

    model_config = ConfigDict(extra="forbid", title="CreateSubmissionBody")

    # Documented here, checked by the one rule in receiver.core.fields (whose 422 says it).
    submission_id: str = Field(
        description="Your id for it: 1-200 of `A-Z a-z 0-9 . _ : -`.",
        json_schema_extra={"pattern": SUBMISSION_ID_PATTERN},
    )
    user_id: str = Field(min_length=1, max_length=200, description="Its owner.")
    input_url: str = Field(
        min_length=1, max_length=2048, description="The video's http(s) URL ittybit reads."
    )
    kind: str = Field("video", min_length=1, max_length=50, description="The ittybit job kind.")
    options: dict[str, Any] | None = Field(None, description="The ittybit job's options.")
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            f"Extra metadata for the job ({_METADATA_BOUNDS}); `submission_id` and `user_id`"
            " are added."
        ),
        json_schema_extra=_METADATA,
    )


class RegisterSubmissionBody(BaseModel):
    """A submission whose ittybit job the application created itself."""

    model_config = ConfigDict(extra="forbid", title="RegisterSubmissionBody")

    user_id: str = Field(min_length=1, max_length=200)
    input_url: str = Field(min_length=1, max_length=2048)
    job_id: str | None = Field(None, min_length=1, max_length=200)
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description=f"Extra metadata: {_METADATA_BOUNDS}.",
        json_schema_extra=_METADATA,
    )


class SubmissionBody(BaseModel):
    """A submission, as ``jobhooks submissions show`` prints it."""

    submission_id: str
    user_id: str
    input_url: str
    job_id: str | None
    status: _StatusName
    provider_status: str | None
    output_url: str | None
    error: str | None
    metadata: dict[str, Any]
    test: bool
    provider_updated_at: datetime | None
    created_at: datetime
    updated_at: datetime


class SubmissionList(BaseModel):
    """One page of submissions, newest change first."""

    data: list[SubmissionBody]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class ListQuery(BaseModel):
    """Filters and paging of the submission list; ``meta.KEY=VALUE`` may be added."""

    model_config = ConfigDict(
        extra="allow", title="ListQuery", json_schema_extra=_absent_is_no_default
    )

    status: _StatusName | _Absent = None
    user_id: str | _Absent = Field(None, min_length=1, max_length=200)
    updated_after: Annotated[AwareDatetime, AfterValidator(_in_utc)] | _Absent = Field(
        None, description="Only submissions changed after this time (ISO 8601 with offset)."
    )
    limit: int = Field(100, ge=1, le=MAX_LIMIT)
    cursor: str | _Absent = Field(None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _only_meta_extras(self) -> ListQuery:
        for name in self.model_extra or {}:
            if not name.startswith(META_PREFIX) or len(name) == len(META_PREFIX):
                raise PydanticCustomError(
                    "unknown_parameter",
                    "unknown parameter {name} (filter metadata with meta.KEY=VALUE)",
                    {"name": name},
                )
        return self

    def meta_filters(self) -> dict[str, str]:
        """Return the ``meta.KEY=VALUE`` filters as {KEY: VALUE}."""
        return {
            name.removeprefix(META_PREFIX): str(value)
            for name, value in (self.model_extra or {}).items()
        }


class Timeline(BaseModel):
    """One thing that happened to a submission: a delivery, a poll or a notification."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["delivery", "poll", "notification"]
    at: datetime
    id: int
    source: str | None = Field(None, description="Deliveries: url or endpoint; polls: who asked.")
    job_id: str | None = None
    provider_status: str | None = None
    outcome: str | None = Field(None, description="Deliveries: applied, duplicate, stale…")
    reason: str | None = None
    result: str | None = Field(None, description="Polls: updated, unchanged, errors…")
    detail: str | None = None
    headers: dict[str, str] | None = Field(
        None, description="Deliveries: the headers kept, never a signature."
    )


class EventList(BaseModel):
    """One page of a submission's history, oldest first."""

    data: list[Timeline]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class EventsQuery(BaseModel):
    """Paging of a submission's history; unknown parameters are refused."""

    model_config = ConfigDict(
        extra="forbid", title="EventsQuery", json_schema_extra=_absent_is_no_default
    )

    limit: int = Field(100, ge=1, le=MAX_EVENTS_LIMIT)
    cursor: str | _Absent = Field(None, min_length=1, max_length=200)


class Notification(BaseModel):
    """One notification to the application, from the outbox (its body is not shown)."""

    id: int
    message_id: str
    submission_id: str
    endpoint: str
    event_type: str
    status: _NotificationStatusName
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None


class NotificationList(BaseModel):
    """One page of notifications, newest first."""

    data: list[Notification]
    next_cursor: str | None


class NotificationsQuery(BaseModel):
    """Filters and paging of the notification list."""

    model_config = ConfigDict(
        extra="forbid", title="NotificationsQuery", json_schema_extra=_absent_is_no_default
    )

    status: _NotificationStatusName | _Absent = None
    submission_id: str | _Absent = Field(None, min_length=1, max_length=200)
    limit: int = Field(100, ge=1, le=MAX_LIMIT)
    cursor: str | _Absent = Field(None, min_length=1, max_length=200)


class Attempt(BaseModel):
    """One POST of a notification to its endpoint: when, what came back, how long it took."""

    id: int
    attempted_at: datetime
    endpoint_id: str | None
    status_code: int | None = Field(description="The HTTP status; null when none came.")
    error: str | None = Field(description="Why it failed (no answer, a non-2xx status, …).")
    seconds: float
    response: str | None = Field(
        description="The answer's first kilobyte, as text, as it came (data: never markup)."
    )


class AttemptList(BaseModel):
    """One page of a notification's attempts, oldest first."""

    data: list[Attempt]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class AttemptsQuery(BaseModel):
    """Paging of a notification's attempts; unknown parameters are refused."""

    model_config = ConfigDict(
        extra="forbid", title="AttemptsQuery", json_schema_extra=_absent_is_no_default
    )

    limit: int = Field(100, ge=1, le=MAX_LIMIT)
    cursor: str | _Absent = Field(None, min_length=1, max_length=200)


class CreateHeaders(BaseModel):
    """The headers of a create that the API reads (Authorization is the security scheme)."""

    model_config = ConfigDict(
        extra="allow", title="CreateHeaders", json_schema_extra=_absent_is_no_default
    )

    idempotency_key: str | _Absent = Field(
        None,
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="Makes retries safe: the same key and body answer the first answer again.",
    )


class EndpointBody(BaseModel):
    """A notification endpoint of the application (never its secret)."""

    id: str
    url: str
    event_types: list[str]
    status: Literal["active", "disabled"]
    disabled_reason: str | None
    disabled_at: datetime | None
    rate: float | None
    description: str | None
    created_at: datetime | None
    failing_since: datetime | None
    last_success_at: datetime | None
    last_failure: str | None
    rotating_until: datetime | None


class EndpointWithSecret(EndpointBody):
    """An endpoint with its secret: answered once, when it is made or rotated."""

    secret: str


class EndpointList(BaseModel):
    """Every endpoint, oldest first."""

    data: list[EndpointBody]


class CreateEndpointBody(BaseModel):
    """A new endpoint: its URL, the types it takes (default `*`), and optionally more."""

    model_config = ConfigDict(
        extra="forbid", title="CreateEndpointBody", json_schema_extra=_absent_is_no_default
    )

    url: str = Field(min_length=1, max_length=2048)
    event_types: list[str] = Field(default_factory=lambda: ["*"], min_length=1, max_length=20)
    # The bounds sit on the value's own type: on the union, pydantic would apply them to an
    # explicit null too, and fail with a TypeError (a 500) instead of taking it as absent.
    secret: Annotated[str, Field(min_length=10, max_length=200)] | _Absent = None
    rate: Annotated[float, Field(gt=0)] | _Absent = None
    description: Annotated[str, Field(max_length=500)] | _Absent = None


class UpdateEndpointBody(BaseModel):
    """What to change of an endpoint; `status` disables or enables it."""

    model_config = ConfigDict(
        extra="forbid", title="UpdateEndpointBody", json_schema_extra=_absent_is_no_default
    )

    url: Annotated[str, Field(min_length=1, max_length=2048)] | _Absent = None
    event_types: Annotated[list[str], Field(min_length=1, max_length=20)] | _Absent = None
    rate: float | None = Field(None, gt=0)
    description: str | None = Field(None, max_length=500)
    status: Literal["active", "disabled"] | _Absent = None

    @field_validator("url", "event_types", "status", mode="before")
    @classmethod
    def _given_not_null(cls, value: Any) -> Any:
        # Left out, each keeps its value; given as null, it would have none.
        if value is None:
            message = "must not be null (leave it out to keep the current value)"
            raise ValueError(message)
        return value
