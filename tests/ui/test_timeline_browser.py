"""What the person on call sees, in headless Chromium: the grouped timeline and its toggle, the
next-step line, acknowledging with a note from the list, one time format, long run ids.

The service runs in-process on the fake clock (ui_support.make_service: memory store, the
user named by a header); Chromium loads the real pages and script, its requests answered by that
app (Playwright routes ``http://testserver``), and its own clock set to the fake one. The same
pages inside a real Airflow are in test_browser.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Iterator

import pytest

from airflow_escalation.core.timefmt import format_time
from ui_support import API, NOW, ORIGIN, make_service, screenshot

pytestmark = pytest.mark.slow

TIMEOUT_MS = 15_000
POLICY = {
    "name": "orders",
    "levels": [
        {
            "level": 1,
            "targets": [{"type": "user", "identifier": "data-lead"}],
            "repeat_count": 2,
            "repeat_interval_minutes": 5,
        },
        {
            "level": 2,
            "delay_minutes": 15,
            "targets": [
                {"type": "user", "identifier": "eng-manager"},
                {"type": "schedule", "identifier": "oncall-primary"},
            ],
        },
        {"level": 3, "delay_minutes": 30, "targets": [{"type": "user", "identifier": "director"}]},
    ],
}
RUN_ID = "scheduled__2026-11-27T06:00:00+00:00_with_a_long_suffix_from_a_backfill_0123456789"


@pytest.fixture
def live(monkeypatch) -> Iterator[Any]:
    """The service on the fake clock, at NOW."""
    from airflow_escalation.testing import FakeClock, RecordingHandler

    clock = FakeClock(NOW)
    for svc in make_service(monkeypatch, clock=clock, handler=RecordingHandler(clock)):
        svc.clock = clock
        yield svc


def advance(svc: Any, minutes: float) -> None:
    svc.client.portal.call(svc.engine.advance, timedelta(minutes=minutes))


def trigger(svc: Any, incident: str, **context: Any) -> dict:
    r = svc.client.post(
        f"{API}/escalations",
        headers=svc.headers("admin"),
        json={"incident_id": incident, "policy": POLICY, "context": {"dag_id": "orders_etl", **context}},
    )
    assert r.status_code == 201, r.text
    return r.json()["record"]


def open_page(browser: Any, svc: Any, path: str, user: str = "admin") -> Any:
    """A page of the in-process service, the browser's clock at the fake clock's now."""
    context = browser.new_context(viewport={"width": 1440, "height": 900}, timezone_id="UTC", locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []

    def answer(route: Any) -> None:
        request = route.request
        response = svc.client.request(
            request.method,
            request.url,
            headers={**request.headers, **svc.headers(user)},
            content=request.post_data_buffer,
            follow_redirects=False,
        )
        route.fulfill(status=response.status_code, headers=dict(response.headers), body=response.content)

    context.route(f"{ORIGIN}/**", answer)
    page = context.new_page()
    page.clock.set_fixed_time(svc.clock.now())
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    page.goto(ORIGIN + path)
    return page


def test_grouped_timeline_toggle_and_next_step(browser, live):
    rec = trigger(live, "orders_etl.load_orders", run_id=RUN_ID, task_id="load_orders")
    advance(live, 17)  # level 1 and its two reminders, then level 2

    page = open_page(browser, live, f"/ui/records/{rec['id']}")
    timeline = page.locator("[data-testid=timeline]")
    timeline.wait_for()
    steps = timeline.locator("[data-testid=event]")
    titles = [steps.nth(i).locator(".what").inner_text() for i in range(steps.count())]
    # one entry per step (the engine wrote 10 history events)
    assert titles == [
        "Triggered by admin: level 1 paged",
        "Reminder 1 to level 1",
        "Reminder 2 to level 1",
        "Not acknowledged: escalated to level 2",
    ]
    assert len(live.record(rec["id"])["history"]) == 10
    # each step's deliveries nested under it
    climb = steps.nth(3)
    assert climb.locator("[data-testid=delivery]").count() == 2
    assert "user:eng-manager" in climb.inner_text() and "schedule:oncall-primary" in climb.inner_text()
    assert steps.nth(0).locator("[data-testid=delivery]").count() == 1
    # the engine's state changes are behind the toggle
    transitions = climb.locator("[data-testid=transitions]")
    assert not transitions.is_visible()
    assert "escalating" not in timeline.inner_text()
    page.get_by_label("Show state changes").check()
    assert transitions.is_visible()
    assert "escalate: active \u2192 escalating" in transitions.inner_text()
    # it stays on across the page's refreshes
    page.evaluate("document.body.classList.contains('show-transitions')")
    screenshot(page, "timeline-steps", doc=True)

    # what happens next, and to whom: level 3 at +45 min, 28 min from now
    next_line = page.locator(".facts [data-testid=next-step]")
    assert next_line.inner_text() == "level 3 \u2192 director in 28 min"
    due = live.record(rec["id"])["next_escalation_at"]
    assert next_line.locator("time").get_attribute("title") == format_time(due)
    # the summary says what its counts are
    facts = page.locator(".facts").inner_text()
    assert "Escalated\n1 time" in facts and "Notifications sent\n5" in facts
    page.get_by_label("Show state changes").uncheck()
    assert not transitions.is_visible()
    assert not page.errors, page.errors
    page.context.close()


def test_one_time_format_everywhere(browser, live):
    rec = trigger(live, "orders_etl.load_orders", run_id="r1", task_id="load_orders")
    page = open_page(browser, live, f"/ui/records/{rec['id']}")
    page.locator("[data-testid=timeline]").wait_for()
    # the script's absolute times are core/timefmt.format_time's, to the character
    first = page.locator("[data-testid=event] .when span").first.inner_text()
    assert first == format_time(rec["created_at"]) == "2026-03-02 09:30:00 UTC"
    titles = page.eval_on_selector_all("time[title]", "ts => ts.map(t => [t.getAttribute('datetime'), t.title])")
    assert titles and all(title == format_time(iso) for iso, title in titles)
    page.context.close()

    # the one-click link's confirmation page: no raw ISO timestamp with microseconds
    token = live.token(rec["id"])
    link_page = live.open(token)
    assert link_page.status_code == 200
    assert "2026-03-02 09:30:00 UTC" in link_page.text
    assert rec["created_at"] + "<" not in link_page.text and ".000000" not in link_page.text


def test_acknowledge_with_a_note_from_the_list(browser, live):
    rec = trigger(live, "orders_etl.load_orders." + RUN_ID, run_id=RUN_ID, task_id="load_orders")
    page = open_page(browser, live, "/ui/")
    row = page.locator(f'[data-testid=row][data-record-id="{rec["id"]}"]')
    row.wait_for()
    # the next step in the list too; the long run id on one line, whole in its tooltip
    assert row.locator("[data-testid=next-step]").inner_text() == "reminder 1 to level 1 \u2192 data-lead in 5 min"
    run_cell = row.locator("[data-testid=task-run]")
    assert run_cell.get_attribute("title") == f"load_orders \u00b7 {RUN_ID}"
    line_height = float(run_cell.evaluate("e => parseFloat(getComputedStyle(e).lineHeight)"))
    assert run_cell.bounding_box()["height"] < 2 * line_height
    assert run_cell.evaluate("e => e.scrollWidth > e.clientWidth")  # cut, with an ellipsis
    incident = row.locator("a.incident-link")
    assert incident.bounding_box()["height"] < 3 * float(
        incident.evaluate("e => parseFloat(getComputedStyle(e).lineHeight)")
    )
    screenshot(page, "list-next-step")

    row.get_by_role("button", name="Acknowledge").click()
    dialog = page.locator("#dialog")
    dialog.wait_for()
    assert page.locator("#dialog-text-caption").inner_text() == "Note (optional)"
    page.locator("#dialog-text").fill("looking at the orders feed")
    page.keyboard.press("Enter")  # Enter sends the note
    row.locator('[data-testid=state]:text-is("acknowledged")').wait_for()
    record = live.record(rec["id"])
    assert record["state"] == "acknowledged" and record["acknowledged_by"] == "admin"
    assert record["history"][-1]["details"] == {"note": "looking at the orders feed"}
    assert not page.errors, page.errors
    page.context.close()


def test_acknowledge_without_a_note_and_back_changes_nothing(browser, live):
    rec = trigger(live, "inc-2")
    page = open_page(browser, live, f"/ui/records/{rec['id']}")
    page.locator("[data-testid=acknowledge-button]").click()
    page.locator("#dialog-cancel").click()
    assert live.record(rec["id"])["state"] == "active"
    page.locator("[data-testid=acknowledge-button]").click()
    page.locator("#dialog-ok").click()
    page.locator('.record-head [data-testid=state]:text-is("acknowledged")').wait_for()
    step = page.locator("[data-testid=event]").last
    assert step.locator(".what").inner_text() == "Acknowledged by admin"
    assert "note" not in (live.record(rec["id"])["history"][-1].get("details") or {})
    page.context.close()


# ---------------------------------------------------------------------------------- policies

POLICY_YAML = """escalation:
  policies:
  - name: orders
    levels:
    - level: 1
      targets: [data-lead]
      repeat_count: 2
      repeat_interval_minutes: 5
    - level: 2
      delay_minutes: 15
      targets: [eng-manager]
    - level: 3
      delay_minutes: 30
      targets: [director]
"""


def test_policies_page_check_preview_save_and_roll_back(browser, live):
    page = open_page(browser, live, "/ui/policies")
    page.locator("#p-revision:text-is('No revision yet')").wait_for()
    editor = page.get_by_test_id("policy-yaml")

    # a policy with two mistakes: both named, nothing saved
    editor.fill(POLICY_YAML.replace("delay_minutes: 15", "delay_minutes: -15").replace("level: 3", "level: three"))
    page.get_by_test_id("check").click()
    errors = page.locator("[data-testid=errors] li")
    errors.first.wait_for()
    assert errors.count() == 2
    assert "levels[1]" in errors.nth(0).inner_text() and "-15" in errors.nth(0).inner_text()
    assert "levels[2]" in errors.nth(1).inner_text() and "'three'" in errors.nth(1).inner_text()
    assert page.get_by_test_id("save").is_disabled()

    # fixed: the timeline it produces, before saving
    editor.fill(POLICY_YAML)
    assert page.get_by_test_id("save").is_disabled()  # a changed text needs a new check
    page.get_by_test_id("check").click()
    preview = page.locator("[data-testid=previews] [data-testid=preview]")
    preview.wait_for()
    assert preview.inner_text() == "L1 at 0, 5, 10 min; L2 at 15; L3 at 45"
    assert page.locator("[data-testid=changes] li").all_inner_texts() == ["policy orders added"]
    page.get_by_test_id("comment").fill("the orders ladder")
    page.get_by_test_id("save").click()
    page.locator("#p-revision", has_text="Revision 1 by admin").wait_for()
    assert live.engine.get_policy("orders").levels[1].delay_minutes == 15
    row = page.locator("[data-testid=policy-row][data-policy=orders]")
    assert row.get_by_test_id("policy-preview").inner_text() == "L1 at 0, 5, 10 min; L2 at 15; L3 at 45"
    screenshot(page, "policies-page", doc=True)

    # a second revision, then back to the first
    editor.fill(POLICY_YAML.replace("delay_minutes: 30", "delay_minutes: 60"))
    page.get_by_test_id("check").click()
    page.locator("[data-testid=changes] li", has_text="levels[2].delay_minutes").wait_for()
    page.get_by_test_id("save").click()
    page.locator("#p-revision", has_text="Revision 2 by admin").wait_for()
    assert live.engine.get_policy("orders").levels[2].delay_minutes == 60
    revisions = page.locator("[data-testid=revision]")
    assert revisions.count() == 2
    assert "the orders ladder" in revisions.nth(1).inner_text()
    revisions.nth(1).get_by_test_id("rollback").click()
    page.locator("#dialog-ok").click()
    page.locator("#p-revision", has_text="Revision 3 by admin").wait_for()
    assert live.engine.get_policy("orders").levels[2].delay_minutes == 30
    assert "roll back to revision 1" in page.locator("[data-testid=revision]").first.inner_text()
    assert not page.errors, page.errors
    page.context.close()


def test_policies_page_is_read_only_for_a_viewer(browser, live):
    page = open_page(browser, live, "/ui/policies", user="viewer")
    page.locator("#p-source", has_text="Read only").wait_for()
    assert page.get_by_test_id("policy-yaml").evaluate("e => e.readOnly")
    assert page.get_by_test_id("save").is_disabled()
    page.context.close()
