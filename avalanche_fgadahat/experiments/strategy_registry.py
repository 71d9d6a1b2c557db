"""The strategy registry: what each strategy name builds, and how.

:data:`STRATEGIES` maps a name to a :class:`StrategySpec` (family, which model it trains, its
builder); ``fgadahat:<importance>`` shares one spec (:data:`FGADAHAT_SPEC`). A builder gets a
:class:`BuildContext` (protocol, the strategy's settings, evaluator, extra plugins) plus the
model and optimiser, and returns the Avalanche strategy. Names are resolved, and settings
overridden, in ``strategies.py``; hyperparameters live in ``settings.py``. ``FGAdaHAT`` is
imported only when an ``fgadahat`` strategy is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from avalanche.training.templates import SupervisedTemplate

from .presets import ExperimentSettings

FGADAHAT_PREFIX = "fgadahat"


@dataclass(frozen=True)
class BuildContext:
    """What a strategy builder receives."""

    settings: ExperimentSettings
    strategy_settings: Mapping[str, Any]
    evaluator: Any
    plugins: tuple = ()

    def hat_family_kwargs(self) -> dict[str, Any]:
        """The HAT family's settings from the experiment (not from the strategy's table): ``fused_step``."""
        return {"fused_step": self.settings.fused_step}

    def template_kwargs(self) -> dict[str, Any]:
        s = self.settings
        return dict(
            train_mb_size=s.batch_size,
            train_epochs=s.epochs,
            eval_mb_size=s.eval_batch_size,
            device=s.device,
            evaluator=self.evaluator,
            eval_every=-1,
        )


@dataclass(frozen=True)
class StrategySpec:
    """A strategy of the sweep.

    :param family: ``"hat"`` (masked backbone, network capacity measured) or ``"baseline"``.
    :param model: ``"hat"``, ``"plain"`` or ``"packnet"`` — which model it trains.
    :param build: ``(context, model, optimizer) → SupervisedTemplate``.
    :param joint: trained once on the whole stream (joint training).
    """

    family: str
    model: str
    build: Callable[[BuildContext, torch.nn.Module, torch.optim.Optimizer], SupervisedTemplate]
    description: str
    joint: bool = False


@dataclass(frozen=True)
class ResolvedStrategy:
    """A strategy name resolved: its ``label`` (used in files and tables), spec and settings."""

    label: str
    base: str
    spec: StrategySpec
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def file_stem(self) -> str:
        return self.label.replace(":", "-")

    def config(self) -> dict[str, Any]:
        return {"name": self.label, "base": self.base, "family": self.spec.family,
                "settings": dict(self.settings)}


# ---------------------------------------------------------------------------- builders
def _hat(ctx, model, optimizer):
    from ..strategies import HAT

    return HAT(model=model, optimizer=optimizer, plugins=list(ctx.plugins),
               **ctx.strategy_settings, **ctx.hat_family_kwargs(), **ctx.template_kwargs())


def _adahat(ctx, model, optimizer):
    from ..strategies import AdaHAT

    return AdaHAT(model=model, optimizer=optimizer, plugins=list(ctx.plugins),
                  **ctx.strategy_settings, **ctx.hat_family_kwargs(), **ctx.template_kwargs())


def _fgadahat(ctx, model, optimizer):
    fgadahat = _import_fgadahat()
    return fgadahat(model=model, optimizer=optimizer, plugins=list(ctx.plugins),
                    **ctx.strategy_settings, **ctx.hat_family_kwargs(), **ctx.template_kwargs())


def _avalanche(class_name: str, **fixed: Any):
    def build(ctx, model, optimizer):
        from avalanche.training import supervised

        strategy_class = getattr(supervised, class_name)
        return strategy_class(model=model, optimizer=optimizer, plugins=list(ctx.plugins),
                              **fixed, **ctx.strategy_settings, **ctx.template_kwargs())

    return build


def _packnet_schedule(settings: Mapping[str, Any], s: ExperimentSettings) -> tuple[int, Any]:
    """Resolve ``post_prune_epochs='half'`` and ``prune_proportion='equal_share'``."""
    post = settings["post_prune_epochs"]
    if post == "half":
        post = max(1, s.epochs // 2)
    if not isinstance(post, int) or isinstance(post, bool) or not 1 <= post < s.epochs:
        raise ValueError(
            f"packnet needs 1 <= post_prune_epochs < epochs, got post_prune_epochs={post} with "
            f"epochs={s.epochs}; run packnet with --epochs 2 or more"
        )
    proportion = settings["prune_proportion"]
    if proportion == "equal_share":
        n = s.n_experiences
        proportion = [1.0 - 1.0 / (n - t) for t in range(n)]
    elif isinstance(proportion, (list, tuple)):
        proportion = [float(p) for p in proportion]
    elif not isinstance(proportion, float):
        raise ValueError(
            f"packnet.prune_proportion={proportion!r}: accepted are 'equal_share', a float in "
            "[0, 1] or a list of floats (one per experience)"
        )
    shares = proportion if isinstance(proportion, list) else [proportion]
    if not all(0.0 <= p <= 1.0 for p in shares):
        raise ValueError(f"packnet.prune_proportion={settings['prune_proportion']!r}: every value must be in [0, 1]")
    if isinstance(proportion, list) and len(proportion) != s.n_experiences:
        raise ValueError(
            f"packnet.prune_proportion={settings['prune_proportion']!r} holds {len(proportion)} values; "
            f"give one per experience ({s.n_experiences}), a single float, or 'equal_share'"
        )
    return post, proportion


def _packnet(ctx, model, optimizer):
    # Not Avalanche's ``PackNet`` wrapper: it drops user plugins (plugins=[plugins, ...]).
    from avalanche.models.packnet import PackNetPlugin

    post, proportion = _packnet_schedule(ctx.strategy_settings, ctx.settings)
    plugin = PackNetPlugin(post_prune_epochs=post, prune_proportion=proportion)
    return SupervisedTemplate(model=model, optimizer=optimizer, plugins=[plugin, *ctx.plugins],
                              **ctx.template_kwargs())


STRATEGIES: Mapping[str, StrategySpec] = MappingProxyType(
    {
        "adahat": StrategySpec("hat", "hat", _adahat, "AdaHAT (Wang et al. 2024)"),
        "hat": StrategySpec("hat", "hat", _hat, "HAT (Serrà et al. 2018)"),
        "hat_random": StrategySpec("hat", "hat", _hat, "HAT, random rate on used parameters"),
        "hat_const_alpha": StrategySpec("hat", "hat", _hat, "HAT, constant rate alpha on used parameters"),
        "hat_const_1": StrategySpec("hat", "hat", _hat, "HAT masks without gradient protection"),
        "naive": StrategySpec("baseline", "plain", _avalanche("Naive"), "fine-tuning (Avalanche Naive)"),
        "ewc": StrategySpec("baseline", "plain", _avalanche("EWC", criterion=torch.nn.CrossEntropyLoss()),
                            "Elastic Weight Consolidation (Avalanche EWC)"),
        "si": StrategySpec("baseline", "plain",
                           _avalanche("SynapticIntelligence", criterion=torch.nn.CrossEntropyLoss()),
                           "Synaptic Intelligence (Avalanche)"),
        "lwf": StrategySpec("baseline", "plain", _avalanche("LwF", criterion=torch.nn.CrossEntropyLoss()),
                            "Learning without Forgetting (Avalanche LwF)"),
        "mas": StrategySpec("baseline", "plain", _avalanche("MAS", criterion=torch.nn.CrossEntropyLoss()),
                            "Memory Aware Synapses (Avalanche MAS)"),
        "packnet": StrategySpec("baseline", "packnet", _packnet,
                                "PackNet (Avalanche PackNetPlugin, body-only PackNetModel)"),
        "replay": StrategySpec("baseline", "plain", _avalanche("Replay", criterion=torch.nn.CrossEntropyLoss()),
                               "experience replay, a class-balanced memory of mem_size samples (Avalanche Replay)"),
        "gdumb": StrategySpec("baseline", "plain", _avalanche("GDumb", criterion=torch.nn.CrossEntropyLoss()),
                              "GDumb: retrain from scratch on a class-balanced memory (Avalanche GDumb)"),
        "der": StrategySpec("baseline", "plain", _avalanche("DER", criterion=torch.nn.CrossEntropyLoss()),
                            "Dark Experience Replay++ (Avalanche DER)"),
        "joint": StrategySpec("baseline", "plain",
                              _avalanche("JointTraining", criterion=torch.nn.CrossEntropyLoss()),
                              "joint training on all tasks at once (upper bound)", joint=True),
    }
)

#: the spec of every ``fgadahat:<importance>`` strategy
FGADAHAT_SPEC = StrategySpec("hat", "hat", _fgadahat, "FG-AdaHAT with importance type")


def _import_fgadahat():
    try:
        from ..strategies import FGAdaHAT
    except ImportError as error:
        raise ValueError(
            "strategy 'fgadahat:...' needs avalanche_fgadahat.strategies.FGAdaHAT, which this "
            f"installation does not provide ({error})"
        ) from error
    return FGAdaHAT
