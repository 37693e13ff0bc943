"""Shared fixtures. In-process tests run twice: on an embedded SQLite home made for the test session, and on
a PostgreSQL database made for it (the database AKS uses), each with its own artifact folder. The end-to-end
tests start real ``trainserve`` API and worker processes, on the embedded defaults or on the PostgreSQL and
Redis servers at 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import tempfile

# Before any trainserve module reads its settings: this session's own home, never the developer's ./var.
os.environ["TRAINSERVE_HOME"] = tempfile.mkdtemp(prefix="trainserve-test-")
for _name in [n for n in os.environ if n.startswith("TRAINSERVE_") and n != "TRAINSERVE_HOME"]:
    if not _name.startswith("TRAINSERVE_TEST_") and _name != "TRAINSERVE_REQUIRE_AZURITE":
        del os.environ[_name]
os.environ["TRAINSERVE_ENV_FILE"] = ""  # a developer's .env never reaches the tests (nor the processes they start)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs several test processes on two cores: one thread each (and in the processes they
    # start), or PyTorch's and BLAS's thread pools spin against each other and CPU-bound tests run 10-25x
    # slower than alone.
    for _pool in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_pool, "1")

import threading  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from service.main import create_app  # noqa: E402
from service.platform.migrate import upgrade  # noqa: E402
from service.platform.runtime import Runtime  # noqa: E402
from service.platform.settings import load_settings  # noqa: E402
from tests import azurite  # noqa: E402
from tests.helpers import LOGREG_SPEC, REDIS_URL, new_postgres_database  # noqa: E402
from tests.stack import Stack  # noqa: E402

DATABASES = ["sqlite", "postgresql"]
RUNTIMES: dict[str, Runtime] = {}  # the in-process tests' runtime on each database, made once per session
TRAINED: dict[str, dict] = {}  # trained_classifier's model on each database


# The longest files first: `make test` hands out whole files to its processes in this order (with xdist's
# --no-loadscope-reorder), so the last file to finish is a short one. From the durations `make test` prints.
LONGEST_FIRST = ["test_fuzz.py", "test_forecast.py", "test_fresh_clone.py", "test_end_to_end.py", "test_gpu_queue.py",
                 "test_outages.py", "test_optimizers.py", "test_examples.py", "test_dashboard.py", "test_sweeps.py",
                 "test_concurrency.py", "test_deploy_k8s.py", "test_inference_protocol.py", "test_rollouts_live.py", "test_console.py",
                 "test_fuzz_open.py", "test_up.py", "test_rollouts.py", "test_jobs_api.py", "test_telemetry.py", "test_real_server.py",
                 "test_job_events_live.py", "test_health.py", "test_hostile_input.py", "test_api_processes.py"]


def pytest_itemcollected(item) -> None:
    """A test that runs on PostgreSQL needs the server: `realstack`, like the end-to-end tests on it (marked
    as it is collected, before `-m` selects)."""
    if getattr(item, "callspec", None) and item.callspec.params.get("migrated") == "postgresql":
        item.add_marker(pytest.mark.realstack)


@pytest.hookimpl(trylast=True)  # after pytest's own reordering by fixture parameters, which would undo it
def pytest_collection_modifyitems(items) -> None:
    """The longest files first."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def databases(tmp_path_factory) -> Iterator[dict[str, Runtime]]:
    """The in-process tests' runtimes by database, each made and migrated on first use and kept for the whole
    session: SQLite in this session's home, and a fresh PostgreSQL database (dropped after), each with its own
    artifact folder. Kept apart from ``migrated`` so that a test process that alternates between the two (as
    `make test`'s do, file by file) makes each once."""
    with contextlib.ExitStack() as resources:
        yield _LazyDatabases(resources, tmp_path_factory)
        for runtime in RUNTIMES.values():
            runtime.close()


class _LazyDatabases(dict):
    def __init__(self, resources: contextlib.ExitStack, tmp_path_factory) -> None:
        super().__init__()
        self.resources, self.tmp_path_factory = resources, tmp_path_factory

    def __missing__(self, name: str) -> Runtime:
        settings = load_settings()  # this session's home: the embedded defaults
        if name == "postgresql":
            url = self.resources.enter_context(new_postgres_database())
            artifacts = f"file://{self.tmp_path_factory.mktemp('artifacts-postgresql')}"
            settings = settings.model_copy(update={"database_url": url, "artifacts_url": artifacts})
        upgrade(settings.database_url)
        self[name] = RUNTIMES[name] = Runtime(settings)
        return self[name]


@pytest.fixture(scope="session", params=DATABASES)
def migrated(request, databases) -> str:
    """The database an in-process test runs on, migrated: SQLite, then PostgreSQL."""
    databases[request.param]
    return request.param


@pytest.fixture(scope="session")
def runtime(migrated) -> Runtime:
    """The runtime (settings, database, artifact store, broker) of the database the test runs on."""
    return RUNTIMES[migrated]


@pytest.fixture
def client(runtime) -> Iterator[TestClient]:
    """The API in this process, on the test's database and the embedded broker, with no worker: jobs stay
    queued unless a test runs them itself with ``run_job``."""
    with TestClient(create_app(runtime=runtime, reconcile=False, tune_process=False)) as c:
        yield c


def own_runtime(databases, home, **changes) -> Runtime:
    """A runtime on a SQLite database and an artifact folder of its own under ``home``, migrated, with the
    in-process tests' settings and ``changes``."""
    own = Runtime(databases["sqlite"].settings.model_copy(update={
        "database_url": f"sqlite:///{home / 'own.db'}", "artifacts_url": f"file://{home / 'artifacts'}", **changes}))
    upgrade(own.settings.database_url)
    return own


@pytest.fixture
def own_api(databases, tmp_path) -> Iterator[TestClient]:
    """The API on a SQLite database of this test's own, for what depends on every model in the database (the
    default route), trusting no cached reference (an answer that stays the same is not the cache's doing).
    ``own_api.run_job(job_id)`` runs a job as a worker would."""
    own = own_runtime(databases, tmp_path, ref_cache_seconds=0)
    with TestClient(create_app(runtime=own, reconcile=False, tune_process=False)) as c:
        c.run_job = lambda job_id: run_in_worker(own, job_id)
        yield c
    own.close()


def run_in_worker(runtime: Runtime, job_id) -> None:
    """Run a job in this process through the worker's own code (no Celery), as a worker would."""
    from service.jobs.runner import run_job
    from workers.tasks import hooks_for

    run_job(runtime, uuid.UUID(str(job_id)), threading.Event(), hooks_for)


@pytest.fixture
def run_job(runtime):
    """Runs a job in this process through the worker's own code (no Celery), as a worker would."""
    return lambda job_id: run_in_worker(runtime, job_id)


@pytest.fixture(scope="session")
def trained_classifier(migrated) -> dict:
    """The digit classifier the serving tests share: logistic regression on `digits`, trained once per
    database by the worker's own code. Its model record, as GET /v1/models/{id} answers it."""
    if migrated not in TRAINED:
        TRAINED[migrated] = _train_classifier(RUNTIMES[migrated])
    return TRAINED[migrated]


def _train_classifier(runtime: Runtime) -> dict:
    with TestClient(create_app(runtime=runtime, reconcile=False, tune_process=False)) as c:
        job = c.post("/v1/jobs", json=LOGREG_SPEC).json()
        run_in_worker(runtime, job["id"])
        done = c.get(f"/v1/jobs/{job['id']}").json()
        assert done["status"] == "succeeded", done["error"]
        return c.get(f"/v1/models/{done['model']['id']}").json()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database for the end-to-end tests on the real stack."""
    with new_postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def azurite_connection_string(tmp_path_factory) -> Iterator[str]:
    """A connection string to Azurite: TRAINSERVE_TEST_AZURITE's, or an emulator started for this session."""
    if given := os.environ.get("TRAINSERVE_TEST_AZURITE"):
        yield given
        return
    if not azurite.AZURITE.exists():
        message = f"Azurite is not installed ({azurite.AZURITE}); run `npm install` in the project folder"
        if azurite.required():
            pytest.fail(message)
        pytest.skip(message)
    with azurite.running_azurite(tmp_path_factory.mktemp("azurite")) as conn:
        yield conn


@pytest.fixture(scope="module")
def embedded_stack(tmp_path_factory) -> Iterator[Stack]:
    """`trainserve api` and `trainserve worker` processes on the embedded defaults in a fresh home."""
    home = tmp_path_factory.mktemp("embedded")
    with Stack.start({"TRAINSERVE_HOME": str(home)}) as stack:
        yield stack


@pytest.fixture(scope="module")
def real_stack(tmp_path_factory, postgres_url, azurite_connection_string) -> Iterator[Stack]:
    """The same processes on PostgreSQL, Redis and Azure Blob storage (Azurite), with a queue and a
    container of their own."""
    home = tmp_path_factory.mktemp("realstack")
    run = uuid.uuid4().hex[:8]
    env = {"TRAINSERVE_HOME": str(home), "TRAINSERVE_DATABASE_URL": postgres_url,
           "TRAINSERVE_BROKER_URL": REDIS_URL, "TRAINSERVE_QUEUE": f"trainserve-test-{run}",
           "TRAINSERVE_ARTIFACTS_URL": f"azure://artifacts-{run}",
           "TRAINSERVE_AZURE_STORAGE_CONNECTION_STRING": azurite_connection_string}
    with Stack.start(env) as stack:
        yield stack
