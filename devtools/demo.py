"""``make demo``: the whole loop offline (submit, faulty webhooks, reconcile, notify) locally.

Starts the receiver exactly as the Procfile's ``web`` line does (gunicorn, SQLite in a
temporary directory), its ``worker``, the ittybit stand-in and a stand-in for your
application's notification endpoint, each on a free local port (or on N, N+1 and N+2 with
``--port-base N``); submits a batch of jobs
with ``jobhooks submit``; lets the stand-in deliver with faults (some webhooks dropped,
some duplicated, a late ``processing``); runs ``jobhooks reconcile``, which reads the
stand-in's event list and so settles the dropped ones; prints where every
submission stood after the webhooks and after the reconcile pass, and each notification
the application received (verified with the ``standardwebhooks`` library), one per final
state. Everything it started is stopped on the way out, also on Ctrl-C or an error.
Needs nothing configured and no network beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from config.settings import Settings
from devtools.notify_app import NotifyApp, Received, describe
from devtools.processes import (
    ROOT,
    WebProcess,
    WorkerProcess,
    base_env,
    free_port,
    jobhooks_command,
)
from devtools.standin import DeliveryRecord, Standin, StandinConfig
from receiver.store.engines import create_db_engine
from receiver.store.models import FINAL_STATUSES, Submission, WebhookEvent

__all__ = ["main"]

UPLOADS = "https://uploads.tapestry.example"
#: (submission, owner, input, campaign): one upload asks the stand-in to fail.
BATCH = [
    ("sub_demo_1", "user_ana", f"{UPLOADS}/ana/kickflip.mp4", "summer-skate"),
    ("sub_demo_2", "user_ben", f"{UPLOADS}/ben/sourdough.mp4", "home-baking"),
    ("sub_demo_3", "user_cho", f"{UPLOADS}/cho/truncated-fail.mp4", "summer-skate"),
    ("sub_demo_4", "user_dev", f"{UPLOADS}/dev/sunset-timelapse.mp4", "golden-hour"),
    ("sub_demo_5", "user_eli", f"{UPLOADS}/eli/first-recital.mp4", "music-week"),
    ("sub_demo_6", "user_fay", f"{UPLOADS}/fay/trail-run.mp4", "golden-hour"),
]


#: The application's endpoint prints from its own threads: one whole line at a time.
#: What the demo's application takes: a notification per final state.
FINAL_TYPES = tuple(sorted(f"submission.{status.value}" for status in FINAL_STATUSES))
_PRINTING = threading.Lock()


def _say(text: str = "") -> None:
    with _PRINTING:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def _run(command: Sequence[str], env: dict[str, str], *, timeout: float = 120) -> str:
    """Run a command; return its stdout, or raise RuntimeError with its stderr."""
    done = subprocess.run(
        list(command),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        message = f"`{' '.join(command[2:])}` exited {done.returncode}:\n  " + "\n  ".join(detail)
        raise RuntimeError(message)
    return done.stdout


def others(engine: Engine) -> int:
    """Count the submissions the demo did not make: a database holding any is not its to use.

    Its reconcile and worker act on every submission of the database, against the
    stand-in, which knows none of them: a real one would be polled and marked failed.
    """
    table = Submission.__table__  # type: ignore[attr-defined]
    ours = [item[0] for item in BATCH]
    with engine.connect() as conn:
        query = sa.select(sa.func.count()).where(table.c.submission_id.not_in(ours))
        return int(conn.execute(query).scalar_one())


def _submissions(engine: Engine) -> dict[str, dict[str, Any]]:
    """Return the demo's own submissions (a kept database may hold others)."""
    table = Submission.__table__  # type: ignore[attr-defined]
    ours = [item[0] for item in BATCH]
    with engine.connect() as conn:
        rows = (
            conn.execute(
                sa.select(table)
                .where(table.c.submission_id.in_(ours))
                .order_by(table.c.submission_id)
            )
            .mappings()
            .all()
        )
    return {row["submission_id"]: dict(row) for row in rows}


def _deliveries(records: list[DeliveryRecord]) -> dict[str, str]:
    """Describe, per job, what happened to each webhook, in the order it was settled."""
    by_job: dict[str, list[DeliveryRecord]] = defaultdict(list)
    for record in records:
        by_job[record.job_id].append(record)
    described = {}
    for job_id, items in by_job.items():
        items.sort(key=lambda r: (r.order is None, r.order or 0, r.seq))
        parts = []
        for record in items:
            if record.state == "dropped":
                parts.append(f"{record.status}: DROPPED")
            elif record.state == "delivered":
                late = " (late)" if record.reordered else ""
                parts.append(f"{record.status}{late}: {record.outcome}")
            else:
                parts.append(f"{record.status}: {record.state}")
        described[job_id] = ", ".join(parts)
    return described


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return "\n".join("   " + line.rstrip() for line in lines)


def _result(row: dict[str, Any]) -> str:
    return str(row.get("output_url") or row.get("error") or "-")


def _submit(env: dict[str, str], item: tuple[str, str, str, str]) -> dict[str, Any]:
    submission_id, user_id, input_url, campaign = item
    output = _run(
        jobhooks_command(
            "submit",
            "--submission-id",
            submission_id,
            "--user-id",
            user_id,
            "--input",
            input_url,
            "--meta",
            f"campaign={campaign}",
            "--meta",
            "source=demo",
        ),
        env,
    )
    submitted: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return submitted


def _lost_events(records: list[DeliveryRecord]) -> int:
    """Count the events none of whose deliveries was sent (each destination dropped it)."""
    states: dict[str, set[str]] = defaultdict(set)
    for record in records:
        states[record.event_id].add(record.state)
    return sum(found == {"dropped"} for found in states.values())


def _settled_from_list(engine: Engine, stuck: list[str]) -> list[str]:
    """Return which of ``stuck`` took their final state from an event of ittybit's list."""
    table = WebhookEvent.__table__  # type: ignore[attr-defined]
    finals = [status.value for status in FINAL_STATUSES]
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(table.c.submission_id).where(
                table.c.source == "events",
                table.c.outcome == "applied",
                table.c.provider_status.in_(finals),
                table.c.submission_id.in_(stuck),
            )
        ).scalars()
        return sorted(set(found))


def _show_notification(received: Received) -> None:
    verified = "verified" if received.verified else "NOT VERIFIED"
    _say(f"   application <- {describe(received)}  ({verified})")


def _check_notifications(
    received: list[Received], after: dict[str, dict[str, Any]]
) -> list[list[str]]:
    """Return the table of what the application got; raise RuntimeError if it is not right.

    Right: every request verified, one notification per submission in a final state, of
    that state's type, and nothing else.
    """
    if not all(item.verified for item in received):
        raise RuntimeError("a notification did not verify with standardwebhooks")
    applied = [item for item in received if item.applied]
    by_submission: dict[str, list[Received]] = defaultdict(list)
    for item in applied:
        by_submission[item.submission_id or "?"].append(item)
    rows: list[list[str]] = []
    for sid, row in after.items():
        got = by_submission.pop(sid, [])
        expected = [f"submission.{row['status']}"] if row["status"] in FINAL_STATUSES else []
        if [item.type for item in got] != expected:
            message = f"{sid} is {row['status']} but the application got {[i.type for i in got]}"
            raise RuntimeError(message)
        rows.extend([sid, item.type, item.webhook_id] for item in got)
    if by_submission:
        message = f"notifications for unknown submissions: {sorted(by_submission)}"
        raise RuntimeError(message)
    return rows


@dataclass(frozen=True)
class DemoPorts:
    """The ports the demo listens on: the receiver, the ittybit stand-in, the application."""

    web: int
    standin: int
    application: int


def _connect(env: dict[str, str], config: StandinConfig) -> None:
    """Register the project-level URL with ``jobhooks ittybit connect``; keep its secret.

    The stand-in signs deliveries to that endpoint with the endpoint's own secret (and
    those to a job's own URL, when it sends any, with its configured one).
    """
    answer = json.loads(_run(jobhooks_command("ittybit", "connect", "--json"), env))
    _say(
        f"   `jobhooks ittybit connect`: {answer['action']} endpoint {answer['id']} "
        f"({answer['status']}) for {answer['url']}, its secret set as ITTYBIT_WEBHOOK_SECRET"
    )
    env["ITTYBIT_WEBHOOK_SECRET"] = ",".join(
        secret for secret in (answer.get("secret"), config.webhook_secret) if secret
    )


def demo_ports(port_base: int | None) -> DemoPorts:
    """Return ``port_base`` and the two after it, or free ports when it is None."""
    if port_base is None:
        return DemoPorts(web=free_port(), standin=0, application=0)  # 0: the OS picks one
    return DemoPorts(web=port_base, standin=port_base + 1, application=port_base + 2)


def _port_base(text: str) -> int:
    """argparse's type for ``--port-base``: N, N+1 and N+2 must all be ports."""
    try:
        base = int(text)
    except ValueError:
        base = 0
    if not 1024 <= base <= 65533:
        message = f"{text!r}: give a port from 1024 to 65533 (N, N+1 and N+2 are used)"
        raise argparse.ArgumentTypeError(message)
    return base


def run_demo(
    config: StandinConfig,
    workdir: Path,
    database_url: str | None = None,
    ports: DemoPorts | None = None,
) -> int:
    """Run the demo in ``workdir``; return the exit status.

    With ``database_url`` the demo's submissions are written there and kept (for example
    into the database ``make run`` serves, to look at them in the admin view). ``ports``
    (default: free ones) are where the receiver, the stand-in and the application listen.
    """
    ports = ports or demo_ports(None)
    port = ports.web
    standin = Standin(config).start(port=ports.standin)
    notify_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    application = NotifyApp([notify_secret], on_applied=_show_notification)
    application.start(port=ports.application or None)
    web: WebProcess | None = None
    worker: WorkerProcess | None = None
    engine: Engine | None = None
    try:
        env = base_env(
            {
                "APP_ENV": "development",
                "DATABASE_URL": database_url or f"sqlite:///{workdir / 'demo.db'}",
                "PORT": str(port),
                "PUBLIC_URL": f"http://127.0.0.1:{port}",
                "WEB_CONCURRENCY": "2",
                "LOG_LEVEL": "warning",
                "ITTYBIT_API_URL": standin.url,
                "ITTYBIT_API_KEY": config.api_key,
                # The worker only notifies here: step 4 reconciles by hand, to show it.
                "RECONCILE_INTERVAL": "1h",
                # Step 4 runs once the stand-in has sent all it will: no webhook is still
                # on its way, so every listed event is judged at once.
                "WEBHOOK_SILENCE_AFTER": "0s",
            }
        )
        _say("jobhooks demo: everything runs on 127.0.0.1, nothing to configure")
        where = "the database given" if database_url else f"SQLite in {workdir}"
        _say(f"   receiver     gunicorn (Procfile web) on :{port}, {where}")
        _say(f"   ittybit      a local stand-in on {standin.url}")
        _say(f"   worker       the Procfile's worker: reconciles and notifies {application.url}")
        _say("   application  a local endpoint printing each notification it gets (<-)")
        _say(
            f"   faults       {config.drop_rate:.0%} of webhooks dropped, "
            f"{config.duplicate_rate:.0%} duplicated, {config.reorder_rate:.0%} of jobs "
            f"get a late 'processing'; seed {config.seed}"
        )
        _say()
        _say("1. connect, migrate, place the reconciler in ittybit's event list, start")
        _connect(env, config)
        _run(jobhooks_command("db", "upgrade"), env)
        engine = create_db_engine(Settings.from_env(env))
        if foreign := others(engine):
            _say(
                f"that database holds {foreign} submission(s) the demo did not make; its "
                "reconcile would ask the stand-in about them and change them: give the demo "
                "a database of its own (--database-url to an empty one, or none)"
            )
            return 1
        if _submissions(engine):
            _say("that database holds the demo's submissions already: the demo adds them once")
            return 1
        # The application's endpoint is a record with its own secret: any worker on this
        # database signs for it alike, whatever its own environment says.
        added = _run(
            jobhooks_command(
                "endpoints",
                "add",
                application.url,
                "--events",
                ",".join(FINAL_TYPES),
                "--secret",
                notify_secret,
                "--json",
            ),
            env,
        )
        endpoint_id = json.loads(added.splitlines()[-1])["id"]
        _say(f"   `jobhooks endpoints add {application.url} --events …`: {endpoint_id}")
        first = json.loads(_run(jobhooks_command("reconcile", "--json"), env).splitlines()[-1])
        _say(f"   `jobhooks reconcile`, the reconciler's {first['events_note']}")
        web = WebProcess(env, log_path=workdir / "web.log")
        web.start()
        # Its log (one line per notification sent) says when it is ready.
        worker = WorkerProcess({**env, "LOG_LEVEL": "info"}, log_path=workdir / "worker.log")
        worker.start()

        _say(f"2. submit {len(BATCH)} jobs with `jobhooks submit … --meta campaign=…`")
        with ThreadPoolExecutor(max_workers=3) as pool:
            submitted = list(pool.map(lambda item: _submit(env, item), BATCH))
        rows = [[s["submission_id"], s["job_id"] or "-", s["status"]] for s in submitted]
        _say(_table(rows, ["submission", "ittybit job", "status"]))
        _say()

        _say("3. the stand-in runs the jobs (queued → processing → final) and sends webhooks")
        if not standin.wait_idle(timeout=120):
            raise RuntimeError("the stand-in did not finish its jobs within 2 minutes")
        stats = standin.stats()
        answers = ", ".join(f"{count} {name}" for name, count in sorted(stats.outcomes.items()))
        _say(
            f"   {stats.planned} webhooks: {stats.dropped} dropped, {stats.duplicated} sent "
            f"twice, {stats.reordered} late; the receiver answered {answers}"
        )
        after_webhooks = _submissions(engine)
        truth = standin.jobs()
        deliveries = _deliveries(standin.deliveries())
        rows = []
        for sid, row in after_webhooks.items():
            rows.append([sid, deliveries.get(row["job_id"] or "", "-"), row["status"]])
        _say(_table(rows, ["submission", "webhooks (in the order they arrived)", "status now"]))
        stuck = [sid for sid, row in after_webhooks.items() if row["status"] not in FINAL_STATUSES]
        _say(f"   {len(stuck)} submission(s) missed their final webhook: {', '.join(stuck) or '-'}")
        _say()

        _say("4. `jobhooks reconcile --older-than 0s` reads ittybit's event list, then polls")
        output = _run(jobhooks_command("reconcile", "--older-than", "0s"), env)
        _say("\n".join("   " + line for line in output.strip().splitlines()))
        lost = _lost_events(standin.deliveries())
        _say(
            f"   the stand-in dropped every webhook of {lost} event(s): the `webhooks:` line "
            "above counts them as missed"
        )
        from_list = _settled_from_list(engine, stuck)
        polled = [sid for sid in stuck if sid not in from_list]
        _say(
            f"   settled through the event list: {', '.join(from_list) or '-'}; "
            f"asked about job by job: {', '.join(polled) or 'none'}"
        )
        if polled:
            _say("   (some were not in the event list read: see the pass above)")
        _say()

        _say("5. before and after the reconcile pass")
        after = _submissions(engine)
        rows = []
        mismatches = 0
        for sid, row in after.items():
            job = truth.get(row["job_id"] or "", {})
            true_output = (job.get("output") or {}).get("url")
            ok = row["status"] == job.get("status") and row["output_url"] == true_output
            mismatches += not ok
            rows.append(
                [
                    sid,
                    job.get("status", "?"),
                    after_webhooks[sid]["status"],
                    row["status"],
                    _result(row),
                ]
            )
        _say(
            _table(
                rows,
                ["submission", "ittybit says", "after webhooks", "after reconcile", "result"],
            )
        )
        _say()
        if mismatches:
            _say(f"{mismatches} submission(s) disagree with ittybit; see {workdir / 'web.log'}")
            return 1
        _say(f"All {len(after)} submissions match ittybit, with their output URL or error.")
        _say()

        _say("6. what your application received: one signed notification per final state")
        finals = sum(row["status"] in FINAL_STATUSES for row in after.values())
        if not application.wait_applied(finals, timeout=30):
            message = f"the application got {len(application.applied)} of {finals} notifications"
            raise RuntimeError(f"{message}; see {workdir / 'worker.log'}")
        time.sleep(1.0)  # anything more (there should be nothing) would arrive by now
        rows = _check_notifications(application.received, after)
        _say(_table(rows, ["submission", "type", "webhook-id (dedupe on it)"]))
        _say(
            f"   {len(application.received)} request(s), each verified with the standardwebhooks "
            "library and applied once by its webhook-id"
        )
        _say()
        _say("Try a signed test webhook by hand: `jobhooks trigger succeeded` (see README).")
        return 0
    finally:
        if engine is not None:
            engine.dispose()
        if worker is not None:
            worker.stop()
        if web is not None:
            web.stop()
        application.stop()
        standin.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read ``make demo``'s options (``DEMO_ARGS``)."""
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=22, help="fault seed (default 22)")
    parser.add_argument("--drop-rate", type=float, default=0.3)
    parser.add_argument("--duplicate-rate", type=float, default=0.2)
    parser.add_argument("--reorder-rate", type=float, default=0.25)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--database-url",
        default=None,
        help="write the submissions to this database and keep them (default: a temporary "
        "SQLite file), e.g. sqlite:///$PWD/instance/jobhooks.db, the one `make run` serves",
    )
    parser.add_argument(
        "--port-base",
        type=_port_base,
        default=None,
        metavar="N",
        help="listen on N (receiver), N+1 (ittybit stand-in) and N+2 (application) instead "
        "of free ports, for machines where only some ports are open",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = StandinConfig(
        # ittybit since 2025-12: every event goes to the endpoint `jobhooks ittybit connect`
        # registers, signed with its secret; the jobs' own webhook_url is not used.
        job_webhooks=False,
        seed=args.seed,
        step=0.5,
        drop_rate=args.drop_rate,
        duplicate_rate=args.duplicate_rate,
        reorder_rate=args.reorder_rate,
        retry_base=0.2,
        retry_max_delay=2.0,
    )
    workdir = Path(tempfile.mkdtemp(prefix="jobhooks-demo-"))
    try:
        return run_demo(config, workdir, args.database_url, demo_ports(args.port_base))
    except KeyboardInterrupt:
        _say("\ninterrupted: stopped the receiver and the stand-in")
        return 130
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:  # OSError: a port in use
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            _say(f"(kept {workdir})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
