# TeleCoder's server (`telecoder serve`, with embedded workers) in a container.
#   docker build -t telecoder . && docker compose up -d      (see compose.yaml, docs/operations.md)
# The sandbox (bubblewrap) makes user namespaces inside the container: run it with
# `--security-opt seccomp=unconfined --security-opt apparmor=unconfined` (compose.yaml does), or
# set TELECODER_RUNTIME=local to run agents unconfined (unsafe: flagged by /api/health).
#
# BASE: any Debian-like image with python3 >= 3.11 — the default, or e.g. a plain Debian bookworm
# (its python3 is 3.11; python3-venv is installed when missing). TeleCoder goes into a venv of
# its own (/opt/telecoder/venv), whatever the base's pip layout (no PEP 668 "externally managed").
ARG BASE=python:3.11-slim
FROM ${BASE}

RUN set -eu; \
    extra=""; \
    command -v python3 >/dev/null || extra="python3"; \
    python3 -c 'import ensurepip, venv' 2>/dev/null || extra="$extra python3-venv"; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      bubblewrap git ca-certificates openssh-client $extra; \
    rm -rf /var/lib/apt/lists/*

# A user of its own: TeleCoder never needs root in the container.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin telecoder

WORKDIR /opt/telecoder
COPY pyproject.toml README.md ./
COPY src ./src
RUN python3 -m venv /opt/telecoder/venv \
 && /opt/telecoder/venv/bin/python -m pip install --no-cache-dir --disable-pip-version-check . \
 && rm -rf /root/.cache

USER telecoder
ENV PATH=/opt/telecoder/venv/bin:$PATH \
    TELECODER_HOME=/home/telecoder/.telecoder \
    TELECODER_HOST=0.0.0.0 \
    TELECODER_PORT=7080 \
    PYTHONUNBUFFERED=1
RUN mkdir -m 700 -p /home/telecoder/.telecoder
WORKDIR /home/telecoder
VOLUME ["/home/telecoder/.telecoder"]
EXPOSE 7080

# /api/health answers 200 when the database, the embedded workers and the sandbox are fine.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/opt/telecoder/venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/health' % os.environ.get('TELECODER_PORT', '7080'), timeout=4)"]

# Listening on 0.0.0.0 needs TELECODER_API_TOKEN (serve refuses to start without one).
CMD ["telecoder", "serve"]
