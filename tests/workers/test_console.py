"""The terminal client (`trainserve submit`, `follow`, `jobs`, ...) against a live API and worker: what it
prints, its JSON, and its exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.datafiles import digits, npz, png
from tests.helpers import LOGREG_SPEC, solar_forecaster
from tests.stack import CLI

pytestmark = pytest.mark.slow


def cli(stack, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    env = {**stack.env, "TRAINSERVE_URL": stack.base_url, "TRAINSERVE_CONFIG": "/nonexistent", "COLUMNS": "200"}
    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("specs") / "logreg.yaml"
    path.write_text(yaml.safe_dump({**LOGREG_SPEC, "training": {**LOGREG_SPEC["training"], "epochs": 3}}))
    return path


def test_submit_follow_shows_each_epoch_and_exits_0_when_the_job_succeeds(embedded_stack, spec_file):
    done = cli(embedded_stack, "submit", str(spec_file), "--follow")
    assert done.returncode == 0, done.stderr
    assert "epoch 3/3" in done.stdout and "train loss" in done.stdout
    assert "succeeded" in done.stdout and "test accuracy 0.9" in done.stdout


def in_a_terminal(stack, *args: str, interrupt_at: str | None = None) -> tuple[str, int]:
    """What `trainserve ARGS` writes to a terminal (a pseudo-terminal), escape codes removed, and its exit
    code; with ``interrupt_at``, Ctrl-C (SIGINT) once that text has appeared."""
    import os
    import pty
    import re
    import signal

    env = {**stack.env, "TRAINSERVE_URL": stack.base_url, "TRAINSERVE_CONFIG": "/nonexistent", "COLUMNS": "120",
           "TERM": "xterm-256color"}
    leader, follower = pty.openpty()
    process = subprocess.Popen([*CLI, *args], env=env, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the command has exited
            break
        if not chunk:
            break
        chunks.append(chunk)
        if interrupt_at is not None and interrupt_at.encode() in b"".join(chunks):
            process.send_signal(signal.SIGINT)
            interrupt_at = None
    process.wait(timeout=300)
    os.close(leader)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    return text.replace("\r", "\n"), process.returncode


def test_follow_in_a_terminal_prints_each_epoch_once_and_the_model_by_name(embedded_stack, tmp_path):
    import re

    spec = {**LOGREG_SPEC, "name": "calm-follow", "training": {**LOGREG_SPEC["training"], "epochs": 50}}
    (tmp_path / "fifty.json").write_text(json.dumps(spec))
    job_id = cli(embedded_stack, "submit", str(tmp_path / "fifty.json"), check=True).stdout.strip()
    shown, code = in_a_terminal(embedded_stack, "follow", job_id[:8])
    assert code == 0
    finished = [int(n) for n in re.findall(r"epoch (\d+)/50  train loss", shown)]
    assert finished == list(range(1, 51)), finished  # one line for each epoch, in order
    assert f"job {job_id}: succeeded" in shown and "model calm-follow v1" in shown, shown[-2000:]


def test_ctrl_c_stops_following_in_one_line_and_the_job_goes_on(embedded_stack, tmp_path):
    spec = {**LOGREG_SPEC, "training": {**LOGREG_SPEC["training"], "epochs": 400, "batch_size": 8}}
    (tmp_path / "long.json").write_text(json.dumps(spec))
    job_id = cli(embedded_stack, "submit", str(tmp_path / "long.json"), check=True).stdout.strip()
    try:
        shown, code = in_a_terminal(embedded_stack, "follow", job_id, interrupt_at="epoch 1/400  train loss")
        assert code == 130 and "Traceback" not in shown, shown[-2000:]
        assert f"stopped following; job {job_id} keeps running: `trainserve follow {job_id}`" in shown
        assert embedded_stack.http.get(f"/v1/jobs/{job_id}").json()["status"] in ("queued", "running")
    finally:
        embedded_stack.http.post(f"/v1/jobs/{job_id}/cancel")


def test_json_for_scripts(embedded_stack, spec_file):
    job = json.loads(cli(embedded_stack, "submit", str(spec_file), "--json", check=True).stdout)
    lines = [json.loads(line) for line in cli(embedded_stack, "follow", job["id"], "--json", check=True).stdout.splitlines()]
    assert lines[0]["kind"] == "status" and lines[-1]["status"] == "succeeded"
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))
    shown = json.loads(cli(embedded_stack, "show", job["id"], "--json", check=True).stdout)
    assert shown["status"] == "succeeded" and shown["result"]["test_accuracy"] > 0.9
    # the 8 characters the dashboard and the table show name the job too, before or after the options
    assert json.loads(cli(embedded_stack, "--json", "show", job["id"][:8], check=True).stdout)["id"] == job["id"]
    for prefix, message in (("ab", "at least its first 4 characters"), ("zzzz", "is not a job id"),
                            ("ffffffff-ffff", "no job's id starts with")):
        done = cli(embedded_stack, "show", prefix)
        assert done.returncode == 1 and message in done.stderr, done.stderr
    listed = json.loads(cli(embedded_stack, "jobs", "--status", "succeeded", "--json", check=True).stdout)
    assert job["id"] in [j["id"] for j in listed["items"]]
    table = cli(embedded_stack, "jobs", check=True).stdout
    assert job["id"][:8] in table and "succeeded" in table


def test_a_failed_job_exits_1_with_its_error(embedded_stack, tmp_path):
    diverging = {**LOGREG_SPEC, "architecture": {"type": "mlp", "hidden_sizes": [400, 200]},
                 "optimizer": {"type": "sgd", "momentum": 0.99},
                 "training": {"epochs": 3, "batch_size": 16, "learning_rate": 10.0, "seed": 0}}
    (tmp_path / "bad.json").write_text(json.dumps(diverging))
    done = cli(embedded_stack, "submit", str(tmp_path / "bad.json"), "--follow")
    assert done.returncode == 1 and "failed" in done.stderr and "loss" in done.stderr


def test_a_cancelled_job_exits_3(embedded_stack, tmp_path):
    long = {**LOGREG_SPEC, "training": {**LOGREG_SPEC["training"], "epochs": 1000, "batch_size": 8}}
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(long))
    job_id = cli(embedded_stack, "submit", str(tmp_path / "long.yaml"), check=True).stdout.strip()
    cancelled = json.loads(cli(embedded_stack, "cancel", job_id, "--json", check=True).stdout)
    assert cancelled["id"] == job_id
    assert cli(embedded_stack, "follow", job_id).returncode == 3


def test_datasets_models_and_predict(embedded_stack, spec_file, tmp_path):
    x, y = digits(400)
    (tmp_path / "digits.npz").write_bytes(npz(x, y))
    row = json.loads(cli(embedded_stack, "datasets", "upload", str(tmp_path / "digits.npz"), "--name", "cli-digits",
                         "--json", check=True).stdout)
    assert row["name"] == "cli-digits"
    listed = json.loads(cli(embedded_stack, "datasets", "list", "--json", check=True).stdout)
    assert "cli-digits" in [d["name"] for d in listed["items"]]

    job = json.loads(cli(embedded_stack, "submit", str(spec_file), "--json", check=True).stdout)
    assert cli(embedded_stack, "follow", job["id"]).returncode == 0
    model = json.loads(cli(embedded_stack, "show", job["id"], "--json", check=True).stdout)["model"]
    models = json.loads(cli(embedded_stack, "models", "list", "--name", model["name"], "--json", check=True).stdout)
    version = next(m["version"] for m in models["items"] if m["id"] == model["id"])
    # promote goes through the gate, as the API and the dashboard do; alias set moves an alias by hand
    refused = cli(embedded_stack, "models", "promote", model["name"], str(version), "--alias", "production",
                  "--min", "0.9999")
    assert refused.returncode == 1 and f"{model['name']}@production not moved" in refused.stderr, refused.stderr
    promoted = cli(embedded_stack, "models", "promote", model["name"], str(version), "--alias", "production",
                   "--min", "0.5", check=True).stdout.strip()
    assert promoted.startswith(f"{model['name']}@production -> version {version} ("), promoted
    assert cli(embedded_stack, "models", "alias", "set", model["name"], "staging", str(version),
               check=True).stdout.strip() == f"{model['name']}@staging -> version {version}"

    zero, one = x[y == 0][0], x[y == 1][0]
    for name, image in (("zero.png", zero), ("one.png", one)):
        (tmp_path / name).write_bytes(png(image))
    answer = json.loads(cli(embedded_stack, "predict", str(tmp_path / "zero.png"), str(tmp_path / "one.png"),
                            "--model", f"{model['name']}@production", "--json", check=True).stdout)
    assert [p["label"] for p in answer["predictions"]] == [0, 1]


def test_errors_print_the_api_s_message_and_exit_1(embedded_stack, tmp_path):
    missing = cli(embedded_stack, "show", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1 and "no job with id" in missing.stderr
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump({**LOGREG_SPEC, "architecture": {"type": "transformer"}}))
    refused = cli(embedded_stack, "submit", str(tmp_path / "wrong.yaml"))
    assert refused.returncode == 1 and "422" in refused.stderr and "architecture" in refused.stderr
    nowhere = cli(embedded_stack, "jobs", "--url", "http://127.0.0.1:9")
    assert nowhere.returncode == 1 and "cannot reach the API at http://127.0.0.1:9" in nowhere.stderr
    assert cli(embedded_stack, "submit", str(tmp_path / "none.yaml")).returncode == 1


def test_the_readme_s_example_spec_trains(embedded_stack):
    example = Path(__file__).resolve().parents[2] / "examples" / "digits-mlp.yaml"
    done = cli(embedded_stack, "submit", str(example), "--follow")
    assert done.returncode == 0, done.stderr
    accuracy = float(done.stdout.split("test accuracy ")[1].split(";")[0])
    assert accuracy > 0.9, done.stdout


def test_forecast_from_a_csv_of_readings(embedded_stack, tmp_path):
    spec = solar_forecaster("cli-solar", horizon=3)
    (tmp_path / "solar.yaml").write_text(yaml.safe_dump(spec))
    assert cli(embedded_stack, "submit", str(tmp_path / "solar.yaml"), "--follow").returncode == 0
    preview = embedded_stack.http.get("/v1/datasets/solar/preview", params={"last": 40}).json()
    day = [i for i, t in enumerate(preview["timestamps"]) if t[:10] == preview["timestamps"][-1][:10]]
    rows = ["timestamp," + ",".join(preview["columns"])] + [
        ",".join([preview["timestamps"][i].replace("T", " ")] + [str(preview["values"][c][i]) for c in preview["columns"]])
        for i in day]
    (tmp_path / "readings.csv").write_text("\n".join(rows) + "\n")
    answer = json.loads(cli(embedded_stack, "forecast", str(tmp_path / "readings.csv"), "--model", "cli-solar",
                            "--json", check=True).stdout)
    assert answer["target"] == "solar.current" and len(answer["forecast"]) == 3
    assert all(p["lower"] <= p["value"] <= p["upper"] for p in answer["forecast"])
    table = cli(embedded_stack, "forecast", str(tmp_path / "readings.csv"), "--model", "cli-solar", check=True).stdout
    assert "solar.current" in table and "interval" in table


def test_the_python_client_trains_serves_and_sweeps_through_its_typed_methods(embedded_stack, tmp_path):
    """An app's view: trainserve_client.Client against the live API and worker, no raw paths."""
    from trainserve_client import ApiError, Client

    with Client(embedded_stack.base_url) as api:
        data = tmp_path / "digits.npz"
        x, y = digits()
        data.write_bytes(npz(x, y))
        dataset = api.upload_dataset([data], name="client-digits", description="from the Python client")
        assert api.get_dataset("client-digits")["id"] == dataset["id"]
        assert any(d["name"] == "client-digits" for d in api.list_datasets()["items"])

        job = api.submit_job({**LOGREG_SPEC, "dataset": "client-digits", "name": "client-logreg"})
        kinds = [event["kind"] for event in api.events(job["id"])]
        assert kinds[-1] == "status" and "epoch" in kinds
        done = api.wait_for_job(job["id"])
        assert done["status"] == "succeeded" and done["result"]["test_accuracy"] > 0.9
        assert len(api.job_metrics(job["id"])["items"]) == LOGREG_SPEC["training"]["epochs"]
        assert api.list_jobs(status="succeeded")["total"] >= 1

        model = api.get_model("client-logreg")
        assert api.set_alias("client-logreg", "production", model["version"])["version"] == model["version"]
        answer = api.predict(instances=x[:20].astype(float).tolist(), model="client-logreg@production", top_k=1)
        right = sum(p["label"] == int(label) for p, label in zip(answer["predictions"], y[:20]))
        assert answer["model"]["version"] == model["version"] and right >= 16
        by_image = api.predict(images=[png(image) for image in x[:20]], model="client-logreg")["predictions"]
        assert sum(p["label"] == int(label) for p, label in zip(by_image, y[:20])) >= 16

        sweep = api.create_sweep({"name": "client-sweep", "base": {**LOGREG_SPEC, "dataset": "client-digits"},
                                  "space": {"training.learning_rate": {"low": 0.01, "high": 0.5, "log": True}},
                                  "budget": {"trials": 1, "parallel": 1}, "pruner": {"type": "none"}})
        final = [e for e in api.sweep_events(sweep["id"]) if e["kind"] == "status"][-1]
        assert final["status"] == "succeeded" and api.get_sweep(sweep["id"])["model"]["name"] == "client-sweep"

        with pytest.raises(ApiError, match="unknown dataset .no-such-dataset.*HTTP 422"):
            api.submit_job({**LOGREG_SPEC, "dataset": "no-such-dataset"})


def test_a_retraining_policy_set_shown_and_removed(embedded_stack, spec_file, tmp_path):
    (tmp_path / "named.yaml").write_text(yaml.safe_dump({**yaml.safe_load(spec_file.read_text()),
                                                         "name": "cli-retrained"}))
    cli(embedded_stack, "submit", str(tmp_path / "named.yaml"), "--follow", check=True)
    refused = cli(embedded_stack, "retraining", "set", "cli-retrained")
    assert refused.returncode == 1 and "at least one of drift, min_live_accuracy or every_hours" in refused.stderr
    done = cli(embedded_stack, "retraining", "set", "cli-retrained", "--min-live-accuracy", "0.9",
               "--every-hours", "168", "--cooldown-hours", "2", check=True)
    assert done.stdout.startswith("retraining cli-retrained@production: on, live accuracy under 0.9 (on 100+ "
                                  "labels), every 168 h; cool-down 2 h; rolled out in canary steps"), done.stdout
    shown = json.loads(cli(embedded_stack, "retraining", "show", "cli-retrained", "--json", check=True).stdout)
    assert shown["policy"]["triggers"]["every_hours"] == 168 and shown["job_id"] is None
    assert [e["kind"] for e in shown["history"]] == ["policy"]
    assert cli(embedded_stack, "retraining", "off", "cli-retrained", check=True).stdout.strip() == \
        "cli-retrained: no retraining policy"
    gone = cli(embedded_stack, "retraining", "show", "cli-retrained")
    assert gone.returncode == 1 and "has no retraining policy" in gone.stderr
