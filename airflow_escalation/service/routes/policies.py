"""``/policies``: the registered policies, and validation of policy definitions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse

from airflow_escalation.runtime.engine import EscalationEngine
from airflow_escalation.core import bounds
from airflow_escalation.runtime.policy_config import EscalationPolicyConfig, parse_yaml
from airflow_escalation.core.models import EscalationPolicy
from airflow_escalation.service.auth import require_read
from airflow_escalation.service.deps import get_engine
from airflow_escalation.service.schemas import Detail, Policy, PolicyList, ValidateRequest, ValidationReport

router = APIRouter(prefix="/policies", tags=["policies"], dependencies=[Depends(require_read)])

_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Detail, "description": "not authenticated"},
    403: {"model": Detail, "description": "invalid token, or not allowed"},
    503: {"model": Detail, "description": "the escalation service is not running"},
}


@router.get("", response_model=PolicyList, responses=_AUTH_RESPONSES, summary="Registered policies")
async def list_policies(engine: EscalationEngine = Depends(get_engine)) -> PolicyList:
    return PolicyList(policies=[Policy.model_validate(p.to_dict()) for p in engine.policies.values()])


@router.get(
    "/{name}",
    response_model=Policy,
    responses={**_AUTH_RESPONSES, 404: {"model": Detail, "description": "no such policy"}},
    summary="One registered policy",
)
async def get_policy(name: str = Path(...), engine: EscalationEngine = Depends(get_engine)) -> Any:
    policy = engine.get_policy(name)
    if policy is None:
        return JSONResponse({"detail": f"policy {name!r} is not registered"}, status_code=404)
    return Policy.model_validate(policy.to_dict())


def _validate_mapping(data: Any, warnings: list[str]) -> list[str]:
    """Policy names defined by ``data``: one policy, a list of them, or a policies config (whose
    failure routes are checked too; their warnings go to ``warnings``)."""
    if isinstance(data, list):
        if len(data) > bounds.MAX_POLICIES:
            raise ValueError(f"at most {bounds.MAX_POLICIES} policies, got {len(data)}")
        names = []
        for index, item in enumerate(data):
            try:
                names.append(EscalationPolicy.from_dict(item).name)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise ValueError(f"[{index}]: {exc}") from None
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate policy name(s) {duplicates}")
        return names
    if not isinstance(data, dict):
        raise ValueError(f"expected a mapping or a list of policies, got {type(data).__name__}")
    if "escalation" in data or "policies" in data or "routes" in data:
        from airflow_escalation.detection.routes import config_routes

        config = EscalationPolicyConfig.from_dict(data)
        warnings.extend(config_routes(config).warnings)
        return list(config.policies)
    return [EscalationPolicy.from_dict(data).name]


@router.post(
    "/validate",
    response_model=ValidationReport,
    responses={
        **_AUTH_RESPONSES,
        422: {
            "description": "neither or both of policy and yaml, "
            "or yaml that cannot be read (syntax, aliases, size, "
            "nesting)"
        },
    },
    summary="Validate a policy (a mapping) or YAML text without registering anything",
)
async def validate_policies(body: ValidateRequest) -> Any:
    errors: list[str] = []
    names: list[str] = []
    warnings: list[str] = []
    if body.yaml is not None:
        try:
            data = parse_yaml(body.yaml)  # aliases refused, size and depth bounded
        except ValueError as exc:
            # unreadable text is a refused request (a 4xx, like any invalid body); a definition
            # that reads but is not a valid policy is the report's valid: false
            return JSONResponse(
                status_code=422,
                content={"detail": [{"type": "value_error", "loc": ["body", "yaml"], "msg": bounds.truncate(exc)}]},
            )
    else:
        data = body.policy
    try:
        names = _validate_mapping(data, warnings)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        errors.append(bounds.truncate(exc))
    return ValidationReport(
        valid=not errors,
        errors=errors,
        policies=names if not errors else [],
        warnings=[bounds.truncate(w) for w in warnings] if not errors else [],
    )
