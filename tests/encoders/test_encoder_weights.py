"""Encoder weights load strictly: every key of the checkpoint and of the architecture is accounted for, so a
checkpoint that does not fit (a ViT saved with LayerScale, a foreign key, a missing one) is refused instead of
silently giving other embeddings; only the checkpoint's classification head may be left over."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from slidegrid.encoders import EncoderSpec, build_encoder
from slidegrid.errors import ConfigError


def _tiles(n: int = 4, size: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _save(state: dict, path) -> str:
    torch.save(state, path)
    return str(path)


def _fingerprint(encoder) -> tuple[str, np.ndarray]:
    """sha256 of every weight and buffer, in order, and the embeddings of `_tiles()`."""
    h = hashlib.sha256()
    for name, value in encoder._module.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest(), encoder.encode(_tiles())


def _reference(module: torch.nn.Module, tiles: np.ndarray, mean, std) -> np.ndarray:
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return module(x).numpy()


def test_a_layerscale_vit_checkpoint_is_refused_not_silently_trimmed(tmp_path):
    import timm

    saved = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, init_values=1e-5,
                              img_size=64)
    path = _save(saved.state_dict(), tmp_path / "uni-like.pth")
    with pytest.raises(ConfigError, match=r"unexpected \(e\.g\. .*ls1\.gamma.*init_values") as err:
        build_encoder(EncoderSpec("timm:vit_small_patch16_224", path))
    assert "\n" not in str(err.value)


def test_a_foreign_or_missing_key_is_refused(tmp_path):
    import timm

    state = timm.create_model("resnet18", pretrained=False, num_classes=0).state_dict()
    foreign = _save({**state, "projector.weight": torch.zeros(4, 4)}, tmp_path / "foreign.pth")
    with pytest.raises(ConfigError, match=r"1 unexpected \(e\.g\. projector\.weight\)"):
        build_encoder(EncoderSpec("timm:resnet18", foreign))
    short = _save({k: v for k, v in state.items() if k != "layer4.1.bn2.weight"}, tmp_path / "short.pth")
    with pytest.raises(ConfigError, match=r"1 missing \(e\.g\. layer4\.1\.bn2\.weight\)"):
        build_encoder(EncoderSpec("timm:resnet18", short))
    shaped = _save(timm.create_model("resnet34", pretrained=False, num_classes=0).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(ConfigError, match="timm:resnet18|r34.pth"):
        build_encoder(EncoderSpec("timm:resnet18", shaped))


def test_a_leftover_classification_head_is_dropped_and_the_backbone_is_exact(tmp_path):
    import timm

    torch.manual_seed(0)
    source = timm.create_model("resnet18", pretrained=False, num_classes=1000).eval()
    # Saved from DDP, with its ImageNet head: both are what users' checkpoints look like.
    path = _save({f"module.{k}": v for k, v in source.state_dict().items()}, tmp_path / "ddp-with-head.pth")
    encoder = build_encoder(EncoderSpec("timm:resnet18", path))
    tiles = _tiles()
    source.reset_classifier(0)
    cfg = source.pretrained_cfg
    np.testing.assert_allclose(encoder.encode(tiles), _reference(source, tiles, cfg["mean"], cfg["std"]),
                               rtol=1e-4, atol=1e-4)


# The same computation in a fresh interpreter: what a Ray actor, a restarted worker or a resumed run does.
_FINGERPRINT_SCRIPT = """
import json, sys
import torch
sys.path[:0] = [{tests!r}]
torch.set_num_threads({threads})
from test_encoder_weights import _fingerprint
from slidegrid.encoders import EncoderSpec, build_encoder
digest, emb = _fingerprint(build_encoder(EncoderSpec("timm:resnet18", "random")))
print(json.dumps({{"digest": digest, "embedding": emb.tolist()}}))
"""


def test_random_timm_weights_are_one_network_in_every_process():
    """`--weights random` is seeded: two builds, and a build in another process, give bit-identical weights and
    embeddings (grids of one settings hash come from one network), and the caller's random state is untouched."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = build_encoder(EncoderSpec("timm:resnet18", "random"))
    assert torch.equal(torch.rand(3), expected)
    second = build_encoder(EncoderSpec("timm:resnet18", "random"))
    digest, embedding = _fingerprint(first)
    assert _fingerprint(second)[0] == digest
    np.testing.assert_array_equal(_fingerprint(second)[1], embedding)
    assert embedding.shape == (4, 512) and embedding.std() > 0
    # The weights digest differs from the unseeded networks' "random", so their grids are not reused.
    assert first.weights_digest == "random:seed0"
    script = _FINGERPRINT_SCRIPT.format(tests=str(Path(__file__).parent),
                                        threads=torch.get_num_threads())
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    other = json.loads(proc.stdout.strip().splitlines()[-1])
    assert other["digest"] == digest
    np.testing.assert_array_equal(np.asarray(other["embedding"], dtype=np.float32), embedding)
