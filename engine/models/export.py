"""`crossearth export`: adds an ONNX graph of a package's model to the package.

The graph is the engine's model contract, source tiles in, class scores out on the same grid
(the card's input scale and the score combination inside), for a batch of any size and the
card's tile size. It is exported with PyTorch's dynamo exporter, run on an ONNX runtime and
compared with the PyTorch scores on a fixed input before it is kept; the card then records its
file, SHA-256, opset, tile, bands and the difference measured.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.error_codes import (
    MODEL_EXPORT,
    MODEL_EXPORT_MISMATCH,
    OUTPUT_EXISTS,
    OUTPUT_NOT_OURS,
    RUNTIME_MISSING,
)
from engine.errors import CrossEarthError, ModelError, OutputError
from engine.files import (
    create_temporary_file,
    describe_path,
    file_sha256,
    give_ordinary_permissions,
    publish,
    remove_temporary,
)
from engine.models.packages import CARD_FILE, ONNX_FILE, ModelPackage, find_package, open_package
from engine.run.runtime_registry import ONNX_RUNTIMES
from engine.run.runtimes import OnnxModel, installed

DEFAULT_OPSET = 18
DEFAULT_TOLERANCE = 1e-4


@dataclass
class ExportResult:
    package: Path
    graph: Path
    opset: int
    tile: int
    max_abs_diff: float
    checked_with: str
    bytes: int


def reference_input(card: Any, batch: int = 2, seed: int = 0) -> np.ndarray:
    """The fixed input graphs are checked on: normalized values ~ N(0, 1), seeded."""
    rng = np.random.default_rng(seed)
    shape = (batch, len(card.input.bands), card.tile_size, card.tile_size)
    return rng.standard_normal(shape).astype(np.float32)


def _checking_runtime() -> str:
    for runtime in ONNX_RUNTIMES:
        if installed(runtime):
            return runtime
    raise CrossEarthError(
        "checking the exported graph needs an ONNX runtime; install onnxruntime (pip install "
        "onnxruntime) or openvino",
        code=RUNTIME_MISSING,
        runtime="onnxruntime",
    )


def _float_model(package: ModelPackage) -> Any:
    """The package's source-tile model on the CPU in float32 (what the graph is made of)."""
    from engine.models.loading import load_package_model

    return load_package_model(package, "cpu").float()


def _export_graph(model: Any, x: np.ndarray, destination: Path, opset: int) -> None:
    import torch

    example = torch.from_numpy(x)
    batch = torch.export.Dim("batch", min=1, max=4096)
    # The exporter reports every step on stdout/stderr and the logging system; a failure is
    # raised, and its first line is what the user needs.
    quiet = [logging.getLogger(name) for name in ("onnxscript", "torch.onnx", "torch.export")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    with contextlib.ExitStack() as stack:
        for logger, level in zip(quiet, levels, strict=True):
            stack.callback(logger.setLevel, level)
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=opset,
            dynamic_shapes={"x": {0: batch}},
            input_names=["tiles"],
            output_names=["scores"],
            verbose=False,
        )
        assert program is not None  # the dynamo exporter always returns its program
        program.save(os.fsdecode(destination))


def _torch_scores(model: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def export_onnx(
    model: str | Path | None,
    *,
    opset: int = DEFAULT_OPSET,
    tolerance: float = DEFAULT_TOLERANCE,
    overwrite: bool = False,
    progress: Callable[[float, str], None] | None = None,
) -> ExportResult:
    """Exports the package's model to ONNX beside its weights and records the graph in its
    card. A graph whose scores differ from PyTorch's by more than `tolerance` is not kept."""
    report = progress or (lambda fraction, message: None)
    package = find_package(model)
    checker = _checking_runtime()
    target = _graph_target(package, overwrite)
    temp = create_temporary_file(target)
    published = False
    try:
        report(0.05, f"exporting {package.card.name} (opset {opset})")
        model = _float_model(package)
        x = reference_input(package.card)
        _export_or_say_why(model, x, temp, opset)
        report(0.7, f"checking the graph on {checker}")
        graph: dict[str, Any] = {
            "file": ONNX_FILE,
            "sha256": file_sha256(temp),
            "opset": opset,
            "tile": package.card.tile_size,
            "bands": len(package.card.input.bands),
            "max_abs_diff": 0.0,
            "exported_with": _exported_with(),
        }
        staged = dataclasses.replace(
            package,
            path=temp.parent,
            card=dataclasses.replace(package.card, onnx={**graph, "file": temp.name}),
        )
        difference = float(np.abs(OnnxModel(staged, checker)(x) - _torch_scores(model, x)).max())
        if not difference <= tolerance:
            raise ModelError(
                f"the exported graph's scores differ from PyTorch's by {difference:.2e} (more "
                f"than {tolerance:g}); it was not kept",
                code=MODEL_EXPORT_MISMATCH,
                difference=difference,
            )
        graph["max_abs_diff"] = float(f"{difference:.3e}")
        give_ordinary_permissions(temp)
        publish(temp, target)
        published = True
        report(0.95, "recording the graph in the card")
        dataclasses.replace(package.card, onnx=graph).save(package.path / CARD_FILE)
        open_package(package.path, package.source)  # the package reads back with its graph
    except BaseException:
        remove_temporary(temp)
        if published:
            with contextlib.suppress(OSError):
                target.unlink()
        raise
    return ExportResult(
        package=package.path,
        graph=target,
        opset=opset,
        tile=package.card.tile_size,
        max_abs_diff=float(graph["max_abs_diff"]),
        checked_with=checker,
        bytes=target.stat().st_size,
    )


def _graph_target(package: ModelPackage, overwrite: bool) -> Path:
    """Where the graph goes: model.onnx beside the weights, replaced only when allowed and
    only when it is a plain file."""
    target = package.path / ONNX_FILE
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise OutputError(
            f"{describe_path(target)} already exists; allow overwrite to export the graph again",
            code=OUTPUT_EXISTS,
            what="ONNX graph",
            path=describe_path(target),
            option="overwrite",
        )
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise OutputError(
            f"{describe_path(target)} is not a plain file; it will not be replaced: remove it "
            "yourself",
            code=OUTPUT_NOT_OURS,
            path=describe_path(target),
        )
    return target


def _export_or_say_why(model: Any, x: Any, temp: Path, opset: int) -> None:
    try:
        _export_graph(model, x, temp, opset)
    except (CrossEarthError, ModuleNotFoundError):
        raise  # a missing torch or onnxscript is the CLI's "needs the full engine" line
    except Exception as exc:  # the exporter raises many kinds; the first line says which
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ModelError(
            f"the model could not be exported to ONNX ({first})",
            code=MODEL_EXPORT,
            reason=first,
        ) from None


def _exported_with() -> str:
    import torch

    versions = [f"torch {torch.__version__}"]
    with contextlib.suppress(ImportError):
        import onnxscript

        versions.append(f"onnxscript {onnxscript.__version__}")
    return ", ".join(versions)
