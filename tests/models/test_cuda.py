"""The GPU paths. CI has no GPU, so these skip there; they run on a lent GPU machine with
`pytest --noconftest -m gpu tests/models` (the models library needs only PyTorch, NumPy and scikit-learn)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.export import checkpoint_from_bytes, checkpoint_to_bytes, model_from_bytes, model_to_bytes
from models.training import TrainConfig, evaluate, fit
from tests.models.helpers import digits, model_and_optimizer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def splits():
    return digits()


def make(splits, architecture="mlp", params=None, optimizer="adam", lr=0.003, seed=0, **options):
    params = params if params is not None else {"hidden_sizes": [400, 200]}
    return model_and_optimizer(splits.train, architecture, params, optimizer, lr, seed, **options)


@pytest.mark.parametrize("architecture,params", [("mlp", None), ("cnn", {"channels": [16, 32]}),
                                                 ("lstm", {"hidden_size": 64})])
def test_auto_trains_on_the_gpu(splits, architecture, params):
    model, opt, _ = make(splits, architecture, params)
    fit(model, opt, splits.train, splits.validation, TrainConfig(epochs=15, device="auto"))
    assert next(model.parameters()).is_cuda
    assert evaluate(model, splits.test, CUDA)["accuracy"] >= 0.9


def test_bf16_autocast_trains(splits):
    model, opt, _ = make(splits, "cnn", {"channels": [16, 32]})
    fit(model, opt, splits.train, None, TrainConfig(epochs=15, device="cuda", precision="bf16"))
    assert evaluate(model, splits.test, CUDA)["accuracy"] >= 0.9


def test_same_seed_same_metrics_on_the_gpu(splits):
    """Without deterministic mode cuBLAS may sum in another order from run to run: the same seed gives the
    same losses up to rounding, and another seed gives other losses."""
    runs = []
    for seed in (3, 3, 4):
        model, opt, _ = make(splits, "mlp", {"hidden_sizes": [64], "dropout": 0.2}, seed=seed)
        runs.append([m.train_loss for m in fit(model, opt, splits.train, splits.validation,
                                               TrainConfig(epochs=3, seed=seed, device="cuda")).history])
    assert np.allclose(runs[0], runs[1], rtol=1e-4, atol=1e-6)
    assert not np.allclose(runs[0], runs[2], rtol=1e-3)


@pytest.mark.parametrize("optimizer", ["newton", "conjugate_gradient", "lbfgs"])
@pytest.mark.parametrize("architecture,params", [("logistic_regression", {}), ("gru", {"hidden_size": 16})])
def test_full_batch_optimizers_on_the_gpu(splits, optimizer, architecture, params):
    model, opt, _ = make(splits, architecture, params, optimizer, 1.0, **({"max_iter": 10} if optimizer == "newton" else {}))
    fit(model, opt, splits.train, None, TrainConfig(epochs=3, device="cuda"))  # Newton on a GRU: no cuDNN
    assert evaluate(model, splits.test, CUDA)["accuracy"] >= 0.8


def test_a_gpu_checkpoint_resumes_and_a_gpu_model_loads_on_the_cpu(splits):
    model, opt, config = make(splits)
    saved = {}
    fit(model, opt, splits.train, None, TrainConfig(epochs=2, device="cuda"),
        on_epoch=lambda m, checkpoint: saved.__setitem__(m.epoch, checkpoint_to_bytes(checkpoint())))
    model, opt, _ = make(splits)
    fit(model, opt, splits.train, None, TrainConfig(epochs=4, device="cuda"), resume=checkpoint_from_bytes(saved[2]))
    loaded, _ = model_from_bytes(model_to_bytes(model, config), device="cpu")
    model.eval()
    expected = model(splits.test.x.to(CUDA)).argmax(1).cpu()
    assert (loaded(splits.test.x).argmax(1) == expected).float().mean() >= 0.99


def test_a_forecaster_trains_on_the_gpu_and_forecasts_the_same_on_the_cpu():
    from models.architectures import ModelConfig, build_model
    from models.datasets import load_builtin
    from models.forecasting import ForecastSetup, calibrate_interval, forecast_report, predict_windows, prepare
    from models.optimizers import build_optimizer

    setup = ForecastSetup(target="solar.current", lookback=8, horizon=2, gaps="drop", calendar=["time_of_day"])
    prepared = prepare(load_builtin("solar"), setup, validation_split=0.1, test_split=0.1)
    config = ModelConfig("lstm", {"hidden_size": 32}, (8, setup.n_features), 2, (0.0, 1.0), setup.to_dict())
    model = build_model(config)
    fit(model, build_optimizer("adam", model.parameters(), 0.003), prepared.train.dataset(), None,
        TrainConfig(epochs=3, batch_size=64, loss="mse", device="cuda"))
    assert next(model.parameters()).is_cuda
    calibrate_interval(model, setup, prepared.validation)
    report = forecast_report(model, prepared)
    assert report["model"]["rmse"] < report["persistence"]["rmse"] and report["interval"]["coverage"] > 0.7
    loaded, _ = model_from_bytes(model_to_bytes(model, config), device="cpu")
    on_gpu, on_cpu = predict_windows(model, setup, prepared.test), predict_windows(loaded, setup, prepared.test)
    assert abs(on_gpu - on_cpu).max() < 1e-2 * abs(on_cpu).max()


def test_an_epoch_on_the_gpu_records_the_gpu_and_its_peak_memory(splits):
    model, opt, _ = make(splits, "mlp", None)
    history = fit(model, opt, splits.train, None, TrainConfig(epochs=1, device="cuda")).history
    assert history[0].gpu_name and history[0].gpu_peak_memory_bytes > 0
    assert history[0].cpu_seconds > 0


# Whole-step CUDA graphs (models/graphs.py): the graph path against the eager one on the same GPU.

def graph_fit(splits, epochs=3, compile="graph", **config):
    model, opt, _ = make(splits, "mlp", {"hidden_sizes": [64]}, seed=3)
    result = fit(model, opt, splits.train, None, TrainConfig(epochs=epochs, seed=3, device="cuda", compile=compile,
                                                             **config))
    return model, result


@pytest.mark.parametrize("architecture,params", [("logistic_regression", {}), ("mlp", None),
                                                 ("cnn", {"channels": [16, 32]}), ("lstm", {"hidden_size": 64})])
def test_the_graph_path_trains_each_static_architecture(splits, architecture, params):
    model, opt, _ = make(splits, architecture, params)
    steps = []
    result = fit(model, opt, splits.train, None, TrainConfig(epochs=15, device="cuda", compile="graph"),
                 on_step=lambda *s: steps.append(s))
    assert result.path.path == "graph", result.path.reason
    assert len(splits.train) % 64 and len(steps) == 15 * (len(splits.train) // 64 + 1)  # the tail batch ran too
    assert evaluate(model, splits.test, CUDA)["accuracy"] >= (0.85 if architecture == "logistic_regression" else 0.9)


def test_graph_and_eager_follow_the_same_curve(splits):
    _, graphed = graph_fit(splits, epochs=5)
    _, eager = graph_fit(splits, epochs=5, compile="none")
    assert graphed.path.path == "graph" and eager.path.path == "eager"
    assert np.allclose([m.train_loss for m in graphed.history], [m.train_loss for m in eager.history], rtol=1e-2)


def test_the_graph_path_resumes_from_a_checkpoint(splits):
    _, full = graph_fit(splits, epochs=4)
    saved = {}
    model, opt, _ = make(splits, "mlp", {"hidden_sizes": [64]}, seed=3)
    fit(model, opt, splits.train, None, TrainConfig(epochs=2, seed=3, device="cuda", compile="graph"),
        on_epoch=lambda m, checkpoint: saved.__setitem__(m.epoch, checkpoint_to_bytes(checkpoint())))
    model, opt, _ = make(splits, "mlp", {"hidden_sizes": [64]}, seed=99)
    resumed = fit(model, opt, splits.train, None, TrainConfig(epochs=4, seed=3, device="cuda", compile="graph"),
                  resume=checkpoint_from_bytes(saved[2]))
    assert resumed.path.path == "graph" and [m.epoch for m in resumed.history] == [3, 4]
    assert np.allclose([m.train_loss for m in resumed.history], [m.train_loss for m in full.history[2:]], rtol=1e-2)


def test_the_graph_path_cancels_and_fails_on_a_nan(splits):
    from models.training import TrainingCancelled, TrainingDiverged

    steps = []
    model, opt, _ = make(splits)
    with pytest.raises(TrainingCancelled):
        fit(model, opt, splits.train, None, TrainConfig(epochs=50, device="cuda", compile="graph",
                                                        cancel_check_seconds=0),
            should_stop=lambda: len(steps) > 30, on_step=lambda *s: steps.append(s))
    assert len(steps) < 100
    model, opt, _ = make(splits, "mlp", {"hidden_sizes": [400, 200]}, "sgd", 10.0, momentum=0.99)
    with pytest.raises(TrainingDiverged, match=r"at epoch \d+, (step \d+|a step from \d+ to \d+); lower"):
        fit(model, opt, splits.train, None, TrainConfig(epochs=20, batch_size=16, device="cuda", compile="graph"))


def test_what_a_graph_cannot_hold_falls_back_and_says_so(splits):
    model, opt, _ = make(splits, "mlp", None, "adagrad", 0.01)
    result = fit(model, opt, splits.train, None, TrainConfig(epochs=1, device="cuda"))
    assert result.path.path == "eager" and "adagrad" in result.path.reason
    model, opt, _ = make(splits, "logistic_regression", {}, "lbfgs", 1.0)
    result = fit(model, opt, splits.train, None, TrainConfig(epochs=1, device="cuda"))
    assert result.path.path == "eager" and "full-batch" in result.path.reason


def test_bf16_on_the_graph_path_trains(splits):
    model, opt, _ = make(splits, "cnn", {"channels": [16, 32]})
    result = fit(model, opt, splits.train, None, TrainConfig(epochs=15, device="cuda", precision="bf16",
                                                             compile="graph"))
    assert result.path.path == "graph" and evaluate(model, splits.test, CUDA)["accuracy"] >= 0.9


@pytest.mark.parametrize("architecture,params", [("mlp", None), ("cnn", {"channels": [16, 32]})])
def test_the_memory_a_job_is_said_to_need_covers_what_it_takes(splits, architecture, params):
    from models.usage import GPU_OVERHEAD_BYTES, gpu_memory_needed

    model, opt, _ = make(splits, architecture, params)
    need = gpu_memory_needed(model, splits.train.x, splits.train.y, 64) - GPU_OVERHEAD_BYTES
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fit(model, opt, splits.train, None, TrainConfig(epochs=1, device="cuda"))
    assert torch.cuda.max_memory_allocated() - before <= need
