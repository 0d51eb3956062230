"""The device a run computes on: choosing it, waiting for it, and its peak memory."""

from __future__ import annotations

import logging
import resource
import sys

import torch

from ..errors import ConfigError

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """"auto" -> CUDA if present, else the CPU; any other name as given, refused (ConfigError)
    when torch does not know it or it names CUDA on a machine without it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:  # torch's message lists its ~20 device types; ours, what we support
        raise ConfigError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    return dev


def run_device(configured: str) -> torch.device:
    """Where to evaluate a run trained on `configured` (its config's `device`) by default: that
    device, or the CPU when it is a GPU this machine lacks (a run trained on a cluster, evaluated
    on a laptop; logged, never an error: the device was not asked for here)."""
    if configured != "auto" and torch.device(configured).type == "cuda" \
            and not torch.cuda.is_available():
        log.info("the run trained on %s; no CUDA here, evaluating on the CPU", configured)
        return torch.device("cpu")
    return resolve_device(configured)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously), before a clock read."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA only: a process's peak RSS cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> tuple[float, str]:
    """(MiB, kind) of peak memory: on CUDA the tensors' peak since the last `reset_peak_memory`
    ("cuda_max_allocated"), elsewhere the process's peak resident set size since it started
    ("cpu_peak_rss"; Linux's getrusage reports KiB, macOS's bytes)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "cpu_peak_rss"
