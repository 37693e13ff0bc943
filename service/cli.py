"""``trainserve``: run the API, a worker, both, or the migrations."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from service.settings import get_settings


def run_api(host: str | None, port: int | None) -> None:
    import uvicorn

    settings = get_settings()
    uvicorn.run("service.main:create_app", factory=True, host=host or settings.api_host,
                port=port or settings.api_port, log_level="info", access_log=settings.access_log)


def run_worker(concurrency: int) -> None:
    import workers.jobs  # noqa: F401  PyTorch and the data libraries load now, not inside the first job
    from workers.celery_app import celery_app

    settings = get_settings()
    # solo pool: the task runs in the worker's main process, so CUDA is initialized after no fork and a
    # cancelled or shut-down job is noticed at its next batch. Scale out with more worker processes.
    argv = ["worker", "--loglevel=INFO", f"--queues={settings.queue}", "--hostname=trainserve@%h",
            "--pool=solo" if concurrency == 1 else f"--concurrency={concurrency}", "--without-gossip",
            "--without-mingle"]
    celery_app.worker_main(argv)


def migrate() -> None:
    from service.migrate import upgrade

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)


def up(host: str | None, port: int | None) -> int:
    """Migrations, then one worker in the background and the API in the foreground; Ctrl-C stops both."""
    migrate()
    # Its own session, so Ctrl-C reaches only us; we then stop the worker ourselves, in order.
    worker = subprocess.Popen([sys.executable, "-m", "service.cli", "worker"], start_new_session=True)
    try:
        run_api(host, port)
    finally:
        worker.send_signal(signal.SIGTERM)  # warm shutdown: the job in hand goes back to the queue
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trainserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("api", "serve the HTTP API"), ("up", "migrate, then run the API and one worker")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--host")
        p.add_argument("--port", type=int)
    w = sub.add_parser("worker", help="run a Celery worker that trains jobs")
    w.add_argument("--concurrency", type=int, default=1, help="jobs at once (default 1, one process)")
    sub.add_parser("migrate", help="apply the database migrations")
    args = parser.parse_args(argv)

    if args.command == "api":
        run_api(args.host, args.port)
    elif args.command == "worker":
        run_worker(args.concurrency)
    elif args.command == "migrate":
        migrate()
    elif args.command == "up":
        return up(args.host, args.port)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
