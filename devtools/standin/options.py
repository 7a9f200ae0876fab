"""The stand-in's settings: its API key, the job clock, delivery faults and retries."""

from __future__ import annotations

from dataclasses import dataclass

from config.settings import decode_webhook_secret

__all__ = ["DEFAULT_API_KEY", "StandinConfig"]

DEFAULT_API_KEY = "standin-api-key"


@dataclass(frozen=True, slots=True)
class StandinConfig:
    """How the stand-in behaves: API key, timing, delivery faults and retries."""

    api_key: str = DEFAULT_API_KEY
    #: Decides the delivery faults, never the ids: a session's n-th job meets the same ones.
    seed: int = 0
    #: Seconds every API request waits before it is answered.
    latency: float = 0.0
    #: Seconds between a job's status changes (queued → processing → final).
    step: float = 0.5
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    #: Share of jobs whose ``processing`` delivery is held until after the final one.
    reorder_rate: float = 0.0
    #: Seconds before each delivery, plus up to ``jitter`` more.
    delay: float = 0.0
    jitter: float = 0.0
    #: A ``whsec_`` secret: when set, deliveries carry Standard Webhooks headers.
    webhook_secret: str | None = None
    #: A project-level endpoint that receives every event as a signed envelope.
    project_url: str | None = None
    #: False: nothing goes to a job's own ``webhook_url``, only to project-level endpoints
    #: (``/webhooks/endpoints``), as ittybit since 2025-12 with an endpoint registered.
    job_webhooks: bool = True
    retry_base: float = 0.25
    retry_max_delay: float = 4.0
    max_attempts: int = 8
    delivery_timeout: float = 5.0
    delivery_workers: int = 8
    #: False: ``GET /events`` answers 404, as an API without the event list would.
    event_list: bool = True
    #: Jobs stop at ``processing`` until :meth:`Standin.finish_held` (or
    #: ``POST /_standin/finish``) lets them reach their final state: an outage on cue.
    hold_finals: bool = False
    output_base: str = "https://cdn.standin.invalid"

    def __post_init__(self) -> None:
        for name in ("drop_rate", "duplicate_rate", "reorder_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                message = f"{name} must be between 0 and 1, got {value}"
                raise ValueError(message)
        if self.project_url and not self.webhook_secret:
            message = "project_url needs webhook_secret: project-level deliveries are signed"
            raise ValueError(message)
        if self.webhook_secret:
            decode_webhook_secret(self.webhook_secret)
        if self.max_attempts < 1 or self.delivery_workers < 1:
            message = "max_attempts and delivery_workers must be at least 1"
            raise ValueError(message)
