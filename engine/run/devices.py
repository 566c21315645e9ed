"""Device choice: 'auto', 'cpu', 'cuda' or 'cuda:N', with errors that say what is available."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, TypedDict

from engine.errors import CrossEarthError, DeviceError
from engine.run.runtime_registry import REGISTRY

if TYPE_CHECKING:
    import torch


def check_device_name(name: str | None) -> str:
    """The device name, normalized: 'auto', 'cpu', 'cuda' or 'cuda:...' (the index is checked
    where the GPUs are known); any other name is a CrossEarthError. Needs no torch."""
    text = (name or "auto").strip().lower()
    if text in ("auto", "cpu", "cuda") or text.startswith("cuda:"):
        return text
    raise CrossEarthError(f"device '{text}' is not valid; use auto, cpu, cuda or cuda:N")


def resolve_device(name: str | None) -> torch.device:
    """The torch device for 'auto', 'cpu', 'cuda' or 'cuda:N'; one that is not there is a
    CrossEarthError that says what is available."""
    import torch

    name = check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    # "cuda" or "cuda:..."
    if not torch.cuda.is_available():
        reason = f"CUDA is not available (torch {torch.__version__}, no usable NVIDIA GPU/driver)"
        raise DeviceError(
            f"device '{name}' requested but {reason}; use the device cpu or auto",
            device=name,
            reason=reason,
            option="device",
        )
    index = 0
    if ":" in name:
        try:
            index = int(name.split(":", 1)[1])
        except ValueError:
            raise CrossEarthError(f"device '{name}' is not valid; use cuda:N") from None
    count = torch.cuda.device_count()
    if not 0 <= index < count:
        raise CrossEarthError(
            f"device '{name}' does not exist: {count} CUDA device(s) (cuda:0..cuda:{count - 1})"
        )
    return torch.device("cuda", index)


def describe_devices() -> list[dict[str, object]]:
    """CPU plus every CUDA GPU with its name and memory, for pickers and 'check' buttons."""
    import torch

    devices: list[dict[str, object]] = [{"id": "cpu", "name": "CPU"}]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            devices.append(
                {
                    "id": f"cuda:{index}",
                    "name": props.name,
                    "memory_gib": round(props.total_memory / 2**30, 1),
                }
            )
    return devices


class EnvironmentReport(TypedDict):
    """`crossearth check --json`: versions, CUDA and the devices."""

    python: str
    executable: str
    torch: str | None  # None: a light environment (ONNX runtimes only)
    timm: str | None
    rasterio: str
    gdal: str
    cuda_available: bool
    cuda_version: str | None
    devices: list[dict[str, object]]
    cpu_count: int | None
    ray: str | None  # None: not installed
    runtimes: dict[str, str]  # installed runtimes (torch, onnxruntime, openvino): version
    features: dict[str, bool]  # FEATURE_NEEDS: what this environment can do


# What each engine feature needs installed (distribution names), for `check --json`: the plugin
# offers a feature only where the environment has it, and says what to add otherwise.
FEATURE_NEEDS: dict[str, tuple[tuple[str, ...], ...]] = {
    # any one of the runtimes segments
    "segment": tuple((runtime.package,) for runtime in REGISTRY),
    "polygons": (("pyogrio", "shapely"),),
    "download": (("torch", "huggingface_hub", "safetensors"),),
    "convert": (("torch", "timm", "safetensors"),),
    "train": (("torch", "timm", "safetensors", "scipy", "pyyaml", "torchvision"),),
    "export": (("torch", "onnx", "onnxscript"),),
    "sharded": (("ray",),),
}


def environment_report() -> EnvironmentReport:
    """What the engine runs with: versions, CUDA and the devices (for the plugin's Check)."""
    import platform
    import sys

    import rasterio

    runtimes = {
        runtime.name: found
        for runtime in REGISTRY
        if (found := _installed_version(runtime.package)) is not None
    }
    has_torch = "torch" in runtimes
    if has_torch:
        import torch
    return {
        "python": platform.python_version(),
        "executable": sys.executable,
        "torch": runtimes.get("torch"),
        "timm": _installed_version("timm"),
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
        "cuda_available": bool(has_torch and torch.cuda.is_available()),
        "cuda_version": torch.version.cuda if has_torch else None,
        "devices": describe_devices() if has_torch else [{"id": "cpu", "name": "CPU"}],
        "cpu_count": os.cpu_count(),
        # Sharded runs (--workers/--cluster) need Ray; its version is read without importing it.
        "ray": _installed_version("ray"),
        "runtimes": runtimes,
        "features": {
            feature: any(all(_installed_version(n) for n in option) for option in options)
            for feature, options in FEATURE_NEEDS.items()
        },
    }


def _installed_version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None
