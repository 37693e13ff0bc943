"""The choice between a captured CUDA graph and eager steps, and the captured step's own logic, on the CPU.
Capture itself needs a GPU: tests/models/test_cuda.py."""

from __future__ import annotations

import pytest
import torch

from models.graphs import GraphStep, choose_path
from models.optimizers import build_optimizer
from tests.models.helpers import digits, model_and_optimizer

CUDA = torch.device("cuda")  # a device name only: nothing here touches a GPU


def path(optimizer="adam", mode="auto", device=CUDA, full_batches=20, **settings):
    model = torch.nn.Linear(4, 2)
    opt = build_optimizer(optimizer, model.parameters(), 0.1)
    flags = {"full_batch": optimizer in ("lbfgs", "newton"), "augmenting": False, "scheduled": False} | settings
    return choose_path(mode, device, opt, full_batches=full_batches, **flags)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
def test_a_minibatch_job_on_a_gpu_is_captured(optimizer):
    assert path(optimizer).path == "graph" and path(optimizer, "graph").path == "graph"


@pytest.mark.parametrize("settings,reason", [
    ({"optimizer": "lbfgs"}, "lbfgs is a full-batch optimizer"),
    ({"optimizer": "newton"}, "newton is a full-batch optimizer"),
    ({"optimizer": "adagrad"}, "PyTorch has no capturable adagrad step"),
    ({"augmenting": True}, "augmentation draws new transforms"),
    ({"scheduled": True}, "a learning-rate schedule changes the rate"),
    ({"full_batches": 3}, "an epoch has 3 full batches, too few"),
    ({"device": torch.device("cpu")}, "CUDA graphs need a GPU"),
])
def test_what_a_graph_cannot_hold_trains_eagerly_and_says_why(settings, reason):
    chosen = path(**settings)
    assert chosen.path == "eager" and reason in chosen.reason
    with pytest.raises(ValueError, match=f"training.compile graph cannot be used: {reason}"):
        path(mode="graph", **settings)
    assert path(mode="none", **settings).to_dict() == {"path": "eager", "reason": "training.compile is none"}


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="'fast' is not one of none, graph, auto"):
        path(mode="fast")


def test_the_captured_step_trains_as_the_eager_step_does():
    """The step a graph captures gathers its batch through a static index buffer and adds its loss up on the
    device; run without capture, it must take exactly the steps the eager loop takes."""
    splits = digits()
    x, y = splits.train.x, splits.train.y
    batches = list(torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).split(64))[:-1]

    def run(graphed: bool) -> tuple[list[torch.Tensor], float]:
        model, opt, _ = model_and_optimizer(splits.train, "mlp", {"hidden_sizes": [32]}, "adam", 0.01)
        total = torch.zeros(())

        def step(xb, yb, zero_grad=True):
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            if zero_grad:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total.add_(loss.detach() * len(yb))

        index = torch.zeros(64, dtype=torch.long)
        graph = GraphStep(lambda zero_grad: step(x[index], y[index], zero_grad), index, capture=False, optimizer=opt)
        for batch in batches:
            graph(batch) if graphed else step(x[batch], y[batch])
        return [p.detach().clone() for p in model.parameters()], float(total)

    (eager, eager_total), (graphed, graphed_total) = run(False), run(True)
    assert all(torch.equal(a, b) for a, b in zip(eager, graphed)) and eager_total == graphed_total
