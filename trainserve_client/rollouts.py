"""``trainserve rollout start|status|pause|resume|promote|abort``: a model version rolled out over live traffic
(docs/rollouts.md). ``start --follow`` and ``status --follow`` print one line per step and verdict until the
rollout ends, and exit 0 when the alias moved to the candidate, 1 when it was rolled back."""

from __future__ import annotations

import json
import sys

from trainserve_client.client import EXIT, ApiError, Client

ACTIONS = ("pause", "resume", "promote", "abort")


def add_commands(sub, command) -> None:
    rollout = sub.add_parser("rollout", help="roll a model version out over live traffic: canary or shadow")
    rollout_sub = rollout.add_subparsers(dest="rollout_command", required=True)
    p = command("start", "start moving NAME@ALIAS to VERSION step by step, judged on live traffic", rollout_sub)
    p.add_argument("name")
    p.add_argument("version", help="the candidate: its version number, NAME@N, or its id")
    p.add_argument("--alias", default="production")
    p.add_argument("--mode", choices=["canary", "shadow"], default="canary")
    p.add_argument("--steps", help="the steps' weights in %%, e.g. 5,25,50,100 (canary's default; shadow: 100)")
    p.add_argument("--step-seconds", type=float, help="each step lasts at least this long (default 60)")
    p.add_argument("--step-requests", type=int, help="... and until the candidate had this many requests "
                                                     "(default 200)")
    p.add_argument("--compare-share", type=float, help="canary: %% of requests also run on the other version "
                                                       "(default 5)")
    p.add_argument("--gate", action="append", default=[], metavar="NAME=VALUE",
                   help="a gate's bound (docs/rollouts.md), e.g. --gate min_agreement=0.95 --gate max_error_rate=0.02")
    p.add_argument("--follow", action="store_true", help="then show each step and verdict until it ends")
    p = command("status", "a rollout's step, live numbers and gates (default: NAME's newest)", rollout_sub)
    p.add_argument("name")
    p.add_argument("id", nargs="?", help="the rollout's id (default: the newest of NAME)")
    p.add_argument("--follow", action="store_true", help="then show each step and verdict until it ends")
    for action in ACTIONS:
        p = command(action, {"pause": "hold a rollout at its step", "resume": "judge a paused rollout again",
                             "promote": "finish a rollout now: the alias moves to the candidate",
                             "abort": "roll a rollout back now"}[action], rollout_sub)
        p.add_argument("name")
        p.add_argument("id", nargs="?", help="the rollout's id (default: the running or paused one of NAME)")


def _number(text: str, what: str) -> float | None:
    if text.lower() in ("null", "none"):
        return None
    try:
        return float(text)
    except ValueError:
        raise ApiError(f"{what}: {text!r} is not a number") from None


def _body(args) -> dict:
    body: dict = {"candidate": args.version, "alias": args.alias, "mode": args.mode}
    if args.steps or args.step_seconds is not None or args.step_requests is not None:
        weights = [_number(w, "--steps") for w in args.steps.split(",")] if args.steps else \
            ([5, 25, 50, 100] if args.mode == "canary" else [100])
        body["steps"] = [{"weight": w, **({"min_seconds": args.step_seconds} if args.step_seconds is not None else {}),
                          **({"min_requests": args.step_requests} if args.step_requests is not None else {})}
                         for w in weights]
    if args.compare_share is not None:
        body["compare_share"] = args.compare_share
    gates = {}
    for item in args.gate:
        key, sep, value = item.partition("=")
        if not sep:
            raise ApiError(f"--gate {item!r}: write it as NAME=VALUE, e.g. min_agreement=0.95")
        gates[key] = _number(value, f"--gate {key}")
    if gates:
        body["gates"] = gates
    return body


def _find(client: Client, name: str, rollout_id: str | None, active: bool) -> dict:
    if rollout_id:
        return client.get_rollout(name, rollout_id)
    items = client.list_rollouts(name, limit=50)["items"]
    if active:
        items = [r for r in items if r["status"] in ("running", "paused")]
    if not items:
        raise ApiError(f"{name} has no {'running or paused ' if active else ''}rollout; trainserve rollout start "
                       f"{name} VERSION starts one")
    return items[0]


def summary(r: dict) -> list[str]:
    lines = [f"rollout {r['id']}: {r['name']}@{r['alias']} v{r['stable']['version']} -> v{r['candidate']['version']}, "
             f"{r['mode']}, {r['status']}, step {r['step'] + 1} of {len(r['steps'])} at {r['weight']:g} %"]
    for arm in ("stable", "candidate"):
        s = r["live"].get(arm)
        if s:
            p99 = "-" if s["p99_ms"] is None else f"{s['p99_ms']:.2f} ms"
            lines.append(f"  {arm:9} {s['requests']:>7} requests, {s['errors']} errors, p99 {p99}, "
                         f"{s['compared']} compared")
    for c in r["checks"]:
        mark = {True: "pass", False: "FAIL", None: "wait"}[c["passed"]]
        lines.append(f"  [{mark}] {c['gate']}: {c['reason']}")
    if r["reason"]:
        lines.append(f"  {r['reason']}")
    return lines


def _event_line(e: dict) -> str | None:
    if e["kind"] == "step":
        return f"step {e['step'] + 1}: {e['weight']:g} % (at least {e['min_seconds']:g} s and {e['min_requests']} " \
               "requests)"
    if e["kind"] == "verdict":
        gates = "; ".join(g["reason"] for g in e["gates"] if g["passed"] is not None)
        return f"step {e['step'] + 1}: {'passed' if e['verdict'] == 'pass' else 'failed'} ({gates})"
    if e["kind"] == "status":
        return f"{e['status']}" + (f": {e['reason']}" if e.get("reason") else "")
    return None


def follow(client: Client, name: str, rollout_id: str, as_json: bool) -> int:
    status = None
    for event in client.rollout_events(name, rollout_id):
        if as_json:
            print(json.dumps(event), flush=True)
        elif (line := _event_line(event)) is not None:
            print(line, flush=True)
        if event["kind"] == "status":
            status = event["status"]
    return EXIT.get(status, 0)


def run(args, client: Client) -> int:
    command = args.rollout_command
    if command == "start":
        rollout = client.start_rollout(args.name, _body(args))
    elif command == "status":
        rollout = _find(client, args.name, args.id, active=False)
    else:
        rollout = client.rollout_command(args.name, _find(client, args.name, args.id, active=True)["id"], command)
    if getattr(args, "follow", False):
        if not args.json:
            print("\n".join(summary(rollout)), file=sys.stderr)
        return follow(client, args.name, rollout["id"], args.json)
    if args.json:
        print(json.dumps(rollout, indent=2))
    else:
        print("\n".join(summary(rollout)))
    return EXIT.get(rollout["status"], 0) if command in ("promote", "abort") else 0
