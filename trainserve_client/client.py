"""A client of a running trainserve API, for apps and for the terminal commands (console.py beside it).
Every method answers the API's JSON as a dict; an error raises :class:`ApiError` with the API's message.

The API's address: ``--url``, else ``TRAINSERVE_URL``, else the server's own settings
``TRAINSERVE_API_HOST`` and ``TRAINSERVE_API_PORT`` (what ``make run`` listens on), else the config file's
``url``, else http://127.0.0.1:8000. The key: ``TRAINSERVE_API_KEY``, else the config file's ``key`` (none on
loopback). The config file is ``$TRAINSERVE_CONFIG``, else ``~/.config/trainserve/config.toml``:

    url = "https://trainserve.example.com"
    key = "tsk_..."
"""

from __future__ import annotations

import json
import os
import time
import tomllib
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
PAGE = 200  # the most GET /v1/jobs gives at once
# A finished status -> the exit code: a job's, a sweep's, and a rollout's (succeeded or rolled_back).
EXIT = {"succeeded": 0, "failed": 1, "cancelled": 3, "pruned": 4, "rolled_back": 1}


class ApiError(Exception):
    """What to print: the API's own message, or why the API could not be reached."""


def _config() -> dict:
    path = Path(os.environ.get("TRAINSERVE_CONFIG") or Path.home() / ".config" / "trainserve" / "config.toml")
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ApiError(f"{path}: not valid TOML ({exc}); it holds url = \"...\" and key = \"...\"") from None


def _server_address() -> str | None:
    """Where a server on this machine listens, from the settings it reads itself (TRAINSERVE_API_HOST and
    TRAINSERVE_API_PORT), so that one variable moves both; None when neither is set."""
    host, port = os.environ.get("TRAINSERVE_API_HOST"), os.environ.get("TRAINSERVE_API_PORT")
    if not host and not port:
        return None
    host = "127.0.0.1" if host in (None, "", "0.0.0.0") else "[::1]" if host == "::" else host
    return f"http://{f'[{host}]' if ':' in host and not host.startswith('[') else host}:{port or 8000}"


def default_url() -> str:
    """``TRAINSERVE_URL``, else the server's own host and port settings, else the config file's ``url``, else
    http://127.0.0.1:8000."""
    return (os.environ.get("TRAINSERVE_URL") or _server_address() or _config().get("url") or DEFAULT_URL).rstrip("/")


class Client:
    def __init__(self, url: str | None = None, key: str | None = None, timeout: float = 60) -> None:
        config = _config()
        self.url = (url or default_url()).rstrip("/")
        key = key or os.environ.get("TRAINSERVE_API_KEY") or config.get("key")
        self.http = httpx.Client(base_url=self.url, timeout=timeout,
                                 headers={"Authorization": f"Bearer {key}"} if key else {})

    def request(self, method: str, path: str, **kwargs) -> dict:
        try:
            r = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach the API at {self.url} ({exc.__class__.__name__}: {exc}); is it running? "
                           "(--url, TRAINSERVE_URL or TRAINSERVE_API_PORT says where it is)") from None
        if r.status_code >= 400:
            raise ApiError(_message(r))
        return r.json() if r.status_code != 204 else {}

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Jobs (docs/training.md)

    def submit_job(self, spec: dict) -> dict:
        """Queue a training job; the job as the API answers it (``id``, ``status`` queued)."""
        return self.request("POST", "/v1/jobs", json=spec)

    def get_job(self, job_id: str) -> dict:
        return self.request("GET", f"/v1/jobs/{job_id}")

    def list_jobs(self, status: str | None = None, limit: int = 50, offset: int = 0) -> dict:
        """A page of jobs, newest first: ``items``, ``total``."""
        return self.request("GET", "/v1/jobs", params={"limit": limit, "offset": offset,
                                                       **({"status": status} if status else {})})

    def resolve_job_id(self, text: str) -> str:
        """A job's full id from the id or any unique prefix of it (the dashboard and tables show 8
        characters): ApiError when no job's id starts so, or several do."""
        text = text.strip().lower()
        try:
            return str(uuid.UUID(text))
        except ValueError:
            pass
        if len(text) < 4 or any(c not in "0123456789abcdef-" for c in text):
            raise ApiError(f"{text!r} is not a job id; give the id, or at least its first 4 characters")
        matches: list[str] = []
        for offset in range(0, 100 * PAGE, PAGE):  # newest first; a prefix is for recent jobs
            page = self.list_jobs(limit=PAGE, offset=offset)
            matches += [j["id"] for j in page["items"] if j["id"].startswith(text)]
            if offset + PAGE >= page["total"]:
                break
        if not matches:
            raise ApiError(f"no job's id starts with {text!r}; `trainserve jobs` lists them")
        if len(matches) > 1:
            raise ApiError(f"{len(matches)} jobs' ids start with {text!r} ({', '.join(m[:13] for m in matches[:5])}"
                           f"{', ...' if len(matches) > 5 else ''}); give more of the id")
        return matches[0]

    def cancel_job(self, job_id: str) -> dict:
        return self.request("POST", f"/v1/jobs/{job_id}/cancel")

    def job_metrics(self, job_id: str) -> dict:
        """Each epoch's metrics."""
        return self.request("GET", f"/v1/jobs/{job_id}/metrics")

    def events(self, job_id: str, after: int = 0) -> Iterator[dict]:
        """The job's events until its final status; reconnects with Last-Event-ID when the stream drops."""
        return self._events(f"/v1/jobs/{job_id}/events", after, f"`trainserve follow {job_id}`")

    def wait_for_job(self, job_id: str) -> dict:
        """Follow the job's events to its final status; the finished job."""
        for _ in self.events(job_id):
            pass
        return self.get_job(job_id)

    # Datasets (docs/datasets.md)

    def upload_dataset(self, files: Sequence[str | Path], name: str, description: str = "", **fields: str) -> dict:
        """Upload one file (NPZ, CSV, ZIP, ...) or two (MNIST IDX images and labels) as a new version of
        ``name``; ``fields``: the upload's other form fields."""
        paths = [Path(f) for f in files]
        handles = [p.open("rb") for p in paths]
        try:
            return self.request("POST", "/v1/datasets", data={"name": name, "description": description, **fields},
                                files=[("file", (p.name, h, "application/octet-stream"))
                                       for p, h in zip(paths, handles)], timeout=600)
        finally:
            for h in handles:
                h.close()

    def list_datasets(self, limit: int = 200, offset: int = 0) -> dict:
        return self.request("GET", "/v1/datasets", params={"limit": limit, "offset": offset})

    def get_dataset(self, ref: str) -> dict:
        """A dataset by id, name or name@version."""
        return self.request("GET", f"/v1/datasets/{ref}")

    # Models (docs/serving.md)

    def list_models(self, name: str | None = None, limit: int = 200, offset: int = 0) -> dict:
        return self.request("GET", "/v1/models", params={"limit": limit, "offset": offset,
                                                         **({"name": name} if name else {})})

    def get_model(self, ref: str) -> dict:
        """A model version by id, name (its newest), name@version or name@alias."""
        return self.request("GET", f"/v1/models/{ref}")

    def set_alias(self, name: str, alias: str, version: int) -> dict:
        """Point ``name@alias`` at a version."""
        return self.request("PUT", f"/v1/models/{name}/aliases/{alias}", json={"version": version})

    def promote(self, name: str, version: int, gate: dict) -> dict:
        """Gated promotion: move the gate's alias to this version if its metric passes; the verdict."""
        return self.request("POST", f"/v1/models/{name}/versions/{version}/promote", json=gate)

    # Sweeps (docs/sweeps.md)

    def create_sweep(self, sweep: dict) -> dict:
        return self.request("POST", "/v1/sweeps", json=sweep)

    def get_sweep(self, sweep_id: str) -> dict:
        return self.request("GET", f"/v1/sweeps/{sweep_id}")

    def list_sweeps(self, status: str | None = None, limit: int = 50, offset: int = 0) -> dict:
        return self.request("GET", "/v1/sweeps", params={"limit": limit, "offset": offset,
                                                         **({"status": status} if status else {})})

    def cancel_sweep(self, sweep_id: str) -> dict:
        return self.request("POST", f"/v1/sweeps/{sweep_id}/cancel")

    def sweep_events(self, sweep_id: str, after: int = 0) -> Iterator[dict]:
        """The sweep's events (each trial launched and ended, its own status) until it ends."""
        return self._events(f"/v1/sweeps/{sweep_id}/events", after, "GET /v1/sweeps/{id}")

    # Rollouts (docs/rollouts.md)

    def start_rollout(self, name: str, rollout: dict) -> dict:
        """Start moving ``rollout["alias"]`` (default production) of ``name`` to ``rollout["candidate"]``."""
        return self.request("POST", f"/v1/models/{name}/rollouts", json=rollout)

    def get_rollout(self, name: str, rollout_id: str) -> dict:
        return self.request("GET", f"/v1/models/{name}/rollouts/{rollout_id}")

    def list_rollouts(self, name: str | None = None, status: str | None = None, limit: int = 50,
                      offset: int = 0) -> dict:
        path = f"/v1/models/{name}/rollouts" if name else "/v1/rollouts"
        return self.request("GET", path, params={"limit": limit, "offset": offset,
                                                 **({"status": status} if status else {})})

    def rollout_command(self, name: str, rollout_id: str, action: str) -> dict:
        """``pause``, ``resume``, ``promote`` (finish now) or ``abort`` (roll back now)."""
        return self.request("POST", f"/v1/models/{name}/rollouts/{rollout_id}/{action}")

    def rollout_events(self, name: str, rollout_id: str, after: int = 0) -> Iterator[dict]:
        """The rollout's events (each step, each verdict with its numbers, its status) until it ends."""
        return self._events(f"/v1/models/{name}/rollouts/{rollout_id}/events", after,
                            "trainserve rollout status NAME --follow")

    # Retraining policies (docs/monitoring.md)

    def set_retraining(self, name: str, policy: dict) -> dict:
        """Set (replace) ``name``'s retraining policy."""
        return self.request("PUT", f"/v1/models/{name}/retraining", json=policy)

    def get_retraining(self, name: str) -> dict:
        return self.request("GET", f"/v1/models/{name}/retraining")

    def delete_retraining(self, name: str) -> None:
        self.request("DELETE", f"/v1/models/{name}/retraining")

    # Inference (docs/serving.md, docs/forecasting.md)

    def predict(self, instances: list | None = None, images: Sequence[str | Path | bytes] = (),
                model: str | None = None, top_k: int = 3) -> dict:
        """Classify ``instances`` (lists of pixel values) or ``images`` (PNG or JPEG files or bytes) with
        ``model`` (default: the deployment's default, else the one classifier at production)."""
        if (instances is None) == (not images):
            raise ValueError("give instances or images, one of them")
        if instances is not None:
            return self.request("POST", "/predict", json={"instances": instances, "top_k": top_k,
                                                          **({"model": model} if model else {})})
        files = []
        for i, image in enumerate(images):
            data = image if isinstance(image, bytes) else Path(image).read_bytes()
            files.append(("images", (f"image-{i}" if isinstance(image, bytes) else Path(image).name, data)))
        return self.request("POST", "/predict", files=files,
                            data={"top_k": str(top_k), **({"model": model} if model else {})})

    def forecast(self, timestamps: list[str], values: dict[str, list], model: str | None = None,
                 horizon: int | None = None) -> dict:
        """Forecast from recent readings: ISO 8601 timestamps and one list of values per column."""
        return self.request("POST", "/forecast", json={"timestamps": timestamps, "values": values,
                                                       **({"model": model} if model else {}),
                                                       **({"horizon": horizon} if horizon else {})})

    def _events(self, path: str, after: int, resume_hint: str) -> Iterator[dict]:
        """Server-Sent Events until a final status; reconnects with Last-Event-ID when the stream drops."""
        last, failures = after, 0
        while True:
            try:
                with self.http.stream("GET", path, timeout=httpx.Timeout(60, read=60),
                                      headers={"Last-Event-ID": str(last)}) as r:
                    if r.status_code >= 400:
                        r.read()
                        raise ApiError(_message(r))
                    failures = 0
                    data = None
                    for line in r.iter_lines():
                        if line.startswith("data:"):
                            data = json.loads(line[5:])
                        elif not line and data is not None:
                            last = data["seq"]
                            yield data
                            if data["kind"] == "status" and data["status"] in EXIT:
                                return
                            data = None
            except httpx.TransportError as exc:
                failures += 1
                if failures > 5:
                    raise ApiError(f"lost the event stream from {self.url} ({exc}); {resume_hint} picks it up "
                                   "again") from None
                time.sleep(min(2 ** failures, 10))


def _message(r: httpx.Response) -> str:
    try:
        error = r.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {r.status_code} from {r.request.url}: {r.text[:300]}"
    lines = [f"{error['message']} (HTTP {r.status_code})"]
    lines += [f"  {d.get('field', '')}: {d.get('message', '')}" for d in error.get("details") or []
              if d.get("message") and d.get("message") not in error["message"]]
    return "\n".join(lines)
