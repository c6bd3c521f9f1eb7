"""The run's metadata for the report: versions, device, model, inputs, settings, time per method."""
from __future__ import annotations

import datetime
import platform
import sys
from typing import Any, Mapping

import torch
from torch import Tensor


def _device(model: Any, inputs: Any) -> str:
    device = None
    if isinstance(inputs, Tensor):
        device = inputs.device
    elif isinstance(model, torch.nn.Module):
        device = next((p.device for p in model.parameters()), None)
    if device is None:
        return "unknown"
    if device.type == "cuda":
        try:
            return f"{device} ({torch.cuda.get_device_name(device)})"
        except Exception:  # noqa: BLE001 - the name is cosmetic
            return str(device)
    return str(device)


def _model(model: Any) -> str:
    if model is None:
        return "not given"
    name = type(model).__name__
    if isinstance(model, torch.nn.Module):
        n = sum(p.numel() for p in model.parameters())
        return f"{name} ({n:,} parameters)"
    return name


def _short(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"tensor {tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 200 else text[:197] + "..."


def metadata(model: Any, inputs: Any, methods: list[str], timings: Mapping[str, float],
             settings: Mapping[str, Any] | None, scale_text: str) -> list[tuple[str, str]]:
    """Key/value rows of the metadata table."""
    from .. import __version__

    rows = [
        ("created (UTC)", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")),
        ("propex", __version__),
        ("torch", torch.__version__),
        ("python", platform.python_version()),
        ("platform", f"{platform.system()} {platform.machine()}"),
        ("device", _device(model, inputs)),
        ("model", _model(model)),
    ]
    if isinstance(inputs, Tensor):
        dtype = str(inputs.dtype).replace("torch.", "")
        rows.append(("inputs", f"{inputs.shape[0]} × {tuple(inputs.shape[1:])}, {dtype}"))
    rows.append(("methods", ", ".join(methods)))
    rows.append(("heatmap colour scale", scale_text))
    for key, value in (settings or {}).items():
        rows.append((f"setting: {key}", _short(value)))
    for method in methods:
        if method in timings and timings[method] is not None:
            rows.append((f"time: {method}", f"{float(timings[method]):.3f} s"))
    if sys.flags.optimize:
        rows.append(("python -O", str(sys.flags.optimize)))
    return rows
