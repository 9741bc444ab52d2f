"""Errors raised by the escalation client. No Airflow import."""

from __future__ import annotations

from typing import Any


class EscalationClientError(Exception):
    """Base class of every error the client raises."""


class EscalationServiceUnavailable(EscalationClientError):
    """The service could not be reached, or kept answering 500/502/503/504/429, after every retry.

    ``url`` is the URL that was tried, ``attempts`` how many times, ``status_code`` the last
    HTTP status (``None`` when no answer came back at all) and ``cause`` the last transport error.
    """

    def __init__(
        self,
        url: str,
        *,
        attempts: int,
        status_code: int | None = None,
        cause: BaseException | None = None,
        detail: str | None = None,
    ) -> None:
        self.url = url
        self.attempts = attempts
        self.status_code = status_code
        self.cause = cause
        self.detail = detail
        if status_code is not None:
            why = f"HTTP {status_code}" + (f" ({detail})" if detail else "")
        elif cause is not None:
            why = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        else:
            why = "no answer"
        plural = "s" if attempts != 1 else ""
        super().__init__(f"escalation service unavailable at {url}: {why} after {attempts} attempt{plural}")


class EscalationAPIError(EscalationClientError):
    """The service refused the request: a 4xx status (other than the cases with their own
    class), or a 5xx that a retry cannot fix (501 Not Implemented, 505, ...).

    ``status_code`` is the HTTP status, ``detail`` the service's explanation (FastAPI's
    ``detail``, validation errors flattened to ``"loc: msg"``), ``body`` the decoded answer.
    ``after_retry`` is true when the request had already been sent before (a transient failure
    was retried): a 409 then may mean the first attempt went through.
    """

    def __init__(
        self,
        status_code: int,
        detail: str,
        *,
        method: str = "",
        url: str = "",
        body: Any = None,
        after_retry: bool = False,
    ) -> None:
        self.status_code = status_code
        self.detail = detail
        self.method = method
        self.url = url
        self.body = body
        self.after_retry = after_retry
        where = f" ({method} {url})" if method or url else ""
        super().__init__(f"HTTP {status_code}: {detail}{where}")


class EscalationNotFound(EscalationAPIError):
    """404: unknown escalation record or policy."""


class EscalationConflict(EscalationAPIError):
    """409: the transition is not allowed in the record's current state."""


class EscalationAuthError(EscalationAPIError):
    """401/403: missing, expired or rejected credentials, or not enough permission."""


__all__ = [
    "EscalationAPIError",
    "EscalationAuthError",
    "EscalationClientError",
    "EscalationConflict",
    "EscalationNotFound",
    "EscalationServiceUnavailable",
]
