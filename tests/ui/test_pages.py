"""The UI pages, ``GET /me`` and the plugin's external views, in-process (no browser).

``svc``: the service app in-process with fake authentication by header (ui_support.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from airflow_escalation.plugins.escalation_plugin import EXTERNAL_VIEWS, EscalationPlugin
from airflow_escalation.service.ui import render

STATIC = Path(render.STATIC)


@pytest.mark.parametrize("path", ["/ui/", "/ui/records/{id}", "/ui/ti?dag_id=etl&run_id=r1&task_id=t&map_index=2"])
def test_pages_are_shells_with_a_strict_policy(svc, path):
    page = svc.client.get(path.format(id=svc.trigger()["id"]), headers=svc.headers("viewer"))
    assert page.status_code == 200, page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
    assert page.headers["x-frame-options"] == "SAMEORIGIN"
    # no inline script: every <script> has a src on this origin
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    assert scripts and all('src="/ui/static/' in attrs and not body.strip() for attrs, body in scripts)
    assert "style=" not in page.text  # inline styles would need 'unsafe-inline'
    assert 'data-api="/api/v1"' in page.text and 'data-username="viewer"' in page.text


def test_task_page_scope_ignores_untemplated_placeholders(svc):
    page = svc.client.get(
        "/ui/ti?dag_id=etl&run_id={RUN_ID}&task_id=load&map_index={MAP_INDEX}", headers=svc.headers("admin")
    )
    assert page.status_code == 200
    assert 'data-dag-id="etl"' in page.text and 'data-task-id="load"' in page.text
    assert 'data-run-id=""' in page.text and 'data-map-index=""' in page.text
    escaped = svc.client.get('/ui/ti?dag_id="><script>x</script>', headers=svc.headers("admin"))
    assert "<script>x" not in escaped.text and "&#34;&gt;&lt;script&gt;x" in escaped.text


def test_pages_need_a_session(svc):
    r = svc.client.get("/ui/records/abc?x=1", follow_redirects=False, headers={"accept": "text/html"})
    assert r.status_code == 303
    assert r.headers["location"] == "/api/v2/auth/login?next=http%3A%2F%2Ftestserver%2Fui%2Frecords%2Fabc%3Fx%3D1"
    assert svc.client.get("/ui", headers=svc.headers("admin"), follow_redirects=False).headers["location"] == "/ui/"
    assert svc.client.get("/ui/records/" + "x" * 100, headers=svc.headers("admin")).status_code == 404
    # not a browser opening a page (no text/html in Accept): a 401, never a redirect
    for accept in ({}, {"accept": "application/json"}, {"accept": "*/*"}):
        assert svc.client.get("/ui/records/abc", follow_redirects=False, headers=accept).status_code == 401
        assert svc.client.get("/ui", follow_redirects=False, headers=accept).status_code == 401


def test_static_files_are_a_fixed_set(svc):
    js = svc.client.get("/ui/static/escalation.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert js.headers["x-content-type-options"] == "nosniff"
    assert svc.client.get("/ui/static/escalation.css").headers["content-type"].startswith("text/css")
    assert svc.client.get("/ui/static/icon.svg").headers["content-type"] == "image/svg+xml"
    for name in ("nope.js", "..%2F..%2Fapp.py", "../render.py", "templates"):
        assert svc.client.get(f"/ui/static/{name}").status_code == 404, name


def test_script_never_writes_markup_from_data():
    # everything from an escalation is set with textContent / attributes; these APIs would parse
    # strings as HTML
    source = (STATIC / "escalation.js").read_text() + (STATIC / "theme.js").read_text()
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        'setTimeout("',
        "javascript:",
    ):
        assert sink not in source, sink


def test_me_says_who_may_act(svc):
    admin = svc.client.get("/api/v1/me", headers=svc.headers("admin"))
    assert admin.status_code == 200
    assert admin.json() == {"username": "admin", "can_act": True, "dag_id": None, "can_edit_policies": True}
    viewer = svc.client.get("/api/v1/me?dag_id=etl", headers=svc.headers("viewer"))
    assert viewer.json() == {"username": "viewer", "can_act": False, "dag_id": "etl", "can_edit_policies": False}
    assert svc.client.get("/api/v1/me").status_code == 401
    assert svc.client.get("/api/v1/me?dag_id=" + "d" * 300, headers=svc.headers("admin")).status_code == 422
    assert "/api/v1/me" in svc.client.get("/openapi.json").json()["paths"]


def test_external_views_pass_airflows_validation():
    """A view the UI's model refuses drops the whole plugin from the UI: validate like Airflow."""
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse

    views = [ExternalViewResponse.model_validate(v) for v in EscalationPlugin.external_views]
    assert [(v.destination, v.url_route) for v in views] == [
        ("nav", "escalations"),
        ("task_instance", "escalation-ti"),
        ("task", "escalation-task"),
        ("dag_run", "escalation-run"),
    ]
    assert views[0].nav_top_level is True and views[0].name == "Escalations"
    ti = views[1].href
    for placeholder in ("{DAG_ID}", "{RUN_ID}", "{TASK_ID}", "{MAP_INDEX}"):
        assert placeholder in ti
    for view in EXTERNAL_VIEWS:  # relative: resolved against the UI's <base href>
        assert not view["href"].startswith("/") and view["href"].startswith("escalation/ui/")
        assert (STATIC / Path(view["icon"]).name).exists() and (STATIC / Path(view["icon_dark_mode"]).name).exists()


def test_plugin_info_validates_as_the_plugins_endpoint_does():
    from airflow import plugins_manager
    from airflow.api_fastapi.core_api.datamodels.plugins import PluginResponse

    info = [p for p in plugins_manager.get_plugin_info() if p["name"] == "escalation"]
    if not info:
        pytest.skip("the escalation plugin is not loaded in this environment")
    plugin = PluginResponse.model_validate(info[0])
    assert {v.url_route for v in plugin.external_views} >= {"escalations", "escalation-ti"}


@pytest.mark.parametrize("path", ["/ui/", "/ui/ti?dag_id=etl"])
def test_pages_embed_the_servers_state_table_and_the_script_keeps_no_copy(svc, path):
    import html
    import json

    from airflow_escalation.core.states import can, state_table
    from airflow_escalation.core.types import STATE_VALUES

    page = svc.client.get(path, headers=svc.headers("viewer"))
    embedded = json.loads(html.unescape(re.search(r'data-states="([^"]*)"', page.text).group(1)))
    assert embedded == state_table()
    for state in STATE_VALUES:
        for action in ("acknowledge", "resolve", "cancel", "escalate"):
            assert (action in embedded["actions"][state]) == can(action, state)
    script = (STATIC / "escalation.js").read_text()
    # the script reads the table; it spells out no list of states of its own
    assert "data.states" in script
    assert not re.search(r'\[\s*"(pending|active|escalating|resolved|cancelled|timed_out|failed)"\s*,', script)
