"""Strategy factory: a strategy name → model, optimiser and Avalanche strategy.

Names are the keys of :data:`STRATEGIES` plus the parametric ``fgadahat:<importance>``,
where ``<importance>`` is an ``ImportanceType``'s ``name`` or ``short_name`` (any case) of
``avalanche_fgadahat.importance.IMPORTANCE_TYPES``. Hyperparameters live in ``settings.py``.

Every strategy gets the preset's backbone shape: HAT-family methods the masked backbone,
baselines the same layers unmasked with per-task heads (``baseline_models.py``), and the
same Adam optimiser. ``FGAdaHAT`` and the importance registry are imported only when an
``fgadahat`` strategy is asked for.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from avalanche.training.templates import SupervisedTemplate

from .baseline_models import PackNetMultiHead, PlainMultiHead
from .presets import BACKBONES, ExperimentSettings
from .settings import FGADAHAT_TYPE_OVERRIDES, STRATEGY_SETTINGS

FGADAHAT_PREFIX = "fgadahat"


@dataclass(frozen=True)
class BuildContext:
    """What a strategy builder receives."""

    settings: ExperimentSettings
    strategy_settings: Mapping[str, Any]
    evaluator: Any
    plugins: tuple = ()

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
               **ctx.strategy_settings, **ctx.template_kwargs())


def _adahat(ctx, model, optimizer):
    from ..strategies import AdaHAT

    return AdaHAT(model=model, optimizer=optimizer, plugins=list(ctx.plugins),
                  **ctx.strategy_settings, **ctx.template_kwargs())


def _fgadahat(ctx, model, optimizer):
    fgadahat = _import_fgadahat()
    return fgadahat(model=model, optimizer=optimizer, plugins=list(ctx.plugins),
                    **ctx.strategy_settings, **ctx.template_kwargs())


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
        "joint": StrategySpec("baseline", "plain",
                              _avalanche("JointTraining", criterion=torch.nn.CrossEntropyLoss()),
                              "joint training on all tasks at once (upper bound)", joint=True),
    }
)

_FGADAHAT_SPEC = StrategySpec("hat", "hat", _fgadahat, "FG-AdaHAT with importance type")


def _import_fgadahat():
    try:
        from ..strategies import FGAdaHAT
    except ImportError as error:
        raise ValueError(
            "strategy 'fgadahat:...' needs avalanche_fgadahat.strategies.FGAdaHAT, which this "
            f"installation does not provide ({error})"
        ) from error
    return FGAdaHAT


def _importance_types() -> Mapping[str, Any]:
    try:
        from ..importance import IMPORTANCE_TYPES
    except ImportError as error:
        raise ValueError(f"fgadahat strategies need avalanche_fgadahat.importance ({error})") from error
    return IMPORTANCE_TYPES


def _resolve_importance(query: str):
    """An ``ImportanceType`` by full name or (unambiguous) short name, as the Python API
    resolves it (:func:`~avalanche_fgadahat.importance.registry.find_importance_type`)."""
    from ..importance.registry import find_importance_type, short_name_of, types_sharing_short_name

    types = _importance_types()
    found = find_importance_type(query)
    if found is not None:
        return found
    shared = types_sharing_short_name(query)
    if shared:
        raise ValueError(f"fgadahat importance {query!r} is ambiguous ({shared}); use the full name")
    accepted = sorted({short_name_of(t) for t in types.values() if short_name_of(t)} | set(types))
    raise ValueError(f"fgadahat importance {query!r} is not registered; accepted: {', '.join(accepted)}")


def resolve_strategy(name: str, overrides: Mapping[str, Any] | None = None) -> ResolvedStrategy:
    """Resolve a strategy name (see module doc); ``overrides`` replace settings by key."""
    if not isinstance(name, str):
        raise ValueError(f"strategy name must be a string, got {name!r}")
    if name.lower().startswith(FGADAHAT_PREFIX + ":"):
        itype = _resolve_importance(name.split(":", 1)[1])
        from ..importance.registry import short_name_of

        suffix = short_name_of(itype) or itype.name
        settings = {**STRATEGY_SETTINGS[FGADAHAT_PREFIX], "importance_type": itype.name,
                    **FGADAHAT_TYPE_OVERRIDES.get(itype.short_name, {})}
        label, base, spec = f"{FGADAHAT_PREFIX}:{suffix}", FGADAHAT_PREFIX, _FGADAHAT_SPEC
    else:
        if name not in STRATEGIES:
            raise ValueError(
                f"strategy={name!r} is not supported; accepted values are: "
                + ", ".join([*STRATEGIES, f"{FGADAHAT_PREFIX}:<importance type>"])
            )
        label, base, spec = name, name, STRATEGIES[name]
        settings = dict(STRATEGY_SETTINGS[name])
    for key, value in (overrides or {}).items():
        if key not in settings:
            raise ValueError(
                f"setting {key!r} does not exist for strategy {label!r}; accepted: {sorted(settings)}"
            )
        if key in IDENTITY_SETTINGS:
            raise ValueError(
                f"--set {base}.{key} would change which algorithm {label!r} runs while its name (in "
                f"files and tables) stays; {IDENTITY_SETTINGS[key]}"
            )
        _check_baseline_setting(base, key, value)
        settings[key] = value
    return ResolvedStrategy(label, base, spec, MappingProxyType(settings))


#: settings that define a strategy's identity: choose them through the strategy name instead
IDENTITY_SETTINGS: Mapping[str, str] = MappingProxyType({
    "importance_type": "name the importance in the strategy instead, e.g. --strategies fgadahat:ig",
    "adjustment_mode": "choose the strategy with that rule instead, e.g. --strategies hat_const_1 "
    "(--list shows them)",
})


#: (strategy, setting) → (minimum, strict, maximum) of the baselines' numeric settings (the
#: HAT family's are checked by their constructors); choices of their string settings.
BASELINE_RANGES: Mapping[tuple[str, str], tuple[float, bool, float | None]] = MappingProxyType({
    ("ewc", "ewc_lambda"): (0.0, False, None),
    ("si", "si_lambda"): (0.0, False, None),
    ("si", "eps"): (0.0, True, None),
    ("lwf", "alpha"): (0.0, False, None),
    ("lwf", "temperature"): (0.0, True, None),
    ("mas", "lambda_reg"): (0.0, False, None),
    ("mas", "alpha"): (0.0, False, 1.0),
})
BASELINE_CHOICES: Mapping[tuple[str, str], tuple[str, ...]] = MappingProxyType({
    # 'online' needs a decay_factor, which the CLI's EWC settings do not hold
    ("ewc", "mode"): ("separate",),
})


def _check_baseline_setting(base: str, key: str, value: Any) -> None:
    """``ValueError`` naming ``base.key`` when a baseline's setting has the wrong type or range."""
    from .._validation import check_choice, check_number

    name = f"{base}.{key}"
    if (base, key) in BASELINE_RANGES:
        minimum, strict, maximum = BASELINE_RANGES[(base, key)]
        check_number(name, value, minimum=minimum, strict_minimum=strict, maximum=maximum)
    elif (base, key) in BASELINE_CHOICES:
        check_choice(name, value, BASELINE_CHOICES[(base, key)])


def parse_overrides(items: Iterable[str], strategies: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``["ewc.ewc_lambda=100", ...]`` → ``{"ewc": {"ewc_lambda": 100}}``.

    The part before the dot is a strategy name as given in ``strategies`` or its base name
    (``fgadahat`` applies to every ``fgadahat:*``). Values are Python literals, else strings.
    """
    strategies = list(strategies)
    bases = {s.split(":", 1)[0] for s in strategies}
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, sep, rest = item.partition(".")
        key, eq, raw = rest.partition("=")
        if not sep or not eq or not key:
            raise ValueError(f"--set {item!r}: expected STRATEGY.KEY=VALUE, e.g. ewc.ewc_lambda=100")
        if target not in strategies and target not in bases:
            raise ValueError(f"--set {item!r}: strategy {target!r} is not in --strategies {strategies}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        out.setdefault(target, {})[key] = value
    return out


def overrides_for(name: str, parsed: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The overrides of ``name``: its base name's first, then its own."""
    base = name.split(":", 1)[0]
    merged = dict(parsed.get(base, {})) if base != name else {}
    merged.update(parsed.get(name, {}))
    return merged


def build_model(strategy: ResolvedStrategy, settings: ExperimentSettings) -> torch.nn.Module:
    """The strategy's model on the preset's backbone (see module doc)."""
    backbone = BACKBONES[settings.backbone](settings)
    if strategy.spec.model == "hat":
        return backbone
    if strategy.spec.model == "packnet":
        return PackNetMultiHead(backbone)
    return PlainMultiHead(backbone)


def build_strategy(
    strategy: ResolvedStrategy,
    settings: ExperimentSettings,
    evaluator: Any,
    plugins: Iterable = (),
) -> SupervisedTemplate:
    """Model, Adam(lr) over all its parameters, and the Avalanche strategy."""
    model = build_model(strategy, settings)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    context = BuildContext(settings, strategy.settings, evaluator, tuple(plugins))
    return strategy.spec.build(context, model, optimizer)


def check_buildable(strategy: ResolvedStrategy, settings: ExperimentSettings) -> None:
    """Build ``strategy`` once without training (model, optimizer, strategy object), so that
    every setting its constructors validate is checked before a sweep's first run.

    Raises ``ValueError`` naming the strategy; the global RNGs are left as they were.
    """
    from avalanche.training.plugins import EvaluationPlugin

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            build_strategy(strategy, settings, EvaluationPlugin(loggers=[]))
        except (ValueError, TypeError, AssertionError) as error:  # Avalanche asserts on some settings
            raise ValueError(f"strategy {strategy.label}: {error or type(error).__name__}") from error
