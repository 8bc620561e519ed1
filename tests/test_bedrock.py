"""Anthropic on AWS Bedrock end to end: the official Anthropic SDK through the bridge to a
fake Bedrock endpoint that checks SigV4 signatures with botocore and answers in real
event-stream frames."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import anthropic
import httpx2
import pytest
import trio

from tests.support import RunningBridge, client, start_bridge, write_yaml
from trio_bridge.testing import BedrockError, FakeBedrock, StreamException, Throttled
from trio_bridge.testing.fake_bedrock import ACCESS_KEY, SECRET_KEY

TOKEN = "tb-bedrock-client-token-0123456789abcdefghijkl"
SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU_PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/h4ik0"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
MESSAGE = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 32,
    "messages": [{"role": "user", "content": "hi"}],
}


def config(fake: FakeBedrock, *, credentials: str | None = None, extra: str = "") -> str:
    credentials = (
        f"access_key: {{value: {ACCESS_KEY}}}\n      access_key_secret: {{file: aws/secret}}"
        if credentials is None
        else credentials
    )
    return f"""
bridge: {{auth: tokens, reload: {{debounce: 10ms}}}}
providers:
  - name: claude-bedrock
    type: anthropic
    base_url: {fake.base_url}
    bedrock:
      region: us-east-1
      model: {SONNET}
      small_fast_model: {HAIKU_PROFILE}
      {credentials}
{extra}
clients:
  - id: alice
    token_sha256: {hashlib.sha256(TOKEN.encode()).hexdigest()}
"""


@pytest.fixture
async def fake_bedrock(nursery) -> FakeBedrock:
    fake = FakeBedrock()
    await nursery.start(fake.serve)
    return fake


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    config_dir, secrets = tmp_path / "config", tmp_path / "secrets"
    config_dir.mkdir()
    (secrets / "aws").mkdir(parents=True)
    (secrets / "aws" / "secret").write_text(SECRET_KEY + "\n")
    return config_dir, secrets


@pytest.fixture
async def bridge(nursery, dirs, fake_bedrock) -> RunningBridge:
    config_dir, secrets = dirs
    write_yaml(config_dir, "bridge.yaml", config(fake_bedrock))
    return await start_bridge(nursery, config_dir, secrets_dir=secrets)


def sdk(bridge: RunningBridge) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=bridge.url + "/claude-bedrock", api_key=TOKEN, max_retries=0
    )


async def test_anthropic_sdk_blocking_and_streaming_through_bedrock(bridge, fake_bedrock) -> None:
    betas = "interleaved-thinking-2025-05-14,claude-code-20250219,oauth-2025-04-20"

    def run() -> tuple[anthropic.types.Message, str, anthropic.types.Message]:
        client = sdk(bridge)
        message = client.messages.create(**MESSAGE, extra_headers={"anthropic-beta": betas})
        with client.messages.stream(**MESSAGE) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        return message, text, final

    message, streamed, final = await trio.to_thread.run_sync(run)
    assert message.content[0].text == "Hello from the fake anthropic upstream."
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert streamed and final.stop_reason == "end_turn" and final.usage.output_tokens > 0

    blocking, streaming = fake_bedrock.requests
    assert blocking.signature_ok and streaming.signature_ok
    assert blocking.access_key == ACCESS_KEY
    assert blocking.path == "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
    assert streaming.path.endswith("%3A0/invoke-with-response-stream")
    assert blocking.model_id == streaming.model_id == SONNET
    for request in (blocking, streaming):
        body = request.json
        assert "model" not in body and "stream" not in body
        assert body["anthropic_version"] == "bedrock-2023-05-31"
        assert body["max_tokens"] == 32 and body["messages"] == MESSAGE["messages"]
        assert request.header("x-api-key") is None
        assert request.header("anthropic-version") is None
        assert request.header("authorization").startswith("AWS4-HMAC-SHA256 Credential=AKIA")
    # Only the beta Bedrock accepts went, in the body (Bedrock reads no beta header).
    assert blocking.json["anthropic_beta"] == ["interleaved-thinking-2025-05-14"]
    assert blocking.header("anthropic-beta") is None
    assert "anthropic_beta" not in streaming.json
    assert streaming.header("accept") == "application/vnd.amazon.eventstream"


async def test_usage_from_bedrock_answers_reaches_the_token_metrics(bridge, fake_bedrock) -> None:
    async with client() as c:
        for stream in (False, True):
            r = await c.post(
                f"{bridge.url}/claude-bedrock/v1/messages",
                headers=HEADERS,
                json={**MESSAGE, "stream": stream},
            )
            assert r.status_code == 200
        metrics = (await c.get(bridge.admin + "/metrics")).text
    lines = [
        line
        for line in metrics.splitlines()
        if line.startswith("trio_bridge_tokens_total{") and 'provider="claude-bedrock"' in line
    ]
    output = [line for line in lines if 'type="output"' in line]
    # Two answers of the fake's size: blocking pieces + 4 streamed chunks, each counted.
    assert output and float(output[0].rsplit(" ", 1)[1]) >= 2
    assert any('type="input"' in line for line in lines)


async def test_a_haiku_model_maps_to_small_fast_model_an_encoded_profile_arn(
    bridge, fake_bedrock
) -> None:
    def run() -> str:
        return (
            sdk(bridge).messages.create(**{**MESSAGE, "model": "claude-haiku-4-5"}).content[0].text
        )

    assert await trio.to_thread.run_sync(run)
    request = fake_bedrock.requests[-1]
    assert request.signature_ok
    assert request.model_id == HAIKU_PROFILE
    assert request.path == (
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3A"
        "application-inference-profile%2Fh4ik0/invoke"
    )


async def test_a_wrong_secret_gets_bedrocks_403_in_the_anthropic_shape(
    nursery, dirs, fake_bedrock
) -> None:
    config_dir, secrets = dirs
    (secrets / "aws" / "secret").write_text("not-the-secret-aws-knows\n")
    write_yaml(config_dir, "bridge.yaml", config(fake_bedrock))
    bridge = await start_bridge(nursery, config_dir, secrets_dir=secrets)

    def run() -> anthropic.APIStatusError:
        with pytest.raises(anthropic.PermissionDeniedError) as caught:
            sdk(bridge).messages.create(**MESSAGE)
        return caught.value

    error = await trio.to_thread.run_sync(run)
    assert error.status_code == 403
    assert error.body["type"] == "error"
    assert error.body["error"]["type"] == "authentication_error"
    assert "signature we calculated does not match" in error.body["error"]["message"]
    assert fake_bedrock.requests[-1].signature_ok is False
    assert "not-the-secret" not in error.response.text


async def test_a_mid_stream_exception_frame_ends_the_stream_with_one_error_event(
    bridge, fake_bedrock
) -> None:
    fake_bedrock.behave(StreamException(after_events=3, exception_type="modelStreamErrorException"))
    async with client() as c:
        r = await c.post(
            f"{bridge.url}/claude-bedrock/v1/messages",
            headers=HEADERS,
            json={**MESSAGE, "stream": True},
        )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [e for e in r.content.split(b"\n\n") if e]
    names = [e.split(b"\n", 1)[0] for e in events]
    assert names[:3] == [b"event: message_start", b"event: content_block_start", b"event: ping"]
    assert names[3:] == [b"event: error"]
    assert b"message_stop" not in r.content
    error = json.loads(events[-1].split(b"data: ", 1)[1])
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert "modelStreamErrorException" in error["error"]["message"]

    # The SDK sees the same stream as a failure, never as a finished message.
    fake_bedrock.behave(StreamException(after_events=4, exception_type="throttlingException"))

    def run() -> Exception:
        with pytest.raises(anthropic.APIStatusError) as caught:
            with sdk(bridge).messages.stream(**MESSAGE) as stream:
                for _ in stream.text_stream:
                    pass
        return caught.value

    failure = await trio.to_thread.run_sync(run)
    assert "throttlingException" in str(failure)


async def test_throttling_is_a_key_pool_429_backed_off_then_served(
    socket_clock, nursery, dirs, fake_bedrock
) -> None:
    config_dir, secrets = dirs
    write_yaml(config_dir, "bridge.yaml", config(fake_bedrock))
    bridge = await start_bridge(nursery, config_dir, secrets_dir=secrets)
    fake_bedrock.behave(Throttled())
    url = f"{bridge.url}/claude-bedrock/v1/messages"
    async with client() as c:
        first = await c.post(url, headers=HEADERS, json=MESSAGE)
        assert first.status_code == 429
        assert first.json()["error"]["type"] == "rate_limit_error"
        wait = int(first.headers["retry-after"])  # the pool's cooldown (no Retry-After sent)
        assert wait >= 1
        # The credentials cool down for this model: no upstream call until they recover.
        again = await c.post(url, headers=HEADERS, json=MESSAGE)
        assert again.status_code == 429 and len(fake_bedrock.requests) == 1
        socket_clock.jump(wait + 0.5)
        served = await c.post(url, headers=HEADERS, json=MESSAGE)
    assert served.status_code == 200 and len(fake_bedrock.requests) == 2
    assert fake_bedrock.requests[1].signature_ok
    view = bridge.snapshot.providers["claude-bedrock"].pool.keys[0]
    assert view.hint.startswith("AKIA") and SECRET_KEY not in view.hint


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (
            BedrockError(429, "ModelNotReadyException", "Model is not ready"),
            503,
            "overloaded_error",
        ),
        (BedrockError(503, "ServiceUnavailableException", "busy"), 503, "overloaded_error"),
        (
            BedrockError(400, "ValidationException", "prompt is too long"),
            400,
            "invalid_request_error",
        ),
        (BedrockError(403, "AccessDeniedException", "no model access"), 403, "permission_error"),
    ],
)
async def test_bedrock_errors_arrive_in_the_anthropic_shape(
    bridge, fake_bedrock, error, status, kind
) -> None:
    fake_bedrock.behave(error)
    async with client() as c:
        r = await c.post(f"{bridge.url}/claude-bedrock/v1/messages", headers=HEADERS, json=MESSAGE)
    assert r.status_code == status
    assert r.json() == {"type": "error", "error": {"type": kind, "message": error.message}}


async def test_model_not_ready_counts_as_a_breaker_failure(nursery, dirs, fake_bedrock) -> None:
    config_dir, secrets = dirs
    text = config(fake_bedrock).replace(
        "reload: {debounce: 10ms}",
        "reload: {debounce: 10ms}, circuit_breaker: {enabled: true, failure_threshold: 2}",
    )
    write_yaml(config_dir, "bridge.yaml", text)
    bridge = await start_bridge(nursery, config_dir, secrets_dir=secrets)
    fake_bedrock.behave(*[BedrockError(429, "ModelNotReadyException", "warming up")] * 2)
    async with client() as c:
        url = f"{bridge.url}/claude-bedrock/v1/messages"
        statuses = [
            (await c.post(url, headers=HEADERS, json=MESSAGE)).status_code for _ in range(3)
        ]
    assert statuses[:2] == [503, 503]
    assert statuses[2] == 503 and len(fake_bedrock.requests) == 2  # open: not sent upstream


async def test_count_tokens_and_models_are_not_routed(bridge, fake_bedrock) -> None:
    async with client() as c:
        counted = await c.post(
            f"{bridge.url}/claude-bedrock/v1/messages/count_tokens", headers=HEADERS, json=MESSAGE
        )
        models = await c.get(f"{bridge.url}/claude-bedrock/v1/models", headers=HEADERS)
    assert counted.status_code == 404 and models.status_code == 404
    assert counted.json()["type"] == "error"
    assert fake_bedrock.requests == []


async def test_rotating_the_secret_file_changes_the_signature_on_the_next_request(
    bridge, dirs, fake_bedrock
) -> None:
    _, secrets = dirs
    async with client() as c:
        url = f"{bridge.url}/claude-bedrock/v1/messages"
        assert (await c.post(url, headers=HEADERS, json=MESSAGE)).status_code == 200
        new_secret = "rotated/secret/key/ABCDEFGHIJKLMNOPQRSTUVWXYZ01"
        fake_bedrock.credentials[ACCESS_KEY] = (new_secret, None)  # AWS now knows only this one

        async def rotate() -> None:
            write_yaml(secrets / "aws", "secret", new_secret + "\n")

        assert await bridge.reload_after(rotate) == ("files", True)
        r = await c.post(url, headers=HEADERS, json=MESSAGE)
    assert r.status_code == 200
    old, new = fake_bedrock.requests
    assert old.signature_ok and new.signature_ok and old.signature != new.signature


async def test_snapshot_shows_region_models_and_credential_source_never_a_secret(
    bridge,
) -> None:
    async with client() as c:
        doc = (await c.get(bridge.admin + "/-/snapshot")).json()
    (entry,) = doc["providers"]
    assert entry["status"] == "ok" and entry["type"] == "anthropic"
    assert entry["bedrock"] == {
        "region": "us-east-1",
        "model": SONNET,
        "small_fast_model": HAIKU_PROFILE,
        "credentials": "access_key value, access_key_secret file:aws/secret",
    }
    assert entry["keys"][0]["hint"] != ACCESS_KEY
    assert SECRET_KEY not in json.dumps(doc) and ACCESS_KEY not in json.dumps(doc)


async def test_the_default_chain_supplies_credentials_when_none_are_configured(
    nursery, dirs, fake_bedrock, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    config_dir, secrets = dirs
    write_yaml(config_dir, "bridge.yaml", config(fake_bedrock, credentials=""))
    bridge = await start_bridge(nursery, config_dir, secrets_dir=secrets)
    provider = bridge.snapshot.providers["claude-bedrock"]
    assert provider.status == "ok" and provider.has_keys
    assert provider.dialect.bedrock_info.credentials == "default chain"
    async with client() as c:
        url = f"{bridge.url}/claude-bedrock/v1/messages"
        for _ in range(2):
            assert (await c.post(url, headers=HEADERS, json=MESSAGE)).status_code == 200
    assert [r.signature_ok for r in fake_bedrock.requests] == [True, True]
    assert fake_bedrock.requests[0].access_key == ACCESS_KEY


async def test_a_session_token_is_sent_and_signed(nursery, dirs, fake_bedrock) -> None:
    fake_bedrock.credentials["ASIATEMPORARYKEY0001"] = (SECRET_KEY, "session-token-xyz")
    config_dir, secrets = dirs
    creds = (
        "access_key: {value: ASIATEMPORARYKEY0001}\n"
        "      access_key_secret: {file: aws/secret}\n"
        "      session_token: {value: session-token-xyz}"
    )
    write_yaml(config_dir, "bridge.yaml", config(fake_bedrock, credentials=creds))
    bridge = await start_bridge(nursery, config_dir, secrets_dir=secrets)
    async with client() as c:
        r = await c.post(f"{bridge.url}/claude-bedrock/v1/messages", headers=HEADERS, json=MESSAGE)
    assert r.status_code == 200
    request = fake_bedrock.requests[0]
    assert request.signature_ok and request.header("x-amz-security-token") == "session-token-xyz"
    assert "x-amz-security-token" in request.header("authorization")


async def test_bedrock_is_a_fallback_target_of_the_anthropic_family_shape(bridge) -> None:
    """A Bedrock provider keeps type anthropic: same route table entry and error shape."""
    provider = bridge.snapshot.providers["claude-bedrock"]
    assert provider.type == "anthropic" and provider.dialect.type == "anthropic"
    async with client() as c:
        r = await c.post(
            f"{bridge.url}/claude-bedrock/v1/messages", headers=HEADERS, content=b"not json"
        )
    assert r.status_code == 400 and r.json()["type"] == "error"


async def test_misconfigured_bedrock_providers_build_with_an_error(
    nursery, dirs, fake_bedrock
) -> None:
    config_dir, secrets = dirs
    extra = f"""  - name: half-keys
    type: anthropic
    base_url: {fake_bedrock.base_url}
    bedrock: {{region: us-east-1, model: m, access_key: {{value: AKIAONLYTHEKEY}}}}
  - name: missing-secret
    type: anthropic
    base_url: {fake_bedrock.base_url}
    bedrock:
      region: us-east-1
      model: m
      access_key: {{value: AKIAX}}
      access_key_secret: {{file: aws/absent}}
"""
    write_yaml(config_dir, "bridge.yaml", config(fake_bedrock, extra=extra))
    bridge = await start_bridge(nursery, config_dir, secrets_dir=secrets)
    providers = bridge.snapshot.providers
    assert providers["claude-bedrock"].status == "ok"
    assert providers["half-keys"].status == "error"
    assert "access_key and access_key_secret go together" in providers["half-keys"].error
    assert providers["missing-secret"].status == "error"
    assert "aws/absent" in providers["missing-secret"].error
    async with client() as c:
        r = await c.post(f"{bridge.url}/half-keys/v1/messages", headers=HEADERS, json=MESSAGE)
    assert r.status_code == 503 and "misconfigured" in r.json()["error"]["message"]


async def test_a_bedrock_row_in_the_database_serves(
    nursery, dirs, fake_bedrock, pg_conn, pg_migrated_dsn
) -> None:
    settings = {
        "bedrock": {
            "region": "us-east-1",
            "model": SONNET,
            "access_key": {"value": ACCESS_KEY},
            "access_key_secret": {"value": SECRET_KEY},
        }
    }
    pg_conn.execute(
        "INSERT INTO ai_providers (name, type, base_url, settings) "
        "VALUES ('db-bedrock', 'anthropic', %s, %s::jsonb)",
        (fake_bedrock.base_url, json.dumps(settings)),
    )
    config_dir, secrets = dirs
    write_yaml(
        config_dir,
        "bridge.yaml",
        f"""
bridge: {{auth: tokens}}
clients:
  - id: alice
    token_sha256: {hashlib.sha256(TOKEN.encode()).hexdigest()}
""",
    )
    bridge = await start_bridge(
        nursery, config_dir, secrets_dir=secrets, database_url=pg_migrated_dsn
    )
    with trio.fail_after(10):
        while "db-bedrock" not in bridge.snapshot.providers:
            await bridge.next_swap()
    provider = bridge.snapshot.providers["db-bedrock"]
    assert provider.status == "ok" and provider.source == "database"

    def run() -> str:
        return (
            anthropic.Anthropic(base_url=bridge.url + "/db-bedrock", api_key=TOKEN, max_retries=0)
            .messages.create(**MESSAGE)
            .content[0]
            .text
        )

    assert await trio.to_thread.run_sync(run)
    assert fake_bedrock.requests[-1].signature_ok and fake_bedrock.requests[-1].model_id == SONNET


async def test_byok_sends_the_callers_bedrock_api_key_unsigned(nursery, dirs) -> None:
    fake = FakeBedrock(api_keys={"bedrock-api-key-of-bob"})
    async with trio.open_nursery() as inner:
        await inner.start(fake.serve)
        config_dir, secrets = dirs
        write_yaml(config_dir, "bridge.yaml", config(fake))
        bridge = await start_bridge(inner, config_dir, secrets_dir=secrets)
        async with client() as c:
            r = await c.post(
                f"{bridge.url}/claude-bedrock/v1/messages",
                headers={
                    "X-Trio-Bridge-Token": TOKEN,
                    "Authorization": "Bearer bedrock-api-key-of-bob",
                },
                json=MESSAGE,
            )
        inner.cancel_scope.cancel()
    assert r.status_code == 200
    assert fake.requests[0].header("authorization") == "Bearer bedrock-api-key-of-bob"
    assert fake.requests[0].header("x-amz-date") is None


def test_without_botocore_a_bedrock_provider_builds_with_an_error_naming_the_extra(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    (tmp_path / "p.yaml").write_text(
        "providers:\n  - name: b\n    type: anthropic\n    base_url: https://bedrock.example\n"
        "    bedrock: {region: us-east-1, model: m}\n"
    )
    code = (
        "import sys; sys.modules['botocore'] = None\n"
        "from trio_bridge.cli import main\n"
        f"sys.exit(main(['check-config', '--config-dir', {str(tmp_path)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "trio-bridge[bedrock]" in done.stdout


async def test_anthropic_sdk_errors_are_readable_over_httpx2_too(bridge) -> None:
    """A plain httpx2 client sees the same 404 shape for an unknown Bedrock route."""
    async with httpx2.AsyncClient() as c:
        r = await c.get(f"{bridge.url}/claude-bedrock/v1/models/x", headers=HEADERS)
    assert r.status_code == 404 and r.json()["type"] == "error"
