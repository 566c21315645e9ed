"""The runtimes that can run a model, named in one place: what each is called, the package that
provides it, whether it runs the package's ONNX graph, and what to install for it.

`auto` is not a runtime but a choice among these (engine/run/runtimes.choose_runtime); the
plugin keeps a copy of CHOICES (it may not import the engine), which tests/test_one_source.py
holds equal.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Runtime:
    name: str
    package: str  # the importable package that provides it
    runs_graph: bool  # runs the package's ONNX graph (else the PyTorch module)
    install: str  # what an environment needs for it, as the error that asks for it says


# ONNX runtimes in the order `auto` prefers them on the CPU (benchmarks/speed.py measures each).
REGISTRY: tuple[Runtime, ...] = (
    Runtime("torch", "torch", False, "the full engine environment (PyTorch)"),
    Runtime("onnxruntime", "onnxruntime", True, "onnxruntime (pip install onnxruntime)"),
    Runtime("openvino", "openvino", True, "openvino (pip install openvino)"),
)
BY_NAME = {runtime.name: runtime for runtime in REGISTRY}
NAMES = tuple(BY_NAME)
CHOICES = ("auto", *NAMES)
ONNX_RUNTIMES = tuple(runtime.name for runtime in REGISTRY if runtime.runs_graph)
