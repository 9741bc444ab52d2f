"""core/policy_doc.py and service/policy_validation.py: what a policies edit is checked against,
what it changed, and the timeline a policy produces (the planner's own steps)."""

from __future__ import annotations

from airflow_escalation.core.models import EscalationPolicy
from airflow_escalation.core.policy_doc import (
    changes,
    policy_errors_of,
    preview,
    preview_text,
    with_policy,
    without_policy,
)
from airflow_escalation.service.policy_validation import validate_document

from core_support import seed_policy


def test_the_seed_policy_previews_as_the_spec_says():
    steps = preview(seed_policy())
    assert preview_text(steps) == "L1 at 0, 5, 10 min; L2 at 15; L3 at 45"
    assert [(s.minute, s.level, s.action) for s in steps] == [
        (0, 1, "start"),
        (5, 1, "repeat"),
        (10, 1, "repeat"),
        (15, 2, "escalate"),
        (45, 3, "escalate"),
    ]
    assert steps[3].targets == ["Engineering Manager", "Primary On-call"]


def test_preview_follows_the_policy_options():
    def policy(**extra):
        return EscalationPolicy.from_dict(
            {
                "name": "p",
                "levels": [
                    {"level": 1, "delay_minutes": 2, "targets": ["a"]},
                    {"level": 2, "delay_minutes": 30, "targets": ["b"], "auto_resolve_minutes": 30},
                    {"level": 3, "delay_minutes": 45, "targets": ["c"]},
                ],
                **extra,
            }
        )

    # level 2 resolves itself (at 32 + 30) before level 3 is due (at 32 + 45)
    assert preview_text(preview(policy())) == "L1 at 2 min; L2 at 32; auto-resolve at 62"
    # counted from the trigger, level 3 (at 45) comes first
    assert preview_text(preview(policy(delay_basis="trigger"))) == "L1 at 2 min; L2 at 30; L3 at 45"
    assert preview_text(preview(policy(delay_basis="trigger", max_escalations=1))) == (
        "L1 at 2 min; L2 at 30; times out at 45"
    )
    assert preview_text(preview(policy(timeout_minutes=20, delay_basis="trigger"))) == (
        "L1 at 2 min; L2 at 30; L3 at 45; times out at 65"
    )
    endless = EscalationPolicy.from_dict(
        {"name": "e", "levels": [{"level": 1, "targets": ["a"], "repeat_count": 500, "repeat_interval_minutes": 1}]}
    )
    assert len(preview(endless)) == 60  # bounded


def test_every_error_of_a_document_is_named():
    config, errors = validate_document(
        {
            "max_concurrent_escalations": 0,
            "default_policy": "zz",
            "policies": [
                {"name": "a", "levels": [{"level": 1, "delay_minutes": -1}, {"level": "x"}]},
                {"name": "a", "levels": [{"level": 1}], "bogus": 1},
                {"levels": []},
            ],
        }
    )
    assert config is None
    assert errors == [
        "max_concurrent_escalations: must be >= 1, got 0",
        "policies[0] (a): levels[0]: levels[level=1].delay_minutes: must be >= 0, got -1",
        "policies[0] (a): levels[1]: levels[level='x'].level: expected a number, got 'x'",
        "policies[1] (a): duplicate policy name 'a'",
        "policies[1] (a): policy 'a': unknown field(s) 'bogus'",
        "policies[2]: policy.name: missing in policy with fields ['levels']",
        "default_policy: 'zz' is not one of the policies ['a']",
    ]
    config, errors = validate_document({"escalation": {"policies": [seed_policy().to_dict()]}})
    assert errors == [] and list(config.policies) == ["production_critical"]
    assert validate_document([1])[1] == ["document: expected a mapping, got list"]
    assert policy_errors_of("x") == ["expected a mapping, got str"]


def test_changes_in_words_and_edits_of_one_policy():
    a = {"name": "a", "levels": [{"level": 1, "targets": ["x"]}]}
    b = {"name": "b", "levels": [{"level": 1, "targets": ["y"]}]}
    doc = {"policies": [a]}
    assert changes(None, doc) == ["policy a added"]
    assert changes(doc, doc) == ["no change"]
    edited = with_policy(doc, {**a, "levels": [{"level": 1, "targets": ["z"]}, {"level": 2, "targets": ["y"]}]})
    assert changes(doc, edited) == ["policy a changed: levels[0].targets, levels[1] added"]
    both = with_policy({**doc, "default_policy": "a"}, b)
    assert [p["name"] for p in both["policies"]] == ["a", "b"]
    assert changes(doc, {**both, "global_enabled": False}) == [
        "default_policy: None \u2192 'a'",
        "global_enabled: None \u2192 False",
        "policy b added",
    ]
    assert without_policy(both, "a") == {"policies": [b]}  # the default goes with it


def test_the_sections_beside_the_escalation_block_are_part_of_the_document():
    from airflow_escalation.core.policy_doc import unwrap

    policy = seed_policy().to_dict()
    file_form = {"escalation": {"policies": [policy]}, "users": [], "routes": []}
    assert unwrap(file_form) == {"policies": [policy], "users": [], "routes": []}
    config, errors = validate_document(file_form)
    assert errors == [] and list(config.policies) == ["production_critical"]

    _, errors = validate_document(
        {
            "escalation": {"policies": [policy]},
            "users": [{"id": "alice"}, {"id": "alice"}],
            "routes": [{"policy": "nope", "kind": ["task_failed"]}],
        }
    )
    assert len(errors) == 2, errors
    assert "alice" in errors[0] and "routes[0]" in errors[1] and "nope" in errors[1]
