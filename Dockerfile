# trainserve: one image for the API, the workers and the migration Job.
#   docker build -t trainserve:0.1.0 .                                         the CPU image
#   docker build --build-arg TORCH_VARIANT=cu128 -t trainserve-cuda:0.1.0 .    GPU workers (CUDA 12.8)
# The base image is pinned by version; torch==2.13.0 comes from PyTorch's index for TORCH_VARIANT, and every
# other Python package from deploy/requirements.lock, pinned with its hashes.
FROM python:3.11.14-slim-bookworm

# cpu, or the CUDA build of PyTorch's index (cu126, cu128, ...) that matches the GPU nodes' driver.
ARG TORCH_VARIANT=cpu
# XDG_CACHE_HOME: on Kubernetes the image is read-only and /tmp is the pod's scratch folder.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    XDG_CACHE_HOME=/tmp/.cache TRAINSERVE_HOME=/app/var TRAINSERVE_API_HOST=0.0.0.0 TRAINSERVE_ENV_FILE=

WORKDIR /app
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" torch==2.13.0
COPY deploy/requirements.lock deploy/requirements.lock
RUN pip install --require-hashes --no-deps -r deploy/requirements.lock
COPY pyproject.toml README.md alembic.ini ./
COPY service service
COPY workers workers
COPY models models
COPY migrations migrations
COPY trainserve_client trainserve_client
RUN pip install --no-deps --no-build-isolation . \
    && useradd --system --uid 10001 --user-group --home-dir /app trainserve \
    && mkdir -p /app/var && chown trainserve:trainserve /app/var

USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"
CMD ["trainserve", "api"]
