"""`crossearth download`: the official reduced CrossEarth checkpoint served by a local
Hugging Face-like server (tests/hub_server.py), fetched with huggingface_hub, checked and
converted into a package. Nothing here reaches the internet."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.cli import main
from engine.crossearth.presets import CHECKPOINTS
from engine.models.catalog import builtin_catalog, load_catalog
from engine.models.packages import open_package

from ..hub_server import HubServer, HubState

REPO = Path(__file__).resolve().parents[2]
OFFICIAL = REPO / "tests" / "fixtures" / "official"
TINY = OFFICIAL / "tiny_state_dict.pth"
HUB_REPO = "test-org/CrossEarth-tiny"
CLASSES = [("water", [0, 0, 255]), ("building", [255, 0, 0]), ("forest", [0, 255, 0])]


def _entry(name: str, checkpoint: str, files: dict[str, bytes], backbone: str | None = None):
    def hub_file(filename: str) -> dict:
        return {
            "repo": HUB_REPO,
            "filename": filename,
            "revision": "main",
            "size": len(files[filename]),
            "sha256": hashlib.sha256(files[filename]).hexdigest(),
        }

    return {
        "name": name,
        "architecture": "tiny",
        "classes": [{"name": n, "color": c} for n, c in CLASSES],
        "bands": ["red", "green", "blue"],
        "gsd_m": 0.3,
        "description": "the official reduced reference",
        "license": "test weights",
        "checkpoint": hub_file(checkpoint),
        "backbone": hub_file(backbone) if backbone else None,
    }


def _split_tiny() -> tuple[bytes, bytes]:
    """The tiny checkpoint as a rein+head file and a separate DINOv2 backbone file."""
    state = torch.load(TINY, map_location="cpu", weights_only=True)["state_dict"]
    rein_head = {
        k: v for k, v in state.items() if k.startswith(("backbone.reins.", "decode_head."))
    }
    backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k not in rein_head}
    out = []
    for part in ({"state_dict": rein_head}, backbone):
        buffer = io.BytesIO()
        torch.save(part, buffer)
        out.append(buffer.getvalue())
    return out[0], out[1]


@pytest.fixture(scope="module")
def served_files() -> dict[str, bytes]:
    rein_head, backbone = _split_tiny()
    return {
        "tiny_state_dict.pth": TINY.read_bytes(),
        "tiny_rein_head.pth": rein_head,
        "tiny_dinov2.pth": backbone,
    }


class Hub:
    """The test's view: the server's state, the cache, the models folder, the catalog."""

    def __init__(self, state: HubState, server: HubServer, root: Path) -> None:
        self.state = state
        self.server = server
        self.cache = root / "hf" / "hub"
        self.models = root / "models"
        self.catalog = root / "catalog.json"
        self.env = {
            "HF_ENDPOINT": server.endpoint,
            "HF_HOME": str(root / "hf"),
            "HF_HUB_OFFLINE": "0",
            "CROSSEARTH_MODELS_DIR": str(self.models),
            "CROSSEARTH_MODEL_CATALOG": str(self.catalog),
        }

    def blobs(self) -> list[str]:
        folder = self.cache / f"models--{HUB_REPO.replace('/', '--')}" / "blobs"
        return sorted(os.listdir(folder)) if folder.is_dir() else []

    def snapshot_files(self) -> list[Path]:
        folder = self.cache / f"models--{HUB_REPO.replace('/', '--')}" / "snapshots"
        return sorted(p for p in folder.rglob("*") if not p.is_dir()) if folder.is_dir() else []


@pytest.fixture
def hub(tmp_path, monkeypatch, served_files):
    import huggingface_hub.constants as constants

    state = HubState(HUB_REPO, dict(served_files))
    with HubServer(state) as server:
        view = Hub(state, server, tmp_path)
        view.catalog.write_text(
            json.dumps(
                {
                    "models": [
                        _entry("tiny-official", "tiny_state_dict.pth", served_files),
                        _entry(
                            "tiny-rein-head",
                            "tiny_rein_head.pth",
                            served_files,
                            backbone="tiny_dinov2.pth",
                        ),
                    ]
                }
            )
        )
        for key, value in view.env.items():
            monkeypatch.setenv(key, value)
        # huggingface_hub reads its environment once, at import; a worker process starts
        # with it set, this test process imported the library earlier.
        monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
        monkeypatch.setattr(
            constants,
            "HUGGINGFACE_CO_URL_TEMPLATE",
            server.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        )
        monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(view.cache))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(
            constants, "AGENT_HARNESSES_PATH", str(tmp_path / "hf" / ".agent_harnesses.json")
        )
        yield view


def run(capsys, *args: str) -> tuple[int, list[dict], str]:
    code = main(["download", *args, "--progress", "json"])
    out, err = capsys.readouterr()
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return code, events, err


def test_download_and_convert(hub, capsys):
    code, events, err = run(capsys, "tiny-official")
    assert code == 0, err
    done = events[-1]
    assert done["event"] == "done"
    package = open_package(Path(done["package"]))
    assert package.path == hub.models / "tiny-official"
    card = package.card
    assert card.name == "tiny-official"
    assert card.class_names == ["water", "building", "forest"]
    assert [c.color for c in card.classes] == [tuple(c) for _, c in CLASSES]
    assert card.input.bands == ("red", "green", "blue")
    assert card.gsd_m == 0.3
    assert (card.tile_size, card.tile_stride) == (128, 85)
    provenance = card.provenance
    assert provenance["source"] == f"hf://{HUB_REPO}/tiny_state_dict.pth@main"
    assert provenance["checkpoint_sha256"] == hashlib.sha256(TINY.read_bytes()).hexdigest()
    assert provenance["preset"] == "tiny-official"
    # The same network as converting the file by hand with its official mmseg config.
    from engine.crossearth.convert import convert

    by_hand = convert(
        TINY,
        hub.models.parent / "by-hand",
        mmseg_config=OFFICIAL / "tiny_config.py",
        class_names=["water", "building", "forest"],
    ).package
    assert card.config == by_hand.card.config
    from safetensors.torch import load_file

    ours, theirs = load_file(package.weights_path), load_file(by_hand.weights_path)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    # Progress: download, check, conversion, in order, ending at 1.
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    messages = [e["message"] for e in events if e["event"] == "progress"]
    assert any(m.startswith("downloading tiny_state_dict.pth") for m in messages)
    assert any(m.startswith("checking tiny_state_dict.pth") for m in messages)
    # The one file this download fetched is gone from the cache again; nothing else is left.
    assert done["removed"] and hub.blobs() == [] and hub.snapshot_files() == []
    assert sorted(os.listdir(hub.models)) == ["tiny-official"]
    # huggingface_hub asked the resolve URL, then fetched the redirect target in one GET.
    gets = hub.state.gets("tiny_state_dict.pth")
    assert len(gets) == 1 and gets[0].range is None
    # Listed as installed now, and a second download is refused in one line.
    assert main(["models", "--available", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["available"]
    assert [(m["name"], m["installed"]) for m in listed] == [
        ("tiny-official", str(package.path)),
        ("tiny-rein-head", None),
    ]
    code, _, err = run(capsys, "tiny-official")
    assert code == 2
    assert "'tiny-official' is already installed" in err
    assert "pass --overwrite to replace it with a new download" in err


def test_rein_and_head_checkpoint_brings_its_backbone(hub, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")  # huggingface_hub sends it to the Hub
    code, events, err = run(capsys, "tiny-rein-head")
    assert code == 0, err
    heads = [r for r in hub.state.requests if r.method == "HEAD"]
    assert len(heads) == 2 and all(r.authorization == "Bearer hf_test_token" for r in heads)
    package = open_package(hub.models / "tiny-rein-head")
    assert package.card.provenance["backbone_file"] == "tiny_dinov2.pth"
    assert len(hub.state.gets("tiny_rein_head.pth")) == 1
    assert len(hub.state.gets("tiny_dinov2.pth")) == 1
    assert hub.blobs() == []
    # The weights equal those of the full checkpoint.
    from safetensors.torch import load_file

    state = torch.load(TINY, map_location="cpu", weights_only=True)["state_dict"]
    weights = load_file(package.weights_path)
    assert all(torch.equal(weights[k], state[k]) for k in weights)


def test_resume_after_a_transfer_cut_halfway(hub, capsys, monkeypatch):
    import huggingface_hub.constants as constants

    # huggingface_hub writes whole chunks (10 MiB) and resumes after the last one it wrote;
    # 1 MiB chunks make the 9.6 MB checkpoint span several.
    chunk = 1024 * 1024
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", chunk)
    hub.state.cut_first_get.add("tiny_state_dict.pth")
    code, events, err = run(capsys, "tiny-official", "--keep-checkpoint")
    assert code == 0, err
    gets = hub.state.gets("tiny_state_dict.pth")
    half = len(hub.state.files["tiny_state_dict.pth"]) // 2
    # The first GET was cut after half the bytes; the library asked for the rest only, from
    # the end of the last whole chunk it had written.
    assert [g.range for g in gets] == [None, f"bytes={half // chunk * chunk}-"]
    kept = Path(events[-1]["kept"][0])
    assert kept.read_bytes() == TINY.read_bytes()
    open_package(hub.models / "tiny-official")


def test_cancelled_download_leaves_no_package_and_the_next_run_completes(hub):
    """Ctrl-C (SIGTERM from the plugin) in the middle of the transfer."""
    hub.state.stall_first_get.add("tiny_state_dict.pth")
    env = {**os.environ, **hub.env, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "engine.cli", "download", "tiny-official"]
    worker = subprocess.Popen(
        [*command, "--progress", "json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert hub.state.half_sent.wait(60), "the worker never asked for the file"
        time.sleep(0.3)
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    finally:
        hub.state.release.set()
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 130, err
    assert json.loads(out.splitlines()[-1])["event"] == "cancelled"
    assert not (hub.models / "tiny-official").exists()
    leftovers = [p for p in hub.models.iterdir()] if hub.models.exists() else []
    assert leftovers == []
    # huggingface_hub 2.x deletes its partial file (a process-unique .incomplete); the next
    # run starts the transfer again.
    assert hub.blobs() == [] and hub.snapshot_files() == []
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "installed tiny-official" in done.stdout
    assert "removed" in done.stdout
    open_package(hub.models / "tiny-official")
    assert [g.range for g in hub.state.gets("tiny_state_dict.pth")] == [None, None]


def test_checksum_mismatch_is_refused_and_nothing_installed(hub, capsys):
    original = hub.state.files["tiny_state_dict.pth"]
    altered = bytearray(original)
    altered[len(altered) // 2] ^= 0xFF  # same size, one byte differs
    hub.state.altered["tiny_state_dict.pth"] = bytes(altered)
    code, events, err = run(capsys, "tiny-official")
    assert code == 2
    message = events[-1]["message"]
    assert events[-1]["event"] == "error"
    assert "tiny_state_dict.pth" in message and "is damaged" in message
    assert "nothing was installed" in message
    assert f"crossearth: {message}" in err and "Traceback" not in err
    assert not hub.models.exists() or list(hub.models.iterdir()) == []
    assert hub.blobs() == [] and hub.snapshot_files() == []


def test_checksum_against_the_hubs_digest_when_the_catalog_has_none(hub, capsys):
    data = json.loads(hub.catalog.read_text())
    del data["models"][0]["checkpoint"]["sha256"]
    hub.catalog.write_text(json.dumps(data))
    hub.state.altered["tiny_state_dict.pth"] = hub.state.files["tiny_state_dict.pth"][::-1]
    code, events, err = run(capsys, "tiny-official")
    assert code == 2 and "is damaged" in events[-1]["message"]
    assert hub.blobs() == []
    del hub.state.altered["tiny_state_dict.pth"]
    code, events, err = run(capsys, "tiny-official")
    assert code == 0, err


def test_offline_and_not_cached(hub, capsys, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    code, events, err = run(capsys, "tiny-official")
    assert code == 2
    assert events[-1]["message"] == (
        f"cannot download tiny_state_dict.pth from {HUB_REPO}: offline and not in the cache; "
        "connect or set HF_HUB_OFFLINE=0"
    )
    assert hub.state.requests == []


def test_offline_uses_what_the_cache_holds(hub, capsys, monkeypatch):
    import huggingface_hub.constants as constants

    code, events, err = run(capsys, "tiny-official", "--keep-checkpoint")
    assert code == 0, err
    shutil.rmtree(hub.models / "tiny-official")
    asked = len(hub.state.requests)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    code, events, err = run(capsys, "tiny-official")
    assert code == 0, err
    assert len(hub.state.requests) == asked  # no request at all
    # The checkpoint was in the cache before this run: it stays.
    assert events[-1]["removed"] == [] and len(events[-1]["kept"]) == 1
    assert len(hub.blobs()) == 1


def test_full_disk_is_refused_before_downloading(hub, capsys, monkeypatch):
    real = shutil.disk_usage

    def nearly_full(path):
        usage = real(path)
        return usage._replace(free=5_000_000)  # 5 MB free: less than the 9.6 MB checkpoint

    monkeypatch.setattr(shutil, "disk_usage", nearly_full)
    code, events, err = run(capsys, "tiny-official")
    assert code == 2
    message = events[-1]["message"]
    assert message.startswith("not enough free disk space: 9.6 MB of downloads + 9.6 MB for the")
    assert "which has 5.0 MB free" in message and "HF_HOME" in message
    assert hub.state.gets("tiny_state_dict.pth") == []
    assert not any("/resolve/" in r.path for r in hub.state.requests)
    assert not hub.models.exists() or list(hub.models.iterdir()) == []


def test_keep_checkpoint_keeps_the_pth_and_default_removes_only_what_it_fetched(hub, capsys):
    code, events, err = run(capsys, "tiny-official", "--keep-checkpoint")
    assert code == 0, err
    kept = Path(events[-1]["kept"][0])
    assert kept.name == "tiny_state_dict.pth" and kept.read_bytes() == TINY.read_bytes()
    assert events[-1]["removed"] == []
    # Another model: its backbone file is fetched and removed again; the checkpoint above is
    # another file and stays, as does a file of the user's own in the cache.
    own = hub.cache / "notes.txt"
    own.write_text("mine")
    blobs_before = hub.blobs()
    code, events, err = run(capsys, "tiny-rein-head")
    assert code == 0, err
    assert sorted(Path(p).name for p in events[-1]["removed"]) == sorted(
        ["tiny_rein_head.pth", "tiny_dinov2.pth"]
        + [
            hashlib.sha256(hub.state.files[n]).hexdigest()
            for n in ("tiny_rein_head.pth", "tiny_dinov2.pth")
        ]
    )
    assert hub.blobs() == blobs_before and kept.is_file() and own.read_text() == "mine"
    # Downloading the model whose checkpoint is cached again: nothing fetched, nothing removed.
    code, events, err = run(capsys, "tiny-official", "--overwrite")
    assert code == 0, err
    assert events[-1]["downloaded"] == [] and events[-1]["removed"] == []
    assert kept.is_file()


def test_unknown_missing_and_unreleased_models(hub, capsys, monkeypatch):
    code, events, err = run(capsys, "no-such-model")
    assert code == 2
    assert events[-1]["message"] == (
        "'no-such-model' is not a downloadable model; available: tiny-official, tiny-rein-head "
        "(see 'crossearth models --available')"
    )
    del hub.state.files["tiny_dinov2.pth"]
    code, events, err = run(capsys, "tiny-rein-head")
    assert code == 2
    message = events[-1]["message"]
    assert message.startswith(
        f"tiny_dinov2.pth was not found in the Hugging Face repository {HUB_REPO} "
        "(revision main, HTTP 404"
    )
    # The checkpoint fetched before the backbone failed is removed again.
    assert hub.blobs() == [] and not (hub.models / "tiny-rein-head").exists()
    hub.state.error_codes = False  # a mirror that is a plain web server says the same
    code, events, err = run(capsys, "tiny-rein-head")
    assert code == 2 and events[-1]["message"] == message
    monkeypatch.delenv("CROSSEARTH_MODEL_CATALOG")
    code, events, err = run(capsys, "loveda-1024")
    assert code == 2 and "has no released checkpoint yet" in events[-1]["message"]


def test_builtin_catalog_lists_every_checkpoint_preset():
    entries = {e.name: e for e in builtin_catalog()}
    assert set(entries) == set(CHECKPOINTS)
    for name, entry in entries.items():
        assert entry.preset is CHECKPOINTS[name]
        if name == "loveda-1024":
            assert not entry.downloadable
            continue
        file = entry.checkpoint
        assert file.repo == "Cusyoung/CrossEarth" and file.filename == entry.preset.checkpoint
        assert len(file.revision) == 40 and file.size > 1_000_000_000
        assert file.sha256 is None or len(file.sha256) == 64
    assert entries["d2m-rein"].checkpoint.size == 1_715_006_497
    assert entries["d2m-rein"].checkpoint.size_exact


def test_catalog_file_errors_name_the_field(tmp_path):
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"models": [{"name": "x", "architecture": "vit-huge"}]}))
    with pytest.raises(Exception, match=r"models\[0\]\.architecture: 'vit-huge' is unknown"):
        load_catalog(path)
    path.write_text("{")
    with pytest.raises(Exception, match="is not valid JSON"):
        load_catalog(path)


@pytest.mark.parametrize(
    "filename", ["../outside.pth", "/etc/passwd", "a/../../b.pth", "a//b.pth", "a\\b.pth", "."]
)
def test_a_catalog_file_name_that_leaves_the_repository_is_one_line(
    tmp_path, capsys, monkeypatch, filename
):
    path = tmp_path / "catalog.json"
    entry = _entry("escape", "x.pth", {"x.pth": b"x"})
    entry["checkpoint"]["filename"] = filename
    path.write_text(json.dumps({"models": [entry]}))
    monkeypatch.setenv("CROSSEARTH_MODEL_CATALOG", str(path))
    monkeypatch.setenv("CROSSEARTH_MODELS_DIR", str(tmp_path / "models"))
    assert main(["download", "escape"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("crossearth: ") and "\n" not in err and "Traceback" not in err
    assert "checkpoint.filename" in err and "is not a file of the repository" in err
    assert not (tmp_path / "models").exists()


def test_a_broken_catalog_file_hides_no_installed_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CROSSEARTH_MODEL_CATALOG", str(tmp_path / "missing.json"))
    assert main(["models", "--json", "--available"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["available"] == []
    assert listing["models"]  # the bundled model is still listed
    assert listing["problems"][-1]["problem"].startswith("cannot read the model catalog")
    assert main(["models", "--available"]) == 2
    assert "crossearth: cannot read the model catalog" in capsys.readouterr().err


def test_models_available_text(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("CROSSEARTH_MODELS_DIR", str(tmp_path))
    monkeypatch.delenv("CROSSEARTH_MODEL_CATALOG", raising=False)
    assert main(["models", "--available"]) == 0
    out = capsys.readouterr().out
    assert "potsdam-r-source  [~1.68 GB]" in out
    assert "d2m-rein  [1.72 GB]" in out
    assert "loveda-1024  [not released]" in out
    assert "source: Hugging Face Cusyoung/CrossEarth, Potsdam(r)-source.pth" in out
    assert "bands nir/red/green; 0.05 m" in out


def test_a_damaged_file_in_the_cache_is_named_and_left_alone(hub, capsys):
    code, events, err = run(capsys, "tiny-official", "--keep-checkpoint")
    assert code == 0, err
    shutil.rmtree(hub.models / "tiny-official")
    blob = hub.cache / f"models--{HUB_REPO.replace('/', '--')}" / "blobs" / hub.blobs()[0]
    damaged = bytearray(blob.read_bytes())
    damaged[100] ^= 1
    blob.write_bytes(bytes(damaged))
    code, events, err = run(capsys, "tiny-official")
    assert code == 2
    message = events[-1]["message"]
    assert "the copy of tiny_state_dict.pth in the Hugging Face cache" in message
    assert "does not match its published SHA-256" in message and "hf cache delete" in message
    assert blob.read_bytes() == bytes(damaged)  # not ours to delete
    assert not (hub.models / "tiny-official").exists()


def test_unreachable_endpoint_is_one_line(hub):
    import httpx2
    from huggingface_hub.errors import LocalEntryNotFoundError

    from engine.models.catalog import HubFile
    from engine.models.download import hub_error

    file = HubFile(HUB_REPO, "x.pth", "main", 1, True, None)
    try:
        try:
            raise httpx2.ConnectError("[Errno 111] Connection refused")
        except httpx2.ConnectError as cause:
            raise LocalEntryNotFoundError("An error happened while trying to locate") from cause
    except LocalEntryNotFoundError as exc:
        message = str(hub_error(exc, file))
    assert message == (
        f"cannot reach {hub.server.endpoint} to download x.pth from {HUB_REPO} ([Errno 111] "
        "Connection refused); check the connection and proxy settings (HTTPS_PROXY), or set "
        "HF_ENDPOINT to a mirror"
    )


def _shown_lines(stderr: str) -> list[str]:
    """The lines a terminal shows: what a carriage return overwrote is gone."""
    lines = [line.split("\r")[-1] for line in stderr.split("\n")]  # splitlines splits at \r
    return [line for line in lines if line.strip()]


@pytest.mark.parametrize("failure", ["endpoint down", "http 500"])
def test_a_download_failure_is_one_line_and_the_retries_only_under_verbose(hub, failure):
    env = {**os.environ, **hub.env, "PYTHONPATH": str(REPO)}
    env.pop("HF_HUB_VERBOSITY", None)
    if failure == "endpoint down":
        with socket.socket() as probe:  # a port nothing listens on
            probe.bind(("127.0.0.1", 0))
            env["HF_ENDPOINT"] = f"http://127.0.0.1:{probe.getsockname()[1]}"
    else:
        hub.state.server_error = True
    command = [sys.executable, "-m", "engine.cli", "download", "tiny-official"]
    # bytes: text mode would turn the progress bar's carriage returns into line ends
    done = subprocess.run(command, env=env, capture_output=True, timeout=180)
    assert done.returncode == 2
    stderr = done.stderr.decode()
    shown = _shown_lines(stderr)
    assert len(shown) == 1 and shown[0].startswith("crossearth: "), stderr
    assert "Traceback" not in stderr and not (hub.models / "tiny-official").exists()
    if failure == "http 500":  # the same with -v shows the hub client's retries
        verbose = subprocess.run(
            [*command[:3], "-v", *command[3:]], env=env, capture_output=True, text=True, timeout=180
        )
        assert verbose.returncode == 2 and "Retry" in verbose.stderr
