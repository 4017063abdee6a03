"""Schemathesis hooks: sign session calls the way a real client does.

The allocation answer is the only place a session's secret appears, so the
hooks remember each secret as it comes back and sign later calls on that
session with it (PROTOCOL.md, "Signing session calls"). Calls on sessions
that were never allocated keep the signature schemathesis generated and
answer `bad_signature` or `session_gone`, both documented.

Signing happens at the last moment, on the prepared request, so the
signature covers the exact path and body bytes that go on the wire. A
case whose signature header schemathesis removed on purpose (to check that
a missing header is refused) is left without one.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import threading
import time
from typing import Any
from urllib.parse import unquote

import requests
import schemathesis

HEADER = "X-Switchboard-Signature"
_secrets: dict[str, str] = {}
_lock = threading.Lock()


def _session_id(path_url: str) -> str | None:
    path = path_url.split("?", 1)[0]
    prefix = "/v1/sessions/"
    if not path.startswith(prefix):
        return None
    return unquote(path[len(prefix):].split("/", 1)[0])


class _Sign(requests.auth.AuthBase):
    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if HEADER not in r.headers:
            return r
        sid = _session_id(r.path_url)
        with _lock:
            secret = _secrets.get(sid) if sid is not None else None
        if secret is None:
            return r
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        t = str(int(time.time() * 1000))
        message = "\n".join([t, r.method or "", r.path_url, hashlib.sha256(body).hexdigest()])
        mac = hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()
        r.headers[HEADER] = f"t={t},v1={mac}"
        return r


_SIGN = _Sign()


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.operation.path.startswith("/v1/sessions/"):
        kwargs["auth"] = _SIGN


# Each partition holds open files in the embedded log for good (a bounded
# handle cache is the integrity issue's work), so streams created by a long
# run would exhaust the descriptor limit. Valid partition counts are kept
# small; invalid ones (0, 1025, wrong types) still go out as generated.
MAX_TEST_PARTITIONS = 8


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    op = context.operation
    if op is None or op.method.upper() != "POST" or op.path != "/v1/streams":
        return body
    if isinstance(body, dict):
        p = body.get("partitions")
        if isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 1024:
            body["partitions"] = min(p, MAX_TEST_PARTITIONS)
    return body


@schemathesis.hook
def map_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> dict[str, Any] | None:
    """Most session calls go to sessions that exist, so that the calls get
    past `session_gone` to the state machines; the rest keep a generated
    id."""
    if not path_parameters or "id" not in path_parameters:
        return path_parameters
    with _lock:
        known = list(_secrets)
    if known and random.random() < 0.8:
        path_parameters["id"] = random.choice(known[-64:])
    return path_parameters


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    if case.operation.method.upper() != "POST" or case.operation.path != "/v1/sessions":
        return
    if response.status_code != 201:
        return
    try:
        answer = response.json()
        session, secret = answer["session"], answer["secret"]
    except (ValueError, KeyError, TypeError):
        return
    with _lock:
        _secrets[session] = secret
