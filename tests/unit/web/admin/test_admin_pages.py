"""The admin pages' numbers and lists against the database, and the actions' effects."""

from __future__ import annotations

import html as html_text
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from freezegun import freeze_time
from pytest_httpserver import HTTPServer
from sqlalchemy.engine import Engine

from receiver.core.signing import webhook_token
from receiver.flows.admin_accounts import create_admin
from receiver.store.models import utcnow
from receiver.web.admin.display import tally
from receiver.web.slots import ittybit_slot
from tests.admin_helpers import (
    EMAIL,
    PASSWORD,
    add_attempt,
    add_event,
    add_notification,
    add_submission,
    events,
    notifications,
    passes,
    polls,
    post_form,
    shown,
    sign_in,
    submissions,
)
from tests.helpers import SECRET_KEY, job_payload
from tests.reconcile_helpers import FakeIttybit, add_submissions

#: Half past an hour, 30 to 90 minutes ago: the tests freeze the clock there to place rows
#: around it. The session is signed at NOW too, so a request made at NOW or on the real
#: clock later finds it neither from the future nor past ADMIN_SESSION_IDLE (8 h), on any
#: day the tests run.
NOW = (datetime.now(UTC) - timedelta(hours=1)).replace(minute=30, second=0, microsecond=0)


def _hour(moment: datetime) -> str:
    """Return how the overview's per-hour table names the hour of ``moment``."""
    return f"{moment:%Y-%m-%d %H}:00"


@pytest.fixture
def signed_in(client: FlaskClient, engine: Engine) -> FlaskClient:
    with freeze_time(NOW):
        create_admin(engine, EMAIL, PASSWORD, now=utcnow())
        assert sign_in(client).status_code == 302
    return client


def _ids(html: str, table: str) -> list[str]:
    body = html[html.index(f'id="{table}"') :]
    body = body[: body.index("</table>")]
    return re.findall(r'<tr>\s*<td><a href="[^"]+">([^<]+)</a>', body)


# --- overview -----------------------------------------------------------------------------


def test_the_overview_shows_the_databases_numbers(signed_in: FlaskClient, engine: Engine) -> None:
    old = NOW - timedelta(hours=2)
    for n in range(3):  # stuck: running, with a job, unchanged past STUCK_AFTER (15 m)
        add_submission(engine, f"stuck_{n}", at=old, status="processing", job_id=f"job_s{n}")
    add_submission(engine, "fresh", at=NOW - timedelta(minutes=1), status="processing", job_id="j")
    add_submission(engine, "no_job", at=old, status="pending")
    add_submission(engine, "test_1", at=old, status="processing", job_id="jt", is_test=True)
    for n in range(4):
        add_submission(engine, f"done_{n}", at=old, status="succeeded", job_id=f"job_d{n}")
    add_submission(engine, "failed", at=old, status="failed", job_id="job_f")

    # Deliveries: 2 unmatched and 1 rejected in the last day, older ones not counted.
    add_event(engine, "u1", at=NOW - timedelta(hours=1), outcome="unmatched")
    add_event(engine, "u2", at=NOW - timedelta(hours=23), outcome="unmatched")
    add_event(engine, "u3", at=NOW - timedelta(hours=25), outcome="unmatched")
    add_event(engine, "r1", at=NOW - timedelta(minutes=5), outcome="rejected")
    add_event(engine, "r2", at=NOW - timedelta(days=3), outcome="rejected")
    for n in range(5):
        add_event(engine, f"a{n}", at=NOW - timedelta(minutes=10 + n))  # NOW's hour
    add_event(engine, "a_prev", at=NOW - timedelta(hours=1, minutes=10))  # the hour before

    with engine.begin() as conn:
        for finished, found in ((NOW - timedelta(hours=1), 9), (NOW - timedelta(minutes=2), 4)):
            conn.execute(
                sa.insert(passes).values(
                    started_at=finished - timedelta(seconds=3),
                    finished_at=finished,
                    owner="worker.1:42:abcd",
                    ok=True,
                    counts={"checked": found, "updated": 2},
                )
            )
    add_notification(engine, "msg_p1", at=NOW, status="pending")
    add_notification(engine, "msg_p2", at=NOW, status="pending")
    add_notification(engine, "msg_d1", at=NOW, status="dead")
    add_notification(engine, "msg_ok", at=NOW, status="delivered")

    with freeze_time(NOW):
        html = signed_in.get("/admin/").text

    def status_count(name: str) -> int:
        match = re.search(rf'data-status="{name}">(\d+)<', html)
        assert match is not None
        return int(match.group(1))

    with engine.connect() as conn:
        by_status = dict(
            conn.execute(
                sa.select(submissions.c.status, sa.func.count()).group_by(submissions.c.status)
            ).all()
        )
    assert by_status == {"processing": 5, "pending": 1, "succeeded": 4, "failed": 1}
    for name in ("pending", "processing", "succeeded", "failed", "cancelled", "expired"):
        assert status_count(name) == by_status.get(name, 0)
    assert shown(html, "stuck") == "3"  # not the fresh one, the job-less one nor the test one
    assert shown(html, "unmatched-day") == "2"
    assert shown(html, "rejected-day") == "1"
    assert shown(html, "notifications-pending") == "2"
    assert shown(html, "notifications-dead") == "1"
    last_pass = shown(html, "last-pass")
    assert "Last reconcile pass" in last_pass
    section = html[html.index('id="last-pass"') :]
    last = NOW - timedelta(minutes=2)
    assert f"{last:%Y-%m-%d %H:%M:%S} UTC" in section[: section.index("</section>")]
    assert "<th>checked</th><td>4</td>" in section
    table = html[html.index('id="per-hour-table"') :]
    hour = timedelta(hours=1)
    assert f"<td>{_hour(NOW)}</td><td>6</td>" in table  # 5 applied and the rejected one
    assert f"<td>{_hour(NOW - hour)}</td><td>2</td>" in table  # the unmatched at :30, a_prev
    assert f"<td>{_hour(NOW - 23 * hour)}</td><td>1</td>" in table  # 23 h ago
    assert f"<td>{_hour(NOW - 24 * hour)}</td>" not in table  # 24 h and more: not charted
    assert len(re.findall(r"<tr><td>\d{4}-", table)) == 24


def test_the_overview_of_an_empty_database(signed_in: FlaskClient) -> None:
    html = signed_in.get("/admin/").text
    assert shown(html, "stuck") == "0"
    assert "No reconcile pass has been recorded yet." in html
    assert "NOTIFY_URL is not set" in html


def python_values(page: str) -> list[str]:
    """Return the Python literals (None, False, True) a page shows as words in its text."""
    text = html_text.unescape(re.sub(r"<[^>]+>", " ", page))
    return re.findall(r"\b(?:None|False|True)\b", text)


@pytest.mark.usefixtures("ittybit_api")
def test_the_overview_never_shows_a_python_value(
    signed_in: FlaskClient, engine: Engine, runner: FlaskCliRunner, api_server: HTTPServer
) -> None:
    assert python_values(signed_in.get("/admin/").text) == []  # an empty database

    # A real pass: one stuck job settled, one pending submission that asked for no job,
    # an API without the event list (no cursor, a note): its tally holds None and False.
    fake = FakeIttybit(api_server)
    fake.job("job_1", "succeeded")
    hour_ago = utcnow() - timedelta(hours=1)
    add_submissions(engine, [1], changed_at=hour_ago)
    add_submissions(engine, [2], changed_at=hour_ago, status="pending", with_job=False)
    result = runner.invoke(args=["reconcile"])
    assert result.exit_code == 0, result.output
    with engine.connect() as conn:
        counts = conn.execute(sa.select(passes.c.counts)).scalar_one()
    assert counts["event_cursor"] is None and counts["events_more"] is False
    assert counts["unsubmitted_sample"] == ["sub_2"]

    page = signed_in.get("/admin/").text
    section = page[page.index('id="last-pass"') :]
    section = section[: section.index("</section>")]
    assert "<th>checked</th><td>1</td>" in section
    assert "<th>unsubmitted</th><td>1</td>" in section
    assert python_values(page) == []


def test_a_pass_tally_reads_in_words() -> None:
    counts = {
        "checked": 3,
        "event_cursor": None,
        "events_more": True,
        "dry_run": False,
        "unsubmitted_sample": [],
        "seconds": 0.25,
        "later": {"kept": None},
    }
    assert tally(counts) == [
        ("checked", "3"),
        ("events_more", "yes"),
        ("dry_run", "no"),
        ("unsubmitted_sample", "none"),
        ("seconds", "0.25"),
        ("later", '{"kept": null}'),
    ]
    assert tally({"unsubmitted_sample": ["sub_1", "sub_2"]}) == [
        ("unsubmitted_sample", "sub_1, sub_2")
    ]


# --- submissions --------------------------------------------------------------------------


def test_submissions_are_listed_newest_change_first_a_page_at_a_time(
    signed_in: FlaskClient, engine: Engine
) -> None:
    # 120 submissions, several sharing a timestamp: the keyset must break ties by id.
    for n in range(120):
        add_submission(engine, f"sub_{n:03}", at=NOW - timedelta(seconds=n // 3))
    with engine.connect() as conn:
        expected = list(
            conn.execute(
                sa.select(submissions.c.submission_id).order_by(
                    submissions.c.updated_at.desc(), submissions.c.id.desc()
                )
            ).scalars()
        )
    seen: list[str] = []
    url: str | None = "/admin/submissions"
    pages = 0
    while url is not None:
        html = signed_in.get(url).text
        seen += _ids(html, "submissions")
        match = re.search(r'<a href="([^"]+)" rel="next"', html)
        url = match.group(1).replace("&amp;", "&") if match else None
        pages += 1
    assert pages == 3
    assert seen == expected


def test_submissions_are_filtered_by_status_user_metadata_and_id(
    signed_in: FlaskClient, engine: Engine
) -> None:
    add_submission(engine, "a", at=NOW, status="succeeded", meta={"campaign": "spring"})
    add_submission(
        engine, "b", at=NOW, status="failed", user_id="user_2", meta={"campaign": "spring"}
    )
    add_submission(engine, "c", at=NOW, status="succeeded", meta={"campaign": "autumn"})
    add_submission(engine, "d", at=NOW, status="processing", job_id="job_d")

    def listed(query: str) -> set[str]:
        return set(_ids(signed_in.get(f"/admin/submissions?{query}").text, "submissions"))

    assert listed("") == {"a", "b", "c", "d"}
    assert listed("status=succeeded") == {"a", "c"}
    assert listed("user=user_2") == {"b"}
    assert listed("meta=campaign%3Dspring") == {"a", "b"}
    assert listed("meta=campaign%3Dspring&status=succeeded") == {"a"}
    assert listed("q=job_d") == {"d"}
    assert listed("q=c") == {"c"}
    assert listed("status=not-a-status") == {"a", "b", "c", "d"}  # ignored, not an error
    assert listed("after=garbage") == {"a", "b", "c", "d"}


@pytest.mark.parametrize(
    "after",
    [
        "2020-01-01_99999999999999999999",  # past any integer column
        "2020-01-01_2147483648",  # past PostgreSQL's 32-bit ids
        "2020-01-01_-1",
        "0001-01-01T00:00:00%2B14:00_5",  # a time past datetime's range in UTC
    ],
)
@pytest.mark.parametrize("page", ["submissions", "deliveries", "notifications"])
def test_a_cursor_no_row_can_have_is_ignored_not_an_error(
    signed_in: FlaskClient, engine: Engine, page: str, after: str
) -> None:
    add_submission(engine, "a", at=NOW, status="succeeded")
    answer = signed_in.get(f"/admin/{page}?after={after}")
    assert answer.status_code == 200, answer.text[-500:]


def test_a_metadata_search_looks_at_a_bounded_number_of_rows_per_page(
    signed_in: FlaskClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from receiver.web.admin import queries

    monkeypatch.setattr(queries, "SCAN_LIMIT", 10)
    # 25 submissions, newest first n=0..24; campaign "x" on n = 3, 4 and 21 only.
    for n in range(25):
        campaign = "x" if n in (3, 4, 21) else "y"
        add_submission(
            engine, f"s{n:02}", at=NOW - timedelta(seconds=n), meta={"campaign": campaign}
        )
    found: list[str] = []
    hints = 0
    url: str | None = "/admin/submissions?meta=campaign%3Dx"
    while url is not None:
        html = signed_in.get(url).text
        found += _ids(html, "submissions")
        hints += 'id="searched-to"' in html
        match = re.search(r'<a href="([^"]+)" rel="next"', html)
        url = match.group(1).replace("&amp;", "&") if match else None
    assert found == ["s03", "s04", "s21"]
    assert hints == 2  # rows 0-9 and 10-19 were looked at; 20-24 ended the search


def test_a_submission_page_shows_its_fields_and_whole_timeline(
    signed_in: FlaskClient, engine: Engine
) -> None:
    add_submission(
        engine,
        "sub_1",
        at=NOW,
        status="succeeded",
        job_id="job_1",
        output_url="https://cdn.example.com/job_1.mp4",
        meta={"campaign": "spring", "note": "<script>alert(1)</script>"},
    )
    add_event(
        engine,
        "e1",
        at=NOW - timedelta(minutes=3),
        submission_id="sub_1",
        job_id="job_1",
        provider_status="processing",
        reason="first state",
    )
    with engine.begin() as conn:
        conn.execute(
            sa.insert(polls).values(
                submission_id="sub_1",
                job_id="job_1",
                polled_at=NOW - timedelta(minutes=2),
                source="reconcile",
                result="updated",
                provider_status="succeeded",
                detail="processing -> succeeded",
            )
        )
    add_notification(engine, "msg_1", at=NOW - timedelta(minutes=1), status="dead", attempts=7)
    html = signed_in.get("/admin/submissions/sub_1").text
    assert shown(html, "status") == "succeeded"
    assert 'href="https://cdn.example.com/job_1.mp4"' in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    timeline = html[html.index('id="timeline"') :]
    kinds = re.findall(r'<tr class="kind-(\w+)">', timeline)
    assert kinds == ["delivery", "poll", "notification"]
    assert "first state" in timeline and "processing -&gt; succeeded" in timeline
    assert "7 attempt(s)" in timeline
    assert "https://app.example.com/hooks?…" in timeline
    assert "app-secret-in-query" not in html
    # The webhook URL is shown with its token elided; the token itself never.
    token = webhook_token([SECRET_KEY], submission_id="sub_1", user_id="user_1")
    assert token not in html
    assert "https://hooks.example.com/webhooks/ittybit/[token]" in html


def test_a_submission_page_shows_each_notifications_latest_attempts_escaped(
    signed_in: FlaskClient, engine: Engine
) -> None:
    from receiver.web.admin.views import ANSWER_SHOWN, ATTEMPTS_SHOWN

    add_submission(engine, "sub_1", at=NOW, status="succeeded", job_id="job_1")
    sent = add_notification(engine, "msg_1", at=NOW, status="delivered", attempts=2)
    tried = add_notification(engine, "msg_2", at=NOW, status="pending", attempts=12)
    add_notification(engine, "msg_3", at=NOW)  # not tried yet: no attempts table
    hostile = "<script>alert(1)</script>" + "~" * ANSWER_SHOWN
    add_attempt(
        engine,
        sent,
        at=NOW - timedelta(seconds=30),
        status_code=None,
        error="no answer within 15s",
        seconds=15.0,
        response=None,
    )
    add_attempt(engine, sent, at=NOW, seconds=0.042, response=hostile)
    for n in range(12):  # more than a page shows: the latest are kept
        add_attempt(engine, tried, at=NOW + timedelta(seconds=n), status_code=500 + n)
    html = signed_in.get("/admin/submissions/sub_1").text

    rows = re.findall(r"<tr><td>(.*?)</td><td[^>]*>(.*?)</td><td>(.*?)</td>", _table(html, sent))
    assert rows == [
        (_when(NOW - timedelta(seconds=30)), "no answer within 15s", "15.00 s"),
        (_when(NOW), "200", "0.04 s"),
    ]
    # The endpoint's answer is text: escaped, and cut to what the page shows.
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" + "~" * (ANSWER_SHOWN - 25) + "…</code>" in html
    statuses = re.findall(r"<tr><td>[^<]*</td><td[^>]*>(\d+)</td>", _table(html, tried))
    assert statuses == [str(500 + n) for n in range(12 - ATTEMPTS_SHOWN, 12)]
    assert f"The last {ATTEMPTS_SHOWN} attempts" in html
    assert html.count('id="attempts-') == 2


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(html: str, notification_id: int) -> str:
    body = html[html.index(f'id="attempts-{notification_id}"') :]
    return body[: body.index("</table>")]


# --- deliveries ---------------------------------------------------------------------------


def test_deliveries_are_filtered_by_outcome_source_and_time(
    signed_in: FlaskClient, engine: Engine
) -> None:
    ids = {
        "new_url_applied": add_event(engine, "k1", at=NOW - timedelta(minutes=5), source="url"),
        "new_unmatched": add_event(
            engine, "k2", at=NOW - timedelta(minutes=6), outcome="unmatched"
        ),
        "old_unmatched": add_event(engine, "k3", at=NOW - timedelta(days=2), outcome="unmatched"),
        "old_rejected": add_event(engine, "k4", at=NOW - timedelta(days=3), outcome="rejected"),
        "listed": add_event(engine, "k5", at=NOW - timedelta(days=4), source="events"),
    }

    def listed(query: str) -> set[str]:
        with freeze_time(NOW):
            html = signed_in.get(f"/admin/deliveries?{query}").text
        numbers = {int(found) for found in _ids(html, "deliveries")}
        return {name for name, event_id in ids.items() if event_id in numbers}

    assert listed("") == set(ids)
    assert listed("outcome=unmatched") == {"new_unmatched", "old_unmatched"}
    assert listed("source=url") == {"new_url_applied"}
    assert listed("source=events") == {"listed"}
    assert listed("since=24h") == {"new_url_applied", "new_unmatched"}
    assert listed("until=1d") == {"old_unmatched", "old_rejected", "listed"}
    assert listed("outcome=unmatched&since=24h") == {"new_unmatched"}
    assert listed("q=job_k3") == {"old_unmatched"}


def test_ignored_deliveries_can_be_listed(signed_in: FlaskClient, engine: Engine) -> None:
    ignored = add_event(engine, "i1", at=NOW - timedelta(minutes=1), outcome="ignored")
    add_event(engine, "a1", at=NOW - timedelta(minutes=2))
    html = signed_in.get("/admin/deliveries?outcome=ignored").text
    assert {int(found) for found in _ids(html, "deliveries")} == {ignored}
    assert '<option value="ignored"' in html


def test_a_delivery_page_pretty_prints_the_body_and_hides_signatures_and_tokens(
    signed_in: FlaskClient, engine: Engine
) -> None:
    token = webhook_token([SECRET_KEY], submission_id="sub_1", user_id="user_1")
    body = json.dumps(
        {
            **job_payload("job_9", "succeeded"),
            "webhook_url": f"https://hooks.example.com/webhooks/ittybit/{token}",
        }
    )
    event_id = add_event(
        engine,
        "k1",
        at=NOW,
        body=body,
        headers={
            "webhook-id": "msg_9",
            "webhook-signature": "v1,c2lnbmF0dXJlLXRoYXQtbXVzdC1ub3Qtc2hvdw==",
            "authorization": "Bearer sk-live-abc",
        },
    )
    html = signed_in.get(f"/admin/deliveries/{event_id}").text
    shown_body = shown(html, "body")
    assert '"id": "job_9",\n  "object": "job"' in shown_body.replace("&#34;", '"')
    assert token not in html
    assert "/webhooks/ittybit/[token]" in html
    assert "c2lnbmF0dXJlLXRoYXQtbXVzdC1ub3Qtc2hvdw" not in html
    assert "sk-live-abc" not in html
    assert html.count("[redacted]") == 2
    assert "msg_9" in html


def test_unknown_pages_answer_404_in_html(signed_in: FlaskClient) -> None:
    for url in ("/admin/submissions/nope", "/admin/deliveries/42"):
        response = signed_in.get(url)
        assert response.status_code == 404
        assert response.mimetype == "text/html"


# --- notifications ------------------------------------------------------------------------


def test_notifications_are_listed_by_status(signed_in: FlaskClient, engine: Engine) -> None:
    dead = add_notification(engine, "msg_d", at=NOW, status="dead")
    add_notification(engine, "msg_p", at=NOW, status="pending")
    html = signed_in.get("/admin/notifications?status=dead").text
    rows = re.findall(r"<tr>\s*<td>(\d+)</td>", html)
    assert rows == [str(dead)]
    assert "app-secret-in-query" not in html


@pytest.mark.parametrize(
    ("page", "choices"),
    [
        ("submissions?status=failed", {"status": "failed"}),
        ("deliveries?outcome=unmatched&source=url", {"outcome": "unmatched", "source": "url"}),
        ("notifications?status=dead", {"status": "dead"}),
    ],
)
def test_a_filter_form_offers_any_and_every_value_and_keeps_the_chosen_one(
    signed_in: FlaskClient, page: str, choices: dict[str, str]
) -> None:
    html = signed_in.get(f"/admin/{page}").text
    for name, chosen in choices.items():
        select = re.search(rf'<select name="{name}">(.*?)</select>', html, re.S)
        assert select is not None, name
        options = re.findall(r'<option value="([^"]*)"( selected)?>([^<]*)</option>', select[1])
        assert options[0] == ("", "", "any")
        assert [value for value, on, _ in options if on] == [chosen]
        assert all(value == text for value, _, text in options[1:])
        assert len(options) > 2


# --- actions ------------------------------------------------------------------------------


def test_replaying_an_unmatched_delivery_applies_it_once_its_submission_exists(
    signed_in: FlaskClient, engine: Engine
) -> None:
    body = json.dumps(job_payload("job_r", "succeeded", submission_id="sub_r"))
    event_id = add_event(
        engine, "r", at=NOW, body=body, outcome="unmatched", submission_id="sub_r", job_id="job_r"
    )
    add_submission(engine, "sub_r", at=NOW)
    page = f"/admin/deliveries/{event_id}"
    response = post_form(signed_in, page, "/admin/actions/replay", event_id=event_id)
    assert response.status_code == 302
    assert response.headers["Location"] == page
    html = signed_in.get(page).text
    assert f"Delivery {event_id} replayed, was unmatched, now applied (sub_r: succeeded)" in html
    assert shown(html, "outcome-text") == "applied"
    with engine.connect() as conn:
        assert (
            conn.execute(
                sa.select(submissions.c.status).where(submissions.c.submission_id == "sub_r")
            ).scalar_one()
            == "succeeded"
        )
        assert conn.execute(sa.select(events.c.outcome)).scalar_one() == "applied"


def test_an_action_naming_nothing_answers_404(signed_in: FlaskClient) -> None:
    for action, field in (
        ("/admin/actions/reconcile", "submission_id"),
        ("/admin/actions/replay", "event_id"),
        ("/admin/actions/retry-notification", "notification_id"),
    ):
        response = post_form(signed_in, "/admin/", action, **{field: ""})
        assert response.status_code == 404, action


def test_a_replay_that_is_refused_says_why(signed_in: FlaskClient, engine: Engine) -> None:
    response = post_form(signed_in, "/admin/", "/admin/actions/replay", event_id=999)
    assert response.status_code == 302
    assert "Replay refused: no event 999" in signed_in.get(response.headers["Location"]).text


def test_retrying_a_dead_notification_makes_it_pending_now(
    signed_in: FlaskClient, engine: Engine
) -> None:
    started = utcnow()
    dead = add_notification(
        engine, "msg_d", at=started - timedelta(days=1), status="dead", attempts=8
    )
    delivered = add_notification(engine, "msg_ok", at=NOW, status="delivered")
    page = "/admin/notifications?status=dead"
    post_form(signed_in, page, "/admin/actions/retry-notification", notification_id=dead)
    html = signed_in.get("/admin/notifications").text
    assert f"Notification {dead} will be sent again now." in html
    post_form(signed_in, page, "/admin/actions/retry-notification", notification_id=delivered)
    assert "was not retried" in signed_in.get("/admin/notifications").text
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.select(notifications.c.id, notifications.c.status)).all())
        next_attempt = conn.execute(
            sa.select(notifications.c.next_attempt_at).where(notifications.c.id == dead)
        ).scalar_one()
    assert rows == {dead: "pending", delivered: "delivered"}
    assert next_attempt >= started


@pytest.mark.usefixtures("ittybit_api")
def test_reconcile_now_asks_ittybit_and_applies_the_answer(
    signed_in: FlaskClient, engine: Engine, api_server: HTTPServer
) -> None:
    add_submission(engine, "sub_n", at=NOW, status="processing", job_id="job_n")
    api_server.expect_request("/jobs/job_n").respond_with_json(
        job_payload("job_n", "succeeded", submission_id="sub_n")
    )
    page = "/admin/submissions/sub_n"
    response = post_form(signed_in, page, "/admin/actions/reconcile", submission_id="sub_n")
    assert response.headers["Location"] == page
    html = signed_in.get(page).text
    assert "Asked ittybit about sub_n: updated (processing -&gt; succeeded)" in html
    assert shown(html, "status") == "succeeded"
    with engine.connect() as conn:
        poll = conn.execute(sa.select(polls.c.source, polls.c.result)).one()
    assert tuple(poll) == ("admin", "updated")


@pytest.mark.usefixtures("ittybit_api")
def test_reconcile_now_reports_ittybit_being_unreachable(
    signed_in: FlaskClient, engine: Engine, api_server: HTTPServer
) -> None:
    add_submission(engine, "sub_n", at=NOW, status="processing", job_id="job_n")
    api_server.expect_request("/jobs/job_n").respond_with_data("down", status=503)
    response = post_form(
        signed_in, "/admin/submissions/sub_n", "/admin/actions/reconcile", submission_id="sub_n"
    )
    html = signed_in.get(response.headers["Location"]).text
    assert "Asked ittybit about sub_n: errors" in html
    assert shown(html, "status") == "processing"


@pytest.mark.usefixtures("ittybit_api")
def test_reconcile_now_without_a_job_says_how_to_make_one(
    signed_in: FlaskClient, engine: Engine, api_server: HTTPServer
) -> None:
    add_submission(engine, "sub_n", at=NOW, status="pending")
    page = "/admin/submissions/sub_n"
    response = post_form(signed_in, page, "/admin/actions/reconcile", submission_id="sub_n")
    assert response.headers["Location"] == page
    text = re.sub(r"\s+", " ", signed_in.get(page).text)
    assert "sub_n has no ittybit job: no job was asked for" in text
    assert "`jobhooks submit --submission-id sub_n --user-id user_1 --input URL`" in text
    assert "POST /api/v1/submissions with the same submission_id, user_id and input_url" in text
    assert api_server.log == []


@pytest.mark.usefixtures("ittybit_api")
def test_reconcile_now_waits_for_a_free_slot_like_the_api(
    app: Flask, signed_in: FlaskClient, engine: Engine, api_server: HTTPServer
) -> None:
    add_submission(engine, "sub_n", at=NOW, status="processing", job_id="job_n")
    api_server.expect_request("/jobs/job_n").respond_with_json(
        job_payload("job_n", "succeeded", submission_id="sub_n")
    )
    page = "/admin/submissions/sub_n"
    # WEB_CONCURRENCY 2 leaves one slot for waiting on ittybit: hold it, as a busy worker would.
    with ittybit_slot(app.extensions["jobhooks.settings"]) as free:
        assert free
        response = post_form(signed_in, page, "/admin/actions/reconcile", submission_id="sub_n")
    html = signed_in.get(response.headers["Location"]).text
    assert "Did not ask ittybit: every slot for waiting on it is taken" in html
    assert api_server.log == []
    assert shown(html, "status") == "processing"


def test_values_are_cut_to_a_page_before_redacting_and_no_half_token_shows() -> None:
    from receiver.web.admin.display import SHOWN_CHARACTERS, redact

    token = webhook_token([SECRET_KEY], submission_id="sub_1", user_id="user_1")
    signature = token.rsplit(".", 1)[1]
    # The cut falls in the middle of the token's signature.
    value = "x " * ((SHOWN_CHARACTERS - len(token) + 10) // 2) + token + " and more" * 100_000
    shown_text = redact(value)
    assert len(shown_text) < SHOWN_CHARACTERS + 100
    assert shown_text.endswith("more characters not shown)")
    assert signature[:10] not in shown_text
    assert "[token]" not in shown_text  # cut off before the token, not half shown
    assert redact("short " + token) == "short [token]"


def test_ids_holding_a_token_are_shown_cut_on_every_page(
    signed_in: FlaskClient, engine: Engine
) -> None:
    """A sender's job and webhook ids are shown as sent, a webhook-URL token in them cut."""
    token = webhook_token([SECRET_KEY], submission_id="sub_1", user_id="user_1")
    add_submission(engine, "sub_1", at=NOW, job_id=token)
    event_id = add_event(
        engine, "k1", at=NOW, submission_id="sub_1", job_id=token, delivery_id=token
    )
    pages = [
        "/admin/submissions",
        "/admin/submissions/sub_1",
        "/admin/deliveries",
        f"/admin/deliveries/{event_id}",
    ]
    for page in pages:
        html = signed_in.get(page).text
        assert token.rsplit(".", 1)[1] not in html, page
        assert "[token]" in html, page


@pytest.mark.parametrize(
    "after",
    [
        "2020-01-01_0_99999999999999999999",  # past any integer column
        "2020-01-01_0_2147483648",  # past PostgreSQL's 32-bit ids
        "2999-01-01_9_1",  # a kind the timeline does not have
        "0001-01-01T00:00:00%2B14:00_0_1",  # a time past datetime's range in UTC
        "2999-01-01_0_1_000",  # a number too many
    ],
)
def test_a_timeline_cursor_no_entry_can_have_shows_the_first_page(
    signed_in: FlaskClient, engine: Engine, after: str
) -> None:
    add_submission(engine, "sub_1", at=NOW)
    add_event(engine, "k1", at=NOW, submission_id="sub_1", reason="the only delivery")
    first = signed_in.get("/admin/submissions/sub_1")
    answer = signed_in.get(f"/admin/submissions/sub_1?after={after}")
    assert answer.status_code == 200, answer.text[-500:]
    assert answer.text.count("the only delivery") == first.text.count("the only delivery") > 0
