"""Foundation-model presets get their weights from where users keep them (a file, a snapshot folder, the local
Hugging Face cache, or the Hub when asked with hf-hub:), load them strictly, and encode exactly as the module
the weights came from; a missing or gated model is one error saying how to get it.

A tiny ViT preset registered here stands in for the real ones (same code path, milliseconds per batch); the
Hugging Face cache is fabricated in huggingface_hub's own layout (models--ORG--NAME/{refs/main,
snapshots/<commit>/FILE -> ../../blobs/<sha256>}), and the Hub is a small HTTP server on 127.0.0.1 serving the
requests hf_hub_download makes (HEAD then GET /ORG/NAME/resolve/main/FILE, with X-Repo-Commit and ETag).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from slidegrid.encode import EncodeActor, EncodeConfig, _probe_encoder, settings_hash
from slidegrid.encoders import EncoderSpec, available, build_encoder
from slidegrid.encoders.preset import PRESETS, Preset, all_presets, build_backbone, preset_module
from slidegrid.errors import ConfigError
from slidegrid.geometry.tiling import GridSpec

REPO = "slidegrid-test/tiny-vit"
NAME = "test-tiny-vit"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _tiny_kwargs(init_values: float | None = 1e-5):
    def kwargs() -> dict:
        return dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, init_values=init_values,
                    dynamic_img_size=True)
    return kwargs


def _register(name: str, **kw) -> Preset:
    base = dict(name=name, family="test", hf_repo=REPO, arch="vit_small_patch16_224", dim=64, tile_size=64, mpp=1.0,
                licence="test-licence", gated=True, params_m=0.1, sources=("this test",), kwargs=_tiny_kwargs(),
                input_size=32, weight_files=("model.safetensors", "pytorch_model.bin"), head=("head",))
    base.update(kw)
    PRESETS[name] = preset = Preset(**base)
    return preset


@pytest.fixture
def tiny():
    """The tiny LayerScale ViT preset (64-px tiles at 1 µm/px, resized to its 32-px input), and a plain one."""
    preset = _register(NAME)
    _register(NAME + "-plain", kwargs=_tiny_kwargs(None))
    yield preset
    PRESETS.pop(NAME)
    PRESETS.pop(NAME + "-plain")


@pytest.fixture
def hf_env(tmp_path, monkeypatch):
    """An empty Hugging Face cache under tmp_path, offline (as users run on a cluster)."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    return cache


def _source(preset: Preset, seed: int = 1):
    """The module fabricated weights are saved from, and its backbone's state dict."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = build_backbone(preset)
    return preset_module(preset, backbone).eval(), backbone.state_dict()


def _bin(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def fake_hf_cache(cache: Path, repo: str, files: dict[str, bytes], commit: str = COMMIT) -> Path:
    """`files` in the cache as huggingface_hub writes them; returns the snapshot folder."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (root / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        (root / "blobs" / sha).write_bytes(data)
        (snapshot / name).symlink_to(Path("..") / ".." / "blobs" / sha)
    return snapshot


def _tiles(n: int = 5, size: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _reference(module, preset: Preset, tiles: np.ndarray) -> np.ndarray:
    """The source module on the tiles, normalized with the arithmetic TorchEncoder uses."""
    mean = torch.tensor(preset.mean).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(preset.std).view(1, 3, 1, 1) * 255.0
    with torch.inference_mode():
        x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float().sub_(mean).div_(std)
        return module(x).float().numpy()


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def test_a_preset_is_in_the_registry_with_its_geometry(tiny):
    assert NAME in available() and "uni2-h" in available()
    enc = build_encoder(EncoderSpec(NAME, "random"))
    assert (enc.dim, enc.tile_size, enc.mpp, enc.weights_digest) == (64, 64, 1.0, "random:seed0")
    out = enc.encode(_tiles())
    assert out.shape == (5, 64) and out.std() > 0
    # Seeded: one network in every build, the caller's random state untouched.
    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    np.testing.assert_array_equal(build_encoder(EncoderSpec(NAME, "random")).encode(_tiles()), out)
    assert torch.equal(torch.rand(2), expected)


def test_weights_from_a_fabricated_hf_cache_load_offline_and_encode_exactly(tiny, hf_env):
    module, state = _source(tiny)
    data = _bin({**state, "head.weight": torch.zeros(3, 64), "head.bias": torch.zeros(3)})  # a head-only leftover
    snapshot = fake_hf_cache(hf_env, REPO, {"pytorch_model.bin": data, "config.json": b"{}"})
    enc = build_encoder(EncoderSpec(NAME))  # no --weights: the cache, offline
    tiles = _tiles()
    expected = _reference(module, tiny, tiles)
    np.testing.assert_array_equal(enc.encode(tiles), expected)
    assert enc.weights_digest == _digest(data)
    # The same file as --weights FILE and the snapshot as --weights DIR: same network, same digest.
    for weights in (str(snapshot / "pytorch_model.bin"), str(snapshot), str(snapshot.parent.parent)):
        other = build_encoder(EncoderSpec(NAME, weights))
        np.testing.assert_array_equal(other.encode(tiles), expected)
        assert other.weights_digest == enc.weights_digest


def test_safetensors_in_a_snapshot_folder_is_preferred_and_exact(tiny, tmp_path):
    from safetensors.torch import save_file

    module, state = _source(tiny, seed=2)
    folder = tmp_path / "snapshot"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    torch.save(_source(tiny, seed=3)[1], folder / "pytorch_model.bin")  # another network: must not be picked
    tiles = _tiles()
    np.testing.assert_array_equal(build_encoder(EncoderSpec(NAME, str(folder))).encode(tiles),
                                  _reference(module, tiny, tiles))


def test_a_half_precision_checkpoint_runs_in_float32(tiny, tmp_path):
    module, state = _source(tiny)
    path = tmp_path / "half.pth"
    torch.save({k: v.half() for k, v in state.items()}, path)
    module = module.half().float()  # what the half checkpoint holds
    tiles = _tiles()
    np.testing.assert_array_equal(build_encoder(EncoderSpec(NAME, str(path))).encode(tiles),
                                  _reference(module, tiny, tiles))


def test_a_layerscale_checkpoint_into_a_plain_preset_is_refused(tiny, hf_env):
    _, state = _source(tiny)  # saved with init_values (LayerScale), as UNI / Virchow2 / H-optimus are
    path = hf_env.parent / "layerscale.pth"
    torch.save(state, path)
    with pytest.raises(ConfigError, match=r"unexpected \(e\.g\. .*ls1\.gamma.*init_values.*test-tiny-vit-plain")\
            as err:
        build_encoder(EncoderSpec(NAME + "-plain", str(path)))
    assert "\n" not in str(err.value)


def test_a_foreign_key_is_refused_and_a_head_is_not(tiny, tmp_path):
    _, state = _source(tiny)
    foreign = tmp_path / "foreign.pth"
    torch.save({**state, "projector.weight": torch.zeros(4, 4)}, foreign)
    with pytest.raises(ConfigError, match=r"1 unexpected \(e\.g\. projector\.weight\)") as err:
        build_encoder(EncoderSpec(NAME, str(foreign)))
    assert "\n" not in str(err.value)
    missing = tmp_path / "missing.pth"
    torch.save({k: v for k, v in state.items() if k != "blocks.1.ls2.gamma"}, missing)
    with pytest.raises(ConfigError, match=r"1 missing \(e\.g\. blocks\.1\.ls2\.gamma\)"):
        build_encoder(EncoderSpec(NAME, str(missing)))
    headed = tmp_path / "headed.pth"
    torch.save({**state, "head.weight": torch.zeros(2, 64), "head.bias": torch.zeros(2)}, headed)
    assert build_encoder(EncoderSpec(NAME, str(headed))).encode(_tiles(2)).shape == (2, 64)


def test_remap_is_applied_before_the_strict_load(tiny, tmp_path):
    """A checkpoint with other key names (a transformers export, a `backbone.` prefix) loads through the preset's
    remap, and only through it."""
    module, state = _source(tiny)
    path = tmp_path / "prefixed.bin"
    torch.save({f"backbone.{k}": v for k, v in state.items()}, path)
    with pytest.raises(ConfigError, match="unexpected"):
        build_encoder(EncoderSpec(NAME, str(path)))
    _register(NAME + "-remap", remap=lambda sd: {k.removeprefix("backbone."): v for k, v in sd.items()})
    try:
        tiles = _tiles()
        np.testing.assert_array_equal(build_encoder(EncoderSpec(NAME + "-remap", str(path))).encode(tiles),
                                      _reference(module, tiny, tiles))
    finally:
        PRESETS.pop(NAME + "-remap")


def test_missing_weights_are_one_error_saying_how_to_get_them(tiny, hf_env, tmp_path, capsys):
    with pytest.raises(ConfigError) as err:
        build_encoder(EncoderSpec(NAME))
    text = str(err.value)
    assert "\n" not in text and "not in the Hugging Face cache" in text and str(hf_env) in text
    for hint in (f"https://huggingface.co/{REPO}", "huggingface-cli login", "hf auth login",
                 f"--weights hf-hub:{REPO}", "--weights FILE"):
        assert hint in text, hint
    from slidegrid.cli import main

    capsys.readouterr()
    assert main(["encode", str(tmp_path), "--out", str(tmp_path / "g"), "--encoder", NAME, "--no-mlflow",
                 "--no-progress"]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and err_lines[0].startswith(f"error: {NAME}: weights not found locally")
    with pytest.raises(ConfigError, match="no such file or folder") as err:
        build_encoder(EncoderSpec(NAME, str(tmp_path / "nowhere.bin")))
    assert "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "other.pth").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"none of the weight files .* it holds other\.pth"):
        build_encoder(EncoderSpec(NAME, str(tmp_path / "empty")))


# -- a Hugging Face compatible endpoint on 127.0.0.1 ----------------------------------------------

class _Hub:
    """Serves `files[(repo, name)]` as the Hub's resolve endpoint; `gated[repo]` answers with that status."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, str], bytes] = {}
        self.gated: dict[str, int] = {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self, body: bool) -> None:
                hub.requests.append((self.command, self.path))
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._status(404, {"X-Error-Code": "RepoNotFound"})
                repo, name = "/".join(parts[:2]), "/".join(parts[4:])
                if repo in hub.gated:
                    return self._status(hub.gated[repo], {"X-Error-Code": "GatedRepo", "X-Error-Message":
                                                          "Access to model is restricted. Accept the conditions."})
                if not any(r == repo for r, _ in hub.files):
                    return self._status(404, {"X-Error-Code": "RepoNotFound"})
                if (repo, name) not in hub.files:
                    return self._status(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
                data = hub.files[(repo, name)]
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _status(self, code: int, headers: dict[str, str]) -> None:
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()


@pytest.fixture
def hub(hf_env, monkeypatch):
    import huggingface_hub.constants

    server = _Hub()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # in case the shell set it at import
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_not_real")
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_hf_hub_downloads_only_the_weight_file_when_asked_then_works_offline(tiny, hub, hf_env, monkeypatch):
    module, state = _source(tiny)
    data = _bin(state)
    hub.files[(REPO, "pytorch_model.bin")] = data
    hub.files[(REPO, "README.md")] = b"model card"
    enc = build_encoder(EncoderSpec(NAME, f"hf-hub:{REPO}"))
    tiles = _tiles()
    expected = _reference(module, tiny, tiles)
    np.testing.assert_array_equal(enc.encode(tiles), expected)
    assert enc.weights_digest == _digest(data)
    # model.safetensors is asked for first (the repo has none), then the .bin: HEAD then GET, nothing else.
    paths = [(m, p.split("?")[0]) for m, p in hub.requests]
    assert ("GET", f"/{REPO}/resolve/main/pytorch_model.bin") in paths
    assert all(p.endswith(("/model.safetensors", "/pytorch_model.bin")) for _, p in paths)
    # Now in the cache, in huggingface_hub's own layout: found without --weights, offline, no request made.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(hub.requests)
    np.testing.assert_array_equal(build_encoder(EncoderSpec(NAME)).encode(tiles), expected)
    assert len(hub.requests) == n
    assert (hf_env / f"models--{REPO.replace('/', '--')}" / "refs" / "main").read_text() == COMMIT


@pytest.mark.parametrize("status", [401, 403])
def test_a_gated_model_is_one_error_saying_how_to_get_it(tiny, hub, status):
    hub.gated[REPO] = status
    with pytest.raises(ConfigError) as err:
        build_encoder(EncoderSpec(NAME, f"hf-hub:{REPO}"))
    text = str(err.value)
    assert "\n" not in text and f"hf-hub:{REPO}" in text
    for hint in (f"https://huggingface.co/{REPO}", "huggingface-cli login", "--weights FILE"):
        assert hint in text, hint
    assert "gated" in text


def test_hf_hub_offline_or_unknown_repo_is_one_error(tiny, hub, monkeypatch):
    with pytest.raises(ConfigError, match="has no model slidegrid-test/nothing") as err:
        build_encoder(EncoderSpec(NAME, "hf-hub:slidegrid-test/nothing"))
    assert "\n" not in str(err.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.files[(REPO, "pytorch_model.bin")] = b"never fetched"
    hub.requests.clear()
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE is set") as err:
        build_encoder(EncoderSpec(NAME, f"hf-hub:{REPO}"))
    assert "\n" not in str(err.value) and not hub.requests
    with pytest.raises(ConfigError, match="expected hf-hub:ORG/NAME"):
        build_encoder(EncoderSpec(NAME, "hf-hub:no-slash"))


# -- encode: geometry, settings hash, the driver's probe ------------------------------------------

def _config(tmp_path, **kw) -> EncodeConfig:
    return EncodeConfig(input=str(tmp_path), out=str(tmp_path / "g"), progress=False, mlflow=False, **kw)


def test_a_presets_native_geometry_is_the_default_and_another_is_a_warning(tiny, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="slidegrid.encode"):
        cfg = _config(tmp_path, encoder=NAME)
        assert (cfg.grid.tile_size, cfg.grid.mpp) == (64, 1.0) and not caplog.records
        other = _config(tmp_path, encoder=NAME, grid=GridSpec(tile_size=128, mpp=0.5))
    assert (other.grid.tile_size, other.grid.mpp) == (128, 0.5)
    assert "64-px tiles at 1 µm/px" in caplog.text and "test-tiny-vit" in caplog.text
    # Only the tile size given: the mpp is still the preset's own.
    assert _config(tmp_path, encoder=NAME, grid=GridSpec(tile_size=128)).grid.mpp == 1.0
    plain = _config(tmp_path)
    assert (plain.grid.tile_size, plain.grid.mpp) == (224, 0.5)


def test_the_settings_hash_carries_the_preset_version(tiny, tmp_path):
    cfg = _config(tmp_path, encoder=NAME)
    before = settings_hash(cfg, "abc")
    PRESETS[NAME] = Preset(**{**tiny.__dict__, "version": "2"})
    assert settings_hash(cfg, "abc") != before
    # Other encoders keep the hash their grids already have (the settings as they were before presets).
    from dataclasses import asdict

    plain = _config(tmp_path, grid=GridSpec(tile_size=128))
    # Spelled out: the settings as the grids already written recorded them (the config's layout may change).
    grid = {"mpp": 0.5, "tile_size": 128, "stride": None, "min_tissue": 0.25}
    old = {"encoder": "mean-rgb", "weights": "none", "grid": grid, "tissue": asdict(plain.tissue),
           "dtype": plain.dtype, "mpp_override": None, "reader": plain.reader}
    assert settings_hash(plain, "none") == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:20]


def test_the_probe_does_not_build_the_model_and_refuses_a_bad_checkpoint(tiny, hf_env, monkeypatch):
    import slidegrid.encoders.preset_encoder as pe

    _, state = _source(tiny)
    data = _bin(state)
    snapshot = fake_hf_cache(hf_env, REPO, {"pytorch_model.bin": data})

    def no_build(*a, **k):
        raise AssertionError("the driver built the model")

    monkeypatch.setattr(pe, "build_preset", no_build)
    real_backbone = pe.build_backbone
    monkeypatch.setattr(pe, "build_backbone", lambda p, device="cpu": real_backbone(p, "meta") if device == "meta"
                        else no_build())
    dim, digest, light, weights = _probe_encoder(_config(hf_env, encoder=NAME))
    assert (dim, digest, light) == (64, _digest(data), False)
    assert weights == str(snapshot / "pytorch_model.bin")  # the actors load this file; they download nothing
    with pytest.raises(ConfigError, match=r"ls1\.gamma"):
        _probe_encoder(_config(hf_env, encoder=NAME + "-plain"))


def test_the_encode_actor_loads_what_the_probe_found(tiny, hf_env):
    module, state = _source(tiny)
    fake_hf_cache(hf_env, REPO, {"pytorch_model.bin": _bin(state)})
    _, _, _, weights = _probe_encoder(_config(hf_env, encoder=NAME))
    actor = EncodeActor(EncoderSpec(NAME, weights), "float32", None)
    tiles = _tiles()
    out = actor({"image": tiles, "slide_id": np.array(["a"] * len(tiles))})
    np.testing.assert_array_equal(out["embedding"], _reference(module, tiny, tiles))


def test_the_encoders_command_lists_presets_and_where_their_weights_are(tiny, hf_env, capsys):
    from slidegrid.cli import main

    snapshot = fake_hf_cache(hf_env, REPO, {"pytorch_model.bin": b"x"})
    assert main(["encoders"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith(NAME + " "))
    assert str(snapshot / "pytorch_model.bin") in line and "64 @ 1" in line and "yes" in line
    assert "uni2-h" in out and "mean-rgb" in out and "timm:ARCH" in out and "vae | contrastive" in out
    assert main(["encoders", "--json"]) == 0
    cat = json.loads(capsys.readouterr().out)
    by_name = {p["name"]: p for p in cat["presets"]}
    assert by_name[NAME]["weights"] == str(snapshot / "pytorch_model.bin")
    assert by_name["uni"]["weights"] is None and by_name["uni"]["gated"] is True
    assert cat["hf_cache"] == str(hf_env)


# -- end to end on a local Ray ----------------------------------------------------------------------

def _small_preset() -> Preset | None:
    """Kaiko ViT-S/16 or H0-mini (the issue's small presets), else the smallest ViT-S/B-sized one registered."""
    named = {p.name: p for p in all_presets()}
    for name in ("kaiko-vits16", "h0-mini"):
        if name in named:
            return named[name]
    small = [p for p in named.values() if p.family != "test" and p.params_m <= 100]
    return min(small, key=lambda p: (p.params_m, p.name)) if small else None


def test_encode_with_a_small_preset_end_to_end(tmp_path, hf_env, ray_local):
    """Weights from a fabricated HF cache (random, in the preset's real repo and file name), offline: every
    slide gets a grid of the preset's size with its name, version and the weights digest in the metadata."""
    from slidegrid.encode import run_encode
    from slidegrid.io.grids import grid_uri, read_grid
    from slidegrid.synth.slides import SyntheticSpec, write_synthetic_slide

    preset = _small_preset()
    if preset is None:
        pytest.skip("no preset of ViT-S/B size registered (encoders/foundation/)")
    _, state = _source(preset)
    name = preset.weight_files[0]
    if name.endswith(".safetensors"):
        from safetensors.torch import save

        data = save({k: v.contiguous() for k, v in state.items()})
    else:
        data = _bin(state)
    fake_hf_cache(hf_env, preset.hf_repo, {name: data})
    archive = tmp_path / "archive"
    archive.mkdir()
    side = int(preset.tile_size * preset.mpp / 0.5) * 3  # a 3x3-tile slide at 0.5 µm/px
    write_synthetic_slide(str(archive / "s0.tiff"), SyntheticSpec(width=side, height=side, seed=0))
    cfg = EncodeConfig(input=str(archive), out=str(tmp_path / "g"), encoder=preset.name, dtype="float32",
                       progress=False, mlflow=False, batch_size=8)
    assert (cfg.grid.tile_size, cfg.grid.mpp) == (preset.tile_size, preset.mpp)
    results = run_encode(cfg).results
    assert [r.status for r in results] == ["ok"]
    grid = read_grid(grid_uri(str(tmp_path / "g"), "s0"))
    assert grid.code_size == preset.dim and len(grid.row) > 0
    assert grid.meta["preset"] == preset.name and grid.meta["preset_version"] == preset.version
    assert grid.meta["weights_digest"] == _digest(data)
    assert grid.meta["settings_hash"] == settings_hash(cfg, _digest(data))
    # The grid holds what the preset gives on those tiles in this process (slide at the target µm/px).
    import tiffslide

    slide = tiffslide.TiffSlide(str(archive / "s0.tiff"))
    t = preset.tile_size
    tiles = np.stack([slide.read_region((int(x), int(y)), 0, (t, t), as_array=True)[..., :3]
                      for x, y in zip(grid.x, grid.y)])
    expected = build_encoder(EncoderSpec(preset.name)).encode(tiles)
    np.testing.assert_allclose(grid.embedding, expected, rtol=1e-3, atol=1e-3)
