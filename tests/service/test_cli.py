"""The worker's command line: which queues it takes, and what it refuses."""

from __future__ import annotations

import pytest
import torch

from service.cli import build_parser, default_queues


def test_a_worker_takes_the_queues_it_is_told():
    args = build_parser().parse_args(["worker", "--queues", "gpu", "--max-tasks-per-child", "1"])
    assert args.queues == ["gpu"] and args.max_tasks_per_child == 1


def test_a_worker_told_nothing_takes_gpu_jobs_only_where_there_is_a_gpu():
    assert build_parser().parse_args(["worker"]).queues is None
    expected = ["jobs", "gpu", "exports"] if torch.cuda.is_available() else ["jobs", "exports"]
    assert default_queues() == expected


@pytest.mark.parametrize(("argv", "message"), [
    (["worker", "--queues", "jobs,cuda"], "name one or more of jobs, gpu, exports"),
    (["worker", "--queues", ""], "name one or more of"),
    (["worker", "--max-tasks-per-child", "-1"], "-1 is below 0"),
    (["worker", "--concurrency", "0"], "0 is below 1"),
    (["worker", "--concurrency", "two"], "'two' is not a whole number"),
    (["wait-for-migrations", "--timeout", "soon"], "invalid float value"),
])
def test_a_wrong_option_is_refused_with_what_to_change(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


# -- one story for ports ------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--url", "http://127.0.0.1:9", "--json", "jobs"],
                                  ["jobs", "--url", "http://127.0.0.1:9", "--json"],
                                  ["--json", "jobs", "--url", "http://127.0.0.1:9"]])
def test_the_client_options_go_before_or_after_the_command(argv):
    args = build_parser().parse_args(argv)
    assert args.url == "http://127.0.0.1:9" and args.json is True


@pytest.mark.parametrize(("env", "url"), [
    ({"TRAINSERVE_API_PORT": "9123"}, "http://127.0.0.1:9123"),
    ({"TRAINSERVE_API_HOST": "0.0.0.0", "TRAINSERVE_API_PORT": "9124"}, "http://127.0.0.1:9124"),
    ({"TRAINSERVE_API_HOST": "10.1.2.3"}, "http://10.1.2.3:8000"),
    ({"TRAINSERVE_API_PORT": "9125", "TRAINSERVE_URL": "https://api.example"}, "https://api.example"),
    ({}, "http://127.0.0.1:8000"),
])
def test_the_client_finds_the_server_from_the_servers_own_settings(monkeypatch, tmp_path, env, url):
    from trainserve_client.client import Client

    for name in ("TRAINSERVE_URL", "TRAINSERVE_API_HOST", "TRAINSERVE_API_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRAINSERVE_CONFIG", str(tmp_path / "none.toml"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Client().url == url


@pytest.mark.slow  # starts the server process twice
@pytest.mark.parametrize("setting", ["TRAINSERVE_API_PORT", "TRAINSERVE_GRPC_PORT"])
def test_a_taken_port_is_one_line_naming_the_setting(tmp_path, setting):
    import os
    import socket
    import subprocess
    import sys

    from tests.helpers import free_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("TRAINSERVE_")},
               "TRAINSERVE_HOME": str(tmp_path), "TRAINSERVE_ENV_FILE": "", setting: str(port)}
        if setting == "TRAINSERVE_GRPC_PORT":
            env["TRAINSERVE_API_PORT"] = str(free_port())
        out = subprocess.run([sys.executable, "-m", "service.cli", "api"], env=env, capture_output=True, text=True,
                             timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.strip().splitlines() == [
        f"trainserve: cannot listen on 127.0.0.1:{port} (Address already in use); another program has it. Set "
        f"{setting}{' (or --port)' if setting == 'TRAINSERVE_API_PORT' else ''} to a free port"]


def test_the_banner_names_every_address_and_whether_keys_are_needed():
    from service.cli import banner
    from service.platform.settings import Settings

    text = banner(Settings(grpc_port=8081, _env_file=None), "127.0.0.1", 8000)
    for line in ("API        http://127.0.0.1:8000", "dashboard  http://127.0.0.1:8000/ui/",
                 "docs       http://127.0.0.1:8000/docs", "gRPC       127.0.0.1:8081", "API keys   not required"):
        assert line in text
    assert "API keys   required" in banner(Settings(auth="required", _env_file=None), "0.0.0.0", 9000)
    assert "http://127.0.0.1:9000" in banner(Settings(auth="required", _env_file=None), "0.0.0.0", 9000)
