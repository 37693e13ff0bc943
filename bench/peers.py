"""trainserve beside the model servers users would pick instead, on the same model, body and load, in one run:
KServe's Python model server and MLServer, and trainserve, each at one and at two processes.

    python -m bench.peers          # needs wrk (apt-get install wrk); makes .venv-bench-kserve and
                                   # .venv-bench-mlserver on first use (PyPI), kept out of trainserve's own

The model is the labs' 784-400-200-10 MLP, trained once on mnist-5k through trainserve's API. The peers serve
the same weights as TorchScript in PyTorch (one thread), as their docs write a custom model
(bench/peer_servers/kserve_server.py, bench/peer_servers/mlserver_model.py); trainserve serves it as it always does. One
request is one digit of 784 floats: v1 `{"instances"}` JSON (trainserve's /predict), v2 JSON and v2 binary
tensor data. wrk runs on the same two cores as the servers, so the numbers are what one two-core machine
does with both; compare the ratios within a run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.report import write_section
from bench.serving import HOME, start, v2_binary, wrk  # HOME: this run's TRAINSERVE_HOME, set on import

ROOT = Path(__file__).resolve().parents[1]
# uvloop below 0.22: from 0.22 its get_event_loop() raises where MLServer 1.7.1 starts its inference pool.
PEERS = {"kserve": ["kserve==0.21.0", "torch==2.13.0"], "mlserver": ["mlserver==1.7.1", "uvloop<0.22", "torch==2.13.0"]}
MODEL = "mlp"


def venv(name: str) -> Path:
    """The peer's own virtual environment, made on first use."""
    folder = ROOT / f".venv-bench-{name}"
    if not (folder / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        subprocess.run([str(folder / "bin" / "pip"), "install", "-q", *PEERS[name]], check=True)
        (folder / ".installed").touch()
    return folder / "bin" / "python"


def train(api: str) -> tuple[str, Path]:
    """The MLP, trained through the API on mnist-5k; its id, and the same weights as TorchScript that takes
    flat rows of 784 pixels."""
    import threading
    import uuid

    import torch

    from models.export import model_from_bytes
    from service.jobs.runner import run_job
    from service.platform.runtime import Runtime
    from service.platform.settings import load_settings

    spec = {"dataset": "mnist-5k", "architecture": {"type": "mlp", "hidden_sizes": [400, 200]},
            "optimizer": {"type": "adam"}, "training": {"epochs": 2, "batch_size": 128}, "name": MODEL}
    job = httpx.post(f"{api}/v1/jobs", json=spec, timeout=30).json()
    run_job(Runtime(load_settings()), uuid.UUID(job["id"]), threading.Event())
    model_id = httpx.get(f"{api}/v1/jobs/{job['id']}", timeout=30).json()["model"]["id"]
    module, config = model_from_bytes(httpx.get(f"{api}/v1/models/{model_id}/download", timeout=30).content)

    class Flat(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = module.eval()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.module(x.reshape(x.shape[0], *config.input_shape))

    path = HOME / "mlp.torchscript.pt"
    torch.jit.trace(Flat(), torch.zeros(1, 784)).save(str(path))
    return model_id, path


def ready(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not answer")


def kserve(python: Path, model: Path, port: int, processes: int) -> subprocess.Popen:
    process = subprocess.Popen([str(python), str(ROOT / "bench" / "peer_servers" / "kserve_server.py"), str(model),
                                str(port), str(port + 1), str(processes)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    ready(f"http://127.0.0.1:{port}/v2/models/{MODEL}/ready")
    return process


def mlserver(python: Path, model: Path, port: int, processes: int) -> subprocess.Popen:
    """MLServer's front end is one process; at two, inference runs in a pool of two worker processes."""
    folder = Path(tempfile.mkdtemp(prefix="bench-mlserver-"))
    (folder / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": port + 1, "metrics_port": port + 2, "metrics_endpoint": None,
        "parallel_workers": 0 if processes == 1 else processes, "debug": False}))
    (folder / MODEL).mkdir()
    (folder / MODEL / "model-settings.json").write_text(json.dumps({
        "name": MODEL, "implementation": "mlserver_model.MLP", "parameters": {"uri": str(model)}}))
    process = subprocess.Popen([str(python.parent / "mlserver"), "start", str(folder)], cwd=folder,
                               env={"PYTHONPATH": str(ROOT / "bench" / "peer_servers"), "PATH": str(python.parent)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    ready(f"http://127.0.0.1:{port}/v2/models/{MODEL}/ready")
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--concurrency", type=int, nargs="+", default=(8, 32))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    pythons = {name: venv(name) for name in PEERS}
    subprocess.run([sys.executable, "-m", "service.cli", "migrate"], check=True, capture_output=True)
    port = 8791
    trainer = start([sys.executable, "-m", "service.cli", "api", "--port", str(port)], port)
    try:
        model_id, torchscript = train(f"http://127.0.0.1:{port}")
    finally:
        trainer.terminate()
        trainer.wait(timeout=30)

    pixels = [0.0] * 784
    v1 = json.dumps({"instances": [pixels]}).encode()
    v2 = json.dumps({"inputs": [{"name": "pixels", "shape": [1, 784], "datatype": "FP32", "data": pixels}]}).encode()
    binary, binary_headers = v2_binary(__import__("numpy").zeros(784, dtype="float32"))
    predict = json.dumps({"instances": [pixels], "model": model_id}).encode()
    servers = {
        "trainserve": (lambda n, p: start([sys.executable, "-m", "service.cli", "api", "--port", str(p), "--workers",
                                           str(n)], p, env={"TRAINSERVE_METRICS": "false"}),
                       [("v1 JSON (/predict)", "/predict", predict, {}), ("v2 JSON", f"/v2/models/{MODEL}/infer", v2, {}),
                        ("v2 binary", f"/v2/models/{MODEL}/infer", binary, binary_headers)]),
        "KServe": (lambda n, p: kserve(pythons["kserve"], torchscript, p, n),
                   [("v1 JSON", f"/v1/models/{MODEL}:predict", v1, {}), ("v2 JSON", f"/v2/models/{MODEL}/infer", v2, {}),
                    ("v2 binary", f"/v2/models/{MODEL}/infer", binary, binary_headers)]),
        "MLServer": (lambda n, p: mlserver(pythons["mlserver"], torchscript, p, n),
                     [("v2 JSON", f"/v2/models/{MODEL}/infer", v2, {})]),
    }
    results: dict[tuple, dict] = {}
    for processes in (1, 2):
        for name, (launch, routes) in servers.items():
            port += 10
            server = launch(processes, port)
            try:
                for label, path, body, headers in routes:
                    url = f"http://127.0.0.1:{port}{path}"
                    kind = "application/octet-stream" if headers else "application/json"
                    httpx.post(url, content=body, headers={"Content-Type": kind, **headers},
                               timeout=30).raise_for_status()
                    wrk(url, body, kind, 8, 2, headers)  # warm every process
                    for c in args.concurrency:
                        results[name, label, processes, c] = run = wrk(url, body, kind, c, args.seconds, headers)
                        print(f"{name} {label} x{processes} c{c}: {run['rps']:,.0f}/s p50 {run['p50']:.1f} ms "
                              f"p99 {run['p99']:.1f} ms", flush=True)
            finally:
                server.terminate()
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:  # MLServer's inference pool did not always stop on SIGTERM
                    server.kill()
                    server.wait()

    rows = ["| server | protocol | processes | concurrency | requests/s | p50 | p99 | trainserve's ratio |",
            "|---|---|---|---|---|---|---|---|"]
    ours = {"v1 JSON": "v1 JSON (/predict)", "v2 JSON": "v2 JSON", "v2 binary": "v2 binary"}
    for (name, label, processes, c), run in sorted(results.items(), key=lambda kv: (kv[0][2], kv[0][3], kv[0][1], kv[0][0])):
        mine = results.get(("trainserve", ours.get(label, label), processes, c))
        ratio = f"x{mine['rps'] / run['rps']:.2f}" if mine and name != "trainserve" else ""
        rows.append(f"| {name} | {label} | {processes} | {c} | {run['rps']:,.0f} | {run['p50']:.1f} ms | "
                    f"{run['p99']:.1f} ms | {ratio} |")
    for c in args.concurrency:
        for label in ("v1 JSON (/predict)", "v2 JSON", "v2 binary"):
            one, two = results[("trainserve", label, 1, c)], results[("trainserve", label, 2, c)]
            rows.append(f"| trainserve, 2 processes against 1 | {label} | | {c} | x{two['rps'] / one['rps']:.2f} | | | |")
    print("\n".join(rows))
    if not args.no_write:
        write_section("serving-peers", "Serving beside KServe and MLServer, at one and two processes", "\n".join(rows))


if __name__ == "__main__":
    main()
