"""Load test of /predict for the 400-200 MLP on 28x28 inputs, one uvicorn process on this machine.

    python -m bench.serving            # needs wrk (apt-get install wrk) and Fashion-MNIST

Measures requests/s, p50 and p99 at concurrency 1, 8 and 32 for JSON bodies of 784 pixels and for PNG
uploads, the JSON bodies again on a second API process configured as deployments ship it (an API key sent
with each request, a per-key rate limit) and on a third with the telemetry deployments ship (Prometheus
metrics, JSON logs, and traces sampled as shipped, sent over OTLP to a local sink) against the first with
all of these off, and in the same run a bare endpoint on the same HTTP stack that only parses the same JSON body,
the ceiling (and the same endpoint on /predict's lighter route class). The Open Inference Protocol too: the
same digit as binary tensor data over HTTP (wrk) and over gRPC (a grpc.aio client with as many calls in
flight as wrk has connections, in this process). Then times the parts of one request in-process: what the
time goes to.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HOME = Path(tempfile.mkdtemp(prefix="trainserve-bench-"))
os.environ.update(TRAINSERVE_HOME=str(HOME), TRAINSERVE_ACCESS_LOG="false", TRAINSERVE_API_TORCH_THREADS="1")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402
from PIL import Image  # noqa: E402

from bench.accuracy import ensure_fashion_mnist  # noqa: E402
from bench.report import write_section  # noqa: E402

CONCURRENCY = (1, 8, 32)
LUA = """
wrk.method = "POST"
wrk.body = io.open("{body}", "rb"):read("*all")
wrk.headers["Content-Type"] = "{content_type}"
{extra_headers}"""


def start(args: list[str], port: int, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                               env={**os.environ, **(env or {})}, cwd=cwd)
    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"{args} did not start")


def wrk(url: str, body: bytes, content_type: str, connections: int, seconds: int,
        headers: dict[str, str] | None = None) -> dict:
    folder = Path(tempfile.mkdtemp())
    (folder / "body").write_bytes(body)
    extra = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in (headers or {}).items())
    (folder / "post.lua").write_text(LUA.format(body=folder / "body", content_type=content_type, extra_headers=extra))
    out = subprocess.run(["wrk", f"-t{min(connections, 2)}", f"-c{connections}", f"-d{seconds}s", "--latency",
                          "-s", str(folder / "post.lua"), url], capture_output=True, text=True, check=True).stdout
    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        raise SystemExit(f"{url}: {non_2xx.group(1)} failed responses")
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50": ms("50%"), "p99": ms("99%")}


def v2_binary(image: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """One digit as the binary tensor data extension sends it, asking for the probabilities in binary."""
    raw = image.astype(np.float32).reshape(1, -1).tobytes()
    header = json.dumps({"inputs": [{"name": "pixels", "shape": [1, image.size], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


def grpc_load(target: str, model: str, image: np.ndarray, connections: int, seconds: int) -> dict:
    """ModelInfer calls, ``connections`` in flight at once on one channel, for ``seconds``: requests/s, p50, p99."""
    import asyncio

    import grpc

    from service.inference_v2 import grpc_predict_v2_pb2 as pb
    from service.inference_v2 import grpc_predict_v2_pb2_grpc as pb_grpc

    request = pb.ModelInferRequest(model_name=model, raw_input_contents=[image.astype(np.float32).tobytes()])
    request.inputs.add(name="pixels", datatype="FP32", shape=[1, image.size])

    async def run() -> list[float]:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            await stub.ModelInfer(request)  # connect and warm
            latencies: list[float] = []
            deadline = time.perf_counter() + seconds

            async def caller() -> None:
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    await stub.ModelInfer(request)
                    latencies.append(time.perf_counter() - started)

            await asyncio.gather(*(caller() for _ in range(connections)))
            return latencies

    latencies = asyncio.run(run())
    return {"rps": len(latencies) / seconds, "p50": float(np.percentile(latencies, 50) * 1e3),
            "p99": float(np.percentile(latencies, 99) * 1e3)}


def multipart(png: bytes, model: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{model}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"x.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def train_model(api: str) -> str:
    from service.jobs.runner import run_job
    from service.platform.runtime import Runtime
    from service.platform.settings import load_settings

    spec = {"dataset": "fashion-mnist", "architecture": {"type": "mlp", "hidden_sizes": [400, 200]},
            "optimizer": {"type": "adam"}, "training": {"epochs": 1, "batch_size": 256}, "name": "bench-mlp"}
    job = httpx.post(f"{api}/v1/jobs", json=spec, timeout=30).json()
    run_job(Runtime(load_settings()), uuid.UUID(job["id"]), __import__("threading").Event())
    return httpx.get(f"{api}/v1/jobs/{job['id']}", timeout=30).json()["model"]["id"]


def key_check():
    """authorize() on /predict for a key in the process's cache: what requiring keys adds to a request."""
    from types import SimpleNamespace

    from starlette.requests import Request

    from service.http.auth import KeyCache, Principal, authorize
    from service.keys.service import digest
    from service.platform.settings import load_settings

    token = "tsk_" + "x" * 43
    cache = KeyCache(None, ttl=3600)  # every key is in the cache: no session is ever opened
    cache._entries[digest(token)] = (time.monotonic(), Principal(uuid.uuid4(), "bench", frozenset({"predict"})))
    app = SimpleNamespace(state=SimpleNamespace(settings=load_settings().model_copy(update={"auth": "required"}),
                                                keys=cache))
    scope = {"type": "http", "method": "POST", "path": "/predict", "app": app,
             "headers": [(b"content-type", b"application/json"), (b"authorization", f"Bearer {token}".encode())]}

    def check() -> None:
        coroutine = authorize(Request(scope), "predict")
        try:
            coroutine.send(None)  # a cached key never waits: the coroutine finishes in this one step
        except StopIteration:
            return
        raise RuntimeError("the key check waited: the key was not in the cache")

    return check


def telemetry_parts() -> list[tuple[str, object, int]]:
    """What the shipped telemetry adds to one request, each part alone: the middleware (request id, count
    and timing) around an app that only answers, and the decision that leaves an inference request
    untraced."""
    from types import SimpleNamespace

    from service.observability import tracing
    from service.observability.metrics import Metrics
    from service.observability.telemetry import TelemetryMiddleware

    route = SimpleNamespace(path="/predict")
    start = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    body = {"type": "http.response.body", "body": b"{}"}

    async def answer(scope, receive, send) -> None:
        scope["route"] = route
        await send(start)
        await send(body)

    async def sent(message) -> None:
        pass

    state = SimpleNamespace(models=None, batcher=None, reconciler=None)
    wrapped = TelemetryMiddleware(answer, Metrics(state))
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"content-length", b"12000")]

    def call(app):
        def once() -> None:
            start["headers"] = [(b"content-type", b"application/json")]
            coroutine = app({"type": "http", "method": "POST", "path": "/predict", "headers": headers}, None, sent)
            try:
                coroutine.send(None)  # nothing here waits: one step runs it to the end
            except StopIteration:
                pass
        return once

    from service.http.bodies import BodyCeiling

    bare, middleware = call(answer), call(wrapped)
    return [("telemetry middleware: request id, count and timing (added to an app that only answers)",
             (bare, middleware), 1),
            ("body ceiling: a body within it by its Content-Length (added to an app that only answers)",
             (bare, call(BodyCeiling(answer, 32_000_000))), 1),
            ("trace decision that leaves an inference request untraced",
             lambda: tracing.decide("/predict", headers, 0.01), 1)]


def breakdown(json_body: bytes, png: bytes, model_id: str) -> list[str]:
    """Each part of one request, timed in this process on one thread (median of many runs)."""
    import torch
    from threadpoolctl import threadpool_limits

    from service.platform.runtime import Runtime
    from service.platform.settings import load_settings
    from service.predict import images, service
    from service.serving.models import ModelCache, resolve, to_batch
    from service.serving.rollouts import Routing

    torch.set_num_threads(1)
    threadpool_limits(1, user_api="blas")  # as the API process runs
    routing = Routing(ModelCache(Runtime(load_settings()), 4, 5.0))
    model = resolve(routing.cache, model_id, None)
    instances, _, _ = service.parse_request(json_body, 1024)
    batch = to_batch(instances, model)
    response = service.classify(routing, model, None, batch, 3)

    def median_us(fn, n=2000) -> float:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return float(np.median(times) * 1e6)

    batch8 = np.concatenate([batch] * 8)
    parts = [("JSON body -> list (orjson)", lambda: service.parse_request(json_body, 1024), 1),
             ("list -> checked array (NumPy)", lambda: to_batch(instances, model), 1),
             ("model forward (NumPy path) + softmax + top-k", lambda: service.classify(routing, model, None, batch, 3),
              1),
             ("the same, 8 requests in one pass, per request",
              lambda: service.classify(routing, model, None, batch8, 3), 8),
             ("response -> JSON (orjson)", lambda: orjson.dumps(response), 1),
             ("PNG -> 28x28 (decode, crop, fit, centre)",
              lambda: images.preprocess(png, "x.png", model.input_shape, model.value_range), 1),
             ("API key check (a key this process has looked up)", key_check(), 1)]
    rows = [f"| {name} | {median_us(fn) / requests:.0f} µs |" for name, fn, requests in parts]
    for name, fn, requests in telemetry_parts():
        cost = median_us(fn[1], 20000) - median_us(fn[0], 20000) if isinstance(fn, tuple) else median_us(fn, 20000)
        rows.append(f"| {name} | {cost:.1f} µs |")
    return rows


def otlp_sink() -> int:
    """A local OTLP/HTTP endpoint that takes every export and keeps nothing; returns its port."""
    import http.server
    import threading

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def baseline_row(args, c: int, api_port: int, baseline_port: int, json_body: bytes) -> str:
    """JSON /predict on this revision's API and the baseline's, alternated: the median of the pairs' ratios
    (one slow run on this noisy machine moves a mean, not a median)."""
    ratios, here = [], []
    for _ in range(args.pairs):
        then = wrk(f"http://127.0.0.1:{baseline_port}/predict", json_body, "application/json", c, args.seconds)
        now = wrk(f"http://127.0.0.1:{api_port}/predict", json_body, "application/json", c, args.seconds)
        ratios.append(now["rps"] / then["rps"])
        here.append(now)
    mean = {k: sum(run[k] for run in here) / len(here) for k in ("rps", "p50", "p99")}
    return (f"| /predict against {args.baseline} | JSON, 784 pixels | {c} | {mean['rps']:,.0f} | {mean['p50']:.1f} ms "
            f"| {mean['p99']:.1f} ms | x{float(np.median(ratios)):.2f} (median of {len(ratios)} alternated pairs: "
            f"{', '.join(f'{r:.2f}' for r in ratios)}) | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--concurrency", type=int, nargs="+", default=CONCURRENCY,
                        help="the connections of each wrk run (default 1 8 32)")
    parser.add_argument("--pairs", type=int, default=3, help="telemetry on/off runs alternated (default 3)")
    parser.add_argument("--baseline", metavar="REVISION",
                        help="a git revision whose API runs beside this one on the same database: JSON /predict "
                             "on each, alternated --pairs times, gives what a change to the inference path costs")
    parser.add_argument("--baseline-only", action="store_true", help="with --baseline: only that comparison")
    args = parser.parse_args()
    ensure_fashion_mnist()
    subprocess.run([sys.executable, "-m", "service.cli", "migrate"], check=True)
    api_port, bare_port, keyed_port, observed_port, grpc_port = 8781, 8782, 8783, 8784, 8785
    # The bare API: no keys (loopback), no rate limit, no metrics, plain logs, no traces; gRPC beside it.
    quiet = {"TRAINSERVE_METRICS": "false"}
    api = start([sys.executable, "-m", "service.cli", "api", "--port", str(api_port)], api_port,
                env={**quiet, "TRAINSERVE_GRPC_PORT": str(grpc_port)})
    # The same API on the same database as deployments ship it: keys required, and the per-key rate limit
    # counting every request (set too high to refuse any). Telemetry off, as in the bare one.
    keyed = start([sys.executable, "-m", "service.cli", "api", "--port", str(keyed_port)], keyed_port,
                  env={**quiet, "TRAINSERVE_AUTH": "required", "TRAINSERVE_RATE_LIMIT_INFERENCE": "1000000000/hour"})
    # The telemetry as the deployment ships it (deploy/k8s/base): metrics, JSON logs (with request ids),
    # and traces to an OTLP endpoint, inference requests sampled at the default share. Keys off.
    observed = start([sys.executable, "-m", "service.cli", "api", "--port", str(observed_port)], observed_port,
                     env={"TRAINSERVE_METRICS": "true", "TRAINSERVE_LOG_FORMAT": "json",
                          "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_sink()}"})
    token = subprocess.run([sys.executable, "-m", "service.cli", "keys", "create", "--name", "bench", "--scopes",
                            "predict"], check=True, capture_output=True, text=True).stdout.strip()
    auth = {"Authorization": f"Bearer {token}"}
    bare = start([sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", str(bare_port), "--no-access-log",
                  "--log-level", "warning"], bare_port)
    processes = [api, bare, keyed, observed]
    if args.baseline:  # the revision's own code, from a worktree of it, started there (python -m puts it first)
        tree = Path(tempfile.mkdtemp(prefix="trainserve-baseline-")) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.baseline], check=True,
                       capture_output=True)
        baseline_port = 8786
        processes.append(start([sys.executable, "-m", "service.cli", "api", "--port", str(baseline_port)],
                               baseline_port, env=quiet, cwd=tree))
    try:
        model_id = train_model(f"http://127.0.0.1:{api_port}")
        from models.datasets import builtin_splits

        image = builtin_splits("fashion-mnist", validation_split=0.0, test_split=0.2, seed=0).test.x[0, 0].numpy()
        json_body = json.dumps({"instances": [image.reshape(-1).tolist()], "model": model_id}).encode()
        buffer = io.BytesIO()
        Image.fromarray(image.astype(np.uint8)).save(buffer, format="PNG")
        png_body, png_type = multipart(buffer.getvalue(), model_id)
        v2_body, v2_headers = v2_binary(image)
        v2_url = f"http://127.0.0.1:{api_port}/v2/models/bench-mlp/infer"
        httpx.post(v2_url, content=v2_body, headers=v2_headers, timeout=30).raise_for_status()
        httpx.post(f"http://127.0.0.1:{api_port}/predict", content=json_body,
                   headers={"Content-Type": "application/json"}, timeout=30).raise_for_status()  # load + warm
        httpx.post(f"http://127.0.0.1:{keyed_port}/predict", content=json_body,
                   headers={"Content-Type": "application/json", **auth}, timeout=30).raise_for_status()
        httpx.post(f"http://127.0.0.1:{observed_port}/predict", content=json_body,
                   headers={"Content-Type": "application/json"}, timeout=30).raise_for_status()
        if args.baseline:
            httpx.post(f"http://127.0.0.1:{baseline_port}/predict", content=json_body,
                       headers={"Content-Type": "application/json"}, timeout=30).raise_for_status()

        rows = ["| endpoint | body | concurrency | requests/s | p50 | p99 | share of ceiling | share of lean ceiling |",
                "|---|---|---|---|---|---|---|---|"]
        for c in args.concurrency:
            if args.baseline_only:
                rows.append(baseline_row(args, c, api_port, baseline_port, json_body))
                print(rows[-1], flush=True)
                continue
            ceiling = wrk(f"http://127.0.0.1:{bare_port}/parse", json_body, "application/json", c, args.seconds)
            lean = wrk(f"http://127.0.0.1:{bare_port}/parse-lean", json_body, "application/json", c, args.seconds)
            json_run = wrk(f"http://127.0.0.1:{api_port}/predict", json_body, "application/json", c, args.seconds)
            png_run = wrk(f"http://127.0.0.1:{api_port}/predict", png_body, png_type, c, args.seconds)
            v2_http = wrk(v2_url, v2_body, "application/octet-stream", c, args.seconds, v2_headers)
            v2_grpc = grpc_load(f"127.0.0.1:{grpc_port}", "bench-mlp", image, c, args.seconds)
            keyed_run = wrk(f"http://127.0.0.1:{keyed_port}/predict", json_body, "application/json", c, args.seconds,
                            auth)
            # The bare API again after the deployed one: the ratio compares it with both neighbours' mean.
            again = wrk(f"http://127.0.0.1:{api_port}/predict", json_body, "application/json", c, args.seconds)
            # Telemetry on and off, alternated: runs on this machine vary by 10 % from one to the next.
            offs, ons = [again], []
            for _ in range(args.pairs):
                ons.append(wrk(f"http://127.0.0.1:{observed_port}/predict", json_body, "application/json", c,
                               args.seconds))
                offs.append(wrk(f"http://127.0.0.1:{api_port}/predict", json_body, "application/json", c,
                                args.seconds))
            observed_run = {k: sum(run[k] for run in ons) / len(ons) for k in ("rps", "p50", "p99")}
            keys_off_rps = (json_run["rps"] + again["rps"]) / 2
            telemetry_off_rps = sum(run["rps"] for run in offs) / len(offs)
            for name, body, run in (("bare parse (ceiling)", "JSON, 784 pixels", ceiling),
                                    ("bare parse, /predict's route class (lean ceiling)", "JSON, 784 pixels", lean),
                                    ("/predict", "JSON, 784 pixels", json_run), ("/predict", "PNG upload", png_run),
                                    ("/v2 infer over HTTP", "binary tensor data, 784 FP32", v2_http),
                                    ("/v2 ModelInfer over gRPC", "raw_input_contents, 784 FP32", v2_grpc),
                                    ("/predict, as deployed: key and rate limit", "JSON, 784 pixels", keyed_run),
                                    ("/predict, as deployed: metrics, JSON logs, sampled traces", "JSON, 784 pixels",
                                     observed_run)):
                shares = (f"{run['rps'] / ceiling['rps']:.0%} | {run['rps'] / lean['rps']:.0%}"
                          if name.startswith(("/predict", "/v2")) else "100% | " if run is ceiling else " | 100%")
                if run is keyed_run:
                    shares += f" (x{keyed_run['rps'] / keys_off_rps:.2f} of neither)"
                if run is observed_run:
                    shares += (f" (x{observed_run['rps'] / telemetry_off_rps:.2f} of none: {len(ons)} runs against "
                               f"{len(offs)} alternated)")
                rows.append(f"| {name} | {body} | {c} | {run['rps']:,.0f} | {run['p50']:.1f} ms | {run['p99']:.1f} ms "
                            f"| {shares} |")
                print(rows[-1], flush=True)
            if args.baseline:
                rows.append(baseline_row(args, c, api_port, baseline_port, json_body))
                print(rows[-1], flush=True)
        parts = ["| part of one request | median |", "|---|---|", *breakdown(json_body, buffer.getvalue(), model_id)]
        print("\n".join(parts))
        if not args.no_write:
            write_section("serving-cpu", "Serving: /predict under load (cpu)", "\n".join(rows) + "\n\n" + "\n".join(parts))
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        if args.baseline:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=False, capture_output=True)


if __name__ == "__main__":
    main()
