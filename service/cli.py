"""``trainserve``: run the API, a worker, both, or the migrations; and, against a running API, submit and
follow jobs, upload datasets, list and promote models, predict and forecast (trainserve_client/console.py)."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

from service.observability import logs, tracing, worker_metrics
from service.platform.settings import Settings, load_settings
from trainserve_client import console


def run_api(settings: Settings, host: str | None, port: int | None, fd: int | None = None,
            workers: int | None = None) -> None:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    # fd: a socket already bound and listening, handed over by whoever started us (socket activation, tests).
    # It is wrapped with its real family (uvicorn's own fd path says AF_UNIX), so that asyncio sets
    # TCP_NODELAY on the connections it accepts: without it every keep-alive answer waited 40 ms for the
    # client's delayed ACK.
    inherited = socket.socket(fileno=fd) if fd is not None else None
    # Whether keys are required depends on where the API listens (service/http/auth.py): tell the app.
    if inherited is not None:
        settings = settings.model_copy(update={"api_host": str(inherited.getsockname()[0])})
    elif host:
        settings = settings.model_copy(update={"api_host": host})
    if workers:
        settings = settings.model_copy(update={"api_workers": workers})
    host, port = host or settings.api_host, port or settings.api_port
    if inherited is None:  # a taken port is one line naming the setting to change, before anything starts
        _check_free(host, port, "TRAINSERVE_API_PORT (or --port)")
    if settings.grpc_port:
        _check_free(settings.api_host, settings.grpc_port, "TRAINSERVE_GRPC_PORT")
    if inherited is None:
        print(banner(settings, host, port), flush=True)
    # uvicorn's lines too: it is given no logging config of its own
    logs.configure(settings.log_format, access_log=settings.access_log)
    config = uvicorn.Config(partial(api_process, settings), factory=True, host=host, port=port,
                            workers=settings.api_workers, log_level="info", access_log=settings.access_log,
                            log_config=None)
    sock = inherited or config.bind_socket()
    if settings.api_workers == 1:
        # uvicorn re-raises the Ctrl-C it stopped on, once it has shut down; as uvicorn.run does, end quietly
        with contextlib.suppress(KeyboardInterrupt):
            uvicorn.Server(config).run(sockets=[sock])
        return
    # Several processes on the one socket: uvicorn's supervisor starts them (spawned, each importing the
    # app afresh), replaces one that dies and stops them all on SIGINT or SIGTERM. The pod's metrics port
    # is the supervisor's, answering for every process (service/observability/pod_metrics.py).
    from service.observability import pod_metrics  # here: a worker must import prometheus_client after its setup

    with pod_metrics.gathered(settings.api_metrics_port) as folder:
        # Processes announce their metrics only where the supervisor has a port to answer for them on.
        config.app = partial(api_process, settings.model_copy(update={"api_metrics_port": 0}),
                             folder if settings.api_metrics_port else None)
        Multiprocess(config, sockets=[sock]).run()


def api_process(settings: Settings, metrics_folder: str | None = None):
    """The app of one API process; with ``metrics_folder``, one of several that the supervisor's metrics
    port answers for."""
    from service.main import create_app

    logs.configure(settings.log_format, access_log=settings.access_log)
    app = create_app(settings)
    if metrics_folder is not None and app.state.metrics is not None:
        from service.observability import pod_metrics

        pod_metrics.announce(metrics_folder, app.state.metrics.registry)
    return app


class PortTaken(SystemExit):
    pass


def _check_free(host: str, port: int, setting: str) -> None:
    """Refuse to start, in one line, when something already listens on ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PortTaken(f"trainserve: cannot listen on {host}:{port} ({exc.strerror}); another program has "
                            f"it. Set {setting} to a free port") from None


def banner(settings: Settings, host: str, port: int) -> str:
    """What `make run` prints first: where everything is, and whether it needs a key."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}"
    keys = ("required (TRAINSERVE_AUTH; make one with `trainserve keys create`)" if settings.keys_required else
            "not required: listening on loopback only (TRAINSERVE_AUTH=required to require them)")
    lines = [f"  API        {base}   (TRAINSERVE_API_HOST, TRAINSERVE_API_PORT)",
             f"  dashboard  {base}/ui/", f"  docs       {base}/docs"]
    if settings.grpc_port:
        lines.append(f"  gRPC       {shown}:{settings.grpc_port}   (TRAINSERVE_GRPC_PORT; Open Inference Protocol)")
    lines.append(f"  API keys   {keys}")
    return "trainserve is starting:\n" + "\n".join(lines)


QUEUES = ("jobs", "gpu", "exports")


def default_queues() -> list[str]:
    """What a worker takes unless told: CPU jobs and exports, and GPU jobs where this machine has a GPU."""
    import torch

    return ["jobs", "gpu", "exports"] if torch.cuda.is_available() else ["jobs", "exports"]


def run_worker(settings: Settings, concurrency: int, queues: list[str], max_tasks_per_child: int = 0) -> None:
    metrics_folder = Path(tempfile.mkdtemp(prefix="trainserve-worker-metrics-"))
    worker_metrics.prepare(metrics_folder)  # before prometheus_client is imported in this process
    atexit.register(shutil.rmtree, metrics_folder, True)
    from celery.signals import setup_logging, worker_process_shutdown, worker_ready

    import service.jobs.runner  # noqa: F401  PyTorch and the data libraries load now, not inside the first job
    from service.platform.queue import make_celery

    logs.configure(settings.log_format)
    setup_logging.connect(lambda **_: logs.configure(settings.log_format), weak=False)  # Celery's own: not used
    tracing.configure("trainserve-worker")
    # A prefork child (a GPU worker's one job per child) sends its spans before it exits.
    worker_process_shutdown.connect(lambda pid=None, **_: (tracing.flush(), worker_metrics.process_exited(pid)),
                                    weak=False)
    if settings.worker_metrics_port:
        worker_ready.connect(lambda **_: worker_metrics.serve(settings.worker_metrics_port), weak=False)
    names = {"jobs": settings.queue, "gpu": settings.gpu_queue, "exports": settings.export_queue}
    if "gpu" in queues:
        import torch

        if not torch.cuda.is_available():
            logging.getLogger("trainserve.worker").warning(
                "this worker takes the GPU queue %s but sees no CUDA device: jobs with device cuda will fail "
                "here (check the node's GPU driver and the nvidia.com/gpu limit)", settings.gpu_queue)
    argv = ["worker", "--loglevel=INFO", f"--queues={','.join(names[q] for q in queues)}",
            f"--hostname=trainserve-{'-'.join(queues)}@%h", "--without-gossip", "--without-mingle"]
    if max_tasks_per_child:
        # prefork: each job runs in a child process that exits after max_tasks_per_child jobs, which hands
        # everything it held, CUDA memory and its context included, back to the device.
        argv += [f"--concurrency={concurrency}", f"--max-tasks-per-child={max_tasks_per_child}"]
    elif concurrency == 1:
        # solo: the job runs in the worker's main process (no fork), and a cancel or a shutdown is noticed
        # at its next batch. Scale out with more worker processes.
        argv += ["--pool=solo"]
    else:
        argv += [f"--concurrency={concurrency}"]
    make_celery(settings).worker_main(argv)


def _queues(text: str) -> list[str]:
    queues = [q.strip() for q in text.split(",") if q.strip()]
    unknown = [q for q in queues if q not in QUEUES]
    if not queues or unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: name one or more of {', '.join(QUEUES)}, comma-separated")
    return queues


def _at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value

    return parse


def migrate(settings: Settings) -> None:
    from service.platform.migrate import migrate_to_head

    settings.home.mkdir(parents=True, exist_ok=True)
    print(f"trainserve: {migrate_to_head(settings.database_url, settings.database_auth == 'entra')}")


def keys_command(settings: Settings, args: argparse.Namespace) -> int:
    """``trainserve keys create|list|revoke``: API keys, straight in the database (for the first admin key)."""
    import uuid
    from datetime import timedelta

    from service.audit.service import record
    from service.http.errors import AppError
    from service.keys import service
    from service.platform.runtime import Runtime
    from service.platform.tables import utcnow

    runtime = Runtime(settings)
    try:
        with runtime.session() as session:
            if args.keys_command == "create":
                expires = utcnow() + timedelta(days=args.expires_in_days) if args.expires_in_days else None
                row, token = service.create_key(session, args.name, args.scopes, expires)
                record(session, None, "key.create", f"key {row.id}",
                       after={"name": row.name, "scopes": row.scopes, "prefix": row.prefix})
                print(f"key {row.id} ({row.name}; scopes {', '.join(row.scopes)}"
                      f"{'; expires ' + f'{expires:%Y-%m-%d %H:%M} UTC' if expires else ''}). "
                      "Store it now; it is not shown again:", file=sys.stderr)
                print(token)
            elif args.keys_command == "list":
                rows, _ = service.list_keys(session, 1000, 0)
                print(f"{'id':36}  {'prefix':12}  {'name':20}  {'scopes':24}  state")
                for row in rows:
                    state = ("revoked" if row.revoked_at else
                             "expired" if row.expires_at and row.expires_at <= utcnow() else "active")
                    print(f"{row.id}  {row.prefix:12}  {row.name[:20]:20}  {','.join(row.scopes):24}  {state}")
            else:
                try:
                    key_id = uuid.UUID(args.key_id)
                except ValueError:
                    raise AppError(f"{args.key_id!r} is not a key id; `trainserve keys list` shows them") from None
                row = service.get_key(session, key_id)
                if row.revoked_at is None:
                    service.revoke_key(session, key_id)
                    record(session, None, "key.revoke", f"key {row.id}", before={"name": row.name, "revoked": False},
                           after={"name": row.name, "revoked": True})
                print(f"key {row.id} ({row.name}) is revoked; every API process refuses it within "
                      f"{settings.auth_cache_seconds:g} s")
    except AppError as exc:
        print(f"trainserve: {exc.message}", file=sys.stderr)
        return 1
    finally:
        runtime.close()
    return 0


def _scopes(text: str) -> list[str]:
    from service.keys.service import Scope

    scopes = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in {m.value for m in Scope}]
    if not scopes or unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: name one or more of predict, train, read, admin, comma-separated")
    return scopes


def wait_for_migrations(settings: Settings, timeout: float) -> int:
    from service.platform.migrate import wait_until_migrated

    try:
        revision = wait_until_migrated(settings.database_url, timeout, entra=settings.database_auth == "entra")
    except TimeoutError as exc:
        print(f"trainserve: {exc}", file=sys.stderr)
        return 1
    print(f"trainserve: the database is at revision {revision}")
    return 0


def up(settings: Settings, host: str | None, port: int | None, fd: int | None = None,
       api_workers: int | None = None) -> int:
    """Migrations, then a training worker and an export worker in the background and the API in the
    foreground; Ctrl-C stops them all."""
    from service.platform.queue import gpu_workers_present

    if "grpc_port" not in settings.model_fields_set:  # the Open Inference Protocol over gRPC beside HTTP
        settings = settings.model_copy(update={"grpc_port": 8081})
    migrate(settings)
    # Their own sessions, so Ctrl-C reaches only us; we then stop the workers ourselves, in order. Exports
    # have a worker of their own so that making one never delays the start of the next job.
    training = "jobs,gpu" if gpu_workers_present(settings) else "jobs"
    workers = [subprocess.Popen([sys.executable, "-m", "service.cli", "worker", "--queues", queues],
                                start_new_session=True) for queues in (training, "exports")]
    try:
        run_api(settings, host, port, fd, api_workers)
    finally:
        print("trainserve: the API stopped", flush=True)
        for worker in workers:
            worker.send_signal(signal.SIGTERM)  # warm shutdown: the job in hand goes back to the queue
        for worker, name in zip(workers, ("training", "export")):
            try:
                worker.wait(timeout=30)
                print(f"trainserve: the {name} worker stopped", flush=True)  # a job's requeue has its own line
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
                print(f"trainserve: the {name} worker did not stop within 30 s and was killed", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainserve", description=__doc__)
    console.add_global_options(parser)  # the client commands' --url and --json, here too: before the command
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("api", "serve the HTTP API"),
                        ("up", "migrate, then run the API, a training worker and an export worker")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--host")
        p.add_argument("--port", type=int)
        p.add_argument("--fd", type=int, help="serve on this inherited, listening socket instead of host:port")
        p.add_argument("--workers", type=_at_least(1), default=None, metavar="N",
                       help="API processes on the one socket (default TRAINSERVE_API_WORKERS, 1)")
    w = sub.add_parser("worker", help="run a Celery worker that trains jobs")
    w.add_argument("--concurrency", type=_at_least(1), default=1, help="jobs at once (default 1, one process)")
    w.add_argument("--queues", type=_queues, default=None,
                   help="what to take: jobs (CPU training), gpu (jobs for a GPU), exports; default jobs,exports, "
                        "and gpu where this machine has a CUDA device. A worker that takes jobs and exports makes "
                        "exports between jobs: give exports a worker of their own where start latency matters")
    w.add_argument("--max-tasks-per-child", type=_at_least(0), default=0, metavar="N",
                   help="run jobs in child processes that exit after N jobs (GPU workers: 1, so that each job's "
                        "CUDA memory is returned); default 0: jobs run in the worker process itself")
    keys = sub.add_parser("keys", help="make, list and revoke API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="make a key and print it (once)")
    create.add_argument("--name", required=True, help="who uses it, e.g. web-app")
    create.add_argument("--scopes", type=_scopes, required=True,
                        help="comma-separated: predict (inference, model reads), train (datasets, jobs), read "
                             "(every GET), admin (everything: aliases, deletes, keys, the audit log)")
    create.add_argument("--expires-in-days", type=_at_least(1), default=None, metavar="DAYS")
    keys_sub.add_parser("list", help="every key, without the keys themselves")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    sub.add_parser("migrate", help="apply the database migrations")
    wait = sub.add_parser("wait-for-migrations",
                          help="wait until the database is at this release's schema (a pod's init container, "
                               "so that no new code serves before the migration Job has run)")
    wait.add_argument("--timeout", type=float, default=600, help="seconds to wait before failing (default 600)")
    console.add_commands(sub)  # the client's: submit, follow, jobs, show, cancel, datasets, models, predict, ...
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in console.COMMANDS:
        return console.run(args)
    settings = load_settings()  # the one place a server command reads its settings

    if args.command == "api":
        run_api(settings, args.host, args.port, args.fd, args.workers)
    elif args.command == "worker":
        run_worker(settings, args.concurrency, args.queues or default_queues(), args.max_tasks_per_child)
    elif args.command == "keys":
        return keys_command(settings, args)
    elif args.command == "migrate":
        migrate(settings)
    elif args.command == "wait-for-migrations":
        return wait_for_migrations(settings, args.timeout)
    elif args.command == "up":
        return up(settings, args.host, args.port, args.fd, args.workers)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
