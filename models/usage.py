"""What one epoch cost the machine: the process's CPU time and peak resident memory and, on CUDA, the GPU's
name, its peak allocated memory and its utilisation (NVML, through nvidia-ml-py, where the driver has it)."""

from __future__ import annotations

import resource
import time
from typing import Any

import torch


def _nvml_utilization(device: torch.device) -> float | None:
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        return float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception:  # no binding, no driver library, or a device NVML cannot see
        return None


class UsageMeter:
    """``start()`` at the beginning of an epoch, ``read()`` at its end."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self._cpu = 0.0

    def start(self) -> None:
        self._cpu = time.process_time()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def read(self) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "cpu_seconds": time.process_time() - self._cpu,  # every thread of the process, this epoch
            # The process's peak resident set so far (Linux reports kilobytes).
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "gpu_name": None, "gpu_peak_memory_bytes": None, "gpu_utilization": None,
        }
        if self.cuda:
            usage.update(gpu_name=torch.cuda.get_device_name(self.device),
                         gpu_peak_memory_bytes=int(torch.cuda.max_memory_allocated(self.device)),
                         gpu_utilization=_nvml_utilization(self.device))
        return usage


# A CUDA context, cuBLAS and cuDNN workspaces and the caching allocator's slack, on top of what a job holds.
GPU_OVERHEAD_BYTES = 512 * 2**20


def gpu_memory_needed(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> int:
    """About what a job needs on the GPU: the resident dataset, the weights with their gradients and two
    optimizer states, a batch's activations (every layer's output at the input's size, twice for backward:
    generous for these models) and the fixed overhead."""
    data = x.numel() * x.element_size() + y.numel() * y.element_size()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    widest = max([x[0].numel()] + [p.shape[0] for p in model.parameters() if p.ndim > 1])
    activations = 2 * batch_size * widest * 4 * max(1, sum(1 for p in model.parameters() if p.ndim > 1))
    return data + 4 * weights + activations + GPU_OVERHEAD_BYTES


def gpu_memory_free(device: torch.device) -> tuple[int, int]:
    """(free, total) bytes on ``device``, as the driver sees them: other processes' use included."""
    return torch.cuda.mem_get_info(device)
