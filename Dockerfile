# syntax=docker/dockerfile:1
# trio-bridge: the daemon (`trio-bridge serve`) on 0.0.0.0:8080, admin on 0.0.0.0:9090.
# Build: docker build -t trio-bridge .   Walkthrough: docs/operations.md, "Deploying".
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtualenv with the package and its dependencies (binary wheels only) --------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY trio_bridge ./trio_bridge
# --only-binary: the final image needs no compiler, and neither does this stage.
RUN python -m venv /opt/trio-bridge \
    && /opt/trio-bridge/bin/pip install --no-cache-dir --only-binary=:all: . \
    && /opt/trio-bridge/bin/python -m compileall -q /opt/trio-bridge/lib

# --- runtime: the virtualenv, a default config, a non-root user ---------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="trio-bridge" \
      org.opencontainers.image.description="A trio LLM API gateway" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN useradd --system --no-log-init --uid 10001 --user-group --home-dir /nonexistent \
        --no-create-home --shell /usr/sbin/nologin trio-bridge
COPY --from=build /opt/trio-bridge /opt/trio-bridge
COPY deploy/docker/config/ /etc/trio-bridge/config/
# Every option has a TRIO_BRIDGE_* variable, so arguments given to `docker run` add to
# these defaults instead of replacing them. Nothing is written outside /tmp: the root
# filesystem may be mounted read-only.
ENV PATH=/opt/trio-bridge/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TRIO_BRIDGE_CONFIG_DIR=/etc/trio-bridge/config \
    TRIO_BRIDGE_LISTEN=0.0.0.0:8080 \
    TRIO_BRIDGE_ADMIN_LISTEN=0.0.0.0:9090 \
    TRIO_BRIDGE_LOG_FORMAT=json
USER 10001:10001
WORKDIR /tmp
VOLUME ["/tmp"]
EXPOSE 8080 9090
# No curl in a slim image: the health check is Python, on the port TRIO_BRIDGE_LISTEN names.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('TRIO_BRIDGE_LISTEN', ':8080').rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)"]
ENTRYPOINT ["trio-bridge", "serve"]
