"""Writes the plugin tests' real tiny CrossEarth model packages and a checkpoint.

Run by tests/plugin/conftest.py with the engine's interpreter in a child process, so torch is
never imported into the test process that hosts QGIS (as in QGIS itself).

    python make_fixtures.py OUT_FOLDER [--onnx]
writes OUT/models/tiny-landcover (the dock's model: water, built-up, vegetation; bands
red/green/blue), OUT/extra/tiny-buildings (a package to add from the dock) and OUT/tiny.pth
(an mmseg-layout checkpoint for the converter). With --onnx, tiny-landcover also gets its
ONNX graph (`crossearth export`), so a Light engine runs it: the QGIS-version matrix makes the
fixtures once with the Full engine and runs the plugin tests with a Light one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from engine.crossearth.model import CrossEarth
from engine.crossearth.presets import architecture_config, make_card
from engine.models.model_card import ClassInfo
from engine.models.packages import save_package

LANDCOVER = (
    ClassInfo(0, "water", (30, 100, 220)),
    ClassInfo(1, "built-up", (220, 60, 50)),
    ClassInfo(2, "vegetation", (60, 170, 70)),
)
BUILDINGS = (ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "building", (250, 250, 250)))


def tiny_network(num_classes: int, seed: int) -> CrossEarth:
    """The 'tiny' architecture with seeded random weights.

    A Mask2Former head at random initialisation predicts one class everywhere; scaling its
    class and mask embeddings (seed 2) gives outputs with all three classes in patches, which
    makes legends, polygons and the screenshot show more than one colour.
    """
    torch.manual_seed(seed)
    model = CrossEarth(architecture_config("tiny", num_classes)).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith("decode_head.cls_embed"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 4)
            if name.startswith("decode_head.mask_embed") and parameter.dim() > 1:
                parameter.mul_(6)
    return model


def main(out: Path) -> None:
    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "extra").mkdir(parents=True, exist_ok=True)
    config = architecture_config("tiny", 3)
    card = make_card(
        "tiny-landcover",
        config,
        LANDCOVER,
        bands=("red", "green", "blue"),
        gsd_m=30.0,
        description="Test model: the tiny CrossEarth architecture with random weights.",
        license="Apache-2.0",
    )
    save_package(out / "models" / "tiny-landcover", card, tiny_network(3, 2).state_dict())

    buildings = make_card(
        "tiny-buildings",
        architecture_config("tiny", 2),
        BUILDINGS,
        description="Test model to add from the dock.",
    )
    save_package(out / "extra" / "tiny-buildings", buildings, tiny_network(2, 5).state_dict())

    torch.save({"state_dict": tiny_network(3, 7).state_dict(), "meta": {}}, out / "tiny.pth")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    if "--onnx" in sys.argv[2:]:
        from engine.models.export import export_onnx

        export_onnx(Path(sys.argv[1]) / "models" / "tiny-landcover")
