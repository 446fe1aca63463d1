# The gateway image: the package and its locked dependencies, the demo
# manifests as a default, run as an unprivileged user.
#   docker build -t gateway . && docker run -p 8000:8000 gateway
FROM python:3.11-slim

ENV UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    PYTHONUNBUFFERED=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000 \
    PATH=/app/.venv/bin:$PATH

# tini is PID 1: it reaps every orphan. The sandbox's call processes are reparented to
# PID 1 when their zygote dies (an action may kill it), and the gateway reaps only its
# own children: as PID 1 it would collect those zombies until the container restarts.
RUN apt-get update && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* && pip install --no-cache-dir uv

WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY gateway ./gateway
COPY schemas ./schemas
COPY manifests ./manifests
COPY actions ./actions
RUN uv sync --frozen --no-dev && mkdir -p /app/var

# The server and its sandboxed actions run as this unprivileged uid (numeric, so
# Kubernetes' runAsNonRoot can verify it). `network: false` actions need the
# container's seccomp profile to allow user + network namespaces: run with
# deploy/seccomp.json (docker-compose.yml does), e.g.
#   docker run --security-opt seccomp=deploy/seccomp.json --security-opt apparmor=unconfined ...
# and check with `gateway doctor` (network_namespace yes).
RUN useradd --system --uid 10001 --home /app gateway && chown -R gateway /app/var
USER 10001

EXPOSE 8000
# Probes the port the server listens on, also when `docker run -e GATEWAY_PORT=...` moves it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s CMD python -c "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('GATEWAY_PORT', '8000'), timeout=2)" || exit 1
# tini passes SIGTERM/SIGINT on to the gateway (which drains, then exits 0) and exits
# with its status.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["/app/.venv/bin/gateway", "serve"]
