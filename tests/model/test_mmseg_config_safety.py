"""Hostile or broken mmseg configs end in one line naming the file and the field, fast and with
bounded memory: never a hang, a memory blow-up or a traceback."""

import hashlib
import os
import sys
from pathlib import Path

import pytest
import torch

from engine.cli import main
from engine.crossearth.config import CrossEarthConfig
from engine.crossearth.from_mmseg import card_from_config
from engine.crossearth.mmseg_config import Unreadable, lookup, read_config
from engine.crossearth.presets import make_card
from engine.errors import CrossEarthError

# Each test edits one field of this reduced config (the positive control converts it as it is).
CONFIG = (Path(__file__).parents[1] / "fixtures" / "tiny_mmseg_config.py").read_text(
    encoding="utf-8"
)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def edited(tmp_path, old, new, name="cfg.py"):
    """The config with one snippet replaced (it must occur exactly once)."""
    assert CONFIG.count(old) == 1, old
    return write(tmp_path / name, CONFIG.replace(old, new))


def refusal(path):
    """The one-line message read_config gives for `path`."""
    with pytest.raises(CrossEarthError) as error:
        read_config(path)
    message = str(error.value)
    assert len(message.splitlines()) == 1 and len(message) < 400, message
    assert str(path) in message
    return message


def test_the_config_written_here_converts_to_a_card(tmp_path):
    """The positive control: each test below fails on its own edit, not on the rest."""
    card, warnings = card_from_config(write(tmp_path / "cfg.py", CONFIG), "m")
    assert card.num_classes == 3 and card.class_names == ["class 0", "class 1", "class 2"]
    assert (card.tile_size, card.tile_stride) == (128, 96)
    assert card.config["backbone"]["embed_dim"] == 192
    assert card.input.mean == (123.675, 116.28, 103.53)
    assert any("do not name 3 classes" in w for w in warnings)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x = 9**9**9", "the exponent in 9 ** 387420489 is larger than 64"),
        ("x = 2**10**8", "the exponent in 2 ** 100000000 is larger than 64"),
        ("x = 10**60 * 10**60 * 10**60", "is larger than 2**64"),
        ("x = 'a' * 10**10", "'a' * 10000000000 would hold 10000000000 elements or characters"),
        ("x = 10**10 * [0]", "[0] * 10000000000 would hold 10000000000"),
        ("x = [0] * 1000 * 10**6", "would hold 1000000000 elements"),
        ("x = range(10**10)", "range(...) of 10000000000 numbers is longer than 1000000"),
        ("x = list(range(-2**64, 2**64, 3))", "range(...) of 12297829382473034411 numbers"),
        ("x = [i for i in range(10**6) for j in range(10**6)]", "more than 1000000 elements"),
        ("x = [[0] * 1000 for i in range(2000)]", "more than 1000000 elements"),
        ("x = [0 for i in range(200000) if 0]", "takes more than 50000 steps"),
        # Sharing keeps memory small while the value, written out, is huge.
        ("a = [0] * 1000\nx = [a] * 1000\ny = [x] * 1000", "a list would hold more than"),
        (
            "d0 = {}\n" + "\n".join(f"d{i} = dict(a=d{i - 1}, b=d{i - 1})" for i in range(1, 60)),
            "a dict would hold more than 1000000",
        ),
        ("x = '%1000000000d' % 1", "asks for a field wider than 10000 characters"),
        ("x = '%*d' % (10**9, 1)", "'%*' asks for a field wider"),
        ("x = ('%' + '9' * 5000 + 'd') % 1", "asks for a field wider"),
        ("x = round(5, -10**18)", "asks for more than 64 digits"),
        ("x = int('1' * 4000)", "int() of a text of 4000 characters"),
    ],
    ids=lambda value: value[:24] if isinstance(value, str) else None,
)
def test_expressions_that_would_hang_or_blow_up_are_refused(tmp_path, source, expected):
    path = write(tmp_path / "hostile.py", "ok = 1\n" + source + "\n")
    message = refusal(path)
    assert expected in message
    # The variable the limit was hit in (the doubling dicts pass 10**6 at the 19th).
    variable = "d18" if source.startswith("d0") else "x"
    assert f"variable '{variable}'" in message
    assert "write the value out or remove the expression" in message


def test_ordinary_expressions_still_evaluate(tmp_path):
    source = """\
name = "%s_%dx%d" % ("potsdam", 512, 512)
percent = "100%%" % ()
scales = [int(512 * x * 0.1) for x in range(5, 21)]
weights = [1.0] * 6 + [0.1]
lookup = {c: len(c) for c in ["a", "bb"] if c}
big = 2**32 * 3
total = sum([1, 2.5]) + round(2.567, 2) + abs(-3) + len(scales) + int("12")
path = f"work_dirs/{name}"
crop = (512, 512)
flag = 512 in crop and not None
"""
    config = read_config(write(tmp_path / "ok.py", source))
    assert config["name"] == "potsdam_512x512" and config["percent"] == "100%"
    assert config["scales"][:3] == [256, 307, 358] and len(config["weights"]) == 7
    assert config["lookup"] == {"a": 1, "bb": 2} and config["big"] == 3 * 2**32
    assert config["total"] == 1 + 2.5 + 2.57 + 3 + 16 + 12
    assert config["path"] == "work_dirs/potsdam_512x512" and config["flag"] is True


def test_unsupported_operators_stay_lazy(tmp_path):
    """A left shift is not evaluated at all: unused it costs nothing, read it names itself."""
    config = read_config(write(tmp_path / "shift.py", "x = 1 << 10**10\ny = 2\n"))
    assert isinstance(config["x"], Unreadable) and config["y"] == 2
    with pytest.raises(CrossEarthError, match=r"'x' cannot be read .*operator at line 1"):
        lookup(config, "x", source="shift.py")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x = " + "[" * 150 + "]" * 150, "the expression nests deeper than 50 levels"),
        ("x = " + "(" * 30_000 + "1" + ")" * 30_000, "too many nested parentheses"),
        ("x = " + "+".join(["1"] * 30_000), "too deeply for Python's parser"),
        ("x = " + "-" * 30_000 + "1", "too deeply for Python's parser"),
        ("x = " + "+".join(["1"] * 500), "the expression nests deeper than 50 levels"),
        ("x = [1 " + " ".join(f"for a{i} in [1]" for i in range(80)) + "]", "nests deeper"),
        (
            "a0 = [1]\n" + "\n".join(f"a{i} = [a{i - 1}]" for i in range(1, 80)),
            "variable 'a50' (line 51): a value nests deeper than 50 levels",
        ),
    ],
    ids=["brackets", "parentheses", "sum-chain", "unary-chain", "binop", "generators", "values"],
)
def test_configs_nesting_too_deeply_are_refused(tmp_path, source, expected):
    message = refusal(write(tmp_path / "deep.py", source))
    assert expected in message and "nest" in message


def test_recursion_error_is_reported_not_raised(tmp_path):
    """Whatever the stack has left when the reader is called (a deep caller, a low limit), a
    RecursionError becomes the one-line refusal."""
    path = write(tmp_path / "nested.py", "x = " + "dict(a=" * 40 + "1" + ")" * 40 + "\n")
    assert read_config(path)["x"]["a"]["a"]["a"] is not None
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 60)
    try:
        with pytest.raises(CrossEarthError) as error:
            read_config(path)
    finally:
        sys.setrecursionlimit(limit)
    message = str(error.value)
    assert str(path) in message and "too deeply" in message and len(message.splitlines()) == 1


def test_files_that_are_not_utf8_text_or_not_files_are_refused(tmp_path):
    latin = tmp_path / "latin.py"
    latin.write_bytes("a = 1\nname = 'Gen\xe8ve'\n".encode("latin-1"))
    message = refusal(latin)
    assert "is not UTF-8 text (byte 0xe8 on line 2); save it with UTF-8 encoding" in message

    assert "is not valid Python" in refusal(write(tmp_path / "nul.py", "x = 1\x00\n"))
    assert "is larger than 128 kB" in refusal(write(tmp_path / "big.py", "#" * (128 << 10) + "\n"))
    (tmp_path / "folder.py").mkdir()
    assert "is not a regular file" in refusal(tmp_path / "folder.py")
    if hasattr(os, "mkfifo"):  # reading a pipe would wait for a writer forever
        os.mkfifo(tmp_path / "pipe.py")
        assert "is not a regular file" in refusal(tmp_path / "pipe.py")
    # A UTF-8 byte-order mark (Windows editors) is fine.
    assert read_config(write(tmp_path / "bom.py", "\ufeffx = 'Genève'\n"))["x"] == "Genève"


def test_base_files_are_bounded_too(tmp_path):
    # Every file names the next one twice: 2**40 reads if each were followed.
    for i in range(40):
        write(tmp_path / f"b{i}.py", f"_base_ = ['b{i + 1}.py', 'b{i + 1}.py']\n")
    write(tmp_path / "b40.py", "")
    with pytest.raises(CrossEarthError, match=r"b\d+\.py: .*more than 32 files to read") as error:
        read_config(tmp_path / "b0.py")
    assert len(str(error.value).splitlines()) == 1

    # The budget is shared: a child cannot spend it again after its base spent it.
    write(tmp_path / "heavy.py", "x = [0 for i in range(30000) if 0]\n")
    child = write(
        tmp_path / "child.py", "_base_ = ['heavy.py']\ny = [0 for i in range(30000) if 0]\n"
    )
    with pytest.raises(CrossEarthError, match=r"child\.py: variable 'y'.*more than 50000 steps"):
        read_config(child)
    assert read_config(tmp_path / "heavy.py")["x"] == []

    # So is the source size: 100 kB here and 40 kB in the base pass 128 kB together.
    write(tmp_path / "long.py", "x = 1\n" + "#" * (40 << 10) + "\n")
    longer = write(tmp_path / "longer.py", "_base_ = 'long.py'\n" + "#" * (100 << 10) + "\n")
    with pytest.raises(CrossEarthError, match=r"long\.py and the config files read before it"):
        read_config(longer)
    assert read_config(tmp_path / "long.py") == {"x": 1}


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "embed_dim=embed",
            "embed_dim='abc'",
            "model.backbone.embed_dim must be a positive integer, got 'abc'",
        ),
        ("depth=4", "depth=True", "model.backbone.depth must be a positive integer, got True"),
        ("depth=4", "depth=10**6", "model.backbone.depth must be at most 256, got 1000000"),
        ("embed_dim=embed", "embed_dim=10**9", "embed_dim must be at most 65536, got 1000000000"),
        (
            "num_heads=3",
            "num_heads=0",
            "model.backbone.num_heads must be a positive integer, got 0",
        ),
        ("mlp_ratio=4", "mlp_ratio='4'", "model.backbone.mlp_ratio must be a positive number"),
        (
            "out_indices=[0, 1, 2, 3]",
            "out_indices='x'",
            "model.backbone.out_indices must be a list like [7, 11, 15, 23], got 'x'",
        ),
        (
            "out_indices=[0, 1, 2, 3]",
            "out_indices=[0, 1, 2, -3]",
            "model.backbone.out_indices[3] must be an integer of at least 0, got -3",
        ),
        (
            "in_channels=[embed, embed, embed, embed]",
            "in_channels=5",
            "model.decode_head.in_channels must be a list like [192] * 4, got 5",
        ),
        (
            'norm_cfg=dict(type="GN", num_groups=32)',
            'norm_cfg=["GN", 32]',
            "model.decode_head.pixel_decoder.norm_cfg must be a dict like dict(type='GN'",
        ),
        (
            "num_groups=32",
            "num_groups='32'",
            "model.decode_head.pixel_decoder.norm_cfg.num_groups must be a positive integer",
        ),
        (
            'test_cfg=dict(mode="slide", crop_size=(128, 128), stride=(96, 96))',
            "test_cfg=5",
            "model.test_cfg must be a dict like dict(mode='whole'), got 5",
        ),
        (
            "crop_size=(128, 128)",
            "crop_size=128",
            "model.test_cfg.crop_size must be a pair of positive integers like (512, 512), got 128",
        ),
        ("stride=(96, 96)", "stride=(96, 'a')", "model.test_cfg.stride[1] must be a positive"),
        ("num_classes = 3", "num_classes = -2", "num_classes must be a positive integer, got -2"),
        ("num_classes = 3", "num_classes = 0", "num_classes must be a positive integer, got 0"),
        ("num_classes = 3", "num_classes = False", "num_classes must be a positive integer"),
        ("num_classes = 3", "num_classes = 10**9", "num_classes must be at most 65535"),
        (
            "mean=[123.675, 116.28, 103.53]",
            "mean=5",
            "model.data_preprocessor.mean must be a list like [123.675, 116.28, 103.53], got 5",
        ),
        (
            "std=[58.395, 57.12, 57.375]",
            "std=[0, 1, 1]",
            "model.data_preprocessor.std[0] must be a positive number, got 0",
        ),
        ("token_length=10", "token_length=1.5", "reins_config.token_length must be a positive"),
        ("lora_dim=4", "lora_dim=None", "reins_config.lora_dim must be a positive integer"),
        (
            "num_points=4",
            "num_points=[4]",
            "self_attn_cfg.num_points must be a positive integer, got [4]",
        ),
        ("embed_dims=embed", "embed_dims='x' * 5000", "reins_config.embed_dims is 'xxxxxxx"),
    ],
    ids=lambda value: value[:20],
)
def test_wrongly_typed_fields_are_named(tmp_path, old, new, expected):
    path = edited(tmp_path, old, new)
    with pytest.raises(CrossEarthError) as error:
        card_from_config(path, "m")
    message = str(error.value)
    assert message.startswith(f"{path}: "), message
    assert expected in message
    assert len(message.splitlines()) == 1 and len(message) < 300


def test_whole_floats_are_accepted_as_sizes(tmp_path):
    """`feat / 2` (32.0) is as good as `feat // 2`, as it is for mmseg."""
    path = edited(tmp_path, "num_feats=feat // 2", "num_feats=feat / 2")
    card, _ = card_from_config(path, "m")
    assert card.config["head"]["positional_feats"] == 32


@pytest.mark.parametrize("count", [10**9, 0, -1])
def test_absurd_class_counts_from_the_checkpoint_are_refused(tmp_path, count):
    path = write(tmp_path / "cfg.py", CONFIG)
    with pytest.raises(CrossEarthError, match=rf"cls_embed.weight has {count + 1} rows, i.e. "):
        card_from_config(path, "m", num_classes=count)


def test_make_card_refuses_more_classes_than_the_class_raster_holds():
    config = CrossEarthConfig(num_classes=70_000)
    with pytest.raises(CrossEarthError, match="70000-class network is refused.*at most 65535"):
        make_card("m", config, ())


def fake_checkpoint(path, classes=None):
    """Enough of a CrossEarth checkpoint to get past the file checks to the config."""
    state = {
        "backbone.reins.scale": torch.zeros(1),
        "decode_head.query_embed.weight": torch.zeros(1),
    }
    if classes is not None:
        # (classes + 1) x 0: the row count of a huge head without its gigabytes.
        state["decode_head.cls_embed.weight"] = torch.zeros(classes + 1, 0)
    torch.save({"state_dict": state}, path)
    return path


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("config_text", "classes", "expected"),
    [
        ("x = 9**9**9\n", None, "variable 'x' (line 1): the exponent in 9 ** 387420489"),
        ("x = [0] * 10**10\n", None, "[0] * 10000000000 would hold"),
        ("x = " + "[" * 200 + "]" * 200 + "\n", None, "nests deeper than 50 levels"),
        (b"name = 'Gen\xe8ve'\n", None, "is not UTF-8 text (byte 0xe8 on line 1)"),
        (CONFIG.replace("embed_dim=embed", "embed_dim='abc'"), None, "embed_dim must be a"),
        (CONFIG, 10**9, "ckpt.pth: decode_head.cls_embed.weight describes 1000000000 classes"),
    ],
    ids=["power", "repeat", "nesting", "latin-1", "field", "classes"],
)
def test_cli_convert_reports_one_line_and_creates_nothing(
    tmp_path, capsys, config_text, classes, expected
):
    ckpt = fake_checkpoint(tmp_path / "ckpt.pth", classes)
    config = tmp_path / "cfg.py"
    if isinstance(config_text, bytes):
        config.write_bytes(config_text)
    else:
        write(config, config_text)
    before = {p.name: digest(p) for p in (ckpt, config)}
    out = tmp_path / "pkg"

    code = main(["convert", str(ckpt), str(out), "--mmseg-config", str(config)])

    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crossearth: "), captured.err
    assert expected in lines[0]
    if classes is None:
        assert str(config) in lines[0]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.py", "ckpt.pth"]
    assert {p.name: digest(p) for p in (ckpt, config)} == before
