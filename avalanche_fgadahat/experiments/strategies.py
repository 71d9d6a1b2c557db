"""Strategy factory: a strategy name → model, optimiser and Avalanche strategy.

Names are the keys of :data:`STRATEGIES` (the registry, ``strategy_registry.py``) plus the
parametric ``fgadahat:<importance>``, where ``<importance>`` is an ``ImportanceType``'s
``name`` or ``short_name`` (any case) of ``avalanche_fgadahat.importance.IMPORTANCE_TYPES``.
Hyperparameters live in ``settings.py``; ``--set`` overrides are parsed and checked here.

Every strategy gets the preset's backbone shape: HAT-family methods the masked backbone,
baselines the same layers unmasked with per-task heads (``baseline_models.py``), and the
same Adam optimiser (the benchmark scripts pass their own optimiser). The importance
registry is imported only when an ``fgadahat`` strategy is asked for.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import torch
from avalanche.training.templates import SupervisedTemplate

from ..models.base import HATBackbone
from .baseline_models import PackNetMultiHead, PlainMultiHead, PlainSingleHead
from ..models import ConvertedHATModel
from ..models.builders import BuiltHATModel
from .presets import BACKBONES, BENCHMARKS, ExperimentSettings
from .scenarios import split_memory, split_score, with_memory, with_task_inference
from .settings import FGADAHAT_TYPE_OVERRIDES, HAT_FAMILY_OPTIONAL, STRATEGY_SETTINGS
from .strategy_registry import (
    FGADAHAT_PREFIX,
    FGADAHAT_SPEC,
    STRATEGIES,
    BuildContext,
    ResolvedStrategy,
    StrategySpec,
)

__all__ = [
    "FGADAHAT_PREFIX",
    "STRATEGIES",
    "BuildContext",
    "ResolvedStrategy",
    "StrategySpec",
    "build_model",
    "build_strategy",
    "check_buildable",
    "model_for",
    "overrides_for",
    "parse_overrides",
    "resolve_strategy",
]


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


def resolve_strategy(name: str, overrides: Mapping[str, Any] | None = None,
                     task_labels: bool | None = True) -> ResolvedStrategy:
    """Resolve a strategy name (see module doc); ``overrides`` replace settings by key;
    ``task_labels``: whether the preset gives them (``scenarios.py``: ``hat@entropy``, ``replay:500``);
    ``None`` resolves a run's label again as it is (Ray workers, tuning)."""
    if not isinstance(name, str):
        raise ValueError(f"strategy name must be a string, got {name!r}")
    name, score = split_score(name)
    name, memory = split_memory(name)
    if name.lower().startswith(FGADAHAT_PREFIX + ":"):
        itype = _resolve_importance(name.split(":", 1)[1])
        from ..importance.registry import short_name_of

        suffix = short_name_of(itype) or itype.name
        settings = {**STRATEGY_SETTINGS[FGADAHAT_PREFIX], "importance_type": itype.name,
                    **FGADAHAT_TYPE_OVERRIDES.get(itype.short_name, {})}
        label, base, spec = f"{FGADAHAT_PREFIX}:{suffix}", FGADAHAT_PREFIX, FGADAHAT_SPEC
    else:
        if name not in STRATEGIES:
            raise ValueError(
                f"strategy={name!r} is not supported; accepted values are: "
                + ", ".join([*STRATEGIES, f"{FGADAHAT_PREFIX}:<importance type>"])
            )
        label, base, spec = name, name, STRATEGIES[name]
        settings = dict(STRATEGY_SETTINGS[name])
    for key, value in (overrides or {}).items():
        if key in IDENTITY_SETTINGS:
            raise ValueError(
                f"--set {base}.{key} would change which algorithm {label!r} runs while its name (in "
                f"files and tables) stays; {IDENTITY_SETTINGS[key]}"
            )
        accepted = [*settings, *(HAT_FAMILY_OPTIONAL if spec.family == "hat" else ())]
        if key not in accepted:
            raise ValueError(
                f"setting {key!r} does not exist for strategy {label!r}; accepted: {sorted(set(accepted))}"
            )
        _check_baseline_setting(base, key, value)
        settings[key] = value
    resolved = with_memory(ResolvedStrategy(label, base, spec, MappingProxyType(settings)), memory)
    return with_task_inference(resolved, score, task_labels)


#: settings that define a strategy's identity: choose them through the strategy name instead
IDENTITY_SETTINGS: Mapping[str, str] = MappingProxyType({
    "importance_type": "name the importance in the strategy instead, e.g. --strategies fgadahat:ig",
    "adjustment_mode": "choose the strategy with that rule instead, e.g. --strategies hat_const_1 "
    "(--list shows them)",
    "task_inference": "name the score after '@' instead, e.g. --strategies hat@energy",
    "mem_size": "name the memory in the strategy instead, e.g. --strategies replay:500",
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
    ("der", "alpha"): (0.0, False, None),
    ("der", "beta"): (0.0, False, None),
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
    bases = {s.split("@", 1)[0].split(":", 1)[0] for s in strategies}
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
    base = name.split("@", 1)[0].split(":", 1)[0]
    merged = dict(parsed.get(base, {})) if base != name else {}
    merged.update(parsed.get(name, {}))
    return merged


def model_for(spec: StrategySpec, backbone: HATBackbone, classes: int | None = None) -> torch.nn.Module:
    """The model ``spec`` trains on a freshly built HAT ``backbone``: the backbone itself
    (HAT family), or its layers unmasked with per-task heads (one head over all ``classes`` on a
    stream without task labels, ``classes`` given; ``baseline_models.py``)."""
    if spec.model == "hat":
        return backbone
    if isinstance(backbone, ConvertedHATModel) and not isinstance(backbone, BuiltHATModel):
        raise ValueError(
            f"the {backbone.source} backbone (converted with to_hat) runs the HAT family only; run the "
            "baselines on the mlp backbone (the same layers as HATMLP, unmasked)"
        )
    if spec.model == "packnet":
        return PackNetMultiHead(backbone)
    return PlainMultiHead(backbone) if classes is None else PlainSingleHead(backbone, classes)


def build_model(strategy: ResolvedStrategy, settings: ExperimentSettings) -> torch.nn.Module:
    """The strategy's model on the preset's backbone (see module doc)."""
    builder = BENCHMARKS[settings.benchmark]
    return model_for(strategy.spec, BACKBONES[settings.backbone](settings), None if builder.task_labels else builder.classes)


#: ``parameters → optimiser``; :func:`build_strategy`'s default is ``Adam(lr=settings.lr)``
OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


def build_strategy(
    strategy: ResolvedStrategy,
    settings: ExperimentSettings,
    evaluator: Any,
    plugins: Iterable = (),
    optimizer: OptimizerFactory | None = None,
) -> SupervisedTemplate:
    """Model, Adam(lr) over all its parameters (or ``optimizer(parameters)``), and the
    Avalanche strategy."""
    model = build_model(strategy, settings)
    if optimizer is None:
        built = torch.optim.Adam(model.parameters(), lr=settings.lr)
    else:
        built = optimizer(model.parameters())
    context = BuildContext(settings, strategy.settings, evaluator, tuple(plugins))
    return strategy.spec.build(context, model, built)


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
