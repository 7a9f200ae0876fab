"""Serve the ittybit stand-in with N jobs already made and a fixed latency on every request.

Run as its own process, so its threads never share the reconciler's interpreter:

    python -m bench.standin_server --jobs 1000 --latency 0.05 --jobs-file jobs.txt

The jobs are made through the stand-in's own ``POST /jobs`` (in process, without the
latency); every other job never finishes (its input names it ``stuck``), the rest reach
``succeeded`` a moment after creation. With ``--hold-finals`` every job stops at
``processing`` until ``POST /_standin/finish``, then succeeds. Job ids are written one
per line, then the line ``ready <url>`` is printed. HTTP requests wait ``--latency``
seconds before the stand-in answers them, as its own ``latency`` setting does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.test import Client

from devtools.standin import DEFAULT_API_KEY, Standin, StandinConfig

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class _Handler(WSGIRequestHandler):
    # Without this, every response waits on Nagle's algorithm (about 40 ms).
    disable_nagle_algorithm = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


def with_latency(app: WSGIApplication, seconds: float) -> WSGIApplication:
    """Wrap ``app`` so that every request waits ``seconds`` first."""

    def delayed(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        time.sleep(seconds)
        return app(environ, start_response)

    return delayed


def make_jobs(standin: Standin, count: int, *, all_finish: bool = False) -> list[str]:
    """Create ``count`` jobs through the API; return their ids.

    Every other job never finishes, unless ``all_finish``.
    """
    client = Client(standin)
    headers = {"Authorization": f"Bearer {standin.config.api_key}"}
    ids = []
    for n in range(count):
        name = f"stuck-{n}" if n % 2 == 0 and not all_finish else f"upload-{n}"
        response = client.post(
            "/jobs",
            json={
                "input": f"https://uploads.bench.invalid/{name}.mp4",
                "kind": "video",
                "metadata": {"submission_id": f"sub_rc_{n}", "user_id": f"user_{n % 97}"},
            },
            headers=headers,
        )
        if response.status_code != 201:
            message = f"POST /jobs answered {response.status_code}: {response.get_data()!r}"
            raise RuntimeError(message)
        ids.append(json.loads(response.get_data())["id"])
    return ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.standin_server")
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--jobs-file", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--hold-finals",
        action="store_true",
        help="every job finishes, only once POST /_standin/finish asks (an outage on cue)",
    )
    args = parser.parse_args(argv)

    # Jobs move queued -> processing -> final 10 ms apart, so they have settled long
    # before the reconciler asks.
    standin = Standin(
        StandinConfig(api_key=DEFAULT_API_KEY, step=0.01, hold_finals=args.hold_finals)
    )
    standin.start_delivering()
    ids = make_jobs(standin, args.jobs, all_finish=args.hold_finals)
    if not standin.wait_idle(timeout=300):
        raise RuntimeError("the stand-in's jobs did not start within 5 minutes")
    args.jobs_file.write_text("\n".join(ids) + "\n", encoding="utf-8")
    server = make_server(
        "127.0.0.1",
        args.port,
        with_latency(standin, args.latency),
        threaded=True,
        request_handler=_Handler,
    )
    print(f"ready http://127.0.0.1:{server.port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        standin.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
