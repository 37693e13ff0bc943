"""``trainserve``: run the API, a worker, both, or the migrations."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from service.settings import get_settings


def run_api(host: str | None, port: int | None, fd: int | None = None) -> None:
    import uvicorn

    settings = get_settings()
    # fd: a socket already bound and listening, handed over by whoever started us (socket activation, tests).
    uvicorn.run("service.main:create_app", factory=True, host=host or settings.api_host,
                port=port or settings.api_port, fd=fd, log_level="info", access_log=settings.access_log)


QUEUES = ("jobs", "exports")


def run_worker(concurrency: int, queues: list[str]) -> None:
    import service.jobs.runner  # noqa: F401  PyTorch and the data libraries load now, not inside the first job
    from service.queue import celery_app

    settings = get_settings()
    names = {"jobs": settings.queue, "exports": settings.export_queue}
    # solo pool: the task runs in the worker's main process, so CUDA is initialized after no fork and a
    # cancelled or shut-down job is noticed at its next batch. Scale out with more worker processes.
    argv = ["worker", "--loglevel=INFO", f"--queues={','.join(names[q] for q in queues)}",
            f"--hostname=trainserve-{'-'.join(queues)}@%h",
            "--pool=solo" if concurrency == 1 else f"--concurrency={concurrency}", "--without-gossip",
            "--without-mingle"]
    celery_app().worker_main(argv)


def _queues(text: str) -> list[str]:
    queues = [q.strip() for q in text.split(",") if q.strip()]
    unknown = [q for q in queues if q not in QUEUES]
    if not queues or unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: name one or both of {', '.join(QUEUES)}, comma-separated")
    return queues


def migrate() -> None:
    from service.migrate import upgrade

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)


def up(host: str | None, port: int | None, fd: int | None = None) -> int:
    """Migrations, then a training worker and an export worker in the background and the API in the
    foreground; Ctrl-C stops them all."""
    migrate()
    # Their own sessions, so Ctrl-C reaches only us; we then stop the workers ourselves, in order. Exports
    # have a worker of their own so that making one never delays the start of the next job.
    workers = [subprocess.Popen([sys.executable, "-m", "service.cli", "worker", "--queues", queue],
                                start_new_session=True) for queue in QUEUES]
    try:
        run_api(host, port, fd)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)  # warm shutdown: the job in hand goes back to the queue
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("api", "serve the HTTP API"),
                        ("up", "migrate, then run the API, a training worker and an export worker")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--host")
        p.add_argument("--port", type=int)
        p.add_argument("--fd", type=int, help="serve on this inherited, listening socket instead of host:port")
    w = sub.add_parser("worker", help="run a Celery worker that trains jobs")
    w.add_argument("--concurrency", type=int, default=1, help="jobs at once (default 1, one process)")
    w.add_argument("--queues", type=_queues, default=list(QUEUES),
                   help="what to take: jobs, exports or both (default jobs,exports); a worker that takes both makes "
                        "exports between jobs, so give exports a worker of their own where start latency matters")
    sub.add_parser("migrate", help="apply the database migrations")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    if args.command == "api":
        run_api(args.host, args.port, args.fd)
    elif args.command == "worker":
        run_worker(args.concurrency, args.queues)
    elif args.command == "migrate":
        migrate()
    elif args.command == "up":
        return up(args.host, args.port, args.fd)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
