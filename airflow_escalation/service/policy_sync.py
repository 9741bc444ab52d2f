"""Policies as data in the running service: saving revisions and applying them on every replica.

- **Which wins** (``[escalation] policies_source``): ``database`` (default) — the revisions in
  the database are the truth, edited over REST and in the UI; the policies file only seeds an
  empty database (revision 1, source ``import``) and is ignored afterwards. ``file`` (config as
  code) — the file is imported as a revision at each start when it differs (source ``file``),
  and edits over REST/UI are refused (409), so the file and the running policies never diverge.
- **Every replica** polls the latest revision number every ``policy_refresh_seconds`` (2 s) and
  applies a new one: the engine's registered policies become the document's, the document's
  global settings (``global_enabled``, ``default_policy``, ``max_concurrent_escalations``) apply
  to new triggers, and its other sections -- failure routes, users, schedules, maintenance
  windows -- are built and swapped in at the same moment (``service/live_sections.py``).
  Settings the engine reads once at start (``scheduler_config``, ``check_business_hours``,
  ``retention_days``, ``metrics_enabled``) take effect at the next start.
- **Open records keep their snapshot**: a record runs on the policy it was triggered with (its
  ``policy_snapshot``), whatever revision comes later.
- **A refused edit changes nothing**: a document that fails validation is refused with every
  error named (:class:`PolicyInvalid`), and a save based on a revision that is no longer the
  latest loses (:class:`RevisionConflict`); the current revision stays in force.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any, Optional

from airflow_escalation.runtime.policy_config import EscalationPolicyConfig
from airflow_escalation.core.policy_doc import PolicyRevision, RevisionConflict, changes, unwrap
from airflow_escalation.service import live_sections
from airflow_escalation.service.policy_validation import validate_document

log = logging.getLogger("airflow_escalation.service")

__all__ = ["PolicyEditRefused", "PolicyInvalid", "PolicySync", "RevisionConflict"]


class PolicyInvalid(ValueError):
    """The document fails validation: ``errors`` names each problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class PolicyEditRefused(Exception):
    """Policies are managed as code (``policies_source = file``): edits go through the file."""


class PolicySync:
    """The revisions of one service: save (validate, compare-and-swap, apply), and follow."""

    def __init__(self, revisions: Any, *, source: str = "database", refresh_seconds: float = 2.0) -> None:
        self.revisions = revisions
        self.source = source
        self.refresh_seconds = refresh_seconds
        self.applied = 0  # the revision number in force here (0: none, the start-up config)
        self._service: Any = None
        self._task: Optional[asyncio.Task[None]] = None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ start-up (a thread)
    def bootstrap(self, file_document: Optional[dict[str, Any]], file_name: str = "policies_file") -> None:
        """Bring the policies file in as the source says (blocking: call in a thread)."""
        if file_document is None:
            return
        document = unwrap(file_document)
        latest = self.revisions.latest()
        if latest is None or (self.source == "file" and latest.document != document):
            kind = "file" if self.source == "file" else "import"
            comment = f"from {file_name}" + (" (policies_source = file)" if kind == "file" else " (first start)")
            try:
                self._append(latest, document, "system", comment, kind)
            except RevisionConflict:
                # replicas starting together: another one imported the file first
                log.info("escalation policies: another API server imported %s first", file_name)
        elif self.source == "database" and latest.document != document:
            log.info(
                "escalation policies: %s differs from the database's revision %d, which wins "
                "([escalation] policies_source = database); import it over REST to use it",
                file_name,
                latest.revision,
            )

    def current_config(self) -> Optional[EscalationPolicyConfig]:
        """The latest revision's config (blocking), None when there is none or it no longer
        validates (a revision written by a newer version)."""
        latest = self.revisions.latest()
        if latest is None:
            return None
        config, errors = validate_document(latest.document)
        if errors:
            log.error("escalation policies: revision %d does not validate, not applied: %s", latest.revision, errors)
            return None
        self.applied = latest.revision
        return config

    # ------------------------------------------------------------------ following
    async def start(self, service: Any) -> None:
        self._service = service
        await self.refresh()
        self._task = asyncio.create_task(self._follow(), name="escalation-policy-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping anyway
                pass
            self._task = None

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.refresh()
            except Exception:  # the next round tries again
                log.exception("escalation policies: reading the latest revision failed")

    async def refresh(self) -> bool:
        """Apply the latest revision if it is not the one in force here; True when applied."""
        latest_number = await asyncio.to_thread(self.revisions.latest_revision)
        if latest_number == self.applied:
            return False
        async with self._lock:
            revision = await asyncio.to_thread(self.revisions.latest)
            if revision is None or revision.revision == self.applied:
                return False
            return self._apply(revision)

    def _apply(self, revision: PolicyRevision) -> bool:
        config, errors = validate_document(revision.document)
        if config is None:
            log.error("escalation policies: revision %d does not validate, not applied: %s", revision.revision, errors)
            self.applied = revision.revision  # not again every round
            return False
        service = self._service
        if service is not None:
            # everything new is built first; only then are the references swapped (live_sections.py)
            try:
                sections = live_sections.build(service, config)
            except Exception as exc:  # noqa: BLE001 - the revision in force stays in force
                log.error("escalation policies: revision %d not applied: %s", revision.revision, exc)
                self.applied = revision.revision
                return False
            live_sections.swap(service, config, sections)
        log.info(
            "escalation policies: revision %d applied (%d policies; by %s: %s)",
            revision.revision,
            len(config.policies),
            revision.author,
            "; ".join(revision.changes)[:300],
        )
        self.applied = revision.revision
        return True

    # ------------------------------------------------------------------ editing
    async def save(
        self, document: Any, expected: int, author: str, comment: str = "", source: str = "api"
    ) -> PolicyRevision:
        """Validate ``document`` and save it as revision ``expected + 1``, then apply it here
        (the other replicas follow within ``refresh_seconds``)."""
        if self.source == "file":
            raise PolicyEditRefused(
                "the policies are managed as code ([escalation] policies_source = file): edit the "
                "policies file and restart, or set policies_source = database"
            )
        document = unwrap(document)
        _, errors = validate_document(document)
        if errors:
            raise PolicyInvalid(errors)
        async with self._lock:
            latest = await asyncio.to_thread(self.revisions.latest)
            current = latest.revision if latest is not None else 0
            if expected != current:
                raise RevisionConflict(expected, current)
            saved = await asyncio.to_thread(self._append, latest, document, author, comment, source)
            self._apply(saved)
            return saved

    def _append(
        self, latest: Optional[PolicyRevision], document: dict[str, Any], author: str, comment: str, source: str
    ) -> PolicyRevision:
        engine = getattr(self._service, "engine", None)
        now = engine.clock.now() if engine is not None else datetime.now(timezone.utc)
        draft = PolicyRevision(
            revision=0,
            document=document,
            author=author,
            created_at=now,
            comment=comment,
            source=source,
            changes=changes(latest.document if latest is not None else None, document),
        )
        return self.revisions.append(latest.revision if latest is not None else 0, draft)
