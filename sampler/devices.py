"""Torch devices and dtypes from command-line words: the one resolver for every sampler command."""

from __future__ import annotations

from typing import Any


class DeviceError(ValueError):
    """A device or dtype that cannot be used here; the message says which ones can."""


def resolve_device(device: str | None = "auto"):
    """'auto' (or None/''): CUDA when present, else CPU; 'cpu', 'cuda', 'cuda:N' or 'mps', checked."""
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise DeviceError(f"unknown device {device!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} requested but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError("device 'mps' requested but MPS is not available here")
    elif dev.type != "cpu":
        raise DeviceError(f"unsupported device {device!r} (use auto, cpu, cuda, cuda:N or mps)")
    return dev


def resolve_dtype(dtype: str, device) -> Any:
    """'auto' (float16 on CUDA, else float32), 'float32', 'float16' or 'bfloat16'."""
    import torch

    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in table:
        raise DeviceError(f"unknown dtype {dtype!r} (use auto, float32, float16 or bfloat16)")
    return table[dtype]
