"""Learned tile encoders (NIC §2, §4.3-4.4; RAN §3): tile datasets, the four methods, the registry, the probe.

Most tests train tiny networks (32-px tiles, C = 16..32) in this process with plain torch on one thread; one
goes through Ray Train with 2 workers, MLflow and `run_encode`.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import torch

from slidegrid.cli import main
from slidegrid.encode import EncodeConfig, run_encode
from slidegrid.encoders import EncoderSpec, build_encoder
from slidegrid.encoders.bigan import BiGAN
from slidegrid.encoders.learned import METHODS, as_encoder, encoder_meta, save_encoder
from slidegrid.encoders.mean_rgb import MeanRGBEncoder
from slidegrid.encoders.nets import NetConfig
from slidegrid.encoders.probe import probe_encoders, probe_set
from slidegrid.errors import ConfigError
from slidegrid.geometry.tiling import GridSpec
from slidegrid.io.annotations import rasterize, read_annotations
from slidegrid.io.archive import read_cohort
from slidegrid.io.grids import grid_uri, read_grid
from slidegrid.synth.slides import synthesize_archive
from slidegrid.train.encoder.config import EncoderTrainConfig
from slidegrid.train.encoder.data import plan_archive, read_batch, sample_pairs, sample_rows, to_columns
from slidegrid.train.encoder.fit import run_train_encoder
from slidegrid.train.encoder.loop import method_for, to_tensors

TILE, MPP, BATCH = 32, 1.0, 32
# The pair task is hard by design (75% of *different* pairs are neighbouring tiles): it learns slowest.
EPOCHS = {"contrastive": 8}
FALL = {"contrastive": 0.95}  # last epoch's mean loss below this fraction of the first's (others: 0.85)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny nets run fastest on one thread, and do not fight the other tests' processes for the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """8 synthetic slides to train encoders on (half with 3 annotated tumours) and 4 other slides for the probe."""
    root = tmp_path_factory.mktemp("encoders")
    synthesize_archive(str(root), 8, size=2048, seed=1, tumours=(3, 3), progress=False)
    synthesize_archive(str(root / "probe"), 4, size=2048, seed=2, tumours=(3, 3), progress=False)
    return root


def _cfg(archive, method: str, **kw) -> EncoderTrainConfig:
    base = {"input": str(archive / "cohort.csv"), "out": str(archive / "out"), "method": method, "code_size": 16,
            "grid": GridSpec(tile_size=TILE, mpp=MPP, min_tissue=0.5), "width": 8, "depth": 3, "tiles": 256,
            "batch_size": BATCH}
    return EncoderTrainConfig(**{**base, **kw})


def _train(cfg: EncoderTrainConfig, epochs: int, seed: int = 0):
    """Train in this process the way the Ray loop does (fresh augmentations every epoch); returns the
    method and every step's metrics."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    method = method_for(cfg)
    opts = method.optimizers(cfg.learning_rate)
    rows = sample_rows(cfg, plan_archive(cfg, use_ray=False))
    steps = []
    for _ in range(epochs):
        for i in range(0, len(rows) - BATCH + 1, BATCH):
            steps.append(method.training_step(to_tensors(read_batch(to_columns(rows[i:i + BATCH]), cfg, rng)), opts))
    return method.eval(), steps


@pytest.fixture(scope="module")
def trained(archive):
    """`trained(method)` -> (config, trained module, per-step metrics): EPOCHS[method] epochs of 16 steps."""
    cache = {}

    def get(method: str):
        if method not in cache:
            # BiGAN's discriminator is the costly network: half the width keeps its test as quick as the others.
            cfg = _cfg(archive, method, code_size=32, width=8 if method == "bigan" else 16, tiles=512)
            cache[method] = (cfg, *_train(cfg, epochs=EPOCHS.get(method, 6)))
        return cache[method]

    return get


@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_and_its_loss_falls(trained, method):
    _, _, steps = trained(method)
    loss = [s["loss"] for s in steps]
    assert len(loss) == 16 * EPOCHS.get(method, 6) and np.all(np.isfinite(loss))
    # BiGAN's `loss` is the discriminator's side of Eq. 6: it falls as D learns real from generated pairs.
    assert np.mean(loss[-16:]) < FALL.get(method, 0.85) * np.mean(loss[:16]), loss


def test_vae_reconstructions_improve(archive, trained):
    cfg, vae, steps = trained("vae")
    plans = plan_archive(cfg, use_ray=False)
    rows = sample_rows(_cfg(archive, "vae", seed=7), plans)[:64]  # other tiles than training's, not augmented
    held_out = to_tensors(read_batch(to_columns(rows), _cfg(archive, "vae", augment=False)))["image"]

    def reconstruction_error(model) -> float:
        with torch.no_grad():  # the decoder on mu: the deterministic reconstruction
            mu, _ = model.eval().enc(held_out).chunk(2, dim=1)
            return float(((model.dec(mu) - held_out) ** 2).mean())

    torch.manual_seed(0)
    before = reconstruction_error(method_for(cfg))
    after = reconstruction_error(vae)
    assert after < 0.5 * before, (before, after)
    assert steps[-1]["reconstruction_mse"] < 0.5 * steps[0]["reconstruction_mse"]
    assert steps[-1]["kl"] > 0  # the KL term of Eq. 3 is live (mu, sigma move away from the prior's)


def _grey_tiles(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n 8-px tiles of one grey level each (uniform in [-0.8, 0.8], normalized units) plus pixel noise: data
    with one degree of freedom, and that level."""
    level = torch.rand(n, generator=g) * 1.6 - 0.8
    tiles = level[:, None, None, None].expand(n, 3, 8, 8) + 0.05 * torch.randn(n, 3, 8, 8, generator=g)
    return tiles.clamp(-1, 1), level


def _inversion(bigan: BiGAN, tiles: torch.Tensor, level: torch.Tensor) -> tuple[float, float]:
    """(corr(grey of G(E(x)), grey of x), corr(E(G(z)), z)) in eval mode: 1 where E and G invert each other."""
    bigan.eval()
    with torch.no_grad():
        z = torch.randn(256, 1, generator=torch.Generator().manual_seed(5))
        again, codes = bigan.gen(bigan.enc(tiles)).mean((1, 2, 3)), bigan.enc(bigan.gen(z))
    bigan.train()
    return (float(np.corrcoef(again.numpy(), level.numpy())[0, 1]),
            float(np.corrcoef(codes[:, 0].numpy(), z[:, 0].numpy())[0, 1]))


def test_bigan_learns_an_encoder_and_generator_that_invert_each_other():
    """NIC §2.3 (Eqs. 4-6): at the optimum of the BiGAN game E and G invert each other. On tiles with one degree
    of freedom (a grey level) and a 1-D code, 400 steps (~10 s) make both round trips faithful.

    Measured (8 seeds, median of the evaluations every 20 steps over steps 200-400): x -> E -> G keeps the grey
    level with correlation >= 0.94 and z -> G -> E returns z with >= 0.95 (3 seeds); this seed 0.99 and 0.97.
    The random-weights twin: 0.04 and -0.58. Each of these breaks failed at least one of the two 0.85 bars (3
    seeds each): E or G left out of their optimizer, G+E trained on D's labels instead of swapped ones, D fed
    unpaired codes (a GAN on the marginals, no E-G coupling). One evaluation alone is not enough: the early game
    swings, and a round trip can read -0.9 for a few steps before recovering, hence the medians.
    """
    torch.manual_seed(2)
    bigan = BiGAN(NetConfig(tile_size=8, code_size=1, width=8, depth=2))
    opts = bigan.optimizers(1e-3)
    held_out = _grey_tiles(256, torch.Generator().manual_seed(999))
    random_twin = _inversion(bigan, *held_out)
    g = torch.Generator().manual_seed(102)
    trace = []
    for step in range(1, 401):
        bigan.training_step({"image": _grey_tiles(32, g)[0]}, opts)
        if step >= 200 and step % 20 == 0:
            trace.append(_inversion(bigan, *held_out))
    round_trip_x, round_trip_z = np.median(trace, axis=0)
    assert random_twin[0] < 0.5 and random_twin[1] < 0.5, random_twin  # the bars mean something for this seed
    assert round_trip_x > 0.85, trace  # G(E(x)) has x's grey level
    assert round_trip_z > 0.85, trace  # E(G(z)) ~ z


def test_contrastive_pairs_are_adjacent_or_from_another_slide_75_25(archive):
    cfg = _cfg(archive, "contrastive")
    plans = plan_archive(cfg, use_ray=False)
    pairs = sample_pairs(plans, 2000, np.random.default_rng(0))
    kinds = [p["kind"] for p in pairs]
    assert kinds.count("same") == 1000
    assert kinds.count("adjacent") == 750 and kinds.count("other-slide") == 250  # 75% / 25% of *different*
    step0 = TILE * MPP / 0.5  # tile side in level-0 px (the slides are 0.5 µm/px)
    for p in pairs:
        assert p["same"] == (p["kind"] == "same")
        if p["kind"] == "same":
            assert (p["uri"], p["x"], p["y"]) == (p["uri2"], p["x2"], p["y2"])
        elif p["kind"] == "adjacent":
            assert p["slide_id"] == p["slide_id2"]
            assert abs(p["row"] - p["row2"]) + abs(p["col"] - p["col2"]) == 1  # a 4-neighbour on the grid
            # Non-overlapping: exactly one tile side apart along one axis, aligned along the other.
            d = sorted([abs(p["x"] - p["x2"]), abs(p["y"] - p["y2"])])
            assert d[0] == 0 and abs(d[1] - step0) <= 1
        else:
            assert p["slide_id"] != p["slide_id2"]
    # Each side of a pair is augmented on its own: *same* pairs are two different images of one place.
    same = [p for p in pairs if p["same"]][:8]
    batch = read_batch(to_columns(same), cfg, np.random.default_rng(0))
    assert batch["image"].shape == batch["image2"].shape == (8, TILE, TILE, 3)
    assert all(not np.array_equal(a, b) for a, b in zip(batch["image"], batch["image2"]))


def test_supervised_tiles_are_class_balanced_and_labelled_from_the_annotations(archive):
    cfg = _cfg(archive, "supervised")
    rows = sample_rows(cfg, plan_archive(cfg, use_ray=False))
    labels = np.array([r["label"] for r in rows])
    assert len(rows) == 256 and labels.sum() == 128
    annotations = {r.slide_id: r.annotation for r in read_cohort(str(archive / "cohort.csv"))}
    masks = {}
    for r in rows[:60]:  # an independent check of "tumour = any annotated pixel inside the tile"
        ann = annotations[r["slide_id"]]
        if r["slide_id"] not in masks:
            masks[r["slide_id"]] = rasterize(read_annotations(ann) if ann else [], (2048, 1536), 0.5, 0.5)
        mask, x, y = masks[r["slide_id"]], r["x"], r["y"]
        # Margins of one label-mask pixel either way: labels are decided on the annotation rasterized at 1/8 of
        # a tile side (4 µm/px = 8 px here, train/encoder/data.plan_slide), this check at level 0.
        m = 8
        if r["label"]:
            assert mask[max(y - m, 0):y + 64 + m, max(x - m, 0):x + 64 + m].any()
        else:
            assert not mask[y + m:y + 64 - m, x + m:x + 64 - m].any()


def test_probe_supervised_and_contrastive_beat_mean_rgb(archive, trained):
    """NIC Table 1 on synthetic slides: frozen encoders, linear probe, held-out slides, stain-varied tiles."""
    data = probe_set(str(archive / "probe" / "cohort.csv"), TILE, MPP, per_class=150)
    encoders = {"mean-rgb": MeanRGBEncoder()}
    for method in ("supervised", "contrastive"):
        cfg, model, _ = trained(method)
        torch.manual_seed(0)
        untrained = method_for(cfg).eval()
        encoders[method] = as_encoder(model.embedder(encoder_meta(model, MPP)), EncoderSpec(method), "t")
        encoders[f"{method} (random)"] = as_encoder(untrained.embedder(encoder_meta(untrained, MPP)),
                                                    EncoderSpec(method), "r")
    acc = probe_encoders(encoders, data)
    assert len(data.labels) >= 300 and data.labels.mean() == 0.5
    assert acc["supervised"] > acc["mean-rgb"] + 0.02, acc
    assert acc["contrastive"] > acc["mean-rgb"] + 0.01, acc
    assert acc["contrastive"] > acc["contrastive (random)"], acc  # training, not the architecture, did it


@pytest.mark.slow
def test_train_encoder_with_ray_two_workers_registers_and_encodes_an_archive(archive, tmp_path, ray_local):
    cfg = _cfg(archive, "vae", out=str(tmp_path / "run"), epochs=2, workers=2)
    result = run_train_encoder(cfg)
    assert [h["epoch"] for h in result.history] == [0, 1] and result.history[-1]["tiles"] == 256
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    # MLflow: the run, its metrics and the registered embedder.
    assert result.model_uri == "models:/slidegrid-encoder-vae/1"
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/run/mlflow/mlflow.db")
    run = mlflow.get_run(result.run_id)
    assert run.data.params["method"] == "vae" and run.data.params["workers"] == "2"
    assert "train_reconstruction_mse" in run.data.metrics
    from_file = build_encoder(EncoderSpec("vae", result.encoder_file))
    from_registry = build_encoder(EncoderSpec("vae", result.model_uri))
    tiles = np.random.default_rng(0).integers(0, 256, (4, TILE, TILE, 3), dtype=np.uint8)
    np.testing.assert_allclose(from_file.encode(tiles), from_registry.encode(tiles), rtol=1e-5, atol=1e-6)
    # The normal encode pipeline with the trained encoder.
    grids = tmp_path / "grids"
    slide = archive / "slides" / "slide_0001.tiff"
    report = run_encode(EncodeConfig(input=str(slide), out=str(grids), encoder="vae", weights=result.encoder_file,
                                     grid=GridSpec(tile_size=TILE, mpp=MPP), dtype="float32", mlflow=False,
                                     progress=False))
    assert [r.status for r in report.results] == ["ok"] and report.tiles > 100
    grid = read_grid(grid_uri(str(grids), "slide_0001"))
    assert grid.code_size == 16 and grid.meta["encoder"] == "vae"
    from slidegrid.io.slides import open_slide

    with open_slide(str(slide)) as s:
        first = s.read_region(int(grid.x[0]), int(grid.y[0]), TILE, TILE, MPP)
    np.testing.assert_allclose(grid.embedding[0], from_file.encode(first[None])[0], rtol=1e-4, atol=1e-4)


def test_learned_encoder_registry(archive, tmp_path):
    cfg = _cfg(archive, "supervised")
    torch.manual_seed(0)
    path = save_encoder(str(tmp_path / "sup.pt"), method_for(cfg).eval(), MPP)
    enc = build_encoder(EncoderSpec("supervised", path))
    assert (enc.dim, enc.tile_size, enc.mpp) == (16, TILE, MPP)
    assert (enc.encode(np.zeros((2, TILE, TILE, 3), np.uint8)) >= 0).all()  # FC6 after its ReLU
    random = build_encoder(EncoderSpec("bigan", "random"))
    assert (random.dim, random.tile_size, random.weights_digest) == (128, 128, "random")  # NIC's P and C
    with pytest.raises(ConfigError, match="not supervised|holds a supervised encoder"):
        build_encoder(EncoderSpec("vae", path))
    with pytest.raises(ConfigError, match="needs --weights"):
        build_encoder(EncoderSpec("contrastive"))
    # The weights fix the tile geometry: encoding at another tile size is refused up front, naming the flag.
    with pytest.raises(ConfigError, match="--tile-size 32 --mpp 1"):
        run_encode(EncodeConfig(input=str(archive / "cohort.csv"), out=str(tmp_path / "g"), encoder="supervised",
                                weights=path, mlflow=False, progress=False))


def test_train_encoder_cli_rejects_bad_options(archive, tmp_path, capsys):
    base = ["train-encoder", "--input", str(archive / "cohort.csv"), "--out", str(tmp_path), "--method", "vae"]
    assert main([*base, "--tile-size", "60", "--depth", "3"]) == 2
    assert "error: --tile-size:" in capsys.readouterr().err
    assert main([*base, "--code-size", "0"]) == 2
    assert "error: --code-size:" in capsys.readouterr().err
    assert main([*base, "--tiles", "10", "--batch-size", "32"]) == 2
    assert "error: --tiles:" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="annotation"):
        plan_archive(EncoderTrainConfig(input=str(archive / "slides"), out=str(tmp_path), method="supervised"),
                     use_ray=False)


def test_a_method_registers_with_its_card_and_the_trainer_reads_it(tmp_path, monkeypatch):
    """A learned method added with register_method (its name in learned.METHODS) trains with its card's rows,
    learning rate and options; and no module of the package branches on a method's name."""
    import re
    from pathlib import Path

    from slidegrid.encoders import learned
    from slidegrid.encoders import method as method_mod
    from slidegrid.encoders.vae import VAE
    from slidegrid.train.encoder.data import PatchTiles, sample_rows
    from slidegrid.train.encoder.loop import method_for

    monkeypatch.setattr(method_mod, "_METHODS", dict(method_mod._METHODS))
    monkeypatch.setattr(learned, "METHODS", (*learned.METHODS, "toy"))

    @method_mod.register_method
    class Toy(VAE):
        name, rows, default_lr, options = "toy", "pairs", 0.25, ("gamma",)

    cfg = EncoderTrainConfig(input=str(tmp_path), out=str(tmp_path), method="toy", gamma=3.0)
    assert cfg.learning_rate == 0.25 and cfg.rows == "pairs"
    assert isinstance(method_for(cfg), Toy) and method_for(cfg).gamma == 3.0
    rows = sample_rows(cfg, PatchTiles("train", ["a.png", "b.png", "c.png"], np.zeros(3, np.int64)), n=8)
    assert len(rows) == 8 and {"path", "path2", "same"} <= set(rows[0]), "the card's rows did not reach the data"
    with pytest.raises(ConfigError, match="is not one of"):
        EncoderTrainConfig(input=str(tmp_path), out=str(tmp_path), method="nope")

    package = Path(__file__).resolve().parents[2] / "platform" / "slidegrid"
    names = "|".join(re.escape(n) for n in learned.METHODS)
    branches = [f"{p.relative_to(package)}: {line.strip()}" for p in package.rglob("*.py")
                for line in p.read_text().splitlines() if re.search(rf"[=!]= ?[\"']({names})[\"']", line)]
    assert not branches, f"code branches on a method's name (put it in the method's card): {branches}"
