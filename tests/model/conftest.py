"""The official reduced reference (../shared/official) and helpers for the model tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
OFFICIAL = REPO.parent / "shared" / "official"
TINY_STATE = OFFICIAL / "tiny_state_dict.pth"
TINY_CONFIG = OFFICIAL / "tiny_config.py"


def official_available() -> bool:
    return TINY_STATE.is_file() and (OFFICIAL / "tiny_output.pt").is_file()


requires_official = pytest.mark.skipif(
    not official_available(), reason="../shared/official reference artifacts are not present"
)


@pytest.fixture(scope="session")
def tiny_reference() -> dict[str, torch.Tensor]:
    if not official_available():
        pytest.skip("../shared/official reference artifacts are not present")
    outputs = torch.load(OFFICIAL / "tiny_output.pt", weights_only=True)
    outputs["input"] = torch.load(OFFICIAL / "tiny_input.pt", weights_only=True)["x"]
    return outputs


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory):
    """The official tiny checkpoint converted with its official config, as a user would."""
    if not official_available():
        pytest.skip("../shared/official reference artifacts are not present")
    from engine.crossearth.convert import convert

    out = tmp_path_factory.mktemp("packages") / "tiny-official"
    return convert(TINY_STATE, out, mmseg_config=TINY_CONFIG, class_names=["a", "b", "c"]).package
