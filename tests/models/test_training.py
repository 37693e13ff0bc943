"""The training library on its own: no service, no database, real digits."""

from __future__ import annotations

import math
import re
import threading

import pytest
import torch

from models.datasets import load_builtin, split_dataset
from models.export import checkpoint_from_bytes, checkpoint_to_bytes, model_from_bytes, model_to_bytes
from models.training import TrainConfig, TrainingCancelled, TrainingDiverged, evaluate, fit, resolve_device
from tests.models.helpers import digits, model_and_optimizer


@pytest.fixture(scope="module")
def splits():
    return digits()


def make(splits, architecture="logistic_regression", params=None, optimizer="sgd", lr=0.05, seed=0, **opt):
    options = {"momentum": 0.9} if optimizer == "sgd" and not opt else opt
    return model_and_optimizer(splits.train, architecture, params or {}, optimizer, lr, seed, **options)


def test_splits_are_disjoint_and_deterministic(splits):
    again = split_dataset(load_builtin("digits"), validation_split=0.1, test_split=0.2, seed=0)
    assert torch.equal(splits.test.x, again.test.x)
    sizes = (len(splits.train), len(splits.validation), len(splits.test))
    assert sum(sizes) == 1797 and sizes == (1258, 180, 359)
    other = split_dataset(load_builtin("digits"), validation_split=0.3, test_split=0.2, seed=0)
    assert torch.equal(other.test.y, splits.test.y), "the test split must not depend on the validation split"


@pytest.mark.parametrize("architecture,params,optimizer,lr", [
    ("logistic_regression", {}, "sgd", 0.05),
    ("mlp", {"hidden_sizes": [400, 200], "activation": "relu"}, "adam", 0.001),
    ("mlp", {"hidden_sizes": [64], "activation": "tanh", "dropout": 0.1}, "sgd", 0.05),
])
def test_models_learn_digits(splits, architecture, params, optimizer, lr):
    model, opt, _ = make(splits, architecture, params, optimizer, lr)
    history = fit(model, opt, splits.train, splits.validation, TrainConfig(epochs=12, batch_size=32, device="cpu")).history
    assert history[-1].train_loss < history[0].train_loss / 3
    assert evaluate(model, splits.test, torch.device("cpu"))["accuracy"] >= 0.9


def test_same_seed_gives_same_metrics(splits):
    runs = []
    for _ in range(2):
        model, opt, _ = make(splits, "mlp", {"hidden_sizes": [32], "dropout": 0.2}, "adam", 0.01, seed=7)
        runs.append([m.train_loss for m in fit(model, opt, splits.train, splits.validation,
                                               TrainConfig(epochs=3, seed=7, device="cpu")).history])
    assert runs[0] == runs[1]


def test_resume_from_checkpoint_matches_uninterrupted_run(splits):
    config = TrainConfig(epochs=4, batch_size=64, seed=3, device="cpu")
    model, opt, _ = make(splits, "mlp", {"hidden_sizes": [32], "dropout": 0.2}, "adam", 0.01, seed=3)
    full = fit(model, opt, splits.train, splits.validation, config).history

    saved: dict[int, bytes] = {}
    model, opt, _ = make(splits, "mlp", {"hidden_sizes": [32], "dropout": 0.2}, "adam", 0.01, seed=3)
    fit(model, opt, splits.train, splits.validation, TrainConfig(epochs=2, batch_size=64, seed=3, device="cpu"),
        on_epoch=lambda m, checkpoint: saved.__setitem__(m.epoch, checkpoint_to_bytes(checkpoint())))
    # A fresh process would build a new model and optimizer, then resume from the stored bytes.
    model, opt, _ = make(splits, "mlp", {"hidden_sizes": [32], "dropout": 0.2}, "adam", 0.01, seed=99)
    resumed = fit(model, opt, splits.train, splits.validation, config, resume=checkpoint_from_bytes(saved[2])).history
    assert [m.epoch for m in resumed] == [3, 4]
    assert [m.train_loss for m in resumed] == pytest.approx([m.train_loss for m in full[2:]], rel=1e-6)


def test_divergence_names_epoch_step_and_remedy(splits):
    model, opt, _ = make(splits, "mlp", {"hidden_sizes": [400, 200]}, "sgd", 10.0, momentum=0.99)
    with pytest.raises(TrainingDiverged, match=r"at epoch \d+, step \d+; lower the learning rate"):
        fit(model, opt, splits.train, None, TrainConfig(epochs=20, batch_size=16, device="cpu"))


def test_should_stop_cancels_before_the_next_batch(splits):
    model, opt, _ = make(splits)
    calls = []
    with pytest.raises(TrainingCancelled):
        fit(model, opt, splits.train, None, TrainConfig(epochs=5, device="cpu", cancel_check_seconds=0),
            should_stop=lambda: calls.append(1) or len(calls) > 3)
    assert len(calls) == 4


def test_saved_model_loads_with_weights_only_and_predicts_the_same(splits):
    model, opt, config = make(splits)
    fit(model, opt, splits.train, None, TrainConfig(epochs=2, device="cpu"))
    loaded, loaded_config = model_from_bytes(model_to_bytes(model, config))
    assert loaded_config == config
    model.eval()
    assert torch.equal(loaded(splits.test.x), model(splits.test.x))


def test_cuda_request_without_a_gpu_is_explained():
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(ValueError, match="no usable GPU"):
            resolve_device("cuda")


def test_each_epoch_reports_its_cpu_time_and_the_peak_memory(splits):
    model, opt, _ = make(splits, "mlp", {"hidden_sizes": [64]})
    history = fit(model, opt, splits.train, None, TrainConfig(epochs=2, device="cpu")).history
    for epoch in history:
        assert 0 < epoch.cpu_seconds < 60 and epoch.peak_rss_bytes > 50 * 2**20
        assert epoch.gpu_name is None and epoch.gpu_peak_memory_bytes is None and epoch.gpu_utilization is None


def test_each_epoch_reports_the_training_accuracy_counted_as_it_trained(splits):
    model, opt, _ = make(splits, "mlp", {"hidden_sizes": [64]}, "adam", 0.01)
    seen = []

    class Counting(torch.nn.Module):  # the same model, counting what it got right on each training batch
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            out = self.inner(x)
            if self.training:
                seen.append(out.detach().argmax(1))
            return out

    counting = Counting()
    history = fit(counting, opt, splits.train, splits.validation, TrainConfig(epochs=3, batch_size=32, device="cpu")).history
    assert all(0 < m.train_accuracy <= 1 for m in history)
    assert history[-1].train_accuracy > history[0].train_accuracy
    # The first epoch's figure is the share of its batches' predictions that matched the labels.
    order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))
    labels = splits.train.y[order]
    steps = -(-len(splits.train) // 32)
    first = torch.cat(seen[:steps])
    assert history[0].train_accuracy == (first == labels).sum().item() / len(labels)

    lbfgs_model, lbfgs, _ = make(splits, "logistic_regression", {}, "lbfgs", 1.0)
    full = fit(lbfgs_model, lbfgs, splits.train, None, TrainConfig(epochs=1, device="cpu")).history
    assert full[0].train_accuracy is None, "a full-batch step runs its closure many times: no single count"


def test_a_loss_read_every_few_steps_names_the_steps_it_could_have_been(splits):
    """Off the CPU the finite flag is read every sync_every steps; the message gives the steps in between."""
    model, opt, _ = make(splits, "mlp", {"hidden_sizes": [400, 200]}, "sgd", 10.0, momentum=0.99)
    with pytest.raises(TrainingDiverged, match=r"loss became NaN or infinite at epoch 1, a step from (\d+) to "
                                               r"(\d+); lower the learning rate") as failed:
        fit(model, opt, splits.train, None, TrainConfig(epochs=20, batch_size=16, device="cpu", sync_every=10))
    first, last = (int(s) for s in re.search(r"from (\d+) to (\d+)", str(failed.value)).groups())
    assert last - first == 9 and last % 10 == 0


def test_should_stop_is_asked_on_a_timer_not_before_every_step(splits):
    steps, calls = [], []
    model, opt, _ = make(splits)
    fit(model, opt, splits.train, None, TrainConfig(epochs=2, device="cpu", cancel_check_seconds=3600),
        should_stop=lambda: calls.append(1) and False, on_step=lambda *step: steps.append(step))
    assert len(calls) == 1 and len(steps) == 2 * math.ceil(len(splits.train) / 64)

    # With the default interval a cancel raised during the run is still seen within the run.
    cancel = threading.Event()
    steps.clear(), calls.clear()
    model, opt, _ = make(splits)
    with pytest.raises(TrainingCancelled):
        fit(model, opt, splits.train, None, TrainConfig(epochs=1000, device="cpu"),
            should_stop=lambda: calls.append(1) or cancel.is_set(),
            on_step=lambda *step: steps.append(step) or (len(steps) == 100 and cancel.set()))
    assert len(steps) > 100 and len(calls) < len(steps) / 2


def test_the_cpu_trains_eagerly_and_says_why(splits):
    model, opt, _ = make(splits)
    assert fit(model, opt, splits.train, None, TrainConfig(epochs=1, device="cpu")).path.to_dict() == {
        "path": "eager", "reason": "CUDA graphs need a GPU, and this job trains on the CPU"}
    assert fit(model, opt, splits.train, None, TrainConfig(epochs=1, device="cpu", compile="none")).path.reason \
        == "training.compile is none"
    with pytest.raises(ValueError, match="compile graph cannot be used: CUDA graphs need a GPU"):
        fit(model, opt, splits.train, None, TrainConfig(epochs=1, device="cpu", compile="graph"))
