from __future__ import annotations

import pytest

from airflow_escalation.routing import (
    ActionRouter,
    AlwaysRule,
    ContextMatchRule,
    NeverRule,
    Route,
    RoutingRule,
    SeverityRule,
)


class Recorder:
    """Collects (name, context) calls for actions of every supported shape."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    def sync(self, name, result=True):
        def action(context):
            self.calls.append((name, context))
            return result

        action.__name__ = name
        return action

    def asynchronous(self, name):
        async def action(context):
            self.calls.append((name, context))
            return name

        action.__name__ = name
        return action


def names(results):
    return [(r.route_name, r.action_name, r.success) for r in results]


@pytest.fixture
def rec():
    return Recorder()


@pytest.fixture
def router(rec):
    return ActionRouter(
        [
            Route("low-prio", AlwaysRule(), [rec.sync("audit")], priority=0),
            Route("critical", SeverityRule("critical"), [rec.sync("page"), rec.asynchronous("slack")], priority=10),
            Route("high", SeverityRule("high"), rec.sync("email"), priority=5),
            Route("never", NeverRule(), [rec.sync("nothing")], priority=99),
        ]
    )


async def test_all_matches_runs_every_matching_route_in_priority_order(router, rec):
    results = await router.route({"severity": "critical"})
    assert names(results) == [
        ("critical", "page", True),
        ("critical", "slack", True),
        ("high", "email", True),
        ("low-prio", "audit", True),
    ]
    assert results[1].result == "slack"
    assert [n for n, _ in rec.calls] == ["page", "slack", "email", "audit"]


async def test_all_matches_skips_routes_that_do_not_match(router):
    assert names(await router.route({"severity": "high"})) == [("high", "email", True), ("low-prio", "audit", True)]
    assert names(await router.route({"severity": "low"})) == [("low-prio", "audit", True)]


async def test_first_match_runs_only_the_highest_priority_match(router, rec):
    router.first_match = True
    assert names(await router.route({"severity": "critical"})) == [
        ("critical", "page", True),
        ("critical", "slack", True),
    ]
    assert names(await router.route({"severity": "high"})) == [("high", "email", True)]
    assert names(await router.route({})) == [("low-prio", "audit", True)]


async def test_stop_on_match_ends_evaluation(rec):
    router = ActionRouter(
        [
            Route("a", AlwaysRule(), rec.sync("a"), priority=3),
            Route("b", ContextMatchRule("env", "prod"), rec.sync("b"), priority=2, stop_on_match=True),
            Route("c", AlwaysRule(), rec.sync("c"), priority=1),
        ]
    )
    assert [r.action_name for r in await router.route({"env": "prod"})] == ["a", "b"]
    assert [r.action_name for r in await router.route({"env": "dev"})] == ["a", "c"]


def test_routes_are_ordered_by_priority_then_insertion(rec):
    router = ActionRouter()
    for name, priority in [("x", 1), ("y", 5), ("z", 1), ("w", 5)]:
        router.add_route(Route(name, AlwaysRule(), rec.sync(name), priority=priority))
    assert [r.name for r in router.routes] == ["y", "w", "x", "z"]
    assert [r.name for r in router.match({})] == ["y", "w", "x", "z"]
    with pytest.raises(ValueError, match="route 'x' already exists"):
        router.add_route(Route("x", AlwaysRule(), rec.sync("x")))
    assert router.remove_route("w") is True and router.remove_route("w") is False
    assert router.get_route("y").priority == 5 and router.get_route("w") is None
    assert [r.name for r in router.routes] == ["y", "x", "z"]


async def test_failing_actions_and_rules_become_failed_results(rec):
    class Broken(RoutingRule):
        def evaluate(self, context):
            raise KeyError("severity")

    def explode(context):
        raise ConnectionError("slack is down")

    router = ActionRouter(
        [
            Route("broken", Broken(), rec.sync("never"), priority=2),
            Route("main", AlwaysRule(), [explode, rec.sync("refuses", result=False), rec.sync("after")], priority=1),
        ]
    )
    results = await router.route({})
    assert [(r.route_name, r.success) for r in results] == [
        ("broken", False),
        ("main", False),
        ("main", False),
        ("main", True),
    ]
    assert "rule raised KeyError" in results[0].error
    assert results[1].error == "ConnectionError: slack is down"
    assert results[2].error == "action refuses reported failure"
    assert [n for n, _ in rec.calls] == ["refuses", "after"]


async def test_every_action_shape_runs_with_a_copy_of_the_context():
    seen = []

    class Notifier:  # duck-typed Airflow BaseNotifier
        def notify(self, context):
            seen.append(("notify", context["severity"]))
            context["mutated"] = True

    class AsyncNotifier:
        async def async_notify(self, context):
            seen.append(("async_notify", context["severity"]))

    class Executable:
        name = "exec-action"

        async def execute(self, context):
            seen.append(("execute", context["severity"]))
            return {"ok": True}

    router = ActionRouter([Route("all", AlwaysRule(), [Notifier(), AsyncNotifier(), Executable()])])
    context = {"severity": "high"}
    results = await router.route(context)
    assert seen == [("notify", "high"), ("async_notify", "high"), ("execute", "high")]
    assert [r.action_name for r in results] == ["Notifier", "AsyncNotifier", "exec-action"]
    assert results[2].result == {"ok": True}
    assert context == {"severity": "high"}


def test_route_validation(rec):
    with pytest.raises(ValueError, match="route.name"):
        Route("", AlwaysRule(), [])
    with pytest.raises(TypeError, match="rule must have evaluate"):
        Route("r", "always", [])
    with pytest.raises(TypeError, match=r"route 'r': actions\[1\]: action 42 is not runnable"):
        Route("r", AlwaysRule(), [rec.sync("ok"), 42])
    with pytest.raises(ValueError, match="priority must be an integer"):
        Route("r", AlwaysRule(), [], priority="high")
    with pytest.raises(TypeError, match="expected a Route"):
        ActionRouter().add_route("r")
