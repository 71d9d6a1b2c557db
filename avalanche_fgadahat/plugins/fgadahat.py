"""FGAdaHATPlugin: fine-grained adaptive gradient adjustment driven by neuron importance.

FG-AdaHAT (Wang et al., CLArena ``FGAdaHAT``) keeps HAT's masks and AdaHAT's soft
adjustment but replaces AdaHAT's summative mask by a learnt per-unit importance. The rate
is :class:`~avalanche_fgadahat.adjustment.FGAdaHATRule`; the importance is accumulated by
:class:`~avalanche_fgadahat.importance.accumulator.ImportanceAccumulator`; the settings are
:class:`~avalanche_fgadahat.config.FGAdaHATConfig`'s. Callback → work, besides HAT's:

* ``before_training_exp``: zero the task's importance accumulators; the training forward
  records activations when the importance type needs them;
* ``after_update`` (CLArena's ``on_train_batch_end``): add the step's importance (normalisation and
  accumulation in one compiled kernel with ``fused_step=True``);
* end of the experience (after the mask is stored): finalise ``I^t`` and the summed importance.
"""

from __future__ import annotations

from typing import Any

from ..config import FGAdaHATConfig
from ..importance.accumulator import ImportanceAccumulator
from ..importance.registry import ImportanceType, StepContext
from ..models.base import HATBackbone
from .checks import unwrap_hat_model
from .hat import HATPlugin


def _accumulator(config: FGAdaHATConfig) -> ImportanceAccumulator:
    return ImportanceAccumulator(
        config.importance_type, config.importance_summing_strategy, config.summing_parameter,
        config.base_importance, config.filter_unmasked_importance, config.step_multiply_training_mask,
    )


class FGAdaHATPlugin(HATPlugin):
    """FG-AdaHAT on any Avalanche ``SupervisedTemplate`` (see module doc).

    Built from an :class:`~avalanche_fgadahat.config.FGAdaHATConfig` or its settings as
    keywords (CLArena's names, the defaults of its HEAD paper configs except
    ``importance_type``: ICU here), documented there. The adjustment mode is fixed (``fgadahat``).
    """

    config_class = FGAdaHATConfig

    def __init__(self, config: FGAdaHATConfig | None = None, **settings: Any) -> None:
        super().__init__(config, **settings)
        self.accumulator = _accumulator(self.config)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """HAT's migration of an earlier version's state, plus the importance accumulator."""
        super().__setstate__(state)
        if "accumulator" not in self.__dict__:
            self.accumulator = _accumulator(self.config)

    @property
    def importance(self) -> ImportanceType:
        """The registered importance type (looked up, so the plugin pickles by name)."""
        return self.accumulator.importance

    def _records_activations(self) -> bool:
        """Whether the importance type reads the training forward's activations."""
        return self.importance.needs_activations

    def before_training_exp(self, strategy, **kwargs) -> None:
        """HAT's start of experience, then zero the task's importance accumulators."""
        super().before_training_exp(strategy, **kwargs)
        self.accumulator.reset_(unwrap_hat_model(strategy.model))

    def after_update(self, strategy, **kwargs) -> None:
        """Accumulate the step's min-max-normalised importance (times the training mask by
        default) into ``importance_step_sum`` (FG-AdaHAT Sec. 3)."""
        super().after_update(strategy, **kwargs)
        model = unwrap_hat_model(strategy.model)
        step = model.training_step
        self.accumulator.accumulate_(
            model,
            StepContext(
                model=model,
                task=self.task,
                inputs=strategy.mb_x,
                targets=strategy.mb_y,
                masks=model.split_units(step.mask_flat.detach()),
                activations={k: a.detach() for k, a in step.activations.items()},
                gate_scale=self.gate_scale,
                attribution_settings=self.config.attribution_settings,
                subnormal_guards=step.subnormal_guards,
            ),
            fused=self.config.fused_step,
        )

    def _finish_experience(self, strategy, model: HATBackbone) -> None:
        """Finalise ``I^t`` and the summed importance (after the task's mask is stored)."""
        self.accumulator.finalize_(model, self.task)
