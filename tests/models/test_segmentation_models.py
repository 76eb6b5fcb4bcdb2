"""Segmentation networks (DigiPathAI ensemble members, MRN), their ImageNet encoder weights, encoder freezing and
the hybrid loss."""

from __future__ import annotations

import logging
import socket

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from slidegrid.errors import ConfigError
from slidegrid.losses import HybridLoss
from slidegrid.models import build_model
from slidegrid.models.mrn import MRN
from slidegrid.models.segmentation import (
    ARCHITECTURES,
    encoder_frozen,
    find_encoder_weights,
    set_encoder_trainable,
)
from slidegrid.train.segmentation.config import TINY_SMP

TINY = {"encoder": "resnet18", "encoder_depth": 3}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _target(batch: int, size: int) -> torch.Tensor:
    """A square of foreground in the middle of every tile."""
    t = torch.zeros(batch, size, size, dtype=torch.long)
    t[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    return t


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_full_member_builds_offline_and_backpropagates(name, tmp_path, monkeypatch):
    # A fresh hub cache that must stay empty: weights are never fetched.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    model = build_model(name, 3, 2).eval()  # eval: DeepLabV3+'s image pooling cannot batch-norm one pixel
    logits = model(torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, 2, 64, 64)
    HybridLoss()(logits, _target(1, 64)).backward()
    first = next(model.encoder.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0
    assert model.segmentation_head[0].weight.grad.abs().sum() > 0
    assert not (tmp_path / "hub").exists() or not any((tmp_path / "hub").rglob("*"))


def test_unet_members_upsample_bilinearly():
    model = build_model("unet-densenet121", 3, 2, **TINY)
    modes = {getattr(b, "interpolation_mode", None) for b in model.decoder.blocks}
    assert modes == {"bilinear"}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_tiny_member_learns_a_batch(name):
    model = build_model(name, 3, 2, **TINY).train()
    x = torch.rand(2, 3, 64, 64)
    y = _target(2, 64)
    x[:, 0][y.bool()] += 1  # the foreground is redder: learnable
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = HybridLoss()
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("unet-vgg", 3, 2)
    with pytest.raises(ConfigError, match="one width per encoder stage"):
        build_model("unet-densenet121", 3, 2, encoder="resnet18", encoder_depth=3, decoder_channels=(8, 8))
    with pytest.raises(ConfigError, match="model_kwargs"):
        build_model("mrn-bilinear", 3, 2, colour="blue")


def _train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()  # as a training loop does every epoch: a frozen encoder must stay frozen anyway
    opt.zero_grad()
    HybridLoss()(model(x), y).backward()
    opt.step()


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items())


@pytest.mark.parametrize("kind", ["smp", "mrn"])
def test_encoder_freezing_really_freezes(kind):
    if kind == "smp":
        model = build_model("unet-densenet121", 3, 2, **TINY)
        x, parts = torch.rand(2, 3, 32, 32), [model.encoder]
        decoder = model.decoder
    else:
        model = build_model("mrn-bilinear", 3, 2, n_resolutions=2, width=4, depth=2)
        x, parts = torch.rand(2, 2, 3, 32, 32), list(model.encoders)
        decoder = model.decoders
    y = _target(2, 32)
    set_encoder_trainable(model, False)
    assert encoder_frozen(model)
    enc_before = [_state(p) for p in parts]  # weights and batch-norm running statistics
    dec_before = _state(decoder)
    for _ in range(2):
        _train_step(model, x, y)
    assert not any(_changed(b, p) for b, p in zip(enc_before, parts))
    assert _changed(dec_before, decoder)
    assert all(p.grad is None for part in parts for p in part.parameters())

    set_encoder_trainable(model, True)
    assert not encoder_frozen(model)
    _train_step(model, x, y)
    assert all(_changed(b, p) for b, p in zip(enc_before, parts))
    assert all(m.training for part in parts for m in part.modules())


@pytest.mark.parametrize("variant", ["mrn-bilinear", "mrn-transposed"])
@pytest.mark.parametrize("resolutions", [2, 4])
def test_mrn_forward_backward(variant, resolutions):
    model = build_model(variant, 3, 2, n_resolutions=resolutions, width=4, depth=2)
    assert isinstance(model, MRN) and len(model.encoders) == resolutions
    size = model.multiple * 2
    x = torch.rand(2, resolutions, 3, size, size, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 2, size, size)
    HybridLoss()(logits, _target(2, size)).backward()
    # Every resolution's encoder feeds the output.
    for enc in model.encoders:
        assert enc.blocks[0][0].weight.grad.abs().sum() > 0
    if variant == "mrn-transposed":
        assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.crops.modules())
    else:
        assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.crops.modules())


def test_mrn_lower_resolutions_contribute_only_their_centre():
    """The crop keeps the area the highest-resolution tile covers: far outside it, the periphery of a
    low-resolution tile cannot reach the output (its receptive field ends before the crop)."""
    model = MRN(3, 2, n_resolutions=2, width=4, depth=1, variant="bilinear").eval()
    size = 64  # level 0 crop keeps [16, 48); level 1 maps (32 px) keep [8, 24) = input [16, 48) +- receptive field
    x = torch.rand(1, 2, 3, size, size, requires_grad=True)
    model(x).sum().backward()
    grad = x.grad[0, 1].abs().sum(dim=0)
    assert grad[:, :4].sum() == 0 and grad[:4].sum() == 0
    assert grad[28:36, 28:36].sum() > 0


def test_mrn_rejects_bad_tiles():
    model = MRN(3, 2, n_resolutions=4, width=4, depth=2)
    with pytest.raises(ConfigError, match="multiple of 32"):
        model(torch.rand(1, 4, 3, 48, 48))
    with pytest.raises(ConfigError, match="expected"):
        model(torch.rand(1, 2, 3, 64, 64))


def test_hybrid_loss_matches_hand_computation():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, 0.0]], [[0.0, 1.0], [-0.5, 3.0]]]])  # (1, 2, 2, 2)
    target = torch.tensor([[[0, 1], [1, 1]]])
    z = logits.numpy()[0]
    p = np.exp(z) / np.exp(z).sum(axis=0)
    g = np.stack([target.numpy()[0] == 0, target.numpy()[0] == 1]).astype(float)
    ce = -np.mean(np.log((p * g).sum(axis=0)))

    def dice(k: int, smooth: float) -> float:
        return 1 - (2 * (p[k] * g[k]).sum() + smooth) / ((p[k] ** 2).sum() + (g[k] ** 2).sum() + smooth)

    for smooth in (1.0, 0.0):
        expected = 0.5 * ce + 0.25 * dice(0, smooth) + 0.25 * dice(1, smooth)
        got = HybridLoss(smooth=smooth)(logits, target).item()
        assert got == pytest.approx(expected, rel=1e-5)
    # Other weights are honoured.
    got = HybridLoss(alpha=1.0, beta=0.0, gamma=0.0)(logits, target).item()
    assert got == pytest.approx(ce, rel=1e-5)


def test_hybrid_loss_is_lower_for_a_better_prediction():
    target = _target(2, 16)
    onehot = torch.nn.functional.one_hot(target, 2).movedim(-1, 1).float()
    good, bad = 4 * (2 * onehot - 1), -4 * (2 * onehot - 1)
    loss = HybridLoss()
    noise = torch.randn(2, 2, 16, 16)
    assert loss(good, target) < loss(good + 2 * noise, target) < loss(bad, target)
    assert loss(10 * (2 * onehot - 1), target) < 0.01


# -- ImageNet encoder weights (DigiPathAI "Training"): from a file or the local caches, never downloaded ----------

TIMM_TINY = TINY_SMP["encoder"][3:]


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Empty Hugging Face and torch-hub caches, the Hub not marked offline, and every socket connection recorded
    and refused: the lookup must not even try."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    attempts: list = []

    def refuse(sock, address):
        attempts.append(address)
        raise OSError("network access from a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def _timm_state(seed: int) -> dict[str, torch.Tensor]:
    """A tiny timm classifier's state dict, the layout timm publishes ImageNet weights in."""
    torch.manual_seed(seed)
    state = timm.create_model(TIMM_TINY).state_dict()
    for k, v in state.items():  # distinctive batch-norm statistics too, so a fresh init cannot match them
        if k.endswith(("running_mean", "running_var")):
            v.copy_(torch.rand_like(v) + 0.5)
    return state


def _encoder_matches(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    own = model.encoder.model.state_dict()
    return all(torch.equal(v, state[k]) for k, v in own.items() if not k.endswith("num_batches_tracked"))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_encoder_weights_file_is_loaded_exactly(suffix, tmp_path, no_network):
    state = _timm_state(1)
    path = str(tmp_path / f"encoder{suffix}")
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    weights = find_encoder_weights(TINY_SMP["encoder"], path)
    assert weights.pretrained and weights.source == f"file:{path}" and len(weights.digest) == 16
    unet = build_model("unet-densenet121", 3, 2, **TINY_SMP, encoder_weights=weights)
    assert _encoder_matches(unet, state)
    assert not _encoder_matches(build_model("unet-densenet121", 3, 2, **TINY_SMP), state)  # not by chance
    # DeepLabV3+ runs the same timm encoder dilated (output stride 8): the same file fits.
    deeplab = build_model("deeplabv3plus-xception", 3, 2, encoder=TINY_SMP["encoder"], encoder_depth=3,
                          encoder_weights=weights)
    assert _encoder_matches(deeplab, state)
    assert no_network == []


def test_encoder_weights_come_from_the_local_caches(tmp_path, no_network):
    # smp's own encoder (resnet18): smp-hub's layout, in the Hugging Face cache as smp downloads it (by commit).
    torch.manual_seed(2)
    published = build_model("unet-densenet121", 3, 2, **TINY).encoder.state_dict()
    snapshot = tmp_path / "hf" / "models--smp-hub--resnet18.imagenet" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    save_file(published, str(snapshot / "model.safetensors"))
    weights = find_encoder_weights("resnet18")
    assert weights.source == "hf-cache:smp-hub/resnet18.imagenet"
    model = build_model("unet-densenet121", 3, 2, **TINY, encoder_weights=weights)
    assert all(torch.equal(v, published[k]) for k, v in model.encoder.state_dict().items())
    # A timm encoder: timm's file in torch hub's checkpoints folder (what timm's URL download leaves).
    state = _timm_state(3)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(state, hub / "mobilenetv3_small_050_lambc-4b7bbe87.pth")
    weights = find_encoder_weights(TINY_SMP["encoder"])
    assert weights.source == f"torch-hub:{hub / 'mobilenetv3_small_050_lambc-4b7bbe87.pth'}"
    assert _encoder_matches(build_model("unet-densenet121", 3, 2, **TINY_SMP, encoder_weights=weights), state)
    assert no_network == []


def test_weights_that_do_not_fit_the_encoder_are_refused(tmp_path, no_network):
    state = _timm_state(1)
    # timm loads a features-only model leniently: a missing tensor would silently stay random.
    partial = {k: v for k, v in state.items() if k != "bn1.weight"}
    other = timm.create_model("resnet18").state_dict()
    for name, bad in (("partial", partial), ("resnet18", other)):
        path = str(tmp_path / f"{name}.safetensors")
        save_file(bad, path)
        with pytest.raises(ConfigError, match="do not match|mis-shaped|missing"):
            build_model("unet-densenet121", 3, 2, **TINY_SMP,
                        encoder_weights=find_encoder_weights(TINY_SMP["encoder"], path))
    # smp's own encoders load strictly too (a stage missing from the file).
    path = str(tmp_path / "resnet18-partial.pt")
    torch.save({k: v for k, v in build_model("unet-densenet121", 3, 2, **TINY).encoder.state_dict().items()
                if not k.startswith("layer1.")}, path)
    with pytest.raises(ConfigError, match="do not fit encoder resnet18"):
        build_model("unet-densenet121", 3, 2, **TINY, encoder_weights=find_encoder_weights("resnet18", path))
    with pytest.raises(ConfigError, match="encoder weights file not found"):
        find_encoder_weights("resnet18", str(tmp_path / "nope.pth"))
    assert no_network == []


def test_missing_weights_mean_one_warning_and_random_init(tmp_path, no_network, caplog):
    from slidegrid.train.segmentation.config import SegTrainConfig
    from slidegrid.train.segmentation.fit import plan_encoder_weights
    from slidegrid.train.segmentation.loop import build_member

    cfg = SegTrainConfig(cohort=str(tmp_path / "c.csv"), out=str(tmp_path / "o"), tiny=True,
                         members=("unet-densenet121", "deeplabv3plus-xception"))
    with caplog.at_level(logging.INFO, logger="slidegrid"):
        found = plan_encoder_weights(cfg)
    assert {m: w.source for m, w in found.items()} == {"unet-densenet121": "random", "deeplabv3plus-xception": "random"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1  # one for the run, naming every member and how to supply its weights
    for text in ("--encoder-weights unet-densenet121=FILE", "--encoder-weights deeplabv3plus-xception=FILE",
                 f"hf download timm/{TIMM_TINY}.lamb_in1k model.safetensors", str(tmp_path / "hf"),
                 str(tmp_path / "torch" / "hub" / "checkpoints"), "--encoder-weights random"):
        assert text in warnings[0]
    model, weights = build_member(cfg, "unet-densenet121")  # trains from random initialisation, never frozen
    assert not weights.pretrained and cfg.freeze_epochs_for("unet-densenet121", weights.pretrained) == 0
    assert not encoder_frozen(model)
    caplog.clear()
    plan_encoder_weights(SegTrainConfig(cohort="c", out="o", tiny=True, encoder_weights="random"))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # asked for: no warning
    assert no_network == []
