"""Every architecture trains with every optimizer, and the two hand-written optimizers find known optima."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from models.architectures import ARCHITECTURES, ModelConfig, build_model
from models.datasets import load_builtin, split_dataset
from models.optimizers import OPTIMIZERS, build_optimizer
from models.second_order import BFGS, ConjugateGradient, Newton
from models.training import TrainConfig, data_loss, evaluate, fit, penalty, seed_everything

TINY = {
    "logistic_regression": {},
    "mlp": {"hidden_sizes": [32]},
    "cnn": {"channels": [4, 8], "hidden_size": 16},
    "lstm": {"hidden_size": 16},
    "gru": {"hidden_size": 16},
}
LEARNING_RATE = {"sgd": 0.1, "adagrad": 0.05, "rmsprop": 0.005, "adam": 0.01, "adamw": 0.01,
                 "lbfgs": 1.0, "bfgs": 1.0, "newton": 1.0, "conjugate_gradient": 1.0}


@pytest.fixture(scope="module")
def splits():
    return split_dataset(load_builtin("digits"), validation_split=0.0, test_split=0.2, seed=0)


def new_model(data, architecture: str, params: dict, seed: int = 0) -> torch.nn.Module:
    seed_everything(seed)
    return build_model(ModelConfig(architecture, params, data.input_shape, data.num_classes, data.value_range))


def test_every_architecture_and_optimizer_is_covered():
    assert set(TINY) == set(ARCHITECTURES) and set(LEARNING_RATE) == set(OPTIMIZERS)


# Full-batch optimizers on the recurrent and convolutional nets take seconds each: `slow`.
@pytest.mark.parametrize("optimizer", [pytest.param(o, marks=pytest.mark.slow) if info.full_batch else o
                                       for o, info in OPTIMIZERS.items()])
@pytest.mark.parametrize("architecture", list(TINY))
def test_architecture_trains_with_optimizer(splits, architecture, optimizer):
    model = new_model(splits.train, architecture, TINY[architecture])
    options = {"sgd": {"momentum": 0.9}, "newton": {"max_iter": 10}}.get(optimizer, {})
    opt = build_optimizer(optimizer, model.parameters(), LEARNING_RATE[optimizer], **options)
    full_batch = OPTIMIZERS[optimizer].full_batch
    # A full-batch step costs the whole set (Newton's, many Hessian-vector products): 400 digits are enough
    # to show that it trains, and a quarter of the time.
    train = splits.train.subset(torch.arange(400)) if full_batch else splits.train
    config = TrainConfig(epochs=3, batch_size=None if full_batch else 32, device="cpu")
    before = evaluate(model, train, torch.device("cpu"))["loss"]
    fit(model, opt, train, None, config)
    after = evaluate(model, train, torch.device("cpu"))["loss"]
    accuracy = evaluate(model, splits.test, torch.device("cpu"))["accuracy"]
    assert after < before * 0.7, f"loss {before:.3f} -> {after:.3f}"
    assert accuracy >= 0.5, f"test accuracy {accuracy:.3f}; chance is 0.1"


@pytest.fixture(scope="module")
def convex_problem(splits):
    """L2-regularized multinomial logistic regression on the digits, solved by scikit-learn.

    scikit-learn minimizes C * sum(cross-entropy) + |W|^2 / 2; divided by C*n that is trainserve's mean
    cross-entropy + l2/2 * |W|^2 with l2 = 1 / (C n)."""
    data = splits.train
    n, c = len(data), 1.0
    x = (data.x.reshape(n, -1) / 16).double().numpy()
    reference = LogisticRegression(C=c, tol=1e-10, max_iter=10_000).fit(x, data.y.numpy())
    model = new_model(data, "logistic_regression", {})
    linear = model[1][1]
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(reference.coef_))
        linear.bias.copy_(torch.from_numpy(reference.intercept_))
    l2 = 1.0 / (c * n)
    return data, l2, objective(model, data, l2), reference.predict(x)


def objective(model, data, l2: float) -> float:
    with torch.no_grad():
        return float(data_loss(model(data.x), data.y, "cross_entropy") + penalty(model, 0.0, l2))


@pytest.mark.parametrize("optimizer,options,epochs", [
    ("newton", {}, 2),  # 650 parameters: the exact Hessian
    ("newton", {"max_exact_params": 100, "cg_iterations": 100}, 3),  # forced Hessian-free Newton-CG
    ("conjugate_gradient", {}, 10),
    ("lbfgs", {}, 5),
    ("bfgs", {"max_iter": 50}, 6),
])
def test_full_batch_optimizers_reach_the_known_optimum(convex_problem, optimizer, options, epochs):
    data, l2, optimum, reference_labels = convex_problem
    model = new_model(data, "logistic_regression", {})
    fit(model, build_optimizer(optimizer, model.parameters(), 1.0, **options), data, None,
        TrainConfig(epochs=epochs, l2=l2, device="cpu"))
    reached = objective(model, data, l2)
    assert reached == pytest.approx(optimum, abs=2e-5), f"{optimizer} stopped at {reached}, optimum {optimum}"
    assert (model(data.x).argmax(1).numpy() == reference_labels).mean() >= 0.995


def test_newton_solves_a_quadratic_in_one_step():
    target = torch.tensor([3.0, -2.0, 0.5])
    a = torch.tensor([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]])
    x = torch.zeros(3, requires_grad=True)
    opt = Newton([x], damping=1e-12, max_iter=1)
    opt.step(lambda: 0.5 * (x - target) @ a @ (x - target))
    assert torch.allclose(x.detach(), target, atol=1e-5)


def test_conjugate_gradient_minimizes_rosenbrock():
    x = torch.tensor([-1.2, 1.0], requires_grad=True)
    opt = ConjugateGradient([x], max_iter=500, restart_every=2)
    opt.step(lambda: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2)
    assert torch.allclose(x.detach(), torch.tensor([1.0, 1.0]), atol=1e-3)


def flat_objective(model, data, l2: float):
    """The model's objective and its gradient as functions of one float64 vector, as SciPy takes them."""
    params = list(model.parameters())

    def f(vector: np.ndarray) -> tuple[float, np.ndarray]:
        offset = 0
        with torch.no_grad():
            for p in params:
                p.copy_(torch.from_numpy(vector[offset : offset + p.numel()]).view_as(p))
                offset += p.numel()
        loss = data_loss(model(data.x), data.y, "cross_entropy") + penalty(model, 0.0, l2)
        grads = torch.autograd.grad(loss, params)
        return float(loss.detach()), torch.cat([g.reshape(-1) for g in grads]).double().numpy()

    return f


@pytest.mark.slow
def test_bfgs_matches_scipys_bfgs_on_the_same_objective(convex_problem):
    """SciPy's BFGS and ours, from the same start on the same float64 objective, reach the same minimum."""
    from scipy.optimize import minimize

    data, l2, optimum, _ = convex_problem
    data = type(data)(data.x.double(), data.y, data.num_classes, data.value_range)
    ours = new_model(data, "logistic_regression", {}).double()
    theirs = new_model(data, "logistic_regression", {}).double()
    start = torch.cat([p.detach().reshape(-1) for p in theirs.parameters()]).numpy()
    reference = minimize(flat_objective(theirs, data, l2), start, jac=True, method="BFGS",
                         options={"gtol": 1e-9, "maxiter": 5000})
    optimizer = BFGS(ours.parameters(), max_iter=1000)
    # Stepped directly on the float64 objective (the training loop computes its loss in float32).
    optimizer.step(lambda: data_loss(ours(data.x), data.y, "cross_entropy") + penalty(ours, 0.0, l2))
    reached = float(data_loss(ours(data.x), data.y, "cross_entropy") + penalty(ours, 0.0, l2))
    assert reference.fun == pytest.approx(optimum, abs=1e-6)
    assert reached == pytest.approx(reference.fun, abs=1e-7), f"ours {reached}, SciPy's {reference.fun}"
    ours_vector = torch.cat([p.detach().reshape(-1) for p in ours.parameters()]).numpy()
    assert np.abs(ours_vector - reference.x).max() < 1e-2  # the same minimizer, not only the same value


def test_bfgs_minimizes_rosenbrock_as_scipy_does():
    from scipy.optimize import minimize, rosen

    x = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    BFGS([x], max_iter=500).step(lambda: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2)
    reference = minimize(rosen, [-1.2, 1.0], method="BFGS")
    assert np.allclose(x.detach().numpy(), reference.x, atol=1e-4) and np.allclose(reference.x, [1.0, 1.0], atol=1e-4)


def test_bfgs_refuses_a_model_too_large_for_its_matrix(splits):
    model = new_model(splits.train, "mlp", {"hidden_sizes": [400, 200]})  # 108,210 parameters on 8x8 digits
    with pytest.raises(ValueError, match="more than bfgs's 8,192; use lbfgs"):
        BFGS(model.parameters())


def test_optimizer_state_survives_a_checkpoint(splits):
    """Newton and CG keep their state in state_dict, so a resumed job continues the same iteration."""
    model = new_model(splits.train, "logistic_regression", {})
    opt = build_optimizer("conjugate_gradient", model.parameters(), 1.0, max_iter=3)
    fit(model, opt, splits.train, None, TrainConfig(epochs=1, device="cpu"))
    state = opt.state_dict()
    fresh = build_optimizer("conjugate_gradient", model.parameters(), 1.0, max_iter=3)
    fresh.load_state_dict(state)
    assert int(fresh.state["cg"]["k"]) == 3 and math.isfinite(float(fresh.state["cg"]["t"]))
    assert np.allclose(fresh.state["cg"]["d"].numpy(), opt.state["cg"]["d"].numpy())
