"""What a model's life after it goes live costs /predict: one API process, the 400-200 MLP on Fashion-MNIST,
wrk on JSON bodies of 784 pixels sent to ``bench-mlp@production``.

    python -m bench.rollouts            # needs wrk (apt-get install wrk) and Fashion-MNIST

Alternates, ``--pairs`` times at each concurrency, runs with nothing on (no rollout, no prediction log) and
runs with one thing on: the routing decision alone (a canary whose candidate serves 0.01 %, nothing
compared), a 10 % canary of a second version (with the default 5 % of requests also run on the other
version, off the request's path), shadow traffic at 100 % (every request also run on the candidate, off the
request's path), the prediction log at its default share (10 %) and at 100 %. Each ratio is against the
runs with nothing on just before and just after it; they are what docs/rollouts.md and docs/monitoring.md
quote. The rollouts never reach a verdict here (their gates wait for more requests than a run sends).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import httpx
import numpy as np

from bench.accuracy import ensure_fashion_mnist
from bench.report import write_section
from bench.serving import start, train_model, wrk

NEVER = {"min_requests": 10**9}
MODES = ("routing", "canary", "shadow", "log10", "log100")


def rollout(api: str, mode: str) -> str:
    """``routing``: a canary whose candidate serves 0.01 % and nothing compared, the routing decision alone."""
    first = {"canary": 10, "shadow": 100, "routing": 0.01}[mode]
    body = {"candidate": 2, "mode": "shadow" if mode == "shadow" else "canary",
            "steps": [{"weight": first, "min_seconds": 86400}] + ([{"weight": 100}] if mode != "shadow" else []),
            "gates": {**NEVER, **({"min_agreement": None} if mode == "routing" else {})},
            **({"compare_share": 0} if mode == "routing" else {})}
    r = httpx.post(f"{api}/v1/models/bench-mlp/rollouts", json=body, timeout=30)
    r.raise_for_status()
    return r.json()["id"]


def log_share(api: str, share: float) -> None:
    httpx.put(f"{api}/v1/models/bench-mlp/monitoring", json={"log_share": share}, timeout=30).raise_for_status()
    time.sleep(5)  # two background passes (every 2 s): every process has read the share


def routed(api: str, json_body: bytes, expect: set[int]) -> None:
    """Wait until the API's background pass has read the routes: the versions answering are ``expect``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = {httpx.post(f"{api}/predict", content=json_body, headers={"Content-Type": "application/json"},
                           timeout=30).json()["model"]["version"] for _ in range(60)}
        if seen == expect:
            return
        time.sleep(0.2)
    raise SystemExit(f"the routes did not settle on versions {expect}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=(8, 32))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    ensure_fashion_mnist()
    subprocess.run([sys.executable, "-m", "service.cli", "migrate"], check=True)
    port = 8791
    api = f"http://127.0.0.1:{port}"
    process = start([sys.executable, "-m", "service.cli", "api", "--port", str(port)], port,
                    env={"TRAINSERVE_METRICS": "false", "TRAINSERVE_PREDICTION_LOG_SHARE": "0"})
    try:
        train_model(api), train_model(api)
        httpx.put(f"{api}/v1/models/bench-mlp/aliases/production", json={"version": 1}, timeout=30).raise_for_status()
        from models.datasets import builtin_splits

        image = builtin_splits("fashion-mnist", validation_split=0.0, test_split=0.2, seed=0).test.x[0, 0].numpy()
        json_body = json.dumps({"instances": [image.reshape(-1).tolist()], "model": "bench-mlp@production"}).encode()
        routed(api, json_body, {1})
        rows = ["| concurrency | on | requests/s | p50 | p99 | against nothing on (median of pairs) |",
                "|---|---|---|---|---|---|"]
        for c in args.concurrency:
            runs: dict[str, list[dict]] = {"none": [], **{mode: [] for mode in MODES}}
            for _ in range(args.pairs):
                for mode in MODES:
                    runs["none"].append(wrk(f"{api}/predict", json_body, "application/json", c, args.seconds))
                    if mode.startswith("log"):
                        log_share(api, int(mode[3:]) / 100)
                    else:
                        rollout_id = rollout(api, mode)
                        if mode == "canary":
                            routed(api, json_body, {1, 2})
                        else:
                            time.sleep(5)  # two background passes (every 2 s): the route is read
                    runs[mode].append(wrk(f"{api}/predict", json_body, "application/json", c, args.seconds))
                    if mode.startswith("log"):
                        log_share(api, 0)
                    else:
                        httpx.post(f"{api}/v1/models/bench-mlp/rollouts/{rollout_id}/abort",
                                   timeout=30).raise_for_status()
                        routed(api, json_body, {1})
            runs["none"].append(wrk(f"{api}/predict", json_body, "application/json", c, args.seconds))
            for mode, label in (("none", "nothing on"), ("routing", "routing alone (a 0.01 % canary)"),
                                ("canary", "10 % canary (5 % compared)"), ("shadow", "shadow, 100 % mirrored"),
                                ("log10", "prediction log, 10 % (default)"), ("log100", "prediction log, 100 %")):
                mean = {k: sum(r[k] for r in runs[mode]) / len(runs[mode]) for k in ("rps", "p50", "p99")}
                # each run against the runs with nothing on just before and just after it, so that a machine
                # that speeds up or slows down during the benchmark does not tilt the ratios
                first = MODES.index(mode) if mode != "none" else 0
                around = [(runs["none"][i]["rps"] + runs["none"][i + 1]["rps"]) / 2
                          for i in range(first, len(runs["none"]) - 1, len(MODES))] if mode != "none" else []
                ratios = [r["rps"] / n for r, n in zip(runs[mode], around)]
                ratio = "" if mode == "none" else (f"x{float(np.median(ratios)):.2f} "
                                                   f"({', '.join(f'{x:.2f}' for x in ratios)})")
                rows.append(f"| {c} | {label} | {mean['rps']:,.0f} | {mean['p50']:.1f} ms | {mean['p99']:.1f} ms "
                            f"| {ratio} |")
                print(rows[-1], flush=True)
        if not args.no_write:
            write_section("rollouts-cpu", "Rollouts and prediction logs: what they cost /predict (cpu)",
                          "\n".join(rows))
    finally:
        process.terminate()
        process.wait(timeout=30)


if __name__ == "__main__":
    main()
