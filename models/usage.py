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
