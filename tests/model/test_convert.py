"""`crossearth convert`: checkpoint forms, mmseg configs with _base_, and every refusal."""

import pickle
import textwrap

import pytest
import torch

from engine import load_model
from engine.cli import main
from engine.crossearth.convert import convert
from engine.crossearth.mmseg_config import read_config
from engine.errors import CrossEarthError

from .conftest import TINY_CONFIG, TINY_STATE, requires_official

pytestmark = requires_official


@pytest.fixture(scope="module")
def tiny_state():
    return torch.load(TINY_STATE, weights_only=True)["state_dict"]


def save(path, state, wrap=True):
    torch.save({"state_dict": state, "meta": {}} if wrap else state, path)
    return path


def scores(package_path, x):
    with torch.no_grad():
        return load_model(package_path)(x)


def test_rein_and_head_checkpoint_with_separate_backbone(tmp_path, tiny_state, tiny_reference):
    rein_head = {
        k: v for k, v in tiny_state.items() if k.startswith(("backbone.reins.", "decode_head."))
    }
    backbone = {k.removeprefix("backbone."): v for k, v in tiny_state.items() if k not in rein_head}
    ckpt = save(tmp_path / "iter_30000.pth", rein_head)
    base = save(tmp_path / "dinov2_converted.pth", backbone, wrap=False)

    with pytest.raises(CrossEarthError, match="give the frozen DINOv2 weights") as caught:
        convert(ckpt, tmp_path / "a", mmseg_config=TINY_CONFIG)
    # The library names the option, the CLI its flag.
    assert caught.value.code == "model.backbone_missing"
    assert caught.value.fields["option"] == "backbone"
    report = convert(ckpt, tmp_path / "b", mmseg_config=TINY_CONFIG, backbone=base)
    assert report.package.card.provenance["backbone_file"] == "dinov2_converted.pth"
    torch.testing.assert_close(
        scores(report.package.path, tiny_reference["input"]),
        tiny_reference["inference.seg_logits"],
        atol=1e-4,
        rtol=0,
    )


def test_original_patch14_backbone_is_resized_like_the_official_script(tmp_path, tiny_state):
    rein_head = {
        k: v for k, v in tiny_state.items() if k.startswith(("backbone.reins.", "decode_head."))
    }
    backbone = {k.removeprefix("backbone."): v for k, v in tiny_state.items() if k not in rein_head}
    # A DINOv2 release file: 14 px patches and a 9 x 9 position grid.
    backbone["patch_embed.proj.weight"] = torch.nn.functional.interpolate(
        backbone["patch_embed.proj.weight"], size=(14, 14), mode="bicubic"
    )
    grid = backbone["pos_embed"][:, 1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
    grid9 = torch.nn.functional.interpolate(grid, size=(9, 9), mode="bicubic")
    backbone["pos_embed"] = torch.cat(
        [backbone["pos_embed"][:, :1], grid9.permute(0, 2, 3, 1).reshape(1, 81, -1)], 1
    )
    report = convert(
        save(tmp_path / "ckpt.pth", rein_head),
        tmp_path / "pkg",
        mmseg_config=TINY_CONFIG,
        backbone=save(tmp_path / "dinov2_vits14.pth", backbone, wrap=False),
    )
    model = load_model(report.package.path)
    assert tuple(model.backbone.patch_embed.proj.weight.shape[-2:]) == (16, 16)
    assert model.backbone.pos_embed.shape[1] == 65
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 128, 128))).all()


def test_missing_wrongly_shaped_and_unexpected_keys(tmp_path, tiny_state):
    state = dict(tiny_state)
    del state["decode_head.querys2feat.weight"]
    state["decode_head.mask_embed.0.bias"] = torch.zeros(5)
    with pytest.raises(CrossEarthError) as error:
        convert(save(tmp_path / "bad.pth", state), tmp_path / "x", mmseg_config=TINY_CONFIG)
    message = str(error.value)
    assert "missing keys: decode_head.querys2feat.weight" in message
    assert "wrong shapes: decode_head.mask_embed.0.bias (file (5,), model (64,))" in message
    assert not (tmp_path / "x").exists()

    extra = dict(tiny_state)
    extra["decode_head.conv_seg.weight"] = torch.zeros(3, 64, 1, 1)
    extra["backbone.reins.training_only_buffer"] = torch.zeros(2)
    report = convert(save(tmp_path / "extra.pth", extra), tmp_path / "y", mmseg_config=TINY_CONFIG)
    assert report.ignored_keys == [
        "backbone.reins.training_only_buffer",
        "decode_head.conv_seg.weight",
    ]
    assert any("decode_head.conv_seg.weight" in w for w in report.warnings)


def test_truncated_foreign_and_unsafe_files_are_refused(tmp_path, tiny_state):
    good = save(tmp_path / "good.pth", tiny_state).read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(CrossEarthError, match="truncated, corrupt or not a checkpoint"):
        convert(truncated, tmp_path / "a", mmseg_config=TINY_CONFIG)

    resnet = {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}
    with pytest.raises(CrossEarthError, match="is not a CrossEarth checkpoint"):
        convert(
            save(tmp_path / "resnet.pth", resnet, wrap=False),
            tmp_path / "b",
            mmseg_config=TINY_CONFIG,
        )

    unsafe = tmp_path / "unsafe.pth"
    torch.save({"state_dict": tiny_state, "hook": pickle.loads}, unsafe)
    with pytest.raises(CrossEarthError, match="refused for safety"):
        convert(unsafe, tmp_path / "c", mmseg_config=TINY_CONFIG)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "good.pth",
        "resnet.pth",
        "truncated.pth",
        "unsafe.pth",
    ]


def test_preset_class_count_mismatch_names_the_classes(tmp_path, tiny_state):
    with pytest.raises(
        CrossEarthError, match=r"predicts 3 classes but the preset describes 6 \(impervious"
    ):
        convert(save(tmp_path / "c.pth", tiny_state), tmp_path / "p", preset="potsdam-r-source")


def write_configs(folder):
    """An official-style config family: model and dataset bases, a child that inherits."""
    (folder / "_base_" / "models").mkdir(parents=True)
    (folder / "_base_" / "datasets").mkdir(parents=True)
    (folder / "exp").mkdir()
    tiny = TINY_CONFIG.read_text()
    model_base = tiny.replace(
        'test_cfg=dict(mode="whole")',
        'test_cfg=dict(mode="slide", crop_size=(128, 128), stride=(96, 96))',
    )
    model_base = model_base.replace("num_classes = 3", "num_classes = 5  # edited per benchmark")
    (folder / "_base_" / "models" / "crossearth_tiny.py").write_text(model_base)
    (folder / "_base_" / "datasets" / "potsdam.py").write_text(
        textwrap.dedent("""
        Potsdam_type = "PotsdamReduceDataset"
        train_Potsdam = dict(type=Potsdam_type, data_root="data/potsdam_IRRG", pipeline=[])
    """)
    )
    (folder / "exp" / "child.py").write_text(
        textwrap.dedent("""
        _base_ = ["../_base_/datasets/potsdam.py", "../_base_/models/crossearth_tiny.py"]
        train_pipeline = [
            dict(type="RandomChoiceResize", scales=[int(128 * x * 0.1) for x in range(5, 21)]),
            dict(type="RandomCrop", crop_size={{_base_.crop_size}}),
        ]
        train_dataloader = dict(batch_size=2, dataset={{_base_.train_Potsdam}})
        model = dict(
            decode_head=dict(loss_cls=dict(_delete_=True, type="mmdet.CrossEntropyLoss")),
            test_cfg=dict(stride=(64, 64)),
        )
        custom = helper_function(3)  # not needed for conversion: read lazily
    """)
    )
    return folder / "exp" / "child.py"


def test_config_reader_merges_bases_without_running_code(tmp_path):
    config = read_config(write_configs(tmp_path))
    assert config["train_pipeline"][0]["scales"][:3] == [64, 76, 89]
    assert config["train_pipeline"][1]["crop_size"] == (128, 128)
    assert config["train_dataloader"]["dataset"]["type"] == "PotsdamReduceDataset"
    assert config["model"]["decode_head"]["loss_cls"] == {"type": "mmdet.CrossEntropyLoss"}
    assert config["model"]["decode_head"]["feat_channels"] == 64  # kept from the base
    assert config["model"]["test_cfg"] == {
        "mode": "slide",
        "crop_size": (128, 128),
        "stride": (64, 64),
    }
    assert config["model"]["decode_head"]["num_classes"] == 5


def test_convert_with_inherited_config_takes_names_and_tile_from_it(
    tmp_path, tiny_state, tiny_reference
):
    child = write_configs(tmp_path / "configs")
    six = dict(tiny_state)
    generator = torch.Generator().manual_seed(3)
    six["decode_head.cls_embed.weight"] = torch.randn(7, 64, generator=generator)
    six["decode_head.cls_embed.bias"] = torch.randn(7, generator=generator)
    report = convert(save(tmp_path / "six.pth", six), tmp_path / "pkg", mmseg_config=child)
    card = report.package.card
    assert card.class_names[:2] == ["impervious surface", "building"] and card.num_classes == 6
    assert card.classes[1].color == (0, 0, 255)
    assert card.input.bands == ("nir", "red", "green")  # IRRG data root
    assert (card.tile_size, card.tile_stride) == (128, 64)
    assert any("num_classes = 5" in w and "using 6" in w for w in report.warnings)
    with torch.no_grad():
        out = load_model(report.package.path)(tiny_reference["input"])
    assert tuple(out.shape) == (2, 6, 128, 128)


def test_unsupported_configs_are_explained(tmp_path, tiny_state):
    ckpt = save(tmp_path / "c.pth", tiny_state)
    other = tmp_path / "segformer.py"
    other.write_text(
        TINY_CONFIG.read_text().replace(
            'type="ReinsDinoVisionTransformer"', 'type="MixVisionTransformer"'
        )
    )
    with pytest.raises(CrossEarthError, match="model.backbone.type is 'MixVisionTransformer'"):
        convert(ckpt, tmp_path / "a", mmseg_config=other)
    new_style = tmp_path / "new.py"
    new_style.write_text(
        "from mmengine.config import read_base\nwith read_base():\n    from .x import *\n"
    )
    with pytest.raises(CrossEarthError, match="new-style 'read_base'"):
        convert(ckpt, tmp_path / "b", mmseg_config=new_style)
    with pytest.raises(CrossEarthError, match="does not exist"):
        convert(ckpt, tmp_path / "c", mmseg_config=tmp_path / "nope.py")


def test_cli_convert_and_info(tmp_path, capsys, tiny_state):
    ckpt = save(tmp_path / "c.pth", tiny_state)
    code = main(
        [
            "convert",
            str(ckpt),
            str(tmp_path / "pkg"),
            "--mmseg-config",
            str(TINY_CONFIG),
            "--classes",
            "water,forest,urban",
            "--dtype",
            "float16",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "3 classes (water, forest, urban)" in out
    code = main(["info", str(tmp_path / "pkg")])
    out, _ = capsys.readouterr()
    assert code == 0 and "water" in out and '"weights_dtype": "float16"' in out
    code = main(["convert", str(ckpt), str(tmp_path / "pkg"), "--mmseg-config", str(TINY_CONFIG)])
    _, err = capsys.readouterr()
    assert code == 2 and "already exists" in err and len(err.strip().splitlines()) == 1
    code = main(
        [
            "convert",
            str(tmp_path / "missing.pth"),
            str(tmp_path / "q"),
            "--preset",
            "potsdam-r-source",
        ]
    )
    _, err = capsys.readouterr()
    assert code == 2 and "does not exist" in err
