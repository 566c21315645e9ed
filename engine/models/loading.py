"""Builds a package's model and fills it with its weights, one tensor at a time.

The module is created on the meta device and the loaded tensors are assigned to it, so the
weights exist once in memory (no randomly initialised copy beside the loaded one).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from engine.errors import CrossEarthError
from engine.models.architectures import build_model
from engine.models.packages import ModelPackage, find_package

if TYPE_CHECKING:
    import torch
    from torch import nn


def _describe(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_state_dict_keys(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], source: str
) -> None:
    """Raises a CrossEarthError naming missing, unexpected and wrongly shaped keys."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong_shape = sorted(
        f"{k} (file {tuple(found[k])}, model {tuple(expected[k])})"
        for k in set(expected) & set(found)
        if tuple(found[k]) != tuple(expected[k])
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    if wrong_shape:
        problems.append(f"wrong shapes: {_describe(wrong_shape)}")
    if problems:
        raise CrossEarthError(
            f"weights in {source} do not fit the model described by its card: "
            + "; ".join(problems)
        )


def check_weight_dtypes(stored: dict[str, str], floating: set[str], source: str) -> None:
    """Raises unless every floating-point tensor of the model is stored as floating point:
    integer or boolean weights would be cast silently into a model that computes garbage."""
    for name in sorted(floating):
        dtype = stored.get(name, "")
        if not dtype.startswith(("F", "BF")):
            raise CrossEarthError(
                f"{source}: tensor '{name}' is stored as {dtype}, not as floating point; model "
                "weights must be F32, F16 or BF16: the package is damaged or was written by "
                "another tool, re-export it"
            )


def load_package_model(package: ModelPackage, device: str | torch.device = "cpu") -> nn.Module:
    """The package's model on `device`, frozen and in eval mode (for inference), taking and
    returning source-pixel tiles also when its card asks for an input scale."""
    from engine.run.scaled_model import ScaledModel

    model = build_package_model(package, device)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if package.card.input_scale > 1:
        model = ScaledModel(model, package.card.input_scale)
    return model.eval()


def build_package_model(package: ModelPackage, device: str | torch.device = "cpu") -> nn.Module:
    """The package's model with its weights on `device`, as built (training reuses this)."""
    import torch
    from safetensors import SafetensorError, safe_open

    with torch.device("meta"):
        model = build_model(package.card)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    target_dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    weights = package.weights_path
    device = torch.device(device)
    try:
        with safe_open(str(weights), framework="pt", device=str(device)) as handle:
            slices = {k: handle.get_slice(k) for k in handle.keys()}  # noqa: SIM118
            found = {k: tuple(v.get_shape()) for k, v in slices.items()}
            check_state_dict_keys(expected, found, str(weights))
            check_weight_dtypes(
                {k: slices[k].get_dtype() for k in expected},
                {k for k, dtype in target_dtypes.items() if dtype.is_floating_point},
                str(weights),
            )
            state = {k: handle.get_tensor(k).to(target_dtypes[k]) for k in expected}
    except SafetensorError as exc:
        raise CrossEarthError(
            f"{weights} is not a readable safetensors file ({exc}); the package is corrupt or "
            "incomplete: copy it again"
        ) from exc
    except OSError as exc:
        raise CrossEarthError(f"cannot read {weights}: {exc.strerror or exc}") from exc
    model.load_state_dict(state, strict=True, assign=True)
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise CrossEarthError(
            f"architecture '{package.card.architecture}' has tensors not stored in the package: "
            f"{_describe(leftover)}"
        )
    return model


def load_model(
    path_or_name: str | os.PathLike[str] | None, device: str | torch.device = "cpu"
) -> nn.Module:
    """Loads a model package (path or installed name) as an eval-mode module on `device`."""
    from engine.run.devices import resolve_device

    return load_package_model(find_package(path_or_name), resolve_device(str(device)))
