"""The admin view in a real browser: Debian's headless Chromium against the Procfile's gunicorn.

Signs in, reads the overview, filters the submissions, opens one, replays a delivery and sees
its outcome change, signs out and lands on the login page. Each page's screenshot is written
to ``screenshots/admin/`` (git-ignored) for a reviewer to look at.

Needs ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (``apt-get install chromium
chromium-driver``): skipped without them, except on CI (``CI`` set), where ``.ci/run``
installs them and their absence is a failure.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.processes import ROOT, WebProcess, base_env, free_port, jobhooks_command
from tests.helpers import WEBHOOK_SECRET, encode, job_payload, signed_headers

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: The flags the browser runs with: no sandbox (root in a container), nothing phoned home.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)
SCREENSHOTS = ROOT / "screenshots" / "admin"
EMAIL = "oncall@example.com"
PASSWORD = "a browser-typed password"

pytestmark = pytest.mark.slow


def _require_chromium() -> None:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if not missing:
        return
    reason = (
        f"{' and '.join(missing)} not found: install Debian's Chromium with "
        "`apt-get install -y chromium chromium-driver` to run the browser tests"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (.ci/run installs them; on CI they must be there)")
    pytest.skip(reason)


def _jobhooks(env: dict[str, str], *args: str, stdin: str = "") -> str:
    done = subprocess.run(
        jobhooks_command(*args),
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def site(database_url: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The web process on a free port, with an account and a few submissions and deliveries."""
    port = free_port()
    env = base_env(
        {
            "APP_ENV": "production",
            "DATABASE_URL": database_url,
            "SECRET_KEY": "a-browser-test-secret-key-0123456789",
            "PUBLIC_URL": f"http://127.0.0.1:{port}",
            "ITTYBIT_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PORT": str(port),
            "WEB_CONCURRENCY": "2",
            "LOG_LEVEL": "warning",
        }
    )
    _jobhooks(env, "admin", "create", EMAIL, "--password-stdin", stdin=PASSWORD + "\n")
    for n, campaign in enumerate(("spring", "spring", "autumn"), start=1):
        _jobhooks(
            env,
            "submissions",
            "add",
            f"sub_b{n}",
            "--user-id",
            "user_1",
            "--input",
            f"https://uploads.example.com/b{n}.mp4",
            "--job-id",
            f"job_b{n}",
            "--meta",
            f"campaign={campaign}",
        )
    with WebProcess(env, log_path=tmp_path / "web.log") as web:
        # One applied delivery, and one for a submission that does not exist yet: unmatched.
        for msg_id, payload in (
            ("msg_b1", job_payload("job_b1", "succeeded", submission_id="sub_b1")),
            ("msg_late", job_payload("job_late", "succeeded", submission_id="sub_late")),
        ):
            body = encode(payload)
            answer = httpx.post(
                f"{web.url}/webhooks/ittybit",
                content=body,
                headers=signed_headers(body, msg_id=msg_id),
                timeout=10,
            )
            assert answer.status_code in (200, 202), answer.text
        # The submission arrives after its webhook: replaying the delivery now applies it.
        _jobhooks(
            env,
            "submissions",
            "add",
            "sub_late",
            "--user-id",
            "user_1",
            "--input",
            "https://uploads.example.com/late.mp4",
            "--meta",
            "campaign=spring",
        )
        yield web.url, env


@pytest.fixture
def browser() -> Iterator[object]:
    _require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_on_call_in_a_browser(browser: object, site: tuple[str, dict[str, str]]) -> None:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import Select, WebDriverWait

    assert isinstance(browser, WebDriver)
    driver = browser
    base, _ = site
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def shot(name: str) -> None:
        driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))

    def text(css: str) -> str:
        return str(driver.find_element(By.CSS_SELECTOR, css).text)

    def follow(by: str, value: str) -> None:
        # A click returns once the request is sent (a form's POST and its redirect most of
        # all), not once the next page has loaded: wait until the page it was made on is
        # gone before looking at anything, or the old page's elements answer.
        page = driver.find_element(By.TAG_NAME, "html")
        driver.find_element(by, value).click()

        def gone(_: WebDriver) -> bool:
            try:
                page.is_enabled()
            except WebDriverException:
                # Stale, or (mid-navigation) "does not belong to the document": gone.
                return True
            return False

        WebDriverWait(driver, 10).until(gone)

    # A page asked for before signing in: the login page, then that page.
    driver.get(f"{base}/admin/")
    assert driver.current_url.startswith(f"{base}/admin/login")
    shot("1-login")
    driver.find_element(By.NAME, "email").send_keys(EMAIL)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    follow(By.CSS_SELECTOR, "#login-form button[type=submit]")

    # The overview: 4 submissions (1 succeeded by its webhook), 1 unmatched delivery today.
    assert driver.current_url == f"{base}/admin/", driver.current_url
    assert text("h1").startswith("Overview")
    assert text('[data-status="succeeded"]') == "1"
    assert text('[data-status="pending"]') == "3"
    assert text("#unmatched-day") == "1"
    assert EMAIL in text(".who")
    shot("2-overview")
    driver.set_window_size(390, 844)  # a phone
    shot("2-overview-phone")
    driver.set_window_size(1280, 900)

    # Submissions, filtered by campaign and status.
    follow(By.LINK_TEXT, "Submissions")
    driver.find_element(By.NAME, "meta").send_keys("campaign=spring")
    Select(driver.find_element(By.NAME, "status")).select_by_visible_text("pending")
    follow(By.CSS_SELECTOR, "#submission-filters button[type=submit]")
    listed = [
        cell.text
        for cell in driver.find_elements(By.CSS_SELECTOR, "#submissions tbody td:first-child a")
    ]
    assert sorted(listed) == ["sub_b2", "sub_late"]
    shot("3-submissions-filtered")

    # One submission: pending, its webhook never matched yet.
    follow(By.LINK_TEXT, "sub_late")
    assert text("#status") == "pending"
    assert "/webhooks/ittybit/[token]" in driver.page_source
    shot("4-submission-before")

    # The delivery that arrived first: unmatched; replay it and see it applied.
    follow(By.LINK_TEXT, "Deliveries")
    Select(driver.find_element(By.NAME, "outcome")).select_by_visible_text("unmatched")
    follow(By.CSS_SELECTOR, "#delivery-filters button[type=submit]")
    shot("5-deliveries-unmatched")
    follow(By.CSS_SELECTOR, "#deliveries tbody td:first-child a")
    assert text("#outcome-text") == "unmatched"
    assert '"job_late"' in text("#body")
    shot("6-delivery-before-replay")
    follow(By.ID, "replay")
    assert "was unmatched, now applied (sub_late: succeeded)" in text(".flash-ok")
    assert text("#outcome-text") == "applied"
    shot("7-delivery-after-replay")
    follow(By.ID, "submission-link")
    assert text("#status") == "succeeded"
    assert "https://cdn.example.com/job_late.mp4" in text("#output")
    shot("8-submission-after")

    # Signing out lands on the login page, and the pages are closed again.
    follow(By.ID, "logout")
    assert driver.current_url == f"{base}/admin/login", driver.current_url
    assert "Signed out." in text(".flash")
    shot("9-signed-out")
    driver.get(f"{base}/admin/submissions")
    assert driver.current_url.startswith(f"{base}/admin/login")
    for name in ("1-login", "2-overview", "7-delivery-after-replay", "9-signed-out"):
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 1000
