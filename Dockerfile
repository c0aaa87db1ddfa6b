# chat-batcher service image: built with uv, runs as a non-root user.
FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.13 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
# Dependencies first (cached while only the code changes), then the project.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project
COPY service ./service
COPY redis.conf ./
RUN uv sync --locked --no-dev

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app batcher
WORKDIR /app
COPY --from=build --chown=batcher:batcher /app /app
ENV PATH="/app/.venv/bin:$PATH" \
    BATCHER_HOST=0.0.0.0 \
    BATCHER_PORT=8000 \
    BATCHER_LOG_FORMAT=json
USER batcher
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
CMD ["batcher", "serve"]
