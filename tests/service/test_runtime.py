"""The API process's own settings: set while the app runs, put back when it stops."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.main import create_app


def test_the_api_process_freezes_its_start_up_heap_and_runs_one_blas_thread_while_it_runs(runtime, migrated):
    """Full collections of the start-up heap stopped the event loop for 130-150 ms, and a second BLAS thread
    competed with the event loop for the cores (docs/benchmarks.md). The settings hold while the app runs
    and are put back when it stops, so tests after this one train with the process's own settings."""
    import gc

    import torch
    from threadpoolctl import threadpool_info

    from service.serving.process import THRESHOLDS

    def state() -> tuple:
        blas = tuple(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")
        return torch.get_num_threads(), blas, gc.get_threshold(), gc.get_freeze_count()

    torch.set_num_threads(2)
    before = state()
    assert before[0] == 2 and before[2] != THRESHOLDS and before[3] == 0
    with TestClient(create_app(runtime=runtime, reconcile=False)) as c:
        threads = c.app.state.settings.api_torch_threads
        during = c.portal.call(state)  # on the app's own thread, where the event loop runs
        assert during[0] == threads and during[1] and set(during[1]) == {threads}
        assert during[2] == THRESHOLDS and during[3] > 10_000
    assert state() == before


def test_an_app_that_is_a_guest_in_another_process_leaves_it_alone(runtime, migrated):
    """What the other tests use: the app runs, the process's threads and collector stay as they were."""
    import gc

    import torch

    before = (torch.get_num_threads(), gc.get_threshold(), gc.get_freeze_count())
    with TestClient(create_app(runtime=runtime, reconcile=False, tune_process=False)) as c:
        assert c.get("/healthz").status_code == 200
        assert c.portal.call(lambda: (torch.get_num_threads(), gc.get_threshold(), gc.get_freeze_count()))[1:] \
            == before[1:]
    assert (torch.get_num_threads(), gc.get_threshold(), gc.get_freeze_count()) == before
