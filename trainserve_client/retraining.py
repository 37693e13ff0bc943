"""``trainserve retraining set|show|off NAME``: a model name trained again by itself on drift, falling live
accuracy or a schedule, then rolled out through canary steps (docs/monitoring.md#retraining)."""

from __future__ import annotations

import json

from trainserve_client.client import Client


def add_commands(sub, command) -> None:
    retraining = sub.add_parser("retraining", help="train a model name again by itself, and roll the result out")
    retraining_sub = retraining.add_subparsers(dest="retraining_command", required=True)
    p = command("set", "set NAME's retraining policy (replaces the one it has)", retraining_sub)
    p.add_argument("name")
    p.add_argument("--on-drift", action="store_true", help="when the alias's version drifts")
    p.add_argument("--min-live-accuracy", type=float, help="when its live accuracy of the last day falls below this")
    p.add_argument("--min-labels", type=int, help="... on at least this many labelled instances (default 100)")
    p.add_argument("--every-hours", type=float, help="on a schedule")
    p.add_argument("--cooldown-hours", type=float, help="none sooner than this after the last (default 6)")
    p.add_argument("--dataset", help="train on this dataset's newest version (default: the model's own dataset's)")
    p.add_argument("--alias", default="production", help="the alias watched and rolled out to")
    p.add_argument("--no-rollout", action="store_true", help="register the new version and roll nothing out")
    p.add_argument("--disabled", action="store_true", help="keep the policy but do not act on it")
    p = command("show", "NAME's policy, the job it runs, its last rollout and its events", retraining_sub)
    p.add_argument("name")
    p = command("off", "remove NAME's policy", retraining_sub)
    p.add_argument("name")


def _policy(args) -> dict:
    triggers: dict = {"drift": args.on_drift}
    if args.min_live_accuracy is not None:
        triggers["min_live_accuracy"] = args.min_live_accuracy
    if args.min_labels is not None:
        triggers["min_labels"] = args.min_labels
    if args.every_hours is not None:
        triggers["every_hours"] = args.every_hours
    body: dict = {"alias": args.alias, "triggers": triggers, "enabled": not args.disabled}
    if args.cooldown_hours is not None:
        body["cooldown_hours"] = args.cooldown_hours
    if args.dataset:
        body["dataset"] = args.dataset
    if args.no_rollout:
        body["rollout"] = None
    return body


def summary(p: dict) -> list[str]:
    policy, t = p["policy"], p["policy"]["triggers"]
    when = [w for w in ("on drift" if t["drift"] else None,
                        f"live accuracy under {t['min_live_accuracy']:g} (on {t['min_labels']}+ labels)"
                        if t["min_live_accuracy"] is not None else None,
                        f"every {t['every_hours']:g} h" if t["every_hours"] is not None else None) if w]
    lines = [f"retraining {p['name']}@{policy['alias']}: {'on' if p['enabled'] else 'off'}, {', '.join(when)}; "
             f"cool-down {policy['cooldown_hours']:g} h; "
             f"{'rolled out in canary steps' if policy['rollout'] else 'no rollout'}"]
    if p["job_id"]:
        lines.append(f"  job running: {p['job_id']}")
    if p["last_reason"]:
        lines.append(f"  last: {p['last_reason']}")
    for e in p["history"][-10:]:
        detail = {k: v for k, v in e.items() if k not in ("seq", "kind", "time", "policy")}
        lines.append(f"  {e['time'][:19]} {e['kind']}: {json.dumps(detail)}")
    return lines


def run(args, client: Client) -> int:
    command = args.retraining_command
    if command == "off":
        client.delete_retraining(args.name)
        print(f"{args.name}: no retraining policy")
        return 0
    policy = client.set_retraining(args.name, _policy(args)) if command == "set" else client.get_retraining(args.name)
    print(json.dumps(policy, indent=2) if args.json else "\n".join(summary(policy)))
    return 0
