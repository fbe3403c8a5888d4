# syntax=docker/dockerfile:1
#
# The scheduler worker image: `scheduler worker` as a non-root user, its web
# view (lookups, /health, /metrics) on port 6066.
#
#   docker build -t kafka-scheduler .
#   docker run --rm -e SCHEDULER_BROKER=kafka://broker:9092 -p 6066:6066 kafka-scheduler
#
# compose.yaml runs it beside Kafka and Redis. Checked, without a Docker
# engine, by tests/unit/test_container_files.py.

# One Python base for the builder and the runtime: the wheels built in the one
# must match the interpreter of the other. Pin a digest with
#   --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# The compiled lane's builder (native/ needs Rust 1.85 or later). Bookworm, as
# the Python image: the wheel links against its glibc.
ARG RUST_IMAGE=rust:1.85-slim-bookworm


# -- native: the command path's compiled lane, one abi3 wheel ----------------
FROM ${RUST_IMAGE} AS native

# Bookworm's python3 is 3.11, the version the wheel is for (abi3: 3.11 and later).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /maturin \
 && /maturin/bin/pip install --no-cache-dir "maturin>=1.7,<2"

WORKDIR /native
COPY native/Cargo.toml native/Cargo.lock native/pyproject.toml ./
COPY native/src ./src
RUN /maturin/bin/maturin build --release --locked --interpreter python3 --out /wheels


# -- builder: wheels of the project and of every dependency -----------------
FROM ${PYTHON_IMAGE} AS builder

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src

# Only what the wheel is built from: the metadata (pyproject.toml names
# README.md as the readme) and the package.
COPY pyproject.toml README.md ./
COPY scheduler ./scheduler

# Less the development tools: scheduler/devtools runs a local Kafka broker for
# `scheduler dev`, `scheduler broker` and the tests, never a worker. Dropped
# here, not in .dockerignore, which keeps every file a COPY names.
RUN rm -rf scheduler/devtools

# No compiler here (the lane is compiled in its own stage): every binary
# dependency (rocksdict, aiokafka, pydantic-core, aiohttp, faust-streaming...)
# ships a manylinux wheel for CPython 3.11 on x86_64. On arm64 faust-streaming
# has no wheel; its sdist then builds without its optional Cython speedups
# (pure Python, same behaviour).
COPY --from=native /wheels /wheels
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels .


# -- runtime ---------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="kafka-scheduler" \
      org.opencontainers.image.description="A Kafka-native scheduler service: JSON commands in, timed firings out."

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

# The service user, and the table cache it owns. The directory is created
# and chowned before VOLUME: a fresh named volume copies its owner from it.
RUN groupadd --system --gid 10001 scheduler \
 && useradd --system --uid 10001 --gid scheduler --no-create-home \
        --home-dir /var/lib/scheduler --shell /usr/sbin/nologin scheduler \
 && mkdir -p /var/lib/scheduler \
 && chown scheduler:scheduler /var/lib/scheduler

# Install from the builder's wheels only (--no-index): what was built is what
# runs. The bind mount keeps the wheels out of the image's layers. The
# imports (the Faust app, its tables and views; nothing touches the disk or
# the broker) fail the build, not the first start, if a dependency is missing;
# the last check fails it if the development tools got in after all.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/kafka_scheduler-*.whl \
        /wheels/scheduler_fastlane-*.whl \
 && python -c "import faust, rocksdict, scheduler_fastlane, scheduler.web, scheduler.worker" \
 && scheduler --help > /dev/null \
 && python -c "import importlib.util as u; assert not u.find_spec('scheduler.devtools')"

# SCHEDULER_WEB_HOST=0.0.0.0: bind every interface, or a published port
# reaches nothing. The worker then advertises http://127.0.0.1:6066 to its
# peers, which is right for one worker per network; see compose.yaml for
# several.
ENV SCHEDULER_DATA_DIR=/var/lib/scheduler \
    SCHEDULER_WEB_HOST=0.0.0.0 \
    SCHEDULER_WEB_PORT=6066

WORKDIR /var/lib/scheduler
USER 10001:10001
# Only a cache: a worker with an empty volume recovers its tables from the
# changelog topics.
VOLUME ["/var/lib/scheduler"]
EXPOSE 6066

# Liveness of the web view: any 200 from /health (its JSON "ready" is false
# while tables recover, which can take a while and is not a failure). Tries
# 127.0.0.1, then the container's own address for a worker bound to it.
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, socket, sys, urllib.request\nport = os.environ.get('SCHEDULER_WEB_PORT', '6066')\ndef up(host):\n    try:\n        with urllib.request.urlopen(f'http://{host}:{port}/health', timeout=4) as r:\n            return r.status == 200\n    except OSError:\n        return False\nsys.exit(0 if up('127.0.0.1') or up(socket.gethostname()) else 1)\n"]

# Faust handles SIGTERM (docker stop): it commits offsets and closes tables.
ENTRYPOINT ["scheduler"]
CMD ["worker"]
