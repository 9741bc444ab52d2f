"""The UI in headless Chromium (the system package) against a real ``airflow api-server``.

A person's path: log in on Airflow's login page, open "Escalations" from the navigation,
acknowledge with the button and watch the state and timeline change without a reload; a viewer
sees disabled buttons and is refused by the server anyway; an XSS payload in the incident context
stays text; a one-click link sends a logged-out user through Airflow's login and back; the task
instance page of a really failed task has the escalation tab. Screenshots go to
test-artifacts/ui/ (and docs/images/ with ESCALATION_UPDATE_DOC_IMAGES=1).
"""

from __future__ import annotations

import re
import textwrap
import time
from typing import Any, Iterator
from urllib.parse import quote

import httpx
import pytest

from airflow_escalation.service.links import action_url, make_action_token
from airflow_stack import API, JWT_SECRET, AirflowStack
from ui_support import screenshot

pytestmark = pytest.mark.slow

VIEWPORT = {"width": 1440, "height": 860}
TIMEOUT_MS = 20_000
DEMO_DAG = "orders_etl"
DEMO_TASK = "load_orders"

POLICY = {
    "name": "payments-critical",
    "description": "Page the data team, then on-call, then the head of data",
    "levels": [
        {
            "level": 1,
            "targets": [{"type": "user", "identifier": "data-lead"}, {"type": "channel", "identifier": "#data-alerts"}],
        },
        {"level": 2, "delay_minutes": 45, "targets": [{"type": "schedule", "identifier": "oncall-primary"}]},
        {"level": 3, "delay_minutes": 90, "targets": [{"type": "user", "identifier": "head-of-data"}]},
    ],
}

DEMO_DAG_FILE = textwrap.dedent(f'''
    from datetime import datetime

    from airflow.sdk import dag, task


    @dag(dag_id="{DEMO_DAG}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
    def {DEMO_DAG}():
        @task(retries=0)
        def {DEMO_TASK}():
            raise ValueError("42 rows failed validation in orders_2026_11")

        {DEMO_TASK}()


    {DEMO_DAG}()
''')

XSS_SCRIPT = "<script>window.__xss=1</script>"
XSS_IMG = '<img src=x onerror="window.__xss=2">'


# ---------------------------------------------------------------------------------- helpers


def trigger(stack: AirflowStack, incident: str, **context: Any) -> dict:
    r = stack.post(
        f"{API}/escalations",
        json={"incident_id": incident, "policy": POLICY, "context": {"severity": "critical", **context}},
    )
    assert r.status_code == 201, r.text
    return r.json()["record"]


def record(stack: AirflowStack, record_id: str) -> dict:
    return stack.get(f"{API}/escalations/{record_id}").json()


def login(page: Any, stack: AirflowStack, user: str) -> None:
    """Through Airflow's own login page (SimpleAuthManager)."""
    page.goto(stack.base + "/")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(stack.password(user))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(stack.base + "/", timeout=TIMEOUT_MS)


def frame_of(page: Any, title: str) -> Any:
    """The Frame of the plugin iframe titled ``title`` (for evaluate)."""
    handle = page.locator(f'iframe[title="{title}"]').element_handle(timeout=TIMEOUT_MS)
    frame = handle.content_frame()
    assert frame is not None
    return frame


class Session:
    """A logged-in browser context per user (logged in once, through the login page)."""

    def __init__(self, browser: Any, stack: AirflowStack) -> None:
        self.browser, self.stack = browser, stack
        self.states: dict[str, Any] = {}
        self.contexts: list[Any] = []
        self.errors: list[str] = []

    def page(self, user: str | None, color_scheme: str = "light") -> Any:
        kwargs: dict[str, Any] = {
            "viewport": VIEWPORT,
            "color_scheme": color_scheme,
            "timezone_id": "UTC",
            "locale": "en-US",
        }
        if user in self.states:
            kwargs["storage_state"] = self.states[user]
        context = self.browser.new_context(**kwargs)
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: {exc}"))
        if user is not None and user not in self.states:
            login(page, self.stack, user)
            self.states[user] = context.storage_state()
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture(scope="module")
def failed_run(stack: AirflowStack) -> Iterator[Any]:
    """A real failed task instance: ``airflow dags test`` of a Dag whose task raises.

    Started in the background when the module starts (it takes ~30 s); the tab test waits."""
    (stack.home / "dags" / f"{DEMO_DAG}.py").write_text(DEMO_DAG_FILE)
    stack.cli_in_background("dags-test", "dags", "test", DEMO_DAG)
    started = time.monotonic()

    def wait() -> dict:
        proc, out = stack.background["dags-test"]
        proc.wait(timeout=max(10.0, 240 - (time.monotonic() - started)))
        runs = stack.get(f"/api/v2/dags/{DEMO_DAG}/dagRuns").json().get("dag_runs", [])
        assert runs, f"airflow dags test made no run:\n{out.read_text()[-3000:]}"
        return runs[0]

    yield wait


@pytest.fixture(scope="module")
def session(browser: Any, stack: AirflowStack, failed_run: Any) -> Iterator[Session]:
    s = Session(browser, stack)
    try:
        yield s
    finally:
        s.close()
    assert not s.errors, "JavaScript errors:\n" + "\n".join(s.errors)


# ---------------------------------------------------------------------------------- tests


def test_nav_entry_acknowledge_and_timeline(session, stack):
    # the records of the page (their Dags and tasks as a failure callback reports them)
    run = "scheduled__2026-11-27T06:00:00+00:00"
    escalated = trigger(
        stack,
        f"{DEMO_DAG}.{DEMO_TASK}.{run}",
        dag_id=DEMO_DAG,
        run_id=run,
        task_id=DEMO_TASK,
        map_index=-1,
        try_number=3,
        exception="ValueError: 42 rows failed validation in orders_2026_11",
    )
    assert stack.post(f"{API}/escalations/{escalated['id']}/escalate", json={}).status_code == 200
    target = trigger(
        stack,
        f"billing_daily.export_invoices.{run}",
        dag_id="billing_daily",
        run_id=run,
        task_id="export_invoices",
        map_index=-1,
        try_number=1,
        exception="ConnectionError: SFTP host billing-export refused the connection",
    )
    trigger(
        stack,
        f"customer_sync.fetch_crm.{run}",
        dag_id="customer_sync",
        run_id=run,
        task_id="fetch_crm",
        map_index=4,
        try_number=2,
        exception="TimeoutError: CRM API did not answer within 300 s",
    )

    page = session.page("admin")  # logs in through Airflow's login page
    nav = page.get_by_test_id("nav-sidebar").get_by_role("link", name="Escalations")
    nav.click()
    page.wait_for_url(re.compile(r"/plugin/escalations"))
    frame = page.frame_locator('iframe[title="Escalations"]')
    frame.locator("[data-testid=row]").first.wait_for()

    # the page's filters, kept in its URL: this policy's escalations
    frame.locator("#f-policy").select_option(POLICY["name"])
    rows = frame.locator("[data-testid=row]")
    row = frame.locator(f'[data-testid=row][data-record-id="{target["id"]}"]')
    row.wait_for()
    page.wait_for_function(
        "n => document.querySelector('iframe').contentDocument.querySelectorAll('[data-testid=row]').length === n",
        arg=3,
    )
    # active first: the escalated one (level 2) and the others, then acknowledged ones
    assert rows.count() == 3
    assert frame.locator(f'[data-testid=row][data-record-id="{escalated["id"]}"] td.level').inner_text() == "L2"
    assert "data-lead" in row.inner_text() and "#data-alerts" in row.inner_text()

    # acknowledge from the list, without a reload (a marker in the page's window survives)
    inner = frame_of(page, "Escalations")
    inner.evaluate("window.__noReload = 'kept'")
    row.get_by_role("button", name="Acknowledge").click()
    frame.locator("#dialog-ok").click()  # the note is optional
    row.locator('[data-testid=state]:text-is("acknowledged")').wait_for()
    assert record(stack, target["id"])["acknowledged_by"] == "admin"
    assert inner.evaluate("window.__noReload") == "kept"
    # acknowledged sorts after the active ones; its Acknowledge button is now disabled
    page.wait_for_function(
        "id => { const rows = document.querySelector('iframe').contentDocument"
        ".querySelectorAll('[data-testid=row]'); return rows[rows.length - 1].dataset.recordId === id; }",
        arg=target["id"],
    )
    assert row.get_by_role("button", name="Acknowledge").is_disabled()
    inner.evaluate("document.getElementById('toasts').replaceChildren()")
    screenshot(page, "escalations-page", doc=True)

    # the detail view: the timeline of the escalated one, then acknowledge it there
    frame.locator(f'[data-testid=row][data-record-id="{escalated["id"]}"] a.incident-link').click()
    timeline = frame.locator("[data-testid=timeline]")
    timeline.wait_for()
    page.wait_for_url(re.compile(r"/plugin/escalations/escalation/ui/records/" + escalated["id"]))
    events = frame.locator("[data-testid=event]")
    labels = [events.nth(i).locator(".what").inner_text() for i in range(events.count())]
    # one entry per step, each with its deliveries (core/timeline.py)
    assert labels == ["Triggered by admin: level 1 paged", "Escalated to level 2 by admin"]
    assert events.nth(0).locator("[data-testid=delivery]").count() == 2
    assert events.nth(1).locator("[data-testid=delivery]").count() == 1
    inner = frame_of(page, "Escalations")
    inner.evaluate("window.__noReload = 'kept'")
    before = events.count()
    frame.locator("[data-testid=acknowledge-button]").click()
    frame.locator("#dialog-ok").click()
    frame.locator('.record-head [data-testid=state]:text-is("acknowledged")').wait_for()
    frame.locator("[data-testid=event][data-event=acknowledge]").wait_for()
    assert events.count() == before + 1
    assert events.last.locator(".what").inner_text() == "Acknowledged by admin"
    assert inner.evaluate("window.__noReload") == "kept"
    assert frame.locator("[data-testid=acknowledge-button]").is_disabled()
    screenshot(page, "escalation-detail")

    # cancel asks for a reason; escalate-now and resolve work from the same page
    frame.locator("[data-testid=cancel-button]").click()
    frame.locator("#dialog-text").fill("duplicate of billing_daily")
    frame.locator("#dialog-ok").click()
    frame.locator('.record-head [data-testid=state]:text-is("cancelled")').wait_for()
    assert record(stack, escalated["id"])["metadata"]["cancel_reason"] == "duplicate of billing_daily"


def test_dark_mode_follows_airflow(session, stack):
    page = session.page("admin", color_scheme="dark")
    page.goto(stack.base + "/plugin/escalations")
    frame = page.frame_locator('iframe[title="Escalations"]')
    frame.locator("#rows").wait_for(state="attached")
    inner = frame_of(page, "Escalations")
    inner.wait_for_function("document.documentElement.dataset.theme === 'dark'")
    background = inner.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background != "rgb(255, 255, 255)"
    # switching Airflow to light mode switches the page without a reload
    page.evaluate("document.documentElement.classList.replace('dark', 'light')")
    inner.wait_for_function("document.documentElement.dataset.theme === 'light'")
    assert inner.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(255, 255, 255)"


def test_viewer_sees_no_working_buttons(session, stack):
    rec = trigger(stack, "viewer-sees-this", dag_id="billing_daily", task_id="export_invoices")
    page = session.page("viewer")
    page.goto(f"{stack.base}/plugin/escalations/escalation/ui/records/{rec['id']}")
    frame = page.frame_locator('iframe[title="Escalations"]')
    frame.locator("[data-testid=timeline]").wait_for()
    for action in ("acknowledge", "resolve", "cancel", "escalate"):
        button = frame.locator(f"[data-testid={action}-button]")
        assert button.is_disabled(), action
        assert "may not act" in button.get_attribute("title") and "viewer" in button.get_attribute("title")
    assert "Read only" in frame.get_by_test_id("read-only").inner_text()
    screenshot(page, "viewer-detail")
    # the server refuses a POST made anyway with the viewer's own session
    inner = frame_of(page, "Escalations")
    status = inner.evaluate(
        """id => fetch('/escalation/api/v1/escalations/' + id + '/acknowledge',
               {method: 'POST', credentials: 'same-origin', headers: {'Content-Type': 'application/json'},
                body: '{}'}).then(r => r.status)""",
        rec["id"],
    )
    assert status == 403
    assert record(stack, rec["id"])["state"] == "active"
    stack.post(f"{API}/escalations/{rec['id']}/cancel", json={"reason": "test done"})


def test_xss_payload_in_the_context_stays_inert(session, stack):
    rec = trigger(
        stack,
        f"xss {XSS_IMG}",
        dag_id=XSS_SCRIPT,
        task_id=XSS_IMG,
        run_id="r<svg onload=alert(1)>",
        exception=f"ValueError: {XSS_SCRIPT} {XSS_IMG}",
        log_url="javascript:window.__xss=5",
    )
    page = session.page("admin")
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    # the list (filtered on the Dag id), the detail view, the task tab and the link page
    page.goto(f"{stack.base}/plugin/escalations/escalation/ui/?state=all&dag_id={quote(XSS_SCRIPT)}")
    frame = page.frame_locator('iframe[title="Escalations"]')
    row = frame.locator(f'[data-testid=row][data-record-id="{rec["id"]}"]')
    row.wait_for()
    assert XSS_SCRIPT in row.inner_text() and f"xss {XSS_IMG}" in row.inner_text()
    frame.locator("a.incident-link").first.click()
    frame.locator("[data-testid=timeline]").wait_for()
    assert frame.locator("[data-testid=error-text]").inner_text() == f"ValueError: {XSS_SCRIPT} {XSS_IMG}"
    assert frame.locator("[data-testid=context]").inner_text().count(XSS_SCRIPT) == 2
    assert frame.get_by_role("link", name="Task log").count() == 0  # not an http(s) URL
    inner = frame_of(page, "Escalations")
    assert inner.evaluate("window.__xss") is None and page.evaluate("window.__xss") is None
    assert inner.evaluate("document.querySelectorAll('img[src=x], svg[onload]').length") == 0
    assert inner.evaluate("document.querySelectorAll('script:not([src])').length") == 0
    assert inner.evaluate("document.querySelectorAll('a[href^=javascript]').length") == 0
    screenshot(page, "xss-detail")

    tab = session.page("admin")
    tab.goto(f"{stack.base}/escalation/ui/ti?dag_id={quote(XSS_SCRIPT)}&task_id={quote(XSS_IMG)}")
    tab.locator("[data-testid=record-card]").wait_for()
    assert XSS_IMG in tab.locator("#ti-scope").inner_text()
    assert tab.evaluate("window.__xss") is None
    assert tab.evaluate("document.querySelectorAll('img[src=x]').length") == 0

    link = session.page("admin")
    link.goto(action_url(stack.base, make_action_token(rec["id"], "acknowledge", secret=JWT_SECRET)))
    assert f"xss {XSS_IMG}" in link.get_by_test_id("incident").inner_text()
    assert XSS_SCRIPT in link.locator("table.kv").inner_text()
    assert link.evaluate("window.__xss") is None
    assert link.evaluate("document.querySelectorAll('img[src=x]').length") == 0
    assert not [c for c in console if "Content Security Policy" in c], console
    stack.post(f"{API}/escalations/{rec['id']}/cancel", json={"reason": "test done"})


def test_one_click_link_through_the_login(session, stack):
    rec = trigger(stack, "link-in-browser", dag_id="billing_daily", task_id="export_invoices")
    url = action_url(stack.base, make_action_token(rec["id"], "acknowledge", secret=JWT_SECRET))
    page = session.page(None)  # logged out: the link goes through Airflow's login
    page.goto(url)
    page.wait_for_url(re.compile(r"/auth/login"))
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(stack.password("admin"))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(url)  # back to the link: its confirmation page
    assert page.locator("h1").inner_text() == "Acknowledge this escalation?"
    assert record(stack, rec["id"])["state"] == "active"
    screenshot(page, "link-confirmation", doc=True)
    page.get_by_test_id("confirm").click()
    page.locator("h1", has_text="Escalation acknowledged").wait_for()
    after = record(stack, rec["id"])
    assert after["state"] == "acknowledged" and after["acknowledged_by"] == "admin"
    # "Open in Airflow" on the done page leads to the escalation inside the Airflow UI
    page.get_by_role("link", name="Open in Airflow").click()
    page.wait_for_url(re.compile(r"/plugin/escalations/escalation/ui/records/" + rec["id"]))
    frame = page.frame_locator('iframe[title="Escalations"]')
    frame.locator("[data-testid=event][data-event=acknowledge]").wait_for()
    assert "via one-click link" in frame.locator("[data-testid=event][data-event=acknowledge]").inner_text()
    # the same link again: refused
    page.goto(url)
    assert page.locator("h1").inner_text() == "This link was already used"
    stack.post(f"{API}/escalations/{rec['id']}/resolve", json={})


def test_task_instance_tab(session, stack, failed_run):
    run = failed_run()
    run_id = run["dag_run_id"]
    assert run["state"] == "failed"
    rec = trigger(
        stack,
        f"{DEMO_DAG}.{DEMO_TASK}.{run_id}",
        dag_id=DEMO_DAG,
        run_id=run_id,
        task_id=DEMO_TASK,
        map_index=-1,
        try_number=1,
        exception="ValueError: 42 rows failed validation in orders_2026_11",
    )
    # the same task in another run: not on this task instance's tab
    trigger(stack, f"{DEMO_DAG}.{DEMO_TASK}.other", dag_id=DEMO_DAG, run_id="other-run", task_id=DEMO_TASK)
    page = session.page("admin")
    page.goto(f"{stack.base}/dags/{DEMO_DAG}/runs/{quote(run_id, safe='')}/tasks/{DEMO_TASK}")
    page.locator('a[href$="/plugin/escalation-ti"]').click()
    page.wait_for_url(re.compile(r"/plugin/escalation-ti$"))
    frame = page.frame_locator('iframe[title="Escalation"]')
    cards = frame.locator("[data-testid=record-card]")
    cards.first.wait_for()
    assert cards.count() == 1 and cards.first.get_attribute("data-record-id") == rec["id"]
    assert frame.locator("#ti-title").inner_text() == "Escalation of this task instance"
    # Airflow's own part of the page (the task instance's header and grid) has loaded too
    page.get_by_text("Failed", exact=True).first.wait_for()
    page.wait_for_load_state("networkidle")
    assert page.get_by_text("No Task Instance found").count() == 0
    screenshot(page, "task-instance-tab", doc=True)
    frame.locator("[data-testid=acknowledge-button]").click()
    frame.locator("#dialog-ok").click()
    frame.locator('[data-testid=state]:text-is("acknowledged")').first.wait_for()
    frame.locator("[data-testid=event][data-event=acknowledge]").wait_for()
    assert record(stack, rec["id"])["acknowledged_by"] == "admin"
    # the Dag-run tab: this run's escalations only
    page.goto(f"{stack.base}/dags/{DEMO_DAG}/runs/{quote(run_id, safe='')}")
    page.locator('a[href$="/plugin/escalation-run"]').click()
    run_frame = page.frame_locator('iframe[title="Escalations"]')
    run_frame.locator("[data-testid=record-card]").first.wait_for()
    assert run_frame.locator("[data-testid=record-card]").count() == 1
    assert run_frame.locator("#ti-title").inner_text() == "Escalations of this Dag run"


def test_no_console_errors_from_our_pages(session):
    """Checked by the session fixture at teardown (JavaScript errors); here: the static files
    answered with the right types (a wrong one is refused under nosniff)."""
    for name, kind in (
        ("escalation.js", "text/javascript"),
        ("escalation.css", "text/css"),
        ("theme.js", "text/javascript"),
    ):
        r = httpx.get(f"{session.stack.base}/escalation/ui/static/{name}", timeout=30)
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)


def test_policies_page_in_airflow_edits_and_rolls_back(session, stack):
    """The Policies page inside Airflow's frame: the session cookie's JSON writes pass the
    origin check, the auth manager lets an admin save, and every worker follows."""
    before = stack.get(f"{API}/policies/document").json()
    page = session.page("admin")
    page.goto(f"{stack.base}/plugin/escalations/escalation/ui/policies")
    frame = page.frame_locator('iframe[title="Escalations"]')
    frame.locator("[data-testid=policy-row][data-policy=restart]").wait_for()
    assert frame.locator("[data-testid=policy-row][data-policy=fast] [data-testid=policy-preview]").inner_text() == (
        "L1 at 0 min; L2 at 0.05"
    )
    editor = frame.get_by_test_id("policy-yaml")
    editor.fill(editor.input_value().replace("delay_minutes: 0.25", "delay_minutes: 0.5"))
    frame.get_by_test_id("check").click()
    frame.locator("[data-testid=changes] li", has_text="policy restart changed: levels[1].delay_minutes").wait_for()
    frame.get_by_test_id("comment").fill("slower restart, from the browser")
    frame.get_by_test_id("save").click()
    saved = before["revision"] + 1
    frame.locator("[data-testid=current-revision]", has_text=f"Revision {saved} by admin").wait_for()
    assert stack.get(f"{API}/policies/revisions/{saved}").json()["comment"] == "slower restart, from the browser"
    # back to what the session's other tests expect
    frame.locator(f'[data-testid=revision][data-revision="{before["revision"]}"] [data-testid=rollback]').click()
    frame.locator("#dialog-ok").click()
    frame.locator("[data-testid=current-revision]", has_text=f"Revision {saved + 1} by admin").wait_for()
    deadline = time.monotonic() + 60
    while not all(
        stack.get(f"{API}/policies/revisions?limit=1").json()["current"] == saved + 1 for _ in range(20)
    ):  # both workers
        assert time.monotonic() < deadline, "a worker never applied the roll back"
        time.sleep(0.5)
    assert stack.get(f"{API}/policies/restart").json()["levels"][1]["delay_minutes"] == 0.25
