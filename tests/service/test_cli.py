"""The worker's command line: which queues it takes, and what it refuses."""

from __future__ import annotations

import pytest
import torch

from service.cli import build_parser, default_queues


def test_a_worker_takes_the_queues_it_is_told():
    args = build_parser().parse_args(["worker", "--queues", "gpu", "--max-tasks-per-child", "1"])
    assert args.queues == ["gpu"] and args.max_tasks_per_child == 1


def test_a_worker_told_nothing_takes_gpu_jobs_only_where_there_is_a_gpu():
    assert build_parser().parse_args(["worker"]).queues is None
    expected = ["jobs", "gpu", "exports"] if torch.cuda.is_available() else ["jobs", "exports"]
    assert default_queues() == expected


@pytest.mark.parametrize(("argv", "message"), [
    (["worker", "--queues", "jobs,cuda"], "name one or more of jobs, gpu, exports"),
    (["worker", "--queues", ""], "name one or more of"),
    (["worker", "--max-tasks-per-child", "-1"], "-1 is below 0"),
    (["worker", "--concurrency", "0"], "0 is below 1"),
    (["worker", "--concurrency", "two"], "'two' is not a whole number"),
    (["wait-for-migrations", "--timeout", "soon"], "invalid float value"),
])
def test_a_wrong_option_is_refused_with_what_to_change(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
