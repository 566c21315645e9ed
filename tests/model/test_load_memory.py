"""Loading a full-size (ViT-L) package holds its weights once, not twice."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from engine.crossearth.config import CrossEarthConfig
from engine.crossearth.model import CrossEarth
from engine.crossearth.presets import checkpoint_preset, preset_card
from engine.models.packages import save_package

CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from engine.models.loading import load_package_model
    from engine.models.packages import open_package

    package = open_package(sys.argv[1])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model = load_package_model(package, "cpu")
    # Touch every weight so lazily mapped pages would count too.
    checksum = sum(float(t.float().abs().sum()) for t in model.state_dict().values())
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    print(json.dumps({"growth": after - before, "weights": weights, "checksum": checksum}))
    """
)


@pytest.fixture(scope="module")
def vitl_package(tmp_path_factory):
    card = preset_card(checkpoint_preset("potsdam-r-source"), "vitl-memory-test")
    with torch.device("meta"):
        model = CrossEarth(CrossEarthConfig.from_dict(card.config, card.num_classes))
    model = model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.uniform_(-0.05, 0.05, generator=generator)
    package = save_package(tmp_path_factory.mktemp("vitl") / "vitl", card, model.state_dict())
    del model
    return package


def test_vitl_package_loads_with_one_copy_of_the_weights(vitl_package):
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(vitl_package.path)],
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["weights"] > 1.3e9  # 327.8 M float32 values
    assert measured["checksum"] > 0
    # One copy plus working memory; a second copy (state dict beside a materialized model)
    # would make the growth at least twice the weights.
    assert measured["growth"] < 1.35 * measured["weights"], measured
