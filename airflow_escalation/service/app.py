"""The escalation service: a FastAPI app the plugin mounts in the Airflow API server.

``create_app()`` only builds the FastAPI object and its routes (cheap: the plugin module is
imported by every Airflow process that loads plugins). The work happens in the app's lifespan,
which the API server enters for mounted plugin apps: it reads ``[escalation]``, opens the store
(the metadata database unless ``store_url`` says otherwise), loads the policies file, builds the
:class:`~airflow_escalation.runtime.engine.EscalationEngine` with an APScheduler (or asyncio) clock,
and starts it; on shutdown it stops the engine and closes the store.

A broken configuration never takes the API server down: the service then answers 503 with the
reason (and ``GET /health`` lists it) while Airflow keeps serving. A policies file that fails to
load leaves the engine running without policies, so escalations already stored (each keeps a
snapshot of its policy) still escalate on time.

The engine lives on ``app.state.engine`` (``app.state.service`` holds the settings and errors).
Targets that name an Airflow connection (``conn_id``) are delivered through that connection's
channel (Slack, SMTP, HTTP, PagerDuty: :mod:`airflow_escalation.service.delivery`,
docs/channels.md). The others go to the notification handler: by default it logs each
notification at INFO and counts it delivered; replace it with
``app.state.engine.set_notification_handler(...)``, or for every engine the service builds with
:func:`add_engine_setup`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Optional

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.responses import JSONResponse

from airflow_escalation import __version__
from airflow_escalation.core import bounds
from airflow_escalation.airflow_config import EscalationConfigError, EscalationSettings, load_settings
from airflow_escalation.runtime.builder import build_engine
from airflow_escalation.runtime.engine import EscalationEngine
from airflow_escalation.runtime.policy_config import EscalationPolicyConfig
from airflow_escalation.service.auth import RecordHidden
from airflow_escalation.service.deps import ServiceUnavailable
from airflow_escalation.service.delivery_log import make_log_handler
from airflow_escalation.stores.base import BaseEscalationStore, StoreError

log = logging.getLogger("airflow_escalation.service")

API_PREFIX = "/api/v1"

_STORE_OPEN_ATTEMPTS = 3
_STORE_OPEN_RETRY_SECONDS = 1.0


EngineSetup = Callable[[EscalationEngine], Any]
_ENGINE_SETUP: list[EngineSetup] = []


def add_engine_setup(setup: EngineSetup) -> EngineSetup:
    """Run ``setup(engine)`` on every engine the service builds, before it starts.

    The place to replace the logging notification handler
    (``engine.set_notification_handler``), add channel resolvers or condition evaluators, from
    any module the API server imports (a plugin, ``airflow_local_settings``). Usable as a
    decorator. A setup that raises is logged and reported by ``/health``; the engine still starts.
    """
    if setup not in _ENGINE_SETUP:
        _ENGINE_SETUP.append(setup)
    return setup


def remove_engine_setup(setup: EngineSetup) -> None:
    if setup in _ENGINE_SETUP:
        _ENGINE_SETUP.remove(setup)


class EscalationService:
    """What the lifespan builds: settings, policy config, store, engine, and any errors."""

    def __init__(
        self,
        settings: Optional[EscalationSettings] = None,
        engine: Optional[EscalationEngine] = None,
        policy_config: Optional[EscalationPolicyConfig] = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.policy_config = policy_config or EscalationPolicyConfig()
        self.store: Optional[BaseEscalationStore] = engine.store if engine is not None else None
        self.errors: list[str] = []
        self.disabled = False
        self._owns_store = False
        # channels for targets with a conn_id (service/delivery.py); set when the service builds
        # its engine, None for an injected engine
        self.delivery: Optional[Any] = None
        # the policies' revisions in the database, followed by every replica (policy_sync.py)
        self.policy_sync: Optional[Any] = None
        # failure routes of the policies file and the detector paging through them (detection/)
        self.routes: Any = None
        self.detector: Optional[Any] = None
        # the users directory the Slack route maps members through (service/integrations/directory.py);
        # None: only the Slack connection's slack_users extra
        self.users_directory: Optional[Any] = None

    # ------------------------------------------------------------------ state
    @property
    def status(self) -> str:
        if self.disabled:
            return "disabled"
        if self.engine is None or not self.engine.is_running:
            return "unavailable"
        return "degraded" if self.errors else "ok"

    def require_engine(self) -> EscalationEngine:
        if self.disabled or self.engine is None:
            raise ServiceUnavailable(self.unavailable_reason())
        return self.engine

    def unavailable_reason(self) -> str:
        if self.disabled:
            return "the escalation service is disabled ([escalation] enabled = False)"
        if self.errors:
            return "the escalation service could not start: " + "; ".join(self.errors)
        return "the escalation service is not running"

    def _error(self, message: str) -> None:
        log.error("escalation service: %s", message)
        self.errors.append(message)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Build and start the engine from ``[escalation]``; record (never raise) failures."""
        if self.engine is not None:  # injected (tests, embedding)
            await self._setup_policy_sync(self.engine.store, None)
            await self._start_engine()
            return
        try:
            self.settings = self.settings or load_settings()
        except EscalationConfigError as exc:
            self._error(str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - never take the API server down
            self._error(f"cannot read the [escalation] configuration: {type(exc).__name__}: {exc}")
            return
        settings = self.settings
        if not settings.enabled:
            self.disabled = True
            log.info("escalation service disabled ([escalation] enabled = False)")
            return
        self.policy_config = self._load_policies(settings)
        store = await self._open_store(settings)
        if store is None:
            return
        self.store, self._owns_store = store, True
        await self._setup_policy_sync(store, settings)
        try:
            self.engine = self._build_engine(settings, store)
        except Exception as exc:  # noqa: BLE001
            self._error(f"cannot build the escalation engine: {type(exc).__name__}: {exc}")
            return
        await self._start_engine()

    async def _start_engine(self) -> None:
        assert self.engine is not None
        if self.engine.oncall is None:  # schedules, silences, maintenance windows (docs/oncall.md)
            from airflow_escalation.oncall.runtime import OnCall

            self.engine.set_oncall(OnCall(self.policy_config.oncall, self.engine.store, self.engine.clock))
        for setup in list(_ENGINE_SETUP):
            try:
                outcome = setup(self.engine)
                if asyncio.iscoroutine(outcome):
                    await outcome
            except Exception as exc:  # noqa: BLE001
                self._error(
                    f"engine setup {getattr(setup, '__qualname__', setup)!r} failed: {type(exc).__name__}: {exc}"
                )
        try:
            await self.engine.start()
        except Exception as exc:  # noqa: BLE001 - the clock is running; its sweeps retry
            self._error(
                f"the first sweep of due escalations failed (the interval sweep retries): {type(exc).__name__}: {exc}"
            )
        if self.policy_sync is not None:
            try:
                await self.policy_sync.start(self)
            except Exception as exc:  # noqa: BLE001 - the policies loaded at start stay in force
                self._error(f"cannot follow the policies' revisions: {type(exc).__name__}: {exc}")
        from airflow_escalation.detection.watcher import start_detection

        await start_detection(self)
        log.info(
            "escalation service started: engine %s, store %s, %d policies",
            self.engine.engine_id,
            self.engine.store.name,
            len(self.engine.policies),
        )

    async def stop(self) -> None:
        if self.policy_sync is not None:
            await self.policy_sync.stop()
        if self.detector is not None:
            await self.detector.stop()
        if self.engine is not None:
            try:
                await self.engine.stop()
            except Exception:
                log.exception("escalation engine did not stop cleanly")
        if self._owns_store and self.store is not None:
            try:
                await asyncio.to_thread(self.store.close)
            except Exception:
                log.exception("escalation store did not close cleanly")

    # ------------------------------------------------------------------ building
    def _load_policies(self, settings: EscalationSettings) -> EscalationPolicyConfig:
        if not settings.policies_file:
            log.info("escalation service: no [escalation] policies_file; triggers need an inline policy")
            return EscalationPolicyConfig()
        path = Path(settings.policies_file).expanduser()
        try:
            config = EscalationPolicyConfig.from_yaml(path)
        except FileNotFoundError:
            self._error(f"[escalation] policies_file: file not found: {str(path)!r}")
            return EscalationPolicyConfig()
        except Exception as exc:  # noqa: BLE001 - YAML errors, ValueError naming the field
            self._error(f"[escalation] policies_file {str(path)!r}: {exc}")
            return EscalationPolicyConfig()
        if config.store_type != "memory" or config.store_config:
            log.info(
                "escalation service: the policies file's store section (%s) is ignored; "
                "escalations are stored at [escalation] store_url (default: the metadata "
                "database)",
                config.store_type,
            )
        return config

    async def _setup_policy_sync(self, store: Any, settings: Optional[EscalationSettings]) -> None:
        """The policies' revisions beside the store (docs/policies.md): bring in the policies file
        as ``[escalation] policies_source`` says, then take the latest revision's config."""
        from airflow_escalation.service.policy_sync import PolicySync
        from airflow_escalation.stores.policy_revisions import MemoryPolicyRevisionStore, SQLPolicyRevisionStore

        try:
            if hasattr(store, "tables") and hasattr(store, "engine"):  # an SQL store
                # in the metadata database `airflow db migrate` made the table (migration 0002)
                create = settings is None or not settings.uses_metadata_db
                revisions: Any = await asyncio.to_thread(SQLPolicyRevisionStore.beside, store, create)
            else:
                revisions = MemoryPolicyRevisionStore()
            sync = PolicySync(
                revisions,
                source=settings.policies_source if settings else "database",
                refresh_seconds=settings.policy_refresh_seconds if settings else 2.0,
            )
            file_document = self._file_document(settings)
            if file_document is not None:
                await asyncio.to_thread(sync.bootstrap, file_document, str(settings.policies_file if settings else ""))
            config = await asyncio.to_thread(sync.current_config)
        except Exception as exc:  # noqa: BLE001 - the policies file alone still works
            self._error(f"policies in the database: {type(exc).__name__}: {exc}; using the policies file only")
            return
        self.policy_sync = sync
        if config is not None:
            self.policy_config = config

    def _file_document(self, settings: Optional[EscalationSettings]) -> Optional[dict[str, Any]]:
        """The policies file as data, when it was read without error at start."""
        if settings is None or not settings.policies_file or not self.policy_config.policies:
            return None
        from airflow_escalation.runtime.policy_config import load_yaml

        try:
            data = load_yaml(Path(settings.policies_file).expanduser())
        except Exception:  # noqa: BLE001 - already reported by _load_policies
            return None
        return data if isinstance(data, dict) else None

    async def _open_store(self, settings: EscalationSettings) -> Optional[BaseEscalationStore]:
        url = settings.effective_store_url
        if not url:
            self._error("no store: [escalation] store_url and [database] sql_alchemy_conn are both empty")
            return None
        where = "the metadata database" if settings.uses_metadata_db else "[escalation] store_url"
        try:
            from airflow_escalation.stores.sql import SQLEscalationStore
        except Exception as exc:  # noqa: BLE001
            self._error(f"cannot load the SQL store: {type(exc).__name__}: {exc}")
            return None
        last: Exception | None = None
        for attempt in range(1, _STORE_OPEN_ATTEMPTS + 1):
            try:
                if settings.uses_metadata_db:
                    # `airflow db migrate` owns these tables (EscalationDBManager): never create
                    # or alter them behind its back
                    store = await asyncio.to_thread(SQLEscalationStore, url=url, create_tables=False)
                    if not await asyncio.to_thread(_tables_migrated, store):
                        store.close()
                        self._error(
                            "the escalation tables in the metadata database are missing or "
                            "not migrated: run `airflow db migrate`"
                        )
                        return None
                    return store
                # a separate database: the store creates its tables (workers may race on that,
                # hence the retries)
                return await asyncio.to_thread(SQLEscalationStore, url=url, create_tables=True)
            except Exception as exc:  # noqa: BLE001
                last = exc
                if attempt < _STORE_OPEN_ATTEMPTS:
                    log.warning(
                        "escalation service: opening the store on %s failed (attempt %d/%d): %s",
                        where,
                        attempt,
                        _STORE_OPEN_ATTEMPTS,
                        exc,
                    )
                    await asyncio.sleep(_STORE_OPEN_RETRY_SECONDS * attempt)
        self._error(f"cannot open the escalation store on {where}: {type(last).__name__}: {last}")
        return None

    def _build_engine(self, settings: EscalationSettings, store: BaseEscalationStore) -> EscalationEngine:
        # the one builder (runtime/builder.py): the [escalation] section owns the store, the
        # scheduler type, its interval and the delivery concurrency; the policies file the rest
        engine = build_engine(
            self.policy_config,
            store=store,
            handler=make_log_handler(settings.base_url),
            scheduler_owned=dict(
                scheduler_type=settings.scheduler,
                check_interval_seconds=settings.check_interval_seconds,
                max_concurrent_jobs=settings.max_concurrent_deliveries,
            ),
            on_error=lambda message: self._error(f"[escalation] policies_file: {message}"),
            # a trigger is answered once written, never held by a slow channel (clients time out
            # after 5 s); the outbox sends at once, and targets_queued says who was paged
            send_before_return=False,
        )
        try:
            from airflow_escalation.service.delivery import install_delivery

            # targets with a conn_id go through their connection's channel (docs/channels.md)
            self.delivery = install_delivery(engine, base_url=settings.base_url)
        except Exception as exc:  # noqa: BLE001 - the log handler still delivers every target
            self._error(f"cannot set up delivery through connections: {type(exc).__name__}: {exc}")
        if self.policy_config.metrics_enabled:
            try:
                from airflow_escalation.service.metrics import install_metrics

                install_metrics(engine, self.delivery)  # Airflow's Stats (docs/metrics.md)
            except Exception as exc:  # noqa: BLE001 - metrics never keep the engine from running
                self._error(f"cannot set up metrics: {type(exc).__name__}: {exc}")
        return engine


def _lifespan_factory(service_factory: Callable[[], EscalationService]):
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = service_factory()
        app.state.service = service
        await service.start()
        app.state.engine = service.engine
        try:
            yield
        finally:
            await service.stop()

    return lifespan


async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
    log.warning("escalation store error on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(status_code=503, content={"detail": str(exc)})


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 without its ``input`` echo: the answer names the field and the problem, in
    a bounded message, and never repeats what was sent (it may be large, or not UTF-8)."""
    errors = [
        {
            "type": error.get("type"),
            "loc": [bounds.truncate(part, 100) if isinstance(part, str) else part for part in error.get("loc", ())][
                : bounds.MAX_DEPTH
            ],
            "msg": bounds.truncate(error.get("msg", "")),
        }
        for error in exc.errors()[:20]
    ]
    return JSONResponse(status_code=422, content={"detail": bounds.scrub(errors)})


async def _http_error(request: Request, exc: StarletteHTTPException) -> Any:
    """Starlette's answers, made to match the schema: a body that is not JSON at all (not even
    UTF-8) is a 422 like any other invalid body, not a 400; a 405 lists every method of the path
    (Starlette names only those of the first route that matched it)."""
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        return JSONResponse(
            status_code=422,
            content={"detail": [{"type": "json_invalid", "loc": ["body"], "msg": "the body is not valid JSON"}]},
        )
    if exc.status_code == 405:
        from starlette.routing import Match

        # routes of this path; a literal path (/policies/validate) wins over a template that
        # also matches it (/policies/{name}), as the schema documents them
        literal: set[str] = set()
        templated: set[str] = set()
        for route in request.app.router.routes:
            match, child = route.matches({**request.scope, "method": "GET", "path_params": {}})
            methods = getattr(route, "methods", None)
            if match is not Match.NONE and methods:
                (templated if child.get("path_params") else literal).update(methods)
        allowed = literal or templated
        if allowed:
            return JSONResponse(
                status_code=405, content={"detail": exc.detail}, headers={"Allow": ", ".join(sorted(allowed))}
            )
    return await http_exception_handler(request, exc)


async def _unavailable(request: Request, exc: ServiceUnavailable) -> JSONResponse:
    return JSONResponse(status_code=503, content={"detail": str(exc)})


async def _record_hidden(request: Request, exc: Exception) -> JSONResponse:
    """An action on a record that is missing or outside the caller's Dags: the route's own 404."""
    from airflow_escalation.core.models import EscalationResult
    from airflow_escalation.service.routes.escalations import _answer

    assert isinstance(exc, RecordHidden)
    action = request.url.path.rstrip("/").rsplit("/", 1)[-1]
    return _answer(
        EscalationResult.failure_result(None, action, f"escalation {exc.record_id!r} not found", code="not_found")
    )


def _swagger_enabled() -> bool:
    """Follow ``[api] enable_swagger_ui`` like Airflow's own API (the schema stays served)."""
    try:
        from airflow.configuration import conf

        return conf.getboolean("api", "enable_swagger_ui", fallback=True)
    except Exception:  # noqa: BLE001 - outside Airflow
        return True


def create_app(
    *,
    settings: Optional[EscalationSettings] = None,
    engine: Optional[EscalationEngine] = None,
    policy_config: Optional[EscalationPolicyConfig] = None,
) -> FastAPI:
    """The escalation service app; mount it at ``/escalation``.

    By default the lifespan builds everything from ``[escalation]``. ``settings`` replaces the
    configuration; ``engine`` (with ``policy_config``) runs a ready engine instead (tests,
    embedding): the lifespan then only starts and stops it.
    """
    from airflow_escalation.service.routes import (
        escalations,
        failure_routes,
        pagerduty,
        policies,
        policy_revisions,
        slack,
        system,
    )

    app = FastAPI(
        title="Escalation service",
        version=__version__,
        description=(
            "Multi-level notification escalation inside the Airflow API server. Authenticate as for "
            "Airflow's own API (a bearer token from POST /auth/token, or the UI's session). "
            "The service needs the plugins view permission; each escalation belongs to its Dag "
            "(context.dag_id): reading it needs read permission on that Dag, triggering and acting "
            "on it permission to change that Dag's runs (docs/security.md). Contract: docs/api.md."
        ),
        lifespan=_lifespan_factory(lambda: EscalationService(settings, engine, policy_config)),
        docs_url="/docs" if _swagger_enabled() else None,
        redoc_url=None,
        # a path with a stray trailing slash is not found, never redirected: every answer to a
        # path the service does not have is a 4xx (the one redirect, /ui to /ui/, is a route)
        redirect_slashes=False,
    )
    app.add_middleware(BodyLimit)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(ServiceUnavailable, _unavailable)
    app.add_exception_handler(RecordHidden, _record_hidden)
    # policy_revisions before policies: its literal paths (/policies/document) before /policies/{name}
    for module in (escalations, policy_revisions, policies, system, failure_routes, slack, pagerduty):
        app.include_router(module.router, prefix=API_PREFIX)
    from airflow_escalation.service import ui  # pages, one-click links, GET /me (docs/ui.md)

    ui.install(app, API_PREFIX)
    from airflow_escalation.service.routes import oncall  # schedules, silences, overrides (docs/oncall.md)

    app.include_router(oncall.router, prefix=API_PREFIX)
    return app


class BodyLimit:
    """Refuse a request body over ``MAX_BODY_BYTES`` with 413 before anything parses it: by its
    Content-Length, or, without one (chunked), by reading it first (at most the limit)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = bounds.MAX_BODY_BYTES
        length = next((value for name, value in scope.get("headers") or () if name == b"content-length"), None)
        if length is not None:
            if not length.isdigit() or int(length) > limit:
                await _too_large(send)
                return
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > limit:
                await _too_large(send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Callable) -> None:
    body = json.dumps({"detail": f"body: at most {bounds.MAX_BODY_BYTES} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _tables_migrated(store) -> bool:
    from airflow_escalation.stores.airflow_db import current_revision_is_head

    with store.engine.connect() as connection:
        return current_revision_is_head(connection)
