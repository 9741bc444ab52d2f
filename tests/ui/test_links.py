"""One-click links: the token functions, and the link pages through the service app in-process.

In-process, Airflow's authentication is replaced by a header naming the user (``admin`` may act,
``viewer`` may only read, no header = not logged in); the real authentication, cookie and
permissions are exercised against a real API server in test_links_server.py and the browser tests.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from airflow_escalation.service import links
from ui_support import API, NOW, ORIGIN, SECRET


# ---------------------------------------------------------------------------------- tokens


def _payload(token: str) -> dict:
    part = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _repack(token: str, **changes: Any) -> str:
    """The token with its payload changed and its (old) signature kept."""
    payload = {**_payload(token), **changes}
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + token.split(".")[1]


def test_token_roundtrip():
    token = links.make_action_token("rec-1", "acknowledge", secret=SECRET, ttl_seconds=600, now=NOW)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token)  # URL-safe as is
    claims = links.verify_action_token(token, secret=SECRET, now=NOW + timedelta(seconds=599))
    assert claims.record_id == "rec-1" and claims.action == "acknowledge"
    assert claims.issued_at == NOW and claims.expires_at == NOW + timedelta(seconds=600)
    assert claims.marker == f"link:{claims.jti}"
    again = links.make_action_token("rec-1", "acknowledge", secret=SECRET, ttl_seconds=600, now=NOW)
    assert links.verify_action_token(again, secret=SECRET, now=NOW).jti != claims.jti  # one id each
    resolve = links.make_action_token("rec-1", "resolve", secret=SECRET, now=NOW)
    assert links.verify_action_token(resolve, secret=SECRET, now=NOW).expires_at == NOW + timedelta(days=1)


def test_token_expires():
    token = links.make_action_token("rec-1", "resolve", secret=SECRET, ttl_seconds=60, now=NOW)
    with pytest.raises(links.ExpiredActionLink) as info:
        links.verify_action_token(token, secret=SECRET, now=NOW + timedelta(seconds=60))
    assert info.value.status == 410
    # a token made long ago with the default clock is expired too
    old = links.make_action_token(
        "rec-1", "resolve", secret=SECRET, ttl_seconds=60, now=datetime.now(timezone.utc) - timedelta(hours=1)
    )
    with pytest.raises(links.ExpiredActionLink):
        links.verify_action_token(old, secret=SECRET)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), id="signature"),
        pytest.param(lambda t: _repack(t, r="rec-2"), id="record-swapped"),
        pytest.param(lambda t: _repack(t, a="res"), id="action-swapped"),
        pytest.param(lambda t: _repack(t, e=_payload(t)["e"] + 86400 * 365), id="expiry-extended"),
        pytest.param(lambda t: t.split(".")[0], id="no-signature"),
        pytest.param(lambda t: t[:20], id="truncated"),
        pytest.param(lambda t: t + "." + t, id="extra-part"),
        pytest.param(lambda t: "<script>alert(1)</script>", id="garbage"),
        pytest.param(lambda t: "a" * 2000 + ".b", id="too-long"),
        pytest.param(
            lambda t: links.make_action_token("rec-1", "acknowledge", secret="another-secret", now=NOW),
            id="other-secret",
        ),
    ],
)
def test_tampered_tokens_are_invalid(mutate):
    token = links.make_action_token("rec-1", "acknowledge", secret=SECRET, now=NOW)
    with pytest.raises(links.InvalidActionLink) as info:
        links.verify_action_token(mutate(token), secret=SECRET, now=NOW)
    assert info.value.status == 400


def test_token_is_bound_to_its_record_and_action():
    token = links.make_action_token("rec-1", "acknowledge", secret=SECRET, now=NOW)
    links.verify_action_token(token, secret=SECRET, now=NOW, record_id="rec-1", action="acknowledge")
    with pytest.raises(links.WrongRecordActionLink) as info:
        links.verify_action_token(token, secret=SECRET, now=NOW, record_id="rec-2")
    assert info.value.status == 409 and "rec-1" in str(info.value)
    with pytest.raises(links.WrongRecordActionLink):
        links.verify_action_token(token, secret=SECRET, now=NOW, action="resolve")


def test_the_signing_key_has_its_own_purpose():
    # the same secret signs Airflow's JWTs: a link signature is an HMAC under a derived key, so
    # it is not an HMAC of the payload under the secret itself
    import hashlib
    import hmac

    token = links.make_action_token("rec-1", "acknowledge", secret=SECRET, now=NOW)
    payload, signature = token.split(".")
    plain = base64.urlsafe_b64encode(hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).digest())
    assert plain.rstrip(b"=").decode() != signature


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"action": "cancel"}, "action"),
        ({"record_id": ""}, "record_id"),
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"ttl_seconds": -5}, "ttl_seconds"),
        ({"now": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"record_id": "x" * 900}, "too long"),
    ],
)
def test_make_action_token_refuses_bad_input(kwargs, message):
    args = {"record_id": "rec-1", "action": "acknowledge", **kwargs}
    with pytest.raises(ValueError, match=message):
        links.make_action_token(args.pop("record_id"), args.pop("action"), secret=SECRET, **args)
    with pytest.raises(links.ActionLinkConfigError):
        links.make_action_token("rec-1", "acknowledge", secret="")


def test_action_url_and_signed_urls():
    assert links.action_url("https://af.example.com/", "tok") == "https://af.example.com/escalation/act/tok"
    assert links.action_url("http://h:8080", "tok") == "http://h:8080/escalation/act/tok"
    urls = links.signed_action_urls("rec-9", base_url="https://af.example.com", secret=SECRET, now=NOW)
    assert set(urls) == {"acknowledge", "resolve"}
    for action, url in urls.items():
        token = url.rsplit("/", 1)[1]
        assert url.startswith("https://af.example.com/escalation/act/")
        assert links.verify_action_token(token, secret=SECRET, now=NOW).action == action


class _Conf:
    def __init__(self, **values: str) -> None:
        self.values = values

    def get(self, section: str, key: str, fallback: Any = None) -> Any:
        return self.values.get(f"{section}.{key}", fallback)


def test_default_link_secret():
    both = _Conf(**{"api_auth.jwt_secret": "jwt", "api.secret_key": "key"})
    assert links.default_link_secret(both) == "jwt"
    assert links.default_link_secret(_Conf(**{"api.secret_key": "key"})) == "key"
    with pytest.raises(links.ActionLinkConfigError, match="jwt_secret"):
        links.default_link_secret(_Conf())


def test_is_used_reads_the_history_note():
    claims = links.verify_action_token(
        links.make_action_token("r", "acknowledge", secret=SECRET, now=NOW), secret=SECRET, now=NOW
    )
    history = [
        {"event": "triggered", "details": {"severity": "high"}},
        {"event": "acknowledge", "actor": "ann", "details": {"note": links.action_note(claims)}},
    ]
    assert links.is_used(history, claims.jti)["actor"] == "ann"
    assert links.is_used(history[:1], claims.jti) is None
    assert links.is_used([{"event": "x", "details": "not a mapping"}, "junk"], claims.jti) is None


# ---------------------------------------------------------------------------------- pages in-process


def _title(response: httpx.Response) -> str:
    match = re.search(r"<h1[^>]*>(.*?)</h1>", response.text, re.S)
    return " ".join(match.group(1).split()) if match else ""


def test_link_valid_once(svc):
    rec = svc.trigger()
    token = svc.token(rec["id"])
    page = svc.open(token)
    assert page.status_code == 200, page.text
    assert _title(page) == "Acknowledge this escalation?"
    assert "inc-1" in page.text and "expires at" in page.text and 'name="record_id"' in page.text
    assert svc.record(rec["id"])["state"] == "active"  # a GET never changes anything
    done = svc.confirm(token)
    assert done.status_code == 200, done.text
    assert _title(done) == "Escalation acknowledged"
    after = svc.record(rec["id"])
    assert after["state"] == "acknowledged" and after["acknowledged_by"] == "admin"
    (ack,) = [h for h in after["history"] if h["event"] == "acknowledge"]
    assert ack["actor"] == "admin" and links.used_marker(_jti(token)) in ack["details"]["note"]
    # replayed: the POST and the GET both refuse it now, naming who used it
    again = svc.confirm(token)
    assert again.status_code == 409 and _title(again) == "This link was already used"
    assert "admin used it" in again.text
    assert svc.open(token).status_code == 409
    assert len([h for h in svc.record(rec["id"])["history"] if h["event"] == "acknowledge"]) == 1


def _jti(token: str) -> str:
    return links.verify_action_token(token, secret=SECRET).jti


def test_link_expired_is_410(svc):
    rec = svc.trigger()
    token = svc.token(rec["id"], ttl_seconds=60, now=datetime.now(timezone.utc) - timedelta(minutes=5))
    for response in (svc.open(token), svc.confirm(token, form={"record_id": rec["id"], "action": "acknowledge"})):
        assert response.status_code == 410 and _title(response) == "This link has expired"
    # expiry is checked before login: nobody logs in to learn a link is dead
    assert svc.open(token, user=None).status_code == 410
    assert svc.record(rec["id"])["state"] == "active"


def test_link_tampered_is_400(svc):
    rec, other = svc.trigger("inc-1"), svc.trigger("inc-2")
    token = svc.token(rec["id"])
    for bad in (
        token[:-3] + "AAA",
        _repack(token, r=other["id"]),
        "not-a-token",
        links.make_action_token(rec["id"], "acknowledge", secret="someone-elses"),
    ):
        page = svc.open(bad)
        assert page.status_code == 400 and _title(page) == "This link is not valid", bad
        post = svc.confirm(bad, form={"record_id": other["id"], "action": "acknowledge"})
        assert post.status_code == 400
    assert svc.record(rec["id"])["state"] == svc.record(other["id"])["state"] == "active"


def test_link_for_another_record_or_action_is_409(svc):
    rec, other = svc.trigger("inc-1"), svc.trigger("inc-2")
    token = svc.token(rec["id"])
    # the confirmation form names the record and action the user saw; a token for another
    # record or action is refused, and neither record changes
    wrong = svc.confirm(token, form={"record_id": other["id"], "action": "acknowledge"})
    assert wrong.status_code == 409 and _title(wrong) == "This link is for another escalation or action"
    wrong = svc.confirm(token, form={"record_id": rec["id"], "action": "resolve"})
    assert wrong.status_code == 409
    assert svc.record(rec["id"])["state"] == svc.record(other["id"])["state"] == "active"
    # a link for a record that does not exist (any more)
    assert svc.open(svc.token("f" * 32)).status_code == 404
    incomplete = svc.confirm(token, form={})
    assert incomplete.status_code == 400


def test_link_replayed_after_the_record_reopened(svc):
    rec = svc.trigger()
    token = svc.token(rec["id"])
    assert svc.confirm(token).status_code == 200
    # someone escalates the acknowledged record again (force): it is open to acknowledging...
    r = svc.client.post(f"{API}/escalations/{rec['id']}/escalate", json={"force": True}, headers=svc.headers("admin"))
    assert r.status_code == 200, r.text
    assert svc.record(rec["id"])["state"] in ("active", "escalating")
    # ... but not through the link already used
    assert svc.confirm(token).status_code == 409
    assert svc.open(token).status_code == 409
    assert svc.record(rec["id"])["state"] in ("active", "escalating")
    # a fresh link works
    assert svc.confirm(svc.token(rec["id"])).status_code == 200


def test_link_needs_login(svc):
    rec = svc.trigger()
    token = svc.token(rec["id"])
    browser = "text/html,application/xhtml+xml"
    opened = svc.client.get(f"/act/{token}", headers={"accept": browser}, follow_redirects=False)
    for response in (opened, svc.confirm(token, user=None, accept=browser)):
        assert response.status_code == 303
        location = response.headers["location"]
        assert location.startswith("/api/v2/auth/login?next=")
        assert token in httpx.URL(location).params["next"]  # back to the link after login
    # a caller that is not a browser opening a page gets a status, not a redirect
    for response in (svc.open(token, user=None), svc.confirm(token, user=None)):
        assert response.status_code == 401
    assert svc.record(rec["id"])["state"] == "active"


def test_link_needs_write_permission(svc):
    rec = svc.trigger()
    token = svc.token(rec["id"])
    page = svc.open(token, user="viewer")
    assert page.status_code == 403 and "viewer" in page.text
    assert svc.confirm(token, user="viewer").status_code == 403
    assert svc.record(rec["id"])["state"] == "active"
    # the refusal did not use the link up
    assert svc.confirm(token, user="admin").status_code == 200


def test_link_actions_follow_the_record_state(svc):
    rec = svc.trigger()
    ack, resolve = svc.token(rec["id"]), svc.token(rec["id"], "resolve")
    assert svc.confirm(ack).status_code == 200
    assert svc.open(resolve).status_code == 200  # an acknowledged escalation can be resolved
    done = svc.confirm(resolve)
    assert done.status_code == 200 and _title(done) == "Escalation resolved"
    after = svc.record(rec["id"])
    assert after["state"] == "resolved" and after["resolved_by"] == "admin"
    # an acknowledge link for a resolved escalation: refused by state, not used up
    late = svc.token(rec["id"])
    page = svc.open(late)
    assert page.status_code == 409 and "resolved" in page.text


def test_link_pages_escape_the_context(svc):
    payload = "<script>window.__xss=1</script>"
    rec = svc.trigger("<img src=x onerror=alert(1)>", exception=payload, task_id="<b>t</b>")
    page = svc.open(svc.token(rec["id"]))
    assert page.status_code == 200
    assert payload not in page.text and "<img src=x" not in page.text and "<b>t</b>" not in page.text
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    # the only scripts are the page's own files
    assert re.findall(r"<script[^>]*>", page.text) == [
        re.search(r'<script src="[^"]+theme\.js[^"]*">', page.text).group(0)
    ]


def test_link_pages_headers(svc):
    rec = svc.trigger()
    page = svc.open(svc.token(rec["id"]))
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'self'" in csp and "unsafe-inline" not in csp
    # the token is in the URL: it never leaves this origin (and the form's POST keeps its Origin)
    assert page.headers["referrer-policy"] == "same-origin"
    assert '<meta name="referrer" content="same-origin">' in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-content-type-options"] == "nosniff"


def test_link_cross_site_post_refused(svc):
    rec = svc.trigger()
    token = svc.token(rec["id"])
    # compared with Airflow's base URL, never with the Host header the request chose
    for origin in ("https://evil.example", None, "null", "http://testserver.evil.example", "https://testserver"):
        r = svc.confirm(token, origin=origin)
        assert r.status_code == 403, origin
    r = svc.confirm(token, origin="https://evil.example", host="evil.example")
    assert r.status_code == 403
    assert svc.record(rec["id"])["state"] == "active"
    assert svc.confirm(token, origin="http://testserver").status_code == 200


def test_concurrent_uses_of_one_link_act_once(svc):
    rec = svc.trigger()
    token = svc.token(rec["id"])
    form = {"record_id": rec["id"], "action": "acknowledge"}

    async def race() -> list[int]:
        transport = httpx.ASGITransport(app=svc.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            answers = await _gather(
                *[
                    client.post(f"/act/{token}", data=form, headers={"x-test-user": "admin", "origin": ORIGIN})
                    for _ in range(5)
                ]
            )
        return sorted(a.status_code for a in answers)

    codes = svc.client.portal.call(race)  # in the app's own event loop
    assert codes == [200, 409, 409, 409, 409], codes
    history = svc.record(rec["id"])["history"]
    assert len([h for h in history if h["event"] == "acknowledge"]) == 1


async def _gather(*aws: Any) -> list[Any]:
    import asyncio

    return list(await asyncio.gather(*aws))


def test_links_unconfigured_is_503(svc, monkeypatch):
    svc.app.state.link_secret = None
    monkeypatch.setattr(
        links,
        "default_link_secret",
        lambda conf=None: (_ for _ in ()).throw(links.ActionLinkConfigError("set jwt_secret")),
    )
    page = svc.open("abc.def")
    assert page.status_code == 503 and "set jwt_secret" in page.text
