"""Gunicorn settings for the ``web`` process (``gunicorn wsgi:app -c config/gunicorn.py``)."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from typing import Any

from gunicorn.glogging import Logger

from config.settings import WEB_WORKER_TIMEOUT, ConfigError, Settings
from receiver.observe.logs import JsonFormatter, RedactTokensFilter, configure_logging

# Validate in the master, so a bad variable stops the process with one line, not a boot loop.
try:
    _settings = Settings.from_env(os.environ)
except ConfigError as exc:
    sys.stderr.write(f"jobhooks: configuration error: {exc}\n")
    sys.exit(2)

bind = f"0.0.0.0:{_settings.port}"
workers = _settings.web_concurrency
# Threads, not sync workers: a sync worker reads a request's body itself, so two clients
# that send headers and trickle a body held both workers and /healthz and ittybit's
# webhooks waited behind them (tests/process/test_slow_clients.py). With gthread a slow body
# ties up one thread of WEB_THREADS; the worker's other threads keep answering (as many slow
# clients as threads in all would still starve it). Four threads suit Heroku's standard
# dynos (512 MB-1 GB: two workers of four threads each). On SQLite a process answers one
# webhook at a time anyway, so its loop thread answers a webhook already wholly received
# itself, without the hand-offs to a thread and back (config/gunicorn_worker.py).
worker_class = (
    "config.gunicorn_worker.InlineWebhookWorker"
    if _settings.database_url.startswith("sqlite:")
    else "gthread"
)
threads = _settings.web_threads
# A worker silent this long is killed. With gthread that is a worker whose main loop is
# stuck, not one slow request: requests on ittybit keep to API_ITTYBIT_BUDGET themselves.
timeout = WEB_WORKER_TIMEOUT
graceful_timeout = 25
keepalive = 5
# Heroku's router sets X-Forwarded-*; it is the only thing that can reach the dyno.
forwarded_allow_ips = "*"
# The app writes one JSON line per request (receiver/observe/logs.py); gunicorn's own access line
# would repeat it without the delivery's outcome.
accesslog = None
errorlog = "-"
loglevel = _settings.log_level
# Recent gunicorn opens a control socket at one path per user ($XDG_RUNTIME_DIR/gunicorn.ctl or
# ~/.gunicorn/gunicorn.ctl): the demo's gunicorn stopping would remove the socket of a
# `make run` beside it. Nothing here uses it (gunicornc), so it stays off.
control_socket_disable = True


_REDACT = RedactTokensFilter()


class RedactingLogger(Logger):  # type: ignore[misc]
    """Gunicorn's logger, with webhook-URL tokens cut out of access and error lines."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            log.addFilter(_REDACT)
            if _settings.log_format == "json":
                for handler in log.handlers:
                    handler.setFormatter(JsonFormatter())


logger_class = RedactingLogger

# --- metrics: every worker writes its numbers to files in one directory -------------------

_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
_made_metrics_dir: str | None = None
_METRICS_FILE = re.compile(r"^[a-z_]+_(\d+)\.db$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def on_starting(server: Any) -> None:
    """Give the workers a metrics directory before any of them imports prometheus_client."""
    global _made_metrics_dir
    path = os.environ.get(_METRICS_DIR)
    if not path:
        _made_metrics_dir = path = tempfile.mkdtemp(prefix="jobhooks-metrics-")
        os.environ[_METRICS_DIR] = path
        return
    os.makedirs(path, exist_ok=True)
    # Numbers of processes gone since the last run would be added in forever: drop them.
    # A live process sharing the directory (a reconcile worker on this host) keeps its own.
    for name in os.listdir(path):
        match = _METRICS_FILE.match(name)
        if match and not _pid_alive(int(match.group(1))):
            os.remove(os.path.join(path, name))


def post_fork(server: Any, worker: Any) -> None:
    """Send the worker's logs (one JSON line per request) to stdout."""
    configure_logging(level=_settings.log_level, fmt=_settings.log_format, stream=sys.stdout)


def post_worker_init(worker: Any) -> None:
    """Count the worker in ``jobhooks_web_workers`` once its app is loaded."""
    from receiver.observe.metrics import mark_worker_started

    mark_worker_started(worker.wsgi)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges, or they would count it forever."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    """Remove the metrics directory made for this run."""
    if _made_metrics_dir is not None:
        shutil.rmtree(_made_metrics_dir, ignore_errors=True)
