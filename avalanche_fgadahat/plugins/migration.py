"""Load HAT-family plugins pickled by earlier versions (Avalanche checkpoints).

Before the settings became one config object and the rates one engine, a plugin held each
setting as its own attribute, the rate entries and caches as private fields, and AdaHAT's
per-step values in the plugin. :func:`migrate_plugin_state` turns such a pickled state into
the current one (same settings, same rate entries, same phase), so no training state is lost
when a checkpoint written by an earlier version is resumed.
"""

from __future__ import annotations

from typing import Any

from ..adjustment import RateEngine, StepSignals, build_rule
from .lifecycle import ExperiencePhase

_OLD_PRIVATE = ("_intensity_source", "_inverse_intensities", "_sparsity_pending", "_layer_sparsity",
                "layer_sparsity", "alpha", "epsilon", "summing_parameter", "adjustment_mode")


def migrate_plugin_state(plugin_class: type, state: dict[str, Any]) -> dict[str, Any]:
    """The current form of a plugin's pickled ``state`` (unchanged if already current)."""
    state = dict(state)
    if "config" in state:
        return state
    config_class = plugin_class.config_class
    settings = {name: state.pop(name) for name in config_class.setting_names() if name in state}
    config = config_class.from_settings(settings, plugin_class.__name__)
    rule = build_rule(config)
    if hasattr(rule, "task_position"):
        rule.task_position = state.get("task_position", 1)
    engine = RateEngine(rule)
    engine.entries = state.pop("_entries", [])
    engine.constant_rates = state.pop("_constant_rates", None)
    engine.groups = state.pop("_rate_groups", [])
    engine.constant_capacity = state.pop("_constant_capacity", None)
    engine.step_capacity = state.pop("_step_capacity", None)
    pending = state.get("_sparsity_pending")
    if pending is not None and state.get("_regularizer") is not None:
        signals = StepSignals(state["_regularizer"], pending)
    else:
        signals = StepSignals(layer_sparsity=state.get("_layer_sparsity", state.get("layer_sparsity", {})))
    for name in (*_OLD_PRIVATE, "task_position"):
        state.pop(name, None)
    state.update(config=config, rule=rule, engine=engine, signals=signals)
    state.setdefault("last_report", None)
    state.setdefault("_pending_warnings", [])
    state.setdefault("warn_in_after_training", True)
    state.setdefault("_start_embeddings", None)
    state.setdefault("_previous_cumulative", {})
    state.setdefault("_regularizer", None)
    state.setdefault(
        "phase", ExperiencePhase.IDLE if state.get("_experience_start") is None else ExperiencePhase.TRAINING
    )
    return state
