#!/usr/bin/env bash
# One run on a lent GPU machine: the CUDA tests of models/, the training-path benchmark (eager against CUDA
# graphs, shared GPUs), then the accuracy benchmark on the GPU.
# Usage there: TRAINSERVE_FASHION_MNIST_DIR=<folder with the IDX .gz files> bash bench/gpu_check.sh
set -uo pipefail
status=0
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
timeout 300 python3 -m pytest --noconftest -p no:cacheprovider -q -m gpu tests/models -rs 2>&1 | tail -25 || status=1
timeout 300 python3 -m bench.gpu 2>&1 | tail -45 || status=1
timeout 240 python3 -m bench.accuracy --device cuda 2>&1 | tail -12 || status=1
mkdir -p "${OUT:-/tmp/out}" && cp docs/benchmarks.md "${OUT:-/tmp/out}/" 2>/dev/null
exit $status  # a failing GPU test or a missed accuracy target fails the script, despite the tail
