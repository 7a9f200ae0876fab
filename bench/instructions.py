"""Instructions per webhook delivery, counted with callgrind, in process through the WSGI app.

    python -m bench.instructions                          # SQLite, the real app
    python -m bench.instructions --database postgresql    # needs TEST_DATABASE_URL
    python -m bench.instructions --app reference          # bench/reference.py, the same way
    python -m bench.instructions --app bare               # bench/bare.py: Flask alone
    python -m bench.instructions --keep /tmp/cg.out       # then: callgrind_annotate /tmp/cg.out
    python -m bench.instructions --cprofile               # where Python's time goes (no valgrind)

Seconds are noise on a shared machine; instructions are not: the same code counts the same
whatever else runs. The deliveries are the webhook benchmark's (``bench/webhook.py``): one
pre-created submission each, every one ``applied``, half event envelopes to the project
URL, half bare jobs to the submission's signed URL, all signed with Standard Webhooks
headers. The app is built as the Procfile's web process builds it (production settings,
JSON log lines, multiprocess metrics), warmed up, then each delivery's WSGI environ (built
beforehand, as gunicorn would) is passed to the app and its answer read. Only that loop is
counted: callgrind starts with collection off and counts the loop alone, called through a
ctypes callback (``--toggle-collect`` on ctypes' own ``closure_fcn``). gunicorn's HTTP
handling and, on PostgreSQL, the server's own work are not counted: this is the worker's
Python, the part the real app and the reference do differently.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["main"]

_TAG = "ins"
#: The C function ctypes calls a Python callback through: collection is on inside it only.
_TOGGLE = "closure_fcn"
_APPS = {"real": "wsgi:app", "reference": "bench.reference:app", "bare": "bench.bare:app"}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--app", choices=tuple(_APPS), default="real")
    parser.add_argument("--deliveries", type=int, default=200, help="counted (default 200)")
    parser.add_argument("--warmup", type=int, default=50, help="sent first, not counted")
    parser.add_argument("--keep", type=Path, help="keep callgrind's output file here")
    parser.add_argument(
        "--cprofile",
        action="store_true",
        help="profile the loop with cProfile instead (no valgrind; prints the top functions)",
    )
    parser.add_argument("--pstats", type=Path, help="with --cprofile: also save the profile here")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.child is not None:
        return _child(args)
    from bench.common import ROOT, databases, service_env
    from bench.webhook import seed_submissions

    if args.cprofile:
        valgrind = None
    else:
        valgrind = shutil.which("valgrind")
        if valgrind is None:
            sys.exit("bench.instructions: valgrind is not installed")
    with databases(only=args.database) as found, tempfile.TemporaryDirectory() as folder:
        if not found:
            sys.exit("bench.instructions: PostgreSQL needs TEST_DATABASE_URL naming a server")
        database = found[0]
        database.reset()
        rows = seed_submissions(database, _TAG, args.warmup + args.deliveries)
        work = Path(folder)
        (work / "rows.json").write_text(json.dumps(rows))
        metrics = work / "metrics"
        metrics.mkdir()
        env = service_env(
            database,
            PROMETHEUS_MULTIPROC_DIR=str(metrics),
            PYTHONHASHSEED="0",  # the same dict and set layouts in every run
            PYTHONPATH=str(ROOT),
        )
        out = args.keep or work / "callgrind.out"
        command = [sys.executable, "-m", "bench.instructions", "--child", str(work)]
        command += ["--app", args.app, "--database", args.database]
        command += ["--deliveries", str(args.deliveries), "--warmup", str(args.warmup)]
        if args.cprofile:
            command.append("--cprofile")
            if args.pstats is not None:
                command += ["--pstats", str(args.pstats.resolve())]
        if valgrind is not None:
            command = [
                valgrind,
                "--tool=callgrind",
                "--collect-atstart=no",
                f"--toggle-collect={_TOGGLE}",
                f"--callgrind-out-file={out}",
                *command,
            ]
        finished = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, check=False
        )
        sys.stdout.write(finished.stdout)
        if finished.returncode != 0:
            sys.stderr.write(finished.stderr[-4000:])
            return finished.returncode
        if valgrind is None:
            return 0
        total = _collected(out)
        per = total / args.deliveries
        print(
            f"{args.app} {args.database}: {per:,.0f} instructions per delivery "
            f"({total:,} over {args.deliveries} deliveries after {args.warmup} unmeasured)"
        )
    return 0


def _collected(path: Path) -> int:
    """Return the instructions callgrind counted (its ``totals:`` or ``summary:`` line)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    found = re.search(r"^(?:totals|summary): (\d+)", text, re.MULTILINE)
    if found is None:
        message = f"no totals in {path}"
        raise RuntimeError(message)
    return int(found.group(1))


def build_app(name: str) -> Any:
    """Return the WSGI app ``name`` (real, reference) as a Procfile gunicorn worker has it."""
    import importlib

    module, _, attribute = _APPS[name].partition(":")
    app = getattr(importlib.import_module(module), attribute)
    if name == "real":
        # What config/gunicorn.py's post_fork and post_worker_init do in each worker.
        from config.settings import Settings
        from receiver.observe.logs import configure_logging
        from receiver.observe.metrics import mark_worker_started

        settings = Settings.from_env(os.environ)
        sink = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (the process's stdout)
        configure_logging(level=settings.log_level, fmt=settings.log_format, stream=sink)
        mark_worker_started(app)
    return app


def signed_environs(
    database_name: str, rows: list[tuple[str, str, str]], folder: Path
) -> list[dict[str, Any]]:
    """Return one WSGI environ per row's delivery, signed now, as wrk sends them."""
    from werkzeug.test import EnvironBuilder

    from bench.common import Database
    from bench.webhook import write_deliveries

    database = Database(database_name, os.environ["DATABASE_URL"])
    deliveries = folder / "deliveries.tsv"
    write_deliveries(deliveries, database, _TAG, rows)
    environs = []
    for line in deliveries.read_text(encoding="utf-8").splitlines():
        path, msg_id, stamp, signature, body = line.split("\t", 4)
        builder = EnvironBuilder(
            path=path,
            method="POST",
            data=body.encode(),
            content_type="application/json",
            headers={
                "Host": "127.0.0.1:8000",
                "webhook-id": msg_id,
                "webhook-timestamp": stamp,
                "webhook-signature": signature,
            },
        )
        environs.append(builder.get_environ())
    return environs


def _child(args: argparse.Namespace) -> int:
    """Build the app, warm it up, and run the counted loop (under valgrind, in the parent)."""
    work: Path = args.child
    app = build_app(args.app)
    rows = [tuple(row) for row in json.loads((work / "rows.json").read_text())]
    environs = signed_environs(args.database, rows, work)
    answers: list[tuple[str, bytes]] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[..., Any]:
        answers.append((status, b""))
        return lambda data: None

    def send(batch: list[dict[str, Any]]) -> None:
        for environ in batch:
            result = app(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            answers[-1] = (answers[-1][0], body)

    warmup, counted = environs[: args.warmup], environs[args.warmup :]
    send(warmup)

    def measured() -> None:
        send(counted)

    if args.cprofile:
        import cProfile
        import pstats

        profiler = cProfile.Profile(time.process_time)  # CPU: not the database's answers
        profiler.runcall(measured)
        if args.pstats is not None:
            profiler.dump_stats(args.pstats)
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(60)
    else:
        ctypes.CFUNCTYPE(None)(measured)()
    wrong = [(status, body) for status, body in answers if not status.startswith("200")]
    if args.app == "real":
        wrong += [(s, b) for s, b in answers if b'"outcome":"applied"' not in b]
    if wrong or len(answers) != len(environs):
        sys.stderr.write(f"unexpected answers ({len(wrong)} of {len(answers)}): {wrong[:3]}\n")
        return 1
    applied = " (applied)" if args.app == "real" else ""
    print(f"{len(answers)} deliveries answered 200{applied}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
