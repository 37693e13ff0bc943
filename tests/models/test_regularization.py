"""Regularization and training settings: early stopping, schedules, penalties, clipping, augmentation,
losses, and resuming with all of them in play."""

from __future__ import annotations

import pytest
import torch

from models.augment import AugmentConfig, augment
from models.export import checkpoint_from_bytes, checkpoint_to_bytes
from models.schedules import ScheduleConfig
from models.training import EarlyStopping, TrainConfig, evaluate, fit, holdout_report
from tests.models.helpers import digits, model_and_optimizer

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def splits():
    return digits(validation_split=0.15)


def setup(splits, architecture="mlp", params=None, optimizer="adam", lr=0.01, seed=0, **options):
    params = params if params is not None else {"hidden_sizes": [64]}
    return model_and_optimizer(splits.train, architecture, params, optimizer, lr, seed, **options)[:2]


@pytest.mark.slow
def test_early_stopping_stops_and_keeps_the_best_epoch(splits):
    # A large network on a small training set overfits: validation loss turns up after a few epochs.
    model, opt = setup(splits, params={"hidden_sizes": [512, 512]}, lr=0.003)
    stop = EarlyStopping(monitor="val_loss", patience=3)
    result = fit(model, opt, splits.train, splits.validation, TrainConfig(epochs=200, early_stopping=stop, device="cpu"))
    losses = [m.val_loss for m in result.history]
    best = min(range(len(losses)), key=losses.__getitem__) + 1
    assert result.stopped_early and len(result.history) == best + 3 < 200
    assert result.best_epoch == best
    assert evaluate(model, splits.validation, CPU)["loss"] == pytest.approx(losses[best - 1], rel=1e-5)


def test_early_stopping_on_accuracy_respects_min_delta(splits):
    model, opt = setup(splits)
    stop = EarlyStopping(monitor="val_accuracy", patience=2, min_delta=1.0)  # no epoch can improve by 1.0
    result = fit(model, opt, splits.train, splits.validation, TrainConfig(epochs=50, early_stopping=stop, device="cpu"))
    assert result.best_epoch == 1 and len(result.history) == 3


@pytest.mark.parametrize("schedule,expected", [
    (ScheduleConfig("step", step_size=2, gamma=0.5), [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]),
    (ScheduleConfig("cosine", min_lr=0.0), [0.1, 0.0933, 0.075, 0.05, 0.025, 0.0067]),
])
def test_epoch_schedules(splits, schedule, expected):
    model, opt = setup(splits, optimizer="sgd", lr=0.1, momentum=0.9)
    history = fit(model, opt, splits.train, None, TrainConfig(epochs=6, schedule=schedule, device="cpu")).history
    assert [m.learning_rate for m in history] == pytest.approx(expected, abs=1e-4)


def test_one_cycle_rises_then_anneals_per_batch(splits):
    model, opt = setup(splits, optimizer="sgd", lr=0.5, momentum=0.9)
    history = fit(model, opt, splits.train, None, TrainConfig(epochs=6, schedule=ScheduleConfig("one_cycle"),
                                                               device="cpu")).history
    rates = [m.learning_rate for m in history]
    peak = rates.index(max(rates))
    assert 0 < peak < 5 and max(rates) <= 0.5 and rates[-1] < rates[0]
    assert evaluate(model, splits.test, CPU)["accuracy"] >= 0.9


def test_l1_makes_weights_sparse_and_l2_makes_them_small(splits):
    norms = {}
    for name, settings in {"none": {}, "l1": {"l1": 1e-3}, "l2": {"l2": 1e-2}}.items():
        model, opt = setup(splits, "logistic_regression", {}, optimizer="sgd", lr=0.1, momentum=0.9)
        fit(model, opt, splits.train, None, TrainConfig(epochs=15, device="cpu", **settings))
        w = model[1][1].weight.detach()
        norms[name] = ((w.abs() < 1e-2).float().mean().item(), w.norm().item())
    assert norms["l1"][0] > norms["none"][0] + 0.2, norms
    assert norms["l2"][1] < norms["none"][1] * 0.7, norms


def test_gradient_clipping_tames_a_learning_rate_too_high_to_train(splits):
    accuracy = {}
    for clip in (None, 0.1):
        model, opt = setup(splits, params={"hidden_sizes": [400, 200]}, optimizer="sgd", lr=1.0, momentum=0.9)
        fit(model, opt, splits.train, None, TrainConfig(epochs=3, batch_size=16, grad_clip_norm=clip, device="cpu"))
        accuracy[clip] = evaluate(model, splits.test, CPU)["accuracy"]
    assert accuracy[None] < 0.3 and accuracy[0.1] >= 0.85, accuracy


def test_augmentation_moves_pixels_and_is_reproducible(splits):
    x = splits.train.x[:32]
    cfg = AugmentConfig(shift=0.15, rotation=15, scale=0.1)
    a = augment(x, cfg, torch.Generator().manual_seed(1), background=0.0)
    b = augment(x, cfg, torch.Generator().manual_seed(1), background=0.0)
    assert a.shape == x.shape and torch.equal(a, b)
    assert (a - x).abs().mean() > 0.5  # on the 0-16 scale
    still = augment(x, AugmentConfig(), torch.Generator().manual_seed(1), background=0.0)
    assert torch.allclose(still, x, atol=1e-4), "no shift, rotation or scaling leaves the images as they are"


def test_training_with_augmentation_still_learns(splits):
    model, opt = setup(splits, "cnn", {"channels": [8, 16], "hidden_size": 32}, lr=0.01)
    cfg = TrainConfig(epochs=8, augmentation=AugmentConfig(shift=0.1, rotation=10, scale=0.1), device="cpu")
    fit(model, opt, splits.train, None, cfg)
    assert evaluate(model, splits.test, CPU)["accuracy"] >= 0.85


def test_squared_error_loss_trains_a_classifier(splits):
    model, opt = setup(splits, lr=0.003)
    history = fit(model, opt, splits.train, None, TrainConfig(epochs=8, loss="mse", device="cpu")).history
    assert history[-1].train_loss < history[0].train_loss / 2
    assert evaluate(model, splits.test, CPU, loss="mse")["accuracy"] >= 0.9


def test_resume_with_schedule_and_early_stopping_matches_an_uninterrupted_run(splits):
    config = dict(schedule=ScheduleConfig("one_cycle"), early_stopping=EarlyStopping(patience=50), device="cpu",
                  augmentation=AugmentConfig(shift=0.1), seed=5)
    model, opt = setup(splits, params={"hidden_sizes": [32], "dropout": 0.2}, seed=5)
    full = fit(model, opt, splits.train, splits.validation, TrainConfig(epochs=5, **config))
    saved = {}
    model, opt = setup(splits, params={"hidden_sizes": [32], "dropout": 0.2}, seed=5)
    with pytest.raises(KeyboardInterrupt):  # the worker dies after epoch 3
        def on_epoch(metrics, checkpoint):
            saved[metrics.epoch] = checkpoint_to_bytes(checkpoint())
            if metrics.epoch == 3:
                raise KeyboardInterrupt
        fit(model, opt, splits.train, splits.validation, TrainConfig(epochs=5, **config), on_epoch=on_epoch)
    model, opt = setup(splits, params={"hidden_sizes": [32], "dropout": 0.2}, seed=123)
    resumed = fit(model, opt, splits.train, splits.validation, TrainConfig(epochs=5, **config),
                  resume=checkpoint_from_bytes(saved[3]))
    assert [m.epoch for m in resumed.history] == [4, 5]
    assert [m.val_loss for m in resumed.history] == pytest.approx([m.val_loss for m in full.history[3:]], rel=1e-6)
    assert resumed.best_epoch == full.best_epoch


def test_test_report_has_confusion_matrix_and_per_class_scores(splits):
    model, opt = setup(splits)
    fit(model, opt, splits.train, None, TrainConfig(epochs=5, device="cpu"))
    report = holdout_report(model, splits.test, CPU)
    matrix = torch.tensor(report["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == len(splits.test) == report["test_samples"]
    assert report["test_accuracy"] == pytest.approx(matrix.diag().sum().item() / len(splits.test))
    assert [c["class"] for c in report["per_class"]] == list(range(10))
    assert sum(c["support"] for c in report["per_class"]) == len(splits.test)
    assert all(0.5 <= c["f1"] <= 1 for c in report["per_class"])
