"""Request dependencies shared by the routes: the running service and engine, store calls."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from fastapi import Request

if TYPE_CHECKING:
    from airflow_escalation.runtime.engine import EscalationEngine
    from airflow_escalation.service.app import EscalationService


class ServiceUnavailable(Exception):
    """The engine is not running (disabled, or it could not start); the message says why (503)."""


def get_service(request: Request) -> "EscalationService":
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise ServiceUnavailable("the escalation service has not started (its lifespan did not run)")
    return service


def get_engine(request: Request) -> "EscalationEngine":
    return get_service(request).require_engine()


async def run_store(engine: "EscalationEngine", fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a store method without blocking the event loop: the engine's store calls
    (``runtime/store_calls.py``, shared with the engine's own)."""
    return await engine.store_calls(fn, *args, **kwargs)
