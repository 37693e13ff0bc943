"""``trainserve``'s commands for a person at a terminal, or a script: they talk to a running API over HTTP
(client.py beside this says where it is and which key they send).

Every command takes ``--json``: the API's answer as JSON on stdout, for scripts. An error prints the API's
message on stderr and exits 1; ``submit --follow`` and ``follow`` exit 0 when the job succeeded, 1 when it
failed and 3 when it was cancelled.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from trainserve_client import retraining, rollouts
from trainserve_client.client import DEFAULT_URL, EXIT, ApiError, Client

COMMANDS = ("submit", "follow", "jobs", "show", "cancel", "datasets", "models", "rollout", "retraining", "predict", "forecast")


def _console():
    from rich.console import Console

    return Console(), Console(stderr=True)


def _print_json(value) -> None:
    print(json.dumps(value, indent=2))


def _table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    _console()[0].print(table)


def _spec(path: str) -> dict:
    import yaml

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise ApiError(f"{path}: {exc.strerror}") from None
    try:
        spec = yaml.safe_load(text)  # YAML, and JSON (a subset of YAML)
    except yaml.YAMLError as exc:
        raise ApiError(f"{path}: not valid YAML or JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise ApiError(f"{path}: a job spec is a mapping (dataset, architecture, optimizer, training)")
    return spec


def _headline(result: dict | None) -> str:
    if not result:
        return ""
    if "test_accuracy" in result:
        return f"test accuracy {result['test_accuracy']:.4f}"
    model = result.get("model") or {}
    return f"test RMSE {model['rmse']:.4g}" if "rmse" in model else ""


def follow(client: Client, job_id: str, as_json: bool) -> int:
    """Show the job's events as they come. Ctrl-C stops following, not the job, and says so in one line."""
    try:
        return _json_lines(client, job_id) if as_json else _progress(client, job_id)
    except KeyboardInterrupt:
        print(f"\nstopped following; job {job_id} keeps running: `trainserve follow {job_id}` picks it up again",
              file=sys.stderr)
        return 130


def _json_lines(client: Client, job_id: str) -> int:
    final = None
    for event in client.events(job_id):
        print(json.dumps(event), flush=True)
        final = event
    return EXIT[final["status"]]


def _epoch_line(event: dict, epochs: int) -> str:
    parts = [f"epoch {event['epoch']}/{epochs}", f"train loss {event['train_loss']:.4f}"]
    for key in ("val_loss", "train_accuracy", "val_accuracy"):
        if event.get(key) is not None:
            parts.append(f"{key.replace('_', ' ')} {event[key]:.4f}")
    parts.append(f"{event['samples_per_second']:,.0f} samples/s")
    return "  ".join(parts)


def _outcome(job: dict) -> str:
    """The finished job's model as ``name vN`` and its promotion's verdict."""
    model = job.get("model")
    line = f"model {model['name']} v{model['version']}" if model else "no model"
    promotion = (job.get("result") or {}).get("promotion")
    if promotion:
        moved = "moved to it" if promotion["moved"] else "not moved"
        line += f"; {model['name'] if model else ''}@{promotion['alias']} {moved}: {promotion['reason']}"
    return line


def _progress(client: Client, job_id: str) -> int:
    """One live bar for the epoch in progress and one line for each finished epoch, each epoch once
    (a reconnect that replays events prints nothing twice); the bar leaves nothing behind."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out, err = _console()
    epochs = client.get_job(job_id)["progress"]["epochs"]
    printed: set[int] = set()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=out, transient=True) as bars:
        task = bars.add_task("waiting for the first epoch", total=None)
        for event in client.events(job_id):
            if event["kind"] == "progress":
                if event["epoch"] not in printed:
                    bars.update(task, description=f"epoch {event['epoch']}/{epochs}", total=event["steps"],
                                completed=event["step"])
            elif event["kind"] == "epoch":
                if event["epoch"] not in printed:
                    printed.add(event["epoch"])
                    bars.console.print(_epoch_line(event, epochs), highlight=False)
                    following = (f"epoch {event['epoch'] + 1}/{epochs}" if event["epoch"] < epochs else
                                 "testing the model")
                    bars.update(task, description=following, total=None, completed=0)
            elif event["status"] == "running":
                bars.console.print(f"job {job_id}: running (attempt {event.get('attempt', 1)})")
            elif event["status"] == "queued":
                bars.console.print(f"job {job_id}: queued" + (f": {event['reason']}" if event.get("reason") else ""))
            else:
                break
        else:
            return 1
    status = event["status"]
    if status == "succeeded":
        out.print(f"[green]job {job_id}: succeeded[/green] {_headline(event.get('result'))}; "
                  f"{_outcome(client.get_job(job_id))}")
    elif status == "failed":
        err.print(f"[red]job {job_id}: failed[/red]: {event.get('error')}")
    elif status == "cancelled":
        err.print(f"job {job_id}: cancelled")
    else:
        err.print(f"job {job_id}: {status}: {event.get('error')}")
    return EXIT.get(status, 1)


class _Reading:
    """A file that moves a progress bar as httpx reads it for the upload."""

    def __init__(self, path: Path, advance) -> None:
        self.file, self.advance, self.name = path.open("rb"), advance, path.name

    def read(self, size: int = -1) -> bytes:
        chunk = self.file.read(size)
        self.advance(len(chunk))
        return chunk

    def close(self) -> None:
        self.file.close()


def upload(client: Client, files: list[str], fields: dict, as_json: bool) -> dict:
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    paths = [Path(f) for f in files]
    for path in paths:
        if not path.is_file():
            raise ApiError(f"{path}: no such file")
    total = sum(p.stat().st_size for p in paths)
    with Progress("[bold]uploading", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=_console()[1], disable=as_json) as bars:
        task = bars.add_task("upload", total=total)
        readers = [_Reading(p, lambda n: bars.advance(task, n)) for p in paths]
        try:
            return client.request("POST", "/v1/datasets", data=fields,
                                  files=[("file", (r.name, r, "application/octet-stream")) for r in readers],
                                  timeout=600)
        finally:
            for r in readers:
                r.close()


def _readings(path: str) -> tuple[list[str], dict[str, list]]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise ApiError(f"{path}: {exc.strerror}") from None
    if len(rows) < 2 or len(rows[0]) < 2:
        raise ApiError(f"{path}: a CSV with a header, a timestamp column first, then one column per series")
    header, body = rows[0], [r for r in rows[1:] if r]
    values = {name: [float(r[i]) if r[i] not in ("", "nan", "NaN") else None for r in body]
              for i, name in enumerate(header) if i}
    return [r[0] for r in body], values


def add_global_options(parser: argparse.ArgumentParser, default=None) -> None:
    """--url and --json, which may come before the command or after it; a command's own copy is SUPPRESSed
    when not given, so that it never overwrites what came before the command."""
    parser.add_argument("--url", default=default, help="the API (default TRAINSERVE_URL, TRAINSERVE_API_HOST and "
                                                       f"TRAINSERVE_API_PORT, the config file, or {DEFAULT_URL})")
    parser.add_argument("--json", action="store_true", default=False if default is None else default,
                        help="print the API's answer as JSON")


def add_commands(sub) -> None:
    def command(name: str, help_: str, parent=sub):
        p = parent.add_parser(name, help=help_)
        add_global_options(p, argparse.SUPPRESS)  # after the command, or before it (the top level's)
        return p

    p = command("submit", "submit a training job from a YAML or JSON spec file ('-': stdin)")
    p.add_argument("spec")
    p.add_argument("--follow", action="store_true", help="then show its progress until it ends; the exit code "
                                                          "follows its outcome (0 succeeded, 1 failed, 3 cancelled)")
    command("follow", "show a job's progress until it ends (exit code as submit --follow)").add_argument(
        "job", help="its id, or any unique prefix of it (4 characters or more)")
    p = command("jobs", "list jobs, newest first")
    p.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled", "pruned"])
    p.add_argument("--limit", type=int, default=20)
    command("show", "a job: status, progress, result").add_argument("job", help="its id, or a unique prefix")
    command("cancel", "cancel a job").add_argument("job", help="its id, or a unique prefix")

    datasets = sub.add_parser("datasets", help="upload and list datasets")
    datasets_sub = datasets.add_subparsers(dest="datasets_command", required=True)
    p = command("upload", "upload a dataset file (two for MNIST IDX images and labels)", datasets_sub)
    p.add_argument("files", nargs="+")
    p.add_argument("--name", required=True)
    p.add_argument("--description", default="")
    p.add_argument("--field", action="append", default=[], metavar="KEY=VALUE",
                   help="another form field of the upload (docs/datasets.md), e.g. --field kind=timeseries")
    command("list", "datasets, built-in and uploaded", datasets_sub)

    models = sub.add_parser("models", help="list models and move their aliases")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    command("list", "registered model versions", models_sub).add_argument("--name")
    p = command("promote", "point NAME@ALIAS at a version through the promotion gate, as the API and the "
                           "dashboard do: only if it passes the gate and beats the version there now", models_sub)
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.add_argument("--alias", default="production")
    p.add_argument("--metric", choices=["test_accuracy", "test_macro_f1", "test_rmse", "test_mae"],
                   help="default test_accuracy for a classifier, test_rmse for a forecaster")
    p.add_argument("--min", type=float, help="a classifier's bar the metric must clear")
    p.add_argument("--max", type=float, help="a forecaster's bound on its error, in the target's units")
    alias = command("alias", "move an alias by hand, without the gate", models_sub)
    alias_sub = alias.add_subparsers(dest="alias_command", required=True)
    p = command("set", "point NAME@ALIAS at VERSION, whatever its metrics (an admin key)", alias_sub)
    p.add_argument("name")
    p.add_argument("alias")
    p.add_argument("version", type=int)

    rollouts.add_commands(sub, command)
    retraining.add_commands(sub, command)

    p = command("predict", "classify digit images (PNG, JPEG)")
    p.add_argument("images", nargs="+")
    p.add_argument("--model", help="id, name, name@version or name@alias; default the one classifier at production")
    p.add_argument("--top-k", type=int, default=3)
    p = command("forecast", "forecast from recent readings: a CSV with a timestamp column, then one per series")
    p.add_argument("readings")
    p.add_argument("--model", help="default the one forecaster at production")
    p.add_argument("--horizon", type=int)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args, Client(args.url))
    except ApiError as exc:
        print(f"trainserve: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, client: Client) -> int:
    if args.command == "submit":
        job = client.submit_job(_spec(args.spec))
        if not args.follow:
            _print_json(job) if args.json else print(job["id"])
            return 0
        if not args.json:
            print(f"job {job['id']}: submitted", file=sys.stderr)
        return follow(client, job["id"], args.json)
    if args.command == "follow":
        return follow(client, client.resolve_job_id(args.job), args.json)
    if args.command == "jobs":
        page = client.list_jobs(args.status, args.limit)
        if args.json:
            _print_json(page)
        else:
            _table(f"jobs ({page['total']} in all)", ["id", "status", "dataset", "architecture", "epoch", "created"],
                   [[j["id"], j["status"], j["spec"]["dataset"], j["spec"]["architecture"]["type"],
                     f"{j['progress']['epoch']}/{j['progress']['epochs']}", j["created_at"][:19]]
                    for j in page["items"]])
        return 0
    if args.command in ("show", "cancel"):
        job_id = client.resolve_job_id(args.job)
        job = client.get_job(job_id) if args.command == "show" else client.cancel_job(job_id)
        if args.json:
            _print_json(job)
        else:
            _table(f"job {job['id']}", ["field", "value"], [
                ["status", job["status"]], ["dataset", job["spec"]["dataset"]],
                ["architecture", job["spec"]["architecture"]["type"]],
                ["progress", f"epoch {job['progress']['epoch']}/{job['progress']['epochs']}"],
                ["result", _headline(job.get("result"))], ["error", job.get("error")],
                ["model", (job.get("model") or {}).get("id")]])
        return 0
    if args.command == "datasets":
        if args.datasets_command == "upload":
            fields = {"name": args.name, "description": args.description}
            for item in args.field:
                key, sep, value = item.partition("=")
                if not sep:
                    raise ApiError(f"--field {item!r}: write it as KEY=VALUE")
                fields[key] = value
            row = upload(client, args.files, fields, args.json)
            _print_json(row) if args.json else print(f"dataset {row['name']} version {row['version']}: {row['id']}")
            return 0
        page = client.list_datasets()
        if args.json:
            _print_json(page)
        else:
            _table("datasets", ["name", "version", "kind", "size"],
                   [[d["name"], d.get("version"), d.get("kind"), (d.get("stats") or {}).get("n_samples")]
                    for d in page["items"]])
        return 0
    if args.command == "models":
        if args.models_command == "alias":
            alias = client.set_alias(args.name, args.alias, args.version)
            _print_json(alias) if args.json else print(f"{args.name}@{args.alias} -> version {args.version}")
            return 0
        if args.models_command == "promote":
            gate = {"alias": args.alias, **{k: getattr(args, k) for k in ("metric", "min", "max")
                                            if getattr(args, k) is not None}}
            verdict = client.promote(args.name, args.version, gate)
            if args.json:
                _print_json(verdict)
            elif verdict["moved"]:
                print(f"{args.name}@{args.alias} -> version {args.version} ({verdict['reason']})")
            else:
                print(f"{args.name}@{args.alias} not moved: {verdict['reason']}", file=sys.stderr)
            return 0 if verdict["moved"] else 1
        page = client.list_models(args.name)
        if args.json:
            _print_json(page)
        else:
            _table("models", ["name", "version", "task", "aliases", "id"],
                   [[m["name"], m["version"], m.get("task"), ", ".join(m.get("aliases") or []), m["id"]]
                    for m in page["items"]])
        return 0
    if args.command == "rollout":
        return rollouts.run(args, client)
    if args.command == "retraining":
        return retraining.run(args, client)
    if args.command == "predict":
        images = []
        for image in args.images:
            try:
                images.append(Path(image).read_bytes())
            except OSError as exc:
                raise ApiError(f"{image}: {exc.strerror}") from None
        answer = client.predict(images=images, model=args.model, top_k=args.top_k)
        if args.json:
            _print_json(answer)
        else:
            _table(f"{answer['model']['name']} version {answer['model']['version']}", ["image", "label", "probability"],
                   [[image, p["label"], f"{max(p['probabilities']):.3f}"]
                    for image, p in zip(args.images, answer["predictions"])])
        return 0
    if args.command == "forecast":
        timestamps, values = _readings(args.readings)
        answer = client.forecast(timestamps, values, args.model, args.horizon)
        if args.json:
            _print_json(answer)
        else:
            _table(f"{answer['target']}: {answer['model']['name']} version {answer['model']['version']} "
                   f"({answer['interval']:.0%} interval)", ["timestamp", "forecast", "lower", "upper"],
                   [[p["timestamp"], f"{p['value']:.4g}", f"{p['lower']:.4g}", f"{p['upper']:.4g}"]
                    for p in answer["forecast"]])
        return 0
    raise AssertionError(args.command)
