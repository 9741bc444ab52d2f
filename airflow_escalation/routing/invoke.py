"""Run one "action" of any supported shape against a context dict.

An action may be:

- a notifier: anything with ``notify(context)`` and/or ``async_notify(context)`` (an Airflow
  ``BaseNotifier`` or a look-alike). ``async_notify`` is awaited when the object really
  implements it; otherwise ``notify`` runs in a worker thread. Objects with Airflow-style
  ``render_template_fields`` have their ``template_fields`` rendered against the context on a
  shallow copy first, so one notifier instance serves many incidents without keeping the first
  incident's rendered text;
- an object with ``execute(context)`` (sync or async; e.g. ``EscalationAction``);
- a plain callable ``(context) -> Any``, sync or async.

Synchronous work runs in a worker thread (``asyncio.to_thread``) so a blocking HTTP call does not
stall the event loop the engine runs on. Nothing here imports Airflow.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
from typing import Any

__all__ = ["action_kind", "action_name", "outcome_failed", "run_action"]

NOTIFIER, EXECUTABLE, CALLABLE = "notifier", "execute", "callable"


def action_kind(action: Any) -> str:
    """``notifier``, ``execute`` or ``callable``; ``TypeError`` for anything else."""
    if callable(getattr(action, "async_notify", None)) or callable(getattr(action, "notify", None)):
        return NOTIFIER
    if callable(getattr(action, "execute", None)):
        return EXECUTABLE
    if callable(action):
        return CALLABLE
    raise TypeError(
        f"action {action!r} is not runnable: expected an object with notify(context) or "
        f"async_notify(context) (e.g. an Airflow BaseNotifier), an object with execute(context), "
        f"or a callable (context) -> Any"
    )


def action_name(action: Any) -> str:
    """A readable name for logs and results."""
    name = getattr(action, "name", None)
    if isinstance(name, str) and name:
        return name
    if inspect.ismethod(action):
        return f"{type(action.__self__).__name__}.{action.__name__}"
    if inspect.isfunction(action) or inspect.isbuiltin(action):
        return getattr(action, "__name__", None) or repr(action)
    return type(action).__name__


def outcome_failed(outcome: Any) -> bool:
    """``False``, or a result object whose ``success`` is ``False``, means the action failed."""
    return outcome is False or getattr(outcome, "success", None) is False


async def run_action(action: Any, context: dict[str, Any], *, sync_in_thread: bool = True) -> Any:
    """Run ``action`` with ``context`` and return what it returned (exceptions propagate)."""
    kind = action_kind(action)
    if kind == NOTIFIER:
        return await _notify(action, context, sync_in_thread)
    fn = action.execute if kind == EXECUTABLE else action
    if _is_async(fn):
        return await fn(context)
    if sync_in_thread:
        outcome = await asyncio.to_thread(fn, context)
    else:
        outcome = fn(context)
    if inspect.isawaitable(outcome):  # a sync wrapper that handed back a coroutine
        outcome = await outcome
    return outcome


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004 - asks whether __call__ itself is async


async def _notify(notifier: Any, context: dict[str, Any], sync_in_thread: bool) -> Any:
    notifier = _rendered(notifier, context)
    if _implements_async_notify(notifier):
        try:
            return await notifier.async_notify(context)
        except NotImplementedError:
            if not callable(getattr(notifier, "notify", None)):
                raise
            # implemented only nominally: fall back to the synchronous path
    if sync_in_thread:
        outcome = await asyncio.to_thread(notifier.notify, context)
    else:
        outcome = notifier.notify(context)
    if inspect.isawaitable(outcome):
        outcome = await outcome
    return outcome


def _implements_async_notify(notifier: Any) -> bool:
    """True unless ``async_notify`` is missing or is Airflow ``BaseNotifier``'s placeholder.

    ``BaseNotifier.async_notify`` exists on every notifier and only raises
    ``NotImplementedError``; a subclass implements it only if a class below ``BaseNotifier`` in the
    MRO defines it. Detected by name so Airflow need not be imported.
    """
    if not callable(getattr(notifier, "async_notify", None)):
        return False
    for klass in type(notifier).__mro__:
        if "async_notify" in vars(klass):
            return not (klass.__name__ == "BaseNotifier" and klass.__module__.startswith("airflow"))
    return True  # set on the instance


def _rendered(notifier: Any, context: dict[str, Any]) -> Any:
    """A shallow copy with ``template_fields`` rendered against ``context`` (Airflow-style).

    Rendering is in place and irreversible in Airflow, hence the copy: the caller's instance
    keeps its templates for the next incident.
    """
    render = getattr(notifier, "render_template_fields", None)
    if not callable(render) or not getattr(notifier, "template_fields", None):
        return notifier
    twin = copy.copy(notifier)
    update = getattr(twin, "_update_context", None)
    if callable(update):
        update(context)
    twin.render_template_fields(context)
    return twin
