"""The snapshot build is pure: key references are resolved by the source (in its worker
thread), never by the build; the build creates no upstream client itself."""

from __future__ import annotations

from pathlib import Path

from tests.support import write_yaml
from trio_bridge.merge import merge
from trio_bridge.reload import stage_clients
from trio_bridge.snapshot import (
    Resilience,
    ServedProvider,
    SourceStatus,
    UnservedProvider,
    build_snapshot,
    plan_snapshot,
)
from trio_bridge.sources.files import FileSource
from trio_bridge.upstream import UpstreamClients

PROVIDERS = """\
providers:
  - name: filed
    type: openai
    base_url: http://127.0.0.1:9/v1
    keys: [{file: openai.key}]
  - name: from-env
    type: openai
    base_url: http://127.0.0.1:9/v1
    keys: [{env: TB_TEST_KEY}]
"""


def test_key_references_resolve_at_load_and_the_build_reads_no_file(tmp_path: Path) -> None:
    config, secrets = tmp_path / "config", tmp_path / "secrets"
    config.mkdir()
    secrets.mkdir()
    write_yaml(config, "10-p.yaml", PROVIDERS)
    (secrets / "openai.key").write_text("sk-from-the-file-0001\n")
    source = FileSource(config, secrets, environ={"TB_TEST_KEY": "sk-from-the-env-0002"})
    contents = source.load_sync()
    assert "sk-" not in repr(contents)  # resolved secrets never show in a repr
    (secrets / "openai.key").unlink()  # the build must not need the file any more
    plan = plan_snapshot(merge(None, contents, (SourceStatus("files", None, None),)))
    assert set(plan.upstreams) == {"filed", "from-env"}
    upstreams = UpstreamClients()
    snapshot = build_snapshot(
        plan, stage_clients(plan, upstreams), version=1, resilience=Resilience()
    )
    filed, env = snapshot.providers["filed"], snapshot.providers["from-env"]
    assert isinstance(filed, ServedProvider) and isinstance(env, ServedProvider)
    assert [k.secret for k in filed.pool.keys] == ["sk-from-the-file-0001"]
    assert [k.secret for k in env.pool.keys] == ["sk-from-the-env-0002"]


def test_a_client_that_cannot_be_made_leaves_the_provider_misconfigured(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    write_yaml(config, "10-p.yaml", PROVIDERS.split("  - name: from-env")[0])
    source = FileSource(config, tmp_path, environ={})
    (tmp_path / "openai.key").write_text("sk-from-the-file-0001\n")
    plan = plan_snapshot(merge(None, source.load_sync(), ()))
    snapshot = build_snapshot(plan, {"filed": "bad proxy"}, version=1, resilience=Resilience())
    provider = snapshot.providers["filed"]
    assert isinstance(provider, UnservedProvider)
    assert (provider.status, provider.error) == ("error", "bad proxy")
