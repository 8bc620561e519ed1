# Everyday commands. `just --list` shows them all.

venv := ".venv/bin"

# Install (editable, with the dev tools) into .venv
install:
    python3 -m venv .venv && {{venv}}/pip install -q -e '.[dev]'

# The bridge wired to the built-in fake upstreams, with the example config in config/
run *args:
    {{venv}}/trio-bridge demo --config-dir config {{args}}

# The whole test suite (needs the local Postgres; see README)
test *args:
    {{venv}}/python -m pytest {{args}}

# Lint, format check and the strict type check of trio_bridge/ ([tool.mypy] in pyproject.toml)
lint:
    {{venv}}/ruff check trio_bridge tests bench examples
    {{venv}}/ruff format --check trio_bridge tests bench examples
    {{venv}}/mypy

# Validate a config dir and show the snapshot it would build
check-config dir="config":
    {{venv}}/trio-bridge check-config --config-dir {{dir}}

# Benchmarks: the bridge against direct calls to a mock upstream (see bench/README.md)
bench *args:
    {{venv}}/python bench/run.py {{args}}

# The same benchmarks side by side with LiteLLM's proxy (creates its own venv)
bench-peer *args:
    {{venv}}/python bench/run.py --peer {{args}}
