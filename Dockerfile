# trainserve: one image for the API, the workers and the one-shot migration.
# TORCH_INDEX picks the PyTorch build: the CPU wheels by default, a CUDA index for GPU worker images, e.g.
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t trainserve:gpu .
FROM python:3.11-slim AS base

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    TRAINSERVE_HOME=/app/var TRAINSERVE_API_HOST=0.0.0.0

WORKDIR /app
RUN pip install --index-url "$TORCH_INDEX" torch==2.13.0
COPY pyproject.toml README.md alembic.ini ./
COPY service service
COPY workers workers
COPY models models
COPY migrations migrations
RUN pip install ".[mnist]" \
    && useradd --system --uid 10001 --home-dir /app trainserve \
    && mkdir -p /app/var && chown trainserve /app/var

USER 10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"
CMD ["trainserve", "api"]
