"""The policies' revisions on every SQL backend (SQLite, PostgreSQL, MySQL) and in memory: numbered
1, 2, 3, …, newest first, documents kept as written, and saving as a compare-and-swap — of two
writers saving on the same revision, exactly one wins, whatever the timing."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timezone
from typing import Any, Iterator

import pytest
import sqlalchemy as sa

from airflow_escalation.core.policy_doc import PolicyRevision, RevisionConflict
from airflow_escalation.stores.policy_revisions import MemoryPolicyRevisionStore, SQLPolicyRevisionStore

AT = datetime(2026, 12, 2, 9, 30, tzinfo=timezone.utc)
DOC = {"default_policy": "ops", "policies": [{"name": "ops", "levels": [{"level": 1, "targets": ["lead é"]}]}]}


def draft(author: str = "alice", document: dict | None = None, **extra: Any) -> PolicyRevision:
    return PolicyRevision(0, document or DOC, author, AT, **extra)


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def revisions(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryPolicyRevisionStore()
        return
    url = {
        "sqlite": lambda: f"sqlite:///{tmp_path / 'revisions.db'}",
        "postgresql": lambda: request.getfixturevalue("postgres_url"),
        "mysql": lambda: request.getfixturevalue("mysql_url"),
    }[request.param]()
    engine = sa.create_engine(url)
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    store = SQLPolicyRevisionStore(engine, prefix, create_table=True)
    try:
        yield store
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {prefix}policy_revision"))
        engine.dispose()


def test_revisions_are_numbered_kept_and_listed_newest_first(revisions):
    assert revisions.latest_revision() == 0 and revisions.latest() is None and revisions.get(1) is None
    first = revisions.append(0, draft(comment="first", source="import", changes=["policy ops added"]))
    second = revisions.append(1, draft("bob", {"policies": []}, changes=["policy ops removed"]))
    assert (first.revision, second.revision) == (1, 2) and revisions.latest_revision() == 2

    kept = revisions.get(1)
    assert kept.document == DOC and kept.author == "alice" and kept.comment == "first"
    assert kept.source == "import" and kept.changes == ["policy ops added"] and kept.created_at == AT
    assert revisions.latest().author == "bob" and revisions.latest().document == {"policies": []}
    page, total = revisions.history(limit=1)
    assert total == 2 and [r.revision for r in page] == [2]
    assert [r.revision for r in revisions.history(limit=5, offset=1)[0]] == [1]


def test_a_save_on_an_old_revision_is_refused(revisions):
    revisions.append(0, draft())
    with pytest.raises(RevisionConflict) as caught:
        revisions.append(0, draft("bob"))
    assert (caught.value.expected, caught.value.latest) == (0, 1)
    assert revisions.latest_revision() == 1 and revisions.latest().author == "alice"


def test_two_writers_on_one_revision_one_wins(revisions):
    revisions.append(0, draft())
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def save(author: str) -> None:
        start.wait()
        try:
            revisions.append(1, draft(author))
            outcomes.append("saved")
        except RevisionConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=save, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict", "saved"]
    assert revisions.latest_revision() == 2
