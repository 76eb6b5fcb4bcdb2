"""Foundation-model presets: every registered preset, built on the meta device (no memory, no weights), has the
parameter count its source states and gives (N, dim) embeddings; "cls+mean" leaves the register tokens out of
the mean; the families' checkpoint remaps load strictly."""

from __future__ import annotations

import contextlib
import functools
from unittest import mock

import pytest
import torch

from slidegrid.encoders.preset import all_presets, build_backbone, get_preset, preset_module

PRESETS = all_presets()


@functools.cache
def _meta_backbone(name: str):
    """One meta-device build per preset, shared by the tests below. timm's ViT weight initialiser is skipped: on
    the meta device it sets no values, yet walks every tensor (most of a ViT-g's build time)."""
    import timm.models.vision_transformer as vit

    skip = (mock.patch.object(vit.VisionTransformer, "init_weights", lambda self, *a, **k: None)
            if hasattr(vit.VisionTransformer, "init_weights") else contextlib.nullcontext())
    with skip:
        return build_backbone(get_preset(name), "meta")


def _tolerance_m(preset) -> float:
    """How far the built count may be from the stated one, in millions: 0.5% where the source gives an exact
    count, else half a unit of the stated figure's last significant digit (303 -> 0.5, 631.2 -> 0.05,
    1100 ("1.1B") -> 50, 1130 ("1.13B") -> 5)."""
    if preset.params_exact:
        return 0.005 * preset.params_m
    text = f"{preset.params_m:g}"
    if "." in text:
        return 0.5 * 10 ** -len(text.split(".")[1])
    return 0.5 * 10 ** (len(text) - len(text.rstrip("0")))


def test_registry_covers_the_issue_families():
    names = {p.name for p in PRESETS}
    assert {"uni", "uni2-h", "virchow", "virchow2", "h-optimus-0", "h-optimus-1", "h0-mini", "gigapath",
            "kaiko-vits16", "kaiko-vits8", "kaiko-vitb16", "kaiko-vitb8", "kaiko-vitl14", "lunit-vits8",
            "clam-resnet50"} <= names


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_facts_are_complete(preset):
    assert preset.sources, f"{preset.name}: no source cited"
    assert preset.dim > 0 and preset.tile_size > 0 and preset.mpp > 0 and preset.params_m > 0
    assert preset.licence and preset.family
    assert (preset.resize or preset.input_size) >= preset.input_size
    assert len(preset.mean) == 3 and len(preset.std) == 3 and all(s > 0 for s in preset.std)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_meta_build_has_the_stated_parameter_count(preset):
    built = sum(p.numel() for p in _meta_backbone(preset.name).parameters()) / 1e6
    tol = _tolerance_m(preset)
    assert abs(built - preset.params_m) <= tol, (
        f"{preset.name}: built {built:.3f}M parameters, source states {preset.params_m}M (tolerance {tol}M)")


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_meta_batch_gives_the_stated_embedding_size(preset):
    module = preset_module(preset, _meta_backbone(preset.name))
    out = module(torch.empty(2, 3, preset.tile_size, preset.tile_size, device="meta"))
    assert tuple(out.shape) == (2, preset.dim)


def _random_cpu(module):
    """`module` (built on meta) on the CPU with random weights: normal(0, 0.02) parameters, identity BatchNorm
    statistics. Much faster than the architectures' own initialisers, and any values do for these checks."""
    module = module.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in module.parameters():
            param.normal_(0, 0.02, generator=gen)
        for name, buf in module.named_buffers():
            buf.fill_(1 if name.endswith("running_var") else 0)
    return module.eval()


def _smallest_vit(output: str):
    vits = [p for p in PRESETS if p.output == output and p.arch.startswith("vit_") and p.builder is None]
    return min(vits, key=lambda p: p.params_m)


def test_cls_plus_mean_leaves_class_and_register_tokens_out_of_the_mean():
    preset = _smallest_vit("cls+mean")
    backbone = _random_cpu(build_backbone(preset, "meta"))
    kwargs = dict(preset.kwargs())
    prefix = 1 + int(kwargs.get("reg_tokens", 0))  # the class token and the registers, counted from the preset
    patch = backbone.patch_embed.patch_size[0]
    x = torch.randn(1, 3, preset.input_size, preset.input_size, generator=torch.Generator().manual_seed(1))
    seen = []  # forward_features' own output during the module's forward (one ViT pass instead of two)
    forward_features = backbone.forward_features
    backbone.forward_features = lambda t: seen.append(forward_features(t)) or seen[-1]
    with torch.no_grad():
        got = preset_module(preset, backbone)(x)
    (tokens,) = seen
    assert tokens.shape[1] == prefix + (preset.input_size // patch) ** 2
    expected = torch.cat([tokens[:, 0], tokens[:, prefix:].mean(dim=1)], dim=-1)
    assert got.shape == (1, preset.dim)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    if prefix > 1:  # the registers would change the mean: the check above is not vacuous
        assert not torch.allclose(got, torch.cat([tokens[:, 0], tokens[:, 1:].mean(dim=1)], dim=-1))


def test_cls_is_timms_own_pooled_output():
    preset = _smallest_vit("cls")
    backbone = _random_cpu(build_backbone(preset, "meta"))
    x = torch.randn(1, 3, preset.tile_size, preset.tile_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(preset_module(preset, backbone)(x), backbone(x))


def test_kaiko_vitl14_release_layout_loads_strictly():
    """kaiko's vitl14.pth is in DINOv2's layout (register_tokens, class position in pos_embed, mask_token); the
    1aurent mirror in timm's: both become the module's keys and shapes."""
    from slidegrid.encoders.weights import check_strict

    preset = get_preset("kaiko-vitl14")
    module = _meta_backbone(preset.name)
    timm_state = module.state_dict()
    dinov2 = {k: v for k, v in timm_state.items() if k not in ("reg_token", "pos_embed")}
    dinov2["register_tokens"] = timm_state["reg_token"]
    dinov2["pos_embed"] = torch.empty(1, 1 + timm_state["pos_embed"].shape[1], timm_state["pos_embed"].shape[2],
                                      device="meta")
    dinov2["mask_token"] = torch.empty(1, timm_state["cls_token"].shape[-1], device="meta")
    for state in (dinov2, timm_state):
        assert set(check_strict(module, preset.remap(state), preset.name)) == set(timm_state)


def test_clam_takes_torchvision_and_timm_resnet50_files():
    """A full ImageNet ResNet-50 state dict loads into the truncated net with only layer4/fc left over, with or
    without BatchNorm counters (old torchvision files have none)."""
    import timm

    from slidegrid.encoders.weights import check_strict, load_strict

    preset = get_preset("clam-resnet50")
    with torch.device("meta"):
        full = timm.create_model("resnet50", pretrained=False)
    full = _random_cpu(full)
    old = {k: v for k, v in full.state_dict().items() if not k.endswith("num_batches_tracked")}
    for state in (full.state_dict(), old):  # into a meta build, as weights are loaded for real
        module = build_backbone(preset, "meta")
        load_strict(module, preset.remap(state), preset.name, preset.head, assign=True)
    module = module.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        feats = full.layer3(full.layer2(full.layer1(full.maxpool(full.act1(full.bn1(full.conv1(x)))))))
        torch.testing.assert_close(preset_module(preset, module)(x), feats.mean(dim=(2, 3)))
    with pytest.raises(Exception, match="unexpected"):
        check_strict(module, {**full.state_dict(), "layer5.0.weight": torch.zeros(1)}, preset.name, preset.head)
