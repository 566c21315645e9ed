"""How a model runs: PyTorch, or the package's ONNX graph on ONNX Runtime or OpenVINO.

`auto` picks PyTorch on a CUDA device and, on the CPU, the first installed ONNX runtime of
ONNX_RUNTIMES when the package has a graph (`crossearth export`) that takes the run's tiles;
otherwise PyTorch. This module imports neither torch nor an ONNX runtime until one is chosen,
so `segment` runs in an environment with only numpy, rasterio and ONNX Runtime.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.error_codes import (
    MEMORY_ONNX,
    MODEL_ONNX,
    OPTION_COMPILE,
    OPTION_RUNTIME,
    RUNTIME_DEVICE,
    RUNTIME_GRAPH,
    RUNTIME_MISSING,
    RUNTIME_UNAVAILABLE,
)
from engine.errors import ConfigError, CrossEarthError, DeviceError, ModelError, ResourceError
from engine.files import describe_path, file_sha256
from engine.models.model_card import ModelCard
from engine.models.packages import ModelPackage
from engine.run.devices import check_device_name
from engine.run.resize import resize_like_resampled_model
from engine.run.runtime_registry import BY_NAME, CHOICES, ONNX_RUNTIMES
from engine.run.scores import checked_scores


@dataclass
class LoadedModel:
    """A model ready to run: its card, the module (a torch module on its device in eval mode,
    or an OnnxModel), the runtime that runs it and its device."""

    card: ModelCard
    module: Any  # torch.nn.Module or OnnxModel; typed loosely so no runtime is imported here
    runtime: str = "torch"
    device: str = "cpu"


def installed(runtime: str) -> bool:
    """Whether `runtime`'s Python package can be imported here (without importing it)."""
    package = BY_NAME[runtime].package if runtime in BY_NAME else runtime
    return importlib.util.find_spec(package) is not None


def graph_problem(card: ModelCard, tile: int) -> str | None:
    """Why the card's ONNX graph cannot run tiles of `tile` model pixels (None: it can)."""
    graph = card.onnx
    if graph is None:
        return "the package has no ONNX graph ('crossearth export' adds one)"
    if graph["bands"] != len(card.input.bands):
        return f"its ONNX graph takes {graph['bands']} bands, the card {len(card.input.bands)}"
    if tile > graph["tile"]:
        return (
            f"its ONNX graph takes tiles of at most {graph['tile']} px, not {tile} (use the "
            "default tile size)"
        )
    return None


def _cuda_wanted(device: str) -> bool:
    name = (device or "auto").strip().lower()
    if name.startswith("cuda"):
        return True
    if name != "auto" or not installed("torch"):
        return False
    import torch

    return bool(torch.cuda.is_available())


def choose_runtime(
    requested: str | None, card: ModelCard, device: str, tile: int, compile: bool = False
) -> str:
    """The runtime for `requested` (auto, torch, onnxruntime, openvino) with this model, device
    and tile size (model pixels); one that cannot run here is a CrossEarthError saying why.
    `compile` (torch.compile) asks for PyTorch: auto then means torch."""
    check_device_name(device)
    name = (requested or "auto").strip().lower()
    if name not in CHOICES:
        raise ConfigError(
            f"runtime '{requested}' is not known; use one of {', '.join(CHOICES)}",
            code=OPTION_RUNTIME,
            option="runtime",
            value=requested,
        )
    if compile:
        if name in ONNX_RUNTIMES:
            raise ConfigError(
                f"compiling applies to the PyTorch runtime, not {name}; run with the torch "
                "runtime or without compiling",
                code=OPTION_COMPILE,
                option="compile",
                runtime=name,
            )
        name = "torch"
    if name == "auto":
        if _cuda_wanted(device) and installed("torch"):
            return "torch"
        if (device or "").strip().lower().startswith("cuda"):
            # A GPU asked for by name never runs on the CPU in silence.
            reason = "this is a Light engine environment, without the PyTorch GPUs need"
            raise DeviceError(
                f"device '{device}' requested but {reason}; use the device cpu or auto",
                device=device,
                reason=reason,
                option="device",
            )
        if graph_problem(card, tile) is None:
            for runtime in ONNX_RUNTIMES:
                if installed(runtime):
                    return runtime
        if installed("torch"):
            return "torch"
        why = graph_problem(card, tile) or "no ONNX runtime is installed"
        raise CrossEarthError(
            f"this environment has no PyTorch, and model '{card.name}' cannot run without it: "
            f"{why}; export its ONNX graph where PyTorch is installed, or set up the full engine",
            code=RUNTIME_UNAVAILABLE,
            runtime="auto",
            model=card.name,
            reason=why,
        )
    if not installed(name):
        raise CrossEarthError(
            f"the runtime {name} is not installed here; install {BY_NAME[name].install}, or use "
            "the runtime auto",
            code=RUNTIME_MISSING,
            runtime=name,
        )
    if name in ONNX_RUNTIMES:
        problem = graph_problem(card, tile)
        if problem is not None:
            raise ModelError(
                f"model '{card.name}' cannot run on {name}: {problem}; or use the runtime torch",
                code=RUNTIME_GRAPH,
                runtime=name,
                model=card.name,
                reason=problem,
            )
        # Only a device named by the analyst is checked: asking about CUDA for "auto" would
        # import PyTorch into a job that never uses it.
        if (device or "auto").strip().lower() != "auto" and _cuda_wanted(device):
            raise ConfigError(
                f"the ONNX runtimes run on the CPU, not on {device}; use the device cpu, or "
                "the runtime torch for a GPU",
                code=RUNTIME_DEVICE,
                runtime=name,
                device=device,
            )
    return name


class OnnxModel:
    """A package's ONNX graph on ONNX Runtime or OpenVINO (CPU, float32): normalized tiles
    [B, C, t, t] -> class scores [B, K, t, t] on the same grid, like the PyTorch model. Tiles
    smaller than the graph's are padded with 0 (the band means after normalization, as pixels
    outside a raster are) and the scores cropped."""

    def __init__(self, package: ModelPackage, runtime: str, threads: int | None = None) -> None:
        graph = package.card.onnx
        path = package.onnx_path
        if graph is None or path is None:
            raise ModelError(f"model '{package.card.name}' has no ONNX graph")
        self.tile = int(graph["tile"])
        self.runtime = runtime
        try:
            checksum = file_sha256(path)
        except OSError as exc:
            raise ModelError(
                f"cannot read the ONNX graph {describe_path(path)} ({exc.strerror or exc}); "
                "export it again or use the runtime torch",
                code=MODEL_ONNX,
                path=describe_path(path),
            ) from None
        if checksum != graph["sha256"]:
            raise ModelError(
                f"the ONNX graph {describe_path(path)} is not the one its card records (sha256 "
                "differs): it is damaged or was replaced; export it again or use the runtime torch",
                code=MODEL_ONNX,
                path=describe_path(path),
            )
        self._run = (
            _onnxruntime_session(path, threads)
            if runtime == "onnxruntime"
            else _openvino_model(path, threads)
        )

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Scores [B, K, h, w] float32 for tiles [B, C, h, w] no larger than the graph's."""
        height, width = batch.shape[-2:]
        if height > self.tile or width > self.tile:
            raise CrossEarthError(
                f"tiles of {height} x {width} px do not fit the ONNX graph ({self.tile} px)"
            )
        if (height, width) != (self.tile, self.tile):
            padded = np.zeros((*batch.shape[:2], self.tile, self.tile), np.float32)
            padded[..., :height, :width] = batch
            batch = padded
        scores = self._run(np.ascontiguousarray(batch, dtype=np.float32))
        return scores[..., :height, :width]


def _onnxruntime_session(path: Path, threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: its warnings are about the graph's build
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own classes for a bad graph
        raise ModelError(
            f"ONNX Runtime cannot load {describe_path(path)} ({str(exc).splitlines()[0][:200]}); "
            "export it again or use the runtime torch",
            code=MODEL_ONNX,
            path=describe_path(path),
        ) from None
    name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: batch})[0], dtype=np.float32)

    return run


def _openvino_model(path: Path, threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
    import openvino as ov

    core = ov.Core()
    # float32 like the other runtimes: on CPUs with bf16 units OpenVINO would default to bf16.
    properties: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        properties["INFERENCE_NUM_THREADS"] = threads
    try:
        compiled = core.compile_model(str(path), "CPU", properties)
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses for a bad graph
        raise ModelError(
            f"OpenVINO cannot load {describe_path(path)} ({str(exc).splitlines()[0][:200]}); "
            "export it again or use the runtime torch",
            code=MODEL_ONNX,
            path=describe_path(path),
        ) from None
    output = compiled.output(0)

    def run(batch: np.ndarray) -> np.ndarray:
        return np.asarray(compiled([batch])[output], dtype=np.float32)

    return run


class OnnxRunner:
    """Batches of source tiles through an OnnxModel, resampled to the model's tile first when
    the run's GSD asks for it (as ResampledModel does for PyTorch)."""

    def __init__(
        self, model: OnnxModel, classes: int, batch_size: int, model_tile: int | None = None
    ) -> None:
        if batch_size < 1:
            raise CrossEarthError(f"batch size must be at least 1, got {batch_size}")
        self.model = model
        self.classes = classes
        self.batch_size = batch_size
        self.model_tile = model_tile

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        if self.model_tile is None:
            return self.model(batch)
        scores = self.model(resize_like_resampled_model(batch, self.model_tile))
        return resize_like_resampled_model(scores, batch.shape[-1])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Scores [B, K, H, W] float32 for normalized tiles [B, C, H, W]."""
        outputs = []
        for start in range(0, batch.shape[0], self.batch_size):
            chunk = batch[start : start + self.batch_size]
            try:
                scores = self._forward(chunk)
            except MemoryError:
                raise ResourceError(
                    "out of memory running the ONNX graph; use a smaller batch size",
                    code=MEMORY_ONNX,
                    options=["batch"],
                ) from None
            outputs.append(checked_scores(scores, chunk.shape, self.classes))
        return np.concatenate(outputs, axis=0)


def load_model(
    package: ModelPackage, device: str, threads: int | None, runtime: str
) -> LoadedModel:
    """The package's model on the chosen runtime (see choose_runtime), ready to run; from
    memory when the warm worker loaded it before (engine/models/model_cache.py)."""
    from engine.models.model_cache import loaded

    return loaded(
        (device, threads, runtime),
        package.path,
        lambda: _load_model(package, device, threads, runtime),
    )


def is_loaded(package: ModelPackage, device: str, threads: int | None, runtime: str) -> bool:
    """Whether load_model would take this model from the warm worker's memory."""
    from engine.models.model_cache import holds

    return holds((device, threads, runtime), package.path)


def _load_model(
    package: ModelPackage, device: str, threads: int | None, runtime: str
) -> LoadedModel:
    if runtime in ONNX_RUNTIMES:
        return LoadedModel(package.card, OnnxModel(package, runtime, threads), runtime, "cpu")
    from engine.models.loading import load_package_model
    from engine.run.devices import resolve_device
    from engine.run.runner import set_cpu_threads

    torch_device = resolve_device(device)
    set_cpu_threads(threads)
    module = load_package_model(package, torch_device)
    return LoadedModel(package.card, module, "torch", str(torch_device))


def make_runner(
    loaded: LoadedModel,
    batch_size: int,
    amp: bool,
    model_tile: int | None,
    compile: bool = False,
) -> Callable[[np.ndarray], np.ndarray]:
    """A batch callable (normalized source tiles -> scores on their grid) for the loaded model;
    `model_tile`: the tile side the network runs at when the run resamples (None: it does not);
    `compile`: torch.compile the PyTorch model (see BatchRunner)."""
    classes = loaded.card.num_classes
    if loaded.runtime in ONNX_RUNTIMES:
        return OnnxRunner(loaded.module, classes, batch_size, model_tile)
    from engine.run.devices import resolve_device
    from engine.run.runner import BatchRunner

    module = loaded.module
    if model_tile is not None:
        from engine.run.scaled_model import ResampledModel

        module = ResampledModel(module, model_tile)
    return BatchRunner(
        module, resolve_device(loaded.device), classes, batch_size, amp=amp, compile=compile
    )


def release(loaded: LoadedModel) -> None:
    """Returns what the run held on its device (the CUDA cache) once its tiles are done."""
    if loaded.device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
