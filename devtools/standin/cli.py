"""``python -m devtools.standin``: serve the stand-in until interrupted."""

from __future__ import annotations

import argparse
import json
import logging
import time

from config.settings import parse_duration
from devtools.standin.options import DEFAULT_API_KEY, StandinConfig
from devtools.standin.server import Standin

__all__ = ["main"]


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        message = f"{text} is not between 0 and 1"
        raise argparse.ArgumentTypeError(message)
    return value


def _seconds(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    """Serve the stand-in until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.standin", description="A local stand-in for the ittybit API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", type=_seconds, default=0.0, help="per request, e.g. 50ms")
    parser.add_argument("--step", type=_seconds, default=0.5, help="between status changes")
    parser.add_argument("--drop-rate", type=_rate, default=0.0)
    parser.add_argument("--duplicate-rate", type=_rate, default=0.0)
    parser.add_argument("--reorder-rate", type=_rate, default=0.0)
    parser.add_argument("--delay", type=_seconds, default=0.0, help="before each delivery")
    parser.add_argument("--jitter", type=_seconds, default=0.0, help="extra random delay")
    parser.add_argument("--webhook-secret", default=None, help="whsec_… to sign deliveries")
    parser.add_argument("--project-url", default=None, help="project-level webhook endpoint")
    parser.add_argument("--max-attempts", type=int, default=8)
    parser.add_argument(
        "--no-event-list",
        dest="event_list",
        action="store_false",
        help="answer GET /events with 404, as an API without the list",
    )
    args = parser.parse_args(argv)
    try:
        config = StandinConfig(
            api_key=args.api_key,
            seed=args.seed,
            latency=args.latency,
            step=args.step,
            drop_rate=args.drop_rate,
            duplicate_rate=args.duplicate_rate,
            reorder_rate=args.reorder_rate,
            delay=args.delay,
            jitter=args.jitter,
            webhook_secret=args.webhook_secret,
            project_url=args.project_url,
            max_attempts=args.max_attempts,
            event_list=args.event_list,
        )
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s standin: %(message)s")
    # One line per delivery comes from the stand-in itself; httpx's would repeat it.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    standin = Standin(config).start(host=args.host, port=args.port)
    print(f"ittybit stand-in on {standin.url} (API key {config.api_key!r}); Ctrl-C stops it")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        standin.close()
        print(json.dumps(standin.stats().as_dict()))
    return 0
