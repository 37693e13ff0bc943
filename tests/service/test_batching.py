"""Dynamic batching: requests queued together share one forward pass and each gets its own rows."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest
import torch

from models.architectures import ModelConfig, build_model
from models.fastpath import dense_forward
from service.serving.batching import Batcher
from service.serving.models import LoadedModel, probabilities


def dense_model(seed: int, hidden: list[int]) -> LoadedModel:
    torch.manual_seed(seed)
    config = ModelConfig("mlp", {"hidden_sizes": hidden}, (1, 8, 8), 10, (0.0, 16.0))
    module = build_model(config).eval()
    return LoadedModel(uuid.uuid4(), f"m{seed}", 1, config.input_shape, config.value_range, 10, module,
                       fast=dense_forward(module))


@pytest.fixture(scope="module")
def models() -> tuple[LoadedModel, LoadedModel]:
    return dense_model(0, [32, 16]), dense_model(1, [20])


def inputs(sizes: list[int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.random((n, 1, 8, 8)) * 16).astype(np.float32) for n in sizes]


def queue_all(batcher: Batcher, requests: list[tuple[LoadedModel, np.ndarray]]) -> list:
    async def run():
        futures = [batcher.probabilities(model, x) for model, x in requests]  # queued in one turn
        return await asyncio.gather(*futures, return_exceptions=True)
    return asyncio.run(run())


def assert_rows_match(got: list[list[float]], model: LoadedModel, x: np.ndarray) -> None:
    expected = np.array(probabilities(model, x))
    assert np.array(got).shape == expected.shape
    assert np.abs(np.array(got) - expected).max() <= 2e-6  # rounded to six places either way


def test_requests_queued_together_share_one_forward_pass_and_each_gets_its_own_rows(models):
    model = models[0]
    xs = inputs([1, 3, 1, 2, 1])
    batcher = Batcher()
    results = queue_all(batcher, [(model, x) for x in xs])
    assert (batcher.requests, batcher.passes) == (5, 1)
    for got, x in zip(results, xs):
        assert_rows_match(got, model, x)


def test_a_lone_request_is_answered(models):
    batcher = Batcher()
    (x,) = inputs([2])
    (got,) = queue_all(batcher, [(models[0], x)])
    assert_rows_match(got, models[0], x)
    assert (batcher.requests, batcher.passes) == (1, 1)


def test_each_model_gets_its_own_pass(models):
    a, b = models
    xs = inputs([1, 2, 1, 1])
    batcher = Batcher()
    requests = [(a, xs[0]), (b, xs[1]), (a, xs[2]), (b, xs[3])]
    results = queue_all(batcher, requests)
    assert batcher.passes == 2
    for got, (model, x) in zip(results, requests):
        assert_rows_match(got, model, x)


@pytest.mark.parametrize("sizes, passes", [([3, 3, 3], 3), ([2, 2, 2], 2), ([5], 1), ([1, 4, 1], 3)])
def test_a_pass_takes_at_most_max_rows_and_keeps_a_request_whole(models, sizes, passes):
    batcher = Batcher(max_rows=4)
    xs = inputs(sizes)
    results = queue_all(batcher, [(models[0], x) for x in xs])
    assert batcher.passes == passes
    for got, x in zip(results, xs):
        assert_rows_match(got, models[0], x)


def test_a_failed_pass_answers_each_of_its_requests_with_the_error_and_the_next_pass_works(models):
    def fails(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("the forward pass failed")

    broken = LoadedModel(uuid.uuid4(), "broken", 1, (1, 8, 8), (0.0, 16.0), 10, models[0].module, fast=fails)
    batcher = Batcher()
    xs = inputs([1, 2, 1])
    results = queue_all(batcher, [(broken, xs[0]), (models[0], xs[1]), (broken, xs[2])])
    assert isinstance(results[0], RuntimeError) and results[2] is results[0]
    assert_rows_match(results[1], models[0], xs[1])
    (again,) = queue_all(batcher, [(models[0], xs[0])])
    assert_rows_match(again, models[0], xs[0])


def test_a_request_given_up_on_while_it_waits_does_not_disturb_the_others(models):
    batcher = Batcher()
    xs = inputs([1, 1, 1])

    async def run():
        futures = [batcher.probabilities(models[0], x) for x in xs]
        futures[1].cancel()
        return await asyncio.gather(futures[0], futures[2])

    first, third = asyncio.run(run())
    assert_rows_match(first, models[0], xs[0])
    assert_rows_match(third, models[0], xs[2])
