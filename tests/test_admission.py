"""Admission, sans-IO: the error table's rows 1-8 in the contract's order (section 5), and
the bridge app serving a request with the snapshot pinned in its ASGI scope."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import trio

from trio_bridge.config.model import BridgeSettings, ClientSpec, KeyRef, ProviderSpec
from trio_bridge.http.admission import (
    Admitted,
    Prepared,
    Refusal,
    RequestHead,
    admit_body,
    admit_head,
)
from trio_bridge.http.app import PINNED_SNAPSHOT, BridgeApp
from trio_bridge.reload import stage_clients
from trio_bridge.snapshot import (
    BuildInputs,
    ProviderInput,
    Resilience,
    ServedProvider,
    Snapshot,
    build_snapshot,
    plan_snapshot,
)
from trio_bridge.state import BridgeState
from trio_bridge.upstream import UpstreamClients

TOKEN = "tb-client-token-1"
BASE = "http://127.0.0.1:9/v1"


def openai(name: str, **fields: Any) -> ProviderSpec:
    keys = fields.pop("keys", [KeyRef(value="sk-test-key-0001")])
    return ProviderSpec(name=name, type="openai", base_url=BASE, keys=keys, **fields)


def snapshot(*specs: ProviderSpec, version: int = 1, **bridge: Any) -> Snapshot:
    inputs = BuildInputs(
        bridge=BridgeSettings(**bridge),
        providers={s.name: ProviderInput(s, "yaml:test.yaml") for s in specs},
        clients=(ClientSpec(id="c1", token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest()),),
        sources=(),
    )
    plan = plan_snapshot(inputs)
    return build_snapshot(
        plan, stage_clients(plan, UpstreamClients()), version=version, resilience=Resilience()
    )


def head(
    path: str = "/p/v1/chat/completions",
    *,
    token: str | None = TOKEN,
    method: str = "POST",
    extra: list[tuple[bytes, bytes]] | None = None,
    query: bytes = b"",
) -> RequestHead:
    headers = list(extra or [])
    if token is not None:
        headers.append((b"x-trio-bridge-token", token.encode()))
    return RequestHead(method, path, query, headers)


def refused(result: Admitted | Refusal | Prepared) -> Refusal:
    assert isinstance(result, Refusal), result
    return result


def test_an_admitted_request_has_a_servable_provider_and_its_route() -> None:
    snap = snapshot(openai("p"))
    admitted = admit_head(head(), snap, inflight=1)
    assert isinstance(admitted, Admitted)
    assert isinstance(admitted.provider, ServedProvider) and admitted.provider.name == "p"
    assert admitted.route.template == "/v1/chat/completions" and admitted.rest.startswith("/v1")
    prepared = admit_body(admitted, b'{"model": "gpt-4o-mini", "messages": []}', [])
    assert isinstance(prepared, Prepared) and prepared.peek is not None
    assert prepared.peek.model == "gpt-4o-mini" and prepared.model_label == "gpt-4o-mini"


def test_rows_apply_in_the_contracts_order() -> None:
    """Each request below fails several rows at once; the earliest row answers."""
    snap = snapshot(openai("p"), openai("off", enabled=False), max_body_bytes=100, max_inflight=2)
    too_big = [(b"content-length", b"101")]
    # 1 beats 2, 3, 5: a body too large, over max_inflight, with no token, for no provider.
    r = refused(admit_head(head("/nope/x", token=None, extra=too_big), snap, inflight=3))
    assert (r.status, r.message) == (413, "request body too large")
    # 2 beats 3: over max_inflight without a token.
    r = refused(admit_head(head(token=None), snap, inflight=3))
    assert (r.status, r.retry_after) == (503, 1)
    # 3 beats 5: no token for an unknown provider.
    r = refused(admit_head(head("/nope/v1/chat/completions", token=None), snap, inflight=1))
    assert r.status == 401 and r.message.endswith(": send a bridge client token")
    # 5: unknown provider, unknown route, unsafe path.
    for path in ("/nope/v1/chat/completions", "/p/v1/nothing-here", "/p/v1/%2e%2e/models"):
        r = refused(admit_head(head(path), snap, inflight=1))
        assert (r.status, r.message) == (404, f"route not supported: POST {path}")
    # 6: a known route of a disabled provider.
    r = refused(admit_head(head("/off/v1/chat/completions"), snap, inflight=1))
    assert (r.status, r.unavailable, r.provider) == (503, "disabled", "off")


def test_byok_is_refused_while_allow_byok_is_false_except_for_copilot() -> None:
    copilot = ProviderSpec(name="cp", type="copilot", base_url="http://127.0.0.1:9")
    snap = snapshot(openai("p"), copilot, allow_byok=False)
    own_key = [(b"authorization", b"Bearer sk-my-own-key-123")]
    r = refused(admit_head(head(extra=own_key), snap, inflight=1))
    assert r.status == 403 and r.caller is not None and r.caller.byok
    # 4 beats 5: BYOK to an unknown provider is a 403 too.
    r = refused(admit_head(head("/nope/v1/x", extra=own_key), snap, inflight=1))
    assert r.status == 403
    assert isinstance(admit_head(head("/cp/chat/completions", extra=own_key), snap, 1), Admitted)


def test_a_provider_that_failed_to_build_is_misconfigured() -> None:
    snap = snapshot(openai("bad", keys=[KeyRef(env="NOT_SET_ANYWHERE")]))
    assert snap.providers["bad"].status == "error"
    r = refused(admit_head(head("/bad/v1/chat/completions"), snap, inflight=1))
    assert (r.status, r.unavailable) == (503, "misconfigured")


def test_body_rows_bad_json_then_copilot_credential_then_no_keys() -> None:
    copilot = ProviderSpec(name="cp", type="copilot", base_url="http://127.0.0.1:9")
    snap = snapshot(openai("p"), openai("nokeys", keys=[]), copilot)
    admitted = admit_head(head(), snap, inflight=1)
    assert isinstance(admitted, Admitted)
    r = refused(admit_body(admitted, b"not json", []))
    assert r.status == 400 and r.provider == "p"
    admitted = admit_head(head("/cp/chat/completions"), snap, inflight=1)
    assert isinstance(admitted, Admitted)
    r = refused(admit_body(admitted, b'{"model": "gpt-4o"}', []))
    assert r.status == 401 and "Copilot token" in r.message and r.model == "gpt-4o"
    admitted = admit_head(head("/nokeys/v1/chat/completions"), snap, inflight=1)
    assert isinstance(admitted, Admitted)
    r = refused(admit_body(admitted, b'{"model": "m"}', []))
    assert r.message == "this provider has no configured key; send your own"


class _Cell:
    def __init__(self, current: Snapshot) -> None:
        self.current = current


async def _call(app: BridgeApp, path: str, scope_extra: dict[str, Any]) -> tuple[int, Any]:
    """One request through the ASGI app (no socket): its status and JSON body."""
    messages: list[dict[str, Any]] = []
    incoming = [{"type": "http.request", "body": b'{"model": "m"}', "more_body": False}]

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"x-trio-bridge-token", TOKEN.encode())],
        "client": ("127.0.0.1", 5000),
        **scope_extra,
    }
    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


async def test_a_request_is_served_with_the_snapshot_pinned_in_its_scope() -> None:
    """The interception tunnel pins the snapshot it started on: a later swap (here, the
    provider switched off) does not change what the tunnel's requests see."""
    pinned = snapshot(openai("p", keys=[]), version=1)
    current = snapshot(openai("p", keys=[], enabled=False), version=2)
    app = BridgeApp(BridgeState(_Cell(current)))
    path = "/p/v1/chat/completions"
    status, body = await _call(app, path, {})
    assert status == 503 and "disabled" in json.dumps(body)
    status, body = await _call(app, path, {PINNED_SNAPSHOT: pinned})
    assert status == 401 and "no configured key" in json.dumps(body)
