"""The escalation UI: pages Airflow embeds (plugin ``external_views``) and one-click link pages.

- ``/escalation/ui/`` the Escalations page (nav entry), ``/escalation/ui/records/{id}`` one
  escalation with its timeline, ``/escalation/ui/ti?dag_id=&run_id=&task_id=&map_index=`` the
  tab on task-instance, task and Dag-run pages; ``/escalation/ui/static/...`` their CSS/JS.
- ``/escalation/act/{token}`` one-click acknowledge/resolve links (``service/links.py``).
- ``/escalation/api/v1/me`` who the caller is and whether they may act (the pages' buttons).

Pages are server-rendered shells (Jinja2, autoescaped) whose small script reads the REST API
with the user's own session (the ``_token`` cookie) and calls its action routes, so Airflow's
auth manager decides who may do what. Every response carries a strict Content-Security-Policy
(no inline script, no third-party origin). See docs/ui.md.
"""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI, api_prefix: str) -> None:
    """Add the UI pages, the link pages and ``GET {api_prefix}/me`` to the service ``app``."""
    from airflow_escalation.service.ui import act, api, pages
    from airflow_escalation.service.ui.render import PageError, PageRedirect, page_redirect

    app.include_router(api.router, prefix=api_prefix)
    app.include_router(pages.router)
    app.include_router(act.router)
    app.add_exception_handler(PageRedirect, page_redirect)
    app.add_exception_handler(PageError, page_redirect)
