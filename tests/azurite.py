"""Azurite, the Azure Storage emulator, started for the tests that run the Azure Blob artifact store.

`npm install` (run by `make test` and `.ci/run`) puts it in ./node_modules. The script is started directly,
not through npx, so stopping its process stops the emulator.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import free_port

AZURITE = Path(__file__).resolve().parent.parent / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account; it is public and only ever valid against the emulator.
ACCOUNT, KEY = "devstoreaccount1", ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
                                     "KBHBeksoGMGw==")


def connection_string(port: int) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};")


def _start(location: Path, log) -> tuple[subprocess.Popen, int]:
    """Azurite on a port that was free a moment ago (it cannot take a socket); another one if that port was
    taken meanwhile."""
    for _ in range(5):
        port = free_port()
        proc = subprocess.Popen([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
                                 str(location), "--disableTelemetry", "--skipApiVersionCheck", "--silent"],
                                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return proc, port
            except OSError:
                if time.monotonic() > deadline:
                    proc.kill()
                    raise RuntimeError("Azurite did not start listening within 30 s") from None
                time.sleep(0.1)
        if "EADDRINUSE" not in (location / "azurite.log").read_text():
            raise RuntimeError(f"Azurite exited: {(location / 'azurite.log').read_text()[-2000:]}")
    raise RuntimeError("Azurite found no free port in 5 tries")


@contextmanager
def running_azurite(location: Path) -> Iterator[str]:
    """Start Azurite's blob service on a free port; yields its connection string."""
    log = open(location / "azurite.log", "wb")
    proc, port = _start(location, log)
    try:
        yield connection_string(port)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def required() -> bool:
    """CI sets TRAINSERVE_REQUIRE_AZURITE=1: there a missing emulator fails the tests instead of skipping."""
    return os.environ.get("TRAINSERVE_REQUIRE_AZURITE") == "1"
