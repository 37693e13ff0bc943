"""A client of a running trainserve API, for the terminal commands (service/console.py).

The API's address: ``--url``, else ``TRAINSERVE_URL``, else the config file's ``url``, else
http://127.0.0.1:8000. The key: ``TRAINSERVE_API_KEY``, else the config file's ``key`` (none on
loopback). The config file is ``$TRAINSERVE_CONFIG``, else ``~/.config/trainserve/config.toml``:

    url = "https://trainserve.example.com"
    key = "tsk_..."
"""

from __future__ import annotations

import json
import os
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
EXIT = {"succeeded": 0, "failed": 1, "cancelled": 3, "pruned": 4}  # a finished job's status -> the exit code


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


class Client:
    def __init__(self, url: str | None = None, key: str | None = None, timeout: float = 60) -> None:
        config = _config()
        self.url = (url or os.environ.get("TRAINSERVE_URL") or config.get("url") or DEFAULT_URL).rstrip("/")
        key = key or os.environ.get("TRAINSERVE_API_KEY") or config.get("key")
        self.http = httpx.Client(base_url=self.url, timeout=timeout,
                                 headers={"Authorization": f"Bearer {key}"} if key else {})

    def request(self, method: str, path: str, **kwargs) -> dict:
        try:
            r = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach the API at {self.url} ({exc.__class__.__name__}: {exc}); is it running? "
                           "(--url or TRAINSERVE_URL says where it is)") from None
        if r.status_code >= 400:
            raise ApiError(_message(r))
        return r.json()

    def events(self, job_id: str, after: int = 0) -> Iterator[dict]:
        """The job's events until its final status; reconnects with Last-Event-ID when the stream drops."""
        last, failures = after, 0
        while True:
            try:
                with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=httpx.Timeout(60, read=60),
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
                    raise ApiError(f"lost the event stream from {self.url} ({exc}); `trainserve follow {job_id}` "
                                   "picks it up again") from None
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
