"""One settings object for every process (API, worker, CLI), read from ``TRAINSERVE_*`` variables.

The defaults run everything from ``./var`` with no server (SQLite, kombu's filesystem transport, a local
artifact folder); pointing the three URLs at PostgreSQL, Redis and Blob storage runs the real stack.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def env_file() -> str | None:
    """The dotenv file settings are read from: TRAINSERVE_ENV_FILE, ``.env`` by default; empty: none."""
    return os.environ.get("TRAINSERVE_ENV_FILE", ".env") or None


RATE = r"^(|0|\d+/(second|minute|hour)s?)$"  # service/http/ratelimit.py reads it


def listens_on_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def secrets_dir() -> str | None:
    """A folder of secret files, one a setting, named like its variable (``trainserve_broker_url``): on
    AKS the Key Vault secrets the Secrets Store CSI driver mounts. TRAINSERVE_SECRETS_DIR; unset: none."""
    return os.environ.get("TRAINSERVE_SECRETS_DIR") or None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINSERVE_", env_file=env_file(), secrets_dir=secrets_dir(),
                                      extra="ignore")

    home: Path = Field(Path("var"), description="Folder for the embedded database, broker and artifacts.")
    database_url: str = ""
    database_auth: Literal["password", "entra"] = Field(
        "password", description="entra: log in to Azure Database for PostgreSQL with the pod's workload "
                                "identity (a Microsoft Entra token), no password in the URL.")
    broker_url: str = ""
    artifacts_url: str = ""
    azure_storage_connection_string: SecretStr | None = Field(
        None, description="For TRAINSERVE_ARTIFACTS_URL=azure://<container> (Azurite, an account key).")
    queue: str = Field("trainserve", description="The training queue CPU workers take; GPU jobs go to "
                                                 "<queue>-gpu, exports to <queue>-exports.")
    gpu_workers: bool | None = Field(None, description="Whether GPU workers take <queue>-gpu: jobs with device "
                                     "cuda are accepted and auto jobs go there. Unset: whether this machine "
                                     "has a CUDA device.")

    auth: Literal["auto", "required", "off"] = Field(
        "auto", description="API keys: required, off, or auto: required unless the API listens on loopback only.")
    auth_cache_seconds: float = Field(5.0, ge=0, description="How long an API process trusts a key it has looked "
                                                             "up; a revoked key is refused after at most this.")
    rate_limit_inference: str = Field("6000/minute", pattern=RATE, description="Requests to /predict, /forecast "
                                      "and /v2 inference per API key, shared by all API processes; empty: none.")
    rate_limit_jobs: str = Field("60/minute", pattern=RATE, description="Job submissions per API key; empty: none.")
    max_queued_jobs_per_key: int = Field(100, ge=0, description="Jobs one API key may have queued at once; 0: "
                                                                "no cap.")
    metrics: bool = Field(True, description="Count and time requests for Prometheus at /metrics "
                                            "(docs/observability.md).")
    log_format: Literal["text", "json"] = Field("text", description="Log lines as plain text, or as JSON with "
                                                                    "request_id, job_id, trace_id and key_id.")
    trace_inference_share: float = Field(0.01, ge=0, le=1, description="Share of inference requests traced when "
                                         "tracing is on (OTEL_EXPORTER_OTLP_ENDPOINT); other requests are all "
                                         "traced.")
    api_metrics_port: int = Field(0, ge=0, le=65535, description="A second port where the API serves /metrics "
                                  "without a key, for an in-cluster scraper (deploy/k8s: 9100); 0: none.")
    worker_metrics_port: int = Field(9101, ge=0, le=65535, description="Where a worker serves its Prometheus "
                                     "metrics; 0: nowhere.")
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    grpc_port: int | None = Field(None, ge=1, le=65535, description="Where the API also serves the Open Inference "
                                  "Protocol over gRPC, on api_host (trainserve up and deploy/k8s: 8081); unset: no "
                                  "gRPC.")
    access_log: bool = Field(True, description="Log every request (uvicorn's access log).")
    api_workers: int = Field(1, ge=1, le=64, description="API processes on the one listening socket (trainserve api "
                             "--workers); each has its own model cache and batcher. deploy/k8s: the pod's CPUs.")
    api_torch_threads: int = Field(1, ge=1, description="Inference threads per API process (PyTorch and NumPy's BLAS).")
    worker_torch_threads: int = Field(0, ge=0, description="Training threads per worker; 0 = all cores.")

    model_cache_size: int = Field(8, ge=1, description="Loaded models kept in each API process.")
    ref_cache_seconds: float = Field(5.0, ge=0, description="How long an API process trusts what name@alias "
                                                            "pointed at; a move in the same process clears it.")
    prediction_log_share: float = Field(0.1, ge=0, le=1, description="The share of each model's inference requests "
                                        "kept in the prediction log (inputs included; per model name over "
                                        "PUT /v1/models/{name}/monitoring); 0: none.")
    prediction_log_retention_days: int = Field(30, ge=1, le=3650, description="How long logged requests and their "
                                               "feedback are kept.")
    prediction_log_buffer: int = Field(10_000, ge=1, le=10_000_000, description="Requests an API process holds "
                                       "between two writes of its prediction log; beyond, they are dropped.")
    drift_threshold: float = Field(0.25, gt=0, le=100, description="A classifier version drifts when any summary's "
                                   "population stability index over the drift window passes this (per model name "
                                   "over PUT /v1/models/{name}/monitoring); 0.25 is the usual mark of a large shift.")
    drift_window_minutes: int = Field(60, ge=1, le=7 * 24 * 60, description="The window of live traffic that "
                                      "Prometheus's drift gauges measure.")
    drift_min_instances: int = Field(200, ge=1, le=10**9, description="No drift verdict on fewer logged instances "
                                     "in a window than this.")
    rollout_seconds: float = Field(2.0, gt=0, le=60, description="How often each API process adds its rollout counts "
                                   "to the database, judges the running rollouts and reads their routes again.")
    default_classifier: str | None = Field(None, description="What /predict uses without 'model', e.g. "
                                           "digits-mlp@production; unset: the one classifier at production.")
    default_forecaster: str | None = Field(None, description="What /forecast uses without 'model', e.g. "
                                           "solar-lstm@production; unset: the one forecaster at production.")
    max_batch: int = Field(1024, ge=1, description="Most instances one /predict call may send.")
    max_image_bytes: int = Field(10_000_000, ge=1, description="Largest image file /predict takes.")
    max_request_bytes: int = Field(32_000_000, ge=1, description="Largest request body of every route but a dataset "
                                   "upload (TRAINSERVE_MAX_UPLOAD_BYTES): /predict, /forecast and /v2 included, a "
                                   "compressed /v2 body counted once inflated. Refused with 413 as it arrives.")
    max_request_pixels: int = Field(16_777_216, ge=1, description="Most image pixels one /predict call may decode, "
                                    "all its images together (16,777,216: one 4096x4096 photo), counted from the "
                                    "files' headers before any is decoded.")
    cancel_check_seconds: float = Field(0.5, gt=0, description="How often a training job looks for a cancel.")
    stop_check_seconds: float = Field(0.2, ge=0, description="How often the training loop asks whether to stop (a "
                                      "cancel its heartbeat saw, a worker shutdown, a lost job); 0: before every "
                                      "batch.")
    reconcile_seconds: float = Field(10.0, gt=0, description="How often the API looks for jobs the broker lost.")
    resend_after_seconds: float = Field(60.0, gt=0, description="A queued job not started this long after its "
                                                                "message was sent is sent again (then after "
                                                                "twice as long, up to stale_after_seconds).")
    stale_after_seconds: float = Field(600.0, gt=0, description="A running job silent this long is re-queued.")
    max_model_parameters: int = Field(50_000_000, ge=1, description="Largest model a job may train, in parameters "
                                      "(counted at submission; the 400-200 network on MNIST has 0.4 million, the LSTM "
                                      "lab's tens of thousands).")
    max_attempts: int = Field(3, ge=1, description="Deliveries of one job before it is failed.")
    max_upload_bytes: int = Field(200_000_000, ge=1, description="Largest dataset upload or import, and the "
                                                                 "most a ZIP of images may expand to.")
    import_allowed_hosts: str = Field("", description="Comma-separated host names a dataset import may fetch from "
                                      "although they have private, loopback or link-local addresses; public hosts "
                                      "are always allowed.")
    import_timeout_seconds: float = Field(60.0, gt=0, description="Longest a dataset import from a URL may take, "
                                          "from connecting to the last byte.")
    import_concurrency: int = Field(4, ge=1, description="Dataset imports one API process downloads at once, in "
                                    "threads of their own; more wait their turn.")
    export_tolerance: float = Field(1e-4, ge=0, description="Largest difference in output probabilities between "
                                                            "an export and the eager model.")

    @model_validator(mode="after")
    def _embedded_defaults(self) -> "Settings":
        home = self.home.resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{home / 'trainserve.db'}"
        if not self.broker_url:
            self.broker_url = f"filesystem://{home / 'broker'}"
        if not self.artifacts_url:
            self.artifacts_url = f"file://{home / 'artifacts'}"
        return self

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str) -> str:
        if url and not url.startswith(("sqlite:", "postgresql")):
            raise ValueError(f"TRAINSERVE_DATABASE_URL must be sqlite:/// or postgresql+psycopg://, not {url!r}")
        return url

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, url: str) -> str:
        if url and urlparse(url).scheme not in {"filesystem", "redis", "rediss", "amqp"}:
            raise ValueError(f"TRAINSERVE_BROKER_URL must be filesystem://<folder>, redis:// or amqp://, not {url!r}")
        return url

    @field_validator("artifacts_url")
    @classmethod
    def _known_store(cls, url: str) -> str:
        parsed = urlparse(url)
        if url and not (parsed.scheme in {"file", "azure"}
                        or (parsed.scheme == "https" and parsed.netloc.endswith(".blob.core.windows.net"))):
            raise ValueError("TRAINSERVE_ARTIFACTS_URL must be file://<folder>, azure://<container> (with "
                             "TRAINSERVE_AZURE_STORAGE_CONNECTION_STRING) or "
                             f"https://<account>.blob.core.windows.net/<container>, not {url!r}")
        return url

    @model_validator(mode="after")
    def _entra_is_for_postgresql(self) -> "Settings":
        if self.database_auth == "entra" and not self.database_url.startswith("postgresql"):
            raise ValueError("TRAINSERVE_DATABASE_AUTH=entra logs in to Azure Database for PostgreSQL; set "
                             "TRAINSERVE_DATABASE_URL to postgresql+psycopg://<identity>@<server>/<database>")
        return self

    @model_validator(mode="after")
    def _azure_needs_a_secret(self) -> "Settings":
        if urlparse(self.artifacts_url).scheme == "azure" and not self.azure_storage_connection_string:
            raise ValueError("TRAINSERVE_ARTIFACTS_URL azure://<container> needs "
                             "TRAINSERVE_AZURE_STORAGE_CONNECTION_STRING")
        return self

    @property
    def export_queue(self) -> str:
        """Where "export this model" messages go: beside the training queue, never in it."""
        return f"{self.queue}-exports"

    @property
    def keys_required(self) -> bool:
        """API keys are required where the API listens beyond loopback, whatever TRAINSERVE_AUTH says, and on
        loopback unless TRAINSERVE_AUTH is auto or off."""
        return self.auth == "required" or not listens_on_loopback(self.api_host)

    @property
    def gpu_queue(self) -> str:
        """Where jobs that train on a GPU go: only GPU workers take it, so a CPU worker never fails one."""
        return f"{self.queue}-gpu"

    @property
    def broker_folder(self) -> Path | None:
        """The folder of kombu's filesystem transport, when that is the broker."""
        parsed = urlparse(self.broker_url)
        return Path(parsed.netloc + parsed.path) if parsed.scheme == "filesystem" else None


def load_settings() -> Settings:
    """The settings from the environment, the dotenv file and the secrets folder. Called once, at an entry
    point (the app's factory, the worker, the CLI, Alembic's env); everything below takes them as an
    argument, through the process's ``Runtime``."""
    return Settings(_env_file=env_file(), _secrets_dir=secrets_dir())


def worker_threads(settings: Settings) -> int:
    return settings.worker_torch_threads or os.cpu_count() or 1
