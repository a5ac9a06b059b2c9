"""The dashboard in a real browser (Debian's Chromium through Playwright), over known data.

Every test runs twice: against the test stack (``supabase-log ui`` reading a fresh
database through the PostgREST-compatible gateway with the service key) and against
the local store (a SQLite file). One ``supabase-log ui`` process per backend and one
browser for the module. Set ``UI_SCREENSHOTS_DIR=docs/img`` to write the
README's screenshots.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from stack.gateway import Gateway
from stack.postgres import PgCluster
from ui_support import XSS_MESSAGE, Known, UiProcess, launch_chromium, log_row, seed

from supabase_log_handler.sinks.local import LocalSink
from supabase_log_handler.sinks.rest import SupabaseSink

UTC = dt.timezone.utc
WAIT_MS = 15_000
SCREENSHOTS_ENV = "UI_SCREENSHOTS_DIR"


class Backend(NamedTuple):
    name: str
    url: str
    sink: Any  # writes more rows while a page is open
    known: Known
    secrets: list[str]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module", params=["supabase", "local"])
def backend(
    request: pytest.FixtureRequest, pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    now = dt.datetime.now(UTC)
    workdir = tmp_path_factory.mktemp(f"ui-{request.param}")
    if request.param == "supabase":
        name = f"ui_{uuid.uuid4().hex[:12]}"
        pg_cluster.create_database(name)
        gateway = Gateway(pg_cluster.authenticator_dsn(name))
        sink: Any = SupabaseSink(gateway.url, gateway.service_key)
        env = {"SUPABASE_URL": gateway.url, "SUPABASE_SERVICE_ROLE_KEY": gateway.service_key}
        secrets = [gateway.service_key, gateway.jwt_secret]
    else:
        path = workdir / "local.sqlite3"
        sink = LocalSink(path)
        env = {"SUPABASE_LOG_LOCAL_DB": str(path)}
        secrets = []
    try:
        known = seed(sink, now)
        ui = UiProcess(env, "--refresh", "0.3", cwd=workdir)
        try:
            yield Backend(request.param, ui.url, sink, known, secrets)
        finally:
            ui.stop()
    finally:
        sink.close()
        if request.param == "supabase":
            gateway.close()
            pg_cluster.drop_database(name)


@pytest.fixture
def page(browser: Browser, backend: Backend) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 760})
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    outside: list[str] = []
    tab.on(
        "request",
        lambda r: outside.append(r.url) if not r.url.startswith((backend.url, "data:")) else None,
    )
    try:
        yield tab
    finally:
        context.close()
    assert outside == [], f"the page fetched from elsewhere: {outside}"


def test_filters_narrow_the_runs_list(page: Page, backend: Backend) -> None:
    """Choosing a script, a status or error text narrows the runs table to the matching runs."""
    known = backend.known
    page.goto(backend.url + "/")
    rows = page.locator("#runs tr.run-row")
    expect(rows).to_have_count(6)
    page.select_option("#f-script", known.report)
    expect(rows).to_have_count(2)
    expect(page).to_have_url(f"{backend.url}/?script={known.report}")
    page.select_option("#f-script", "")
    page.select_option("#f-status", "error")
    expect(rows).to_have_count(1)
    expect(page.locator(f"#run-{known.error_run}")).to_be_visible()
    page.select_option("#f-status", "")
    page.fill("#f-q", "upstream refused")
    expect(rows).to_have_count(1)
    page.fill("#f-q", "no such error text")
    expect(page.locator("#runs .empty")).to_have_text("No runs match.")
    page.fill("#f-q", "")
    page.select_option("#f-trigger", "github-actions")
    expect(rows).to_have_count(2)


def test_run_page_shows_steps_and_logs_in_order(page: Page, backend: Backend) -> None:
    """A run page lists its steps in the order they began and its log rows in time order,
    formats the traceback and lists the calls the run made."""
    known = backend.known
    page.goto(f"{backend.url}/runs/{known.error_run}")
    expect(page.locator("#run-status")).to_have_text("error")
    expect(page.locator("#timeline .step-name")).to_have_text(known.error_steps)
    expect(page.locator("#log-list .log .msg")).to_have_text(known.error_messages)
    expect(page.locator(".traceback .tb-exc")).to_have_text(
        "ConnectionError: upstream refused the call"
    )
    expect(page.locator(".traceback .tb-frame")).to_have_count(1)
    expect(page.locator(".calls tr.call-row")).to_have_count(2)
    page.select_option("#l-level", "WARNING")
    expect(page.locator("#log-list .log .msg")).to_have_text(["slow page 2", "save failed"])
    expect(page).to_have_url(f"{backend.url}/runs/{known.error_run}?level=WARNING")
    page.select_option("#l-level", "")
    page.fill("#l-q", "page")
    expect(page.locator("#log-list .log .msg")).to_have_text(["fetched page 1", "slow page 2"])
    meta = page.locator("#log-list .log details.meta").first
    meta.locator("summary").click()
    expect(meta.locator("pre")).to_contain_text('"count": 5')


def test_untrusted_text_renders_as_text(page: Page, backend: Backend) -> None:
    """A log message with <script> and HTML shows as literal text: no element is made from it
    and none of its code runs."""
    page.goto(f"{backend.url}/runs/{backend.known.error_run}")
    message = page.locator("#log-list .log .msg", has_text="done")
    expect(message).to_have_text(XSS_MESSAGE)
    assert message.locator("script, img, b").count() == 0
    assert page.locator("img[src='x']").count() == 0
    assert page.evaluate("window.__xss") is None
    expect(page.locator("pre.error-message")).to_contain_text("<b>the</b> call")


def test_csp_blocks_inline_script(page: Page, backend: Backend) -> None:
    """The page's Content-Security-Policy refuses an inline script put into the page:
    the browser reports the violation and the script does not run."""
    response = page.goto(f"{backend.url}/runs/{backend.known.error_run}")
    assert response is not None
    assert "script-src 'self'" in response.headers["content-security-policy"]
    violation = page.evaluate(
        """() => new Promise((resolve) => {
            document.addEventListener("securitypolicyviolation",
                (e) => resolve(e.violatedDirective), {once: true});
            setTimeout(() => resolve(null), 5000);
            const s = document.createElement("script");
            s.textContent = "window.__inlineRan = true";
            document.body.appendChild(s);
        })"""
    )
    assert violation is not None and violation.startswith("script-src")
    assert page.evaluate("window.__inlineRan") is None


def test_live_tail_and_progress_show_rows_logged_after_the_page_opened(
    page: Page, backend: Backend
) -> None:
    """While a run runs, its page appends rows logged after it opened, the runs list shows its
    current step, and the page shows the final status once the run ends."""
    known = backend.known
    page.goto(f"{backend.url}/?script={known.sync}&status=running")
    expect(page.locator(f"#run-{known.running_run} .step-now")).to_have_text("FETCH")
    backend.sink.insert_rows(
        "logs",
        [log_row(known.running_run, dt.datetime.now(UTC), "INFO", "SAVE", "saving batch 1")],
    )
    expect(page.locator(f"#run-{known.running_run} .step-now")).to_have_text("SAVE")

    page.goto(f"{backend.url}/runs/{known.running_run}")
    expect(page.locator("#log-list .log")).to_have_count(3)
    expect(page.locator("#tail")).to_be_attached()
    late = f"arrived after the page opened {uuid.uuid4().hex[:8]}"
    backend.sink.insert_rows(
        "logs", [log_row(known.running_run, dt.datetime.now(UTC), "INFO", "SAVE", late)]
    )
    expect(page.locator("#log-list .log .msg").last).to_have_text(late)
    run = {
        **known.runs[known.running_run],
        "status": "success",
        "finished_at": dt.datetime.now(UTC).isoformat(timespec="microseconds"),
        "duration_ms": 300_000,
    }
    backend.sink.upsert_run("runs", run, final=True)
    expect(page.locator(".finished")).to_have_text("The run finished: success.")
    expect(page.locator("#run-status")).to_have_text("success")
    expect(page.locator("#tail")).to_have_count(0)


def test_charts_render_with_the_expected_points(page: Page, backend: Backend) -> None:
    """The script page draws one success-rate and duration point per day with finished runs
    and one point per run for records and cost; the calls charts one point per hour with calls."""
    known = backend.known
    page.goto(f"{backend.url}/scripts/{known.sync}")
    for chart, points in [
        ("#chart-success", "[3]"),
        ("#chart-duration", "[3,3]"),
        ("#chart-records", "[3,3]"),
        ("#chart-cost", "[3]"),
    ]:
        expect(page.locator(chart)).to_have_attribute("data-rendered", "1")
        expect(page.locator(chart)).to_have_attribute("data-points", points)
        assert page.locator(f"{chart} canvas").count() == 1
    page.goto(f"{backend.url}/integrations")
    # series in name order: "amocrm · sync_lead" (calls in two hours), "resend · send_email" (one)
    expect(page.locator("#chart-volume")).to_have_attribute("data-points", "[24,24]")
    expect(page.locator("#chart-avg")).to_have_attribute("data-points", "[2,1]")
    expect(page.locator("#chart-max")).to_have_attribute("data-points", "[2,1]")
    page.select_option("#c-status", "failed")
    expect(page.locator("#calls tr.call-row")).to_have_count(1)
    expect(page.locator("#calls tr.call-row")).to_contain_text("INVALID_EMAIL")
    page.goto(f"{backend.url}/integrations?bucket=day")
    expect(page.locator("#chart-volume")).to_have_attribute("data-points", "[30,30]")


def test_an_error_run_is_reachable_from_the_errors_page(page: Page, backend: Backend) -> None:
    """The errors page groups the failed run and the ERROR row by script and message, and
    its link opens that run."""
    known = backend.known
    page.goto(f"{backend.url}/errors?window=7d")
    group = page.locator("#failed-runs tr.group-row", has_text=known.sync)
    expect(group).to_contain_text("ConnectionError: upstream refused <b>the</b> call")
    expect(group.locator("td.num")).to_have_text("1")
    group.locator("a.latest-run").click()
    expect(page).to_have_url(f"{backend.url}/runs/{known.error_run}")
    expect(page.locator("#run-status")).to_have_text("error")
    page.goto(f"{backend.url}/errors?window=7d")
    expect(page.locator("#error-rows tr.group-row", has_text=known.sync)).to_contain_text(
        "save failed"
    )
    page.goto(f"{backend.url}/errors?window=24h")
    expect(page.locator("#failed-runs tr.group-row", has_text=known.sync)).to_have_count(0)


def test_screenshots_for_the_readme(page: Page, backend: Backend) -> None:
    """The runs page and a run page render whole (and, when asked, are saved for the README)."""
    target = os.environ.get(SCREENSHOTS_ENV)
    page.goto(f"{backend.url}/?script={backend.known.sync}")
    expect(page.locator("#runs tr.run-row")).to_have_count(4)
    if target and backend.name == "supabase":
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(target) / "ui-runs.png"))
    page.goto(f"{backend.url}/runs/{backend.known.error_run}")
    expect(page.locator("#timeline .step-row")).to_have_count(3)
    if target and backend.name == "supabase":
        page.screenshot(path=str(Path(target) / "ui-run.png"), full_page=True)


def test_no_secret_in_any_page(backend: Backend) -> None:
    """No page, fragment or header carries the service key or the JWT secret."""
    known = backend.known
    paths = [
        "/",
        f"/?script={known.sync}",
        f"/runs/{known.error_run}",
        f"/runs/{known.error_run}/logs?level=INFO",
        f"/runs/{known.ok_run}/tail",
        f"/runs/{known.error_run}/progress",
        "/errors?window=7d",
        f"/scripts/{known.sync}",
        "/integrations",
        "/integrations/calls?since=30d",
        "/no/such/page",
    ]
    with httpx.Client(base_url=backend.url, timeout=30) as client:
        for path in paths:
            answer = client.get(path, headers={"HX-Request": "true"} if "/logs" in path else {})
            assert answer.status_code in (200, 404), (path, answer.status_code)
            text = answer.text + "".join(f"{k}: {v}" for k, v in answer.headers.items())
            assert "content-security-policy" in answer.headers, path
            for secret in backend.secrets:
                assert secret not in text, path
