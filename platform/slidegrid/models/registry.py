"""The model registry (timm's idea): each model registers itself next to its class with a card that says what it
is, and config, training, inference, `predict` and the CLI read the card instead of branching on names."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    """A paper's training settings for one (model, task): TrainConfig values, and the grid they were made for
    (train/aggregator/recipes.py reads and checks them)."""

    source: str  # paper and section the values come from
    settings: Mapping[str, Any]  # TrainConfig field -> value
    grid_mpp: float | None = None  # µm/px of the tiles the paper encoded (None: not stated)
    grid_tile: int | None = None  # tile side in px the paper encoded
    unstated: tuple[str, ...] = ()  # settings the paper does not give (ours, recorded as such)
    notes: str = ""
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SegRecipe:
    """A segmentation member's training recipe: what its paper states, `unstated` naming the values that are
    ours (train/segmentation/config.py applies it; flags override it)."""

    source: str  # paper and sections
    loss: str  # "hybrid": DigiPathAI Eq. 3 (0.5 CE + 0.25 Dice_BG + 0.25 Dice_FG); "bce": on the tumour channel
    lr: float  # Adam's learning rate
    l2: float  # lambda of the penalty lambda * ||W||^2 on convolution / transposed-convolution kernels (0: none)
    freeze_epochs: int  # epochs a *pretrained* encoder stays frozen (a random one never is)
    lr_step: int  # epochs between LR decays (0: constant)
    lr_gamma: float
    batch_size: int
    patch_size: int  # px per side
    mpps: tuple[float, ...]  # µm/px, highest resolution first, at --mpp 0.5 (scaled with --mpp)
    unstated: tuple[str, ...] = ()


# The values a ModelCard's kind, view and heatmap may take (what the trainers and `predict` read).
CARD_KINDS = ("aggregator", "segmentation")
CARD_VIEWS = ("whole", "crop", "subgrid")
CARD_HEATMAPS = ("gradcam", "maps")


@dataclass(frozen=True)
class ModelCard:
    """What a registered model declares about itself."""

    kind: str  # "aggregator" (on grids of tile embeddings) or "segmentation" (on pixels)
    paper: str  # the paper and section it follows
    per_cell: bool = False  # aggregators: a prediction per grid cell (task segmentation), else one per slide
    # Aggregators: how a slide is seen in training and prediction: "whole" grid, "crop" (NIC §3.2: random crops
    # in training, crops x the 8 dihedral transforms at test time) or "subgrid" (RAN: class-balanced sub-grids,
    # half-overlapping windows at test time).
    view: str = "whole"
    heatmap: str = "gradcam"  # what `predict` draws: "maps" (the model's attention_maps) or "gradcam" (NIC §3.3)
    # The paper's training recipe per task: aggregators' Recipe per task, segmentation members' SegRecipe
    # under "segmentation".
    recipes: Mapping[str, Recipe | SegRecipe] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A misspelt value would silently train and predict on the whole grid with Grad-CAM maps.
        for name, value, allowed in (("kind", self.kind, CARD_KINDS), ("view", self.view, CARD_VIEWS),
                                     ("heatmap", self.heatmap, CARD_HEATMAPS)):
            if value not in allowed:
                raise ValueError(f"ModelCard {name}={value!r}: one of {', '.join(allowed)}")


_FACTORIES: dict[str, Callable[..., Any]] = {}
_CARDS: dict[str, ModelCard] = {}


def register_model(name: str, factory: Callable[..., Any], card: ModelCard) -> None:
    """Add a model: factory(in_channels, n_outputs, **kwargs) -> nn.Module, and its card."""
    _FACTORIES[name] = factory
    _CARDS[name] = card


def registered(kind: str | None = None) -> tuple[str, ...]:
    """Names of the registered models (of one `kind`), in registration order."""
    return tuple(n for n, c in _CARDS.items() if kind is None or c.kind == kind)


def model_card(name: str) -> ModelCard:
    """The card of a registered model; ConfigError for an unknown name."""
    if name not in _CARDS:
        raise ConfigError("--model", f"unknown model {name!r}; choose one of {', '.join(sorted(_CARDS))}")
    return _CARDS[name]


def build_model(name: str, in_channels: int, n_outputs: int, **kwargs: Any):
    """Instantiate a registered model; unknown names or options are a ConfigError."""
    model_card(name)
    try:
        return _FACTORIES[name](in_channels, n_outputs, **kwargs)
    except TypeError as exc:
        raise ConfigError("model_kwargs", f"{name}: {exc}") from None
