# syntax=docker/dockerfile:1
# Two images from one file (docker-compose.yml builds both):
#   docker build --target server -t ganscope-server .   API + dashboard; no torch, small, starts fast
#   docker build --target worker -t ganscope-worker .   the trainer, CUDA torch from PyPI's wheels
# PyPI's Linux torch wheels bundle CUDA and cuDNN; the host needs only the NVIDIA driver and
# the container toolkit (compose reserves the GPU).
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GANSCOPE_HOME=/data
WORKDIR /app
# An unprivileged user owning /data: a named volume mounted there starts with this ownership.
RUN useradd --create-home --uid 10001 ganscope && mkdir -p /data && chown ganscope /data
COPY pyproject.toml README.md ./
# Empty package folders let pip read the dependencies before the sources are copied, so the
# (slow) dependency layer is rebuilt only when pyproject.toml changes.
RUN mkdir -p server trainer ganscope templates static

FROM base AS server
# The base dependencies plus the PostgreSQL driver; never the `trainer` extra (torch).
RUN pip install ".[postgres]" && pip uninstall -y ganscope
COPY server server
COPY trainer trainer
COPY ganscope ganscope
COPY templates templates
COPY static static
# A regular install: server/, trainer/, templates/ and static/ land inside the one package `ganscope`.
RUN pip install --no-deps . && cd / && python -c "import ganscope.server.app, sys; assert 'torch' not in sys.modules"
USER ganscope
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# Inside a container the server must listen on all interfaces to be reachable through the
# published port; compose publishes it on the host's loopback only unless told otherwise.
CMD ["ganscope", "serve", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS worker
RUN pip install ".[trainer]" && pip uninstall -y ganscope
COPY server server
COPY trainer trainer
COPY ganscope ganscope
COPY templates templates
COPY static static
RUN pip install --no-deps .
USER ganscope
CMD ["ganscope", "worker", "--server", "http://server:8000", "--device", "auto"]
