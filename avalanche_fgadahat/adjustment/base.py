"""The adjustment-rule interface and the per-step signals a rule reads.

Every HAT-family method multiplies the gradient of each masked-layer parameter by a rate
``a ∈ [0, 1]`` computed from a per-parameter measure ``P``: the broadcast
(``masking.broadcast``, neuron→parameter ``Agg(M_l[i], M_{l−1}[j])``) of a per-unit measure
— HAT's cumulative mask ``M``, AdaHAT's summative mask ``S``, FG-AdaHAT's summed importance
``I^{<t}``. An :class:`AdjustmentRule` carries its own parameters (``α``, ``ε``, …), names the
per-unit measure it needs, and computes the rate; :class:`~.engine.RateEngine` broadcasts the
measure once per experience and applies the rule every step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..models.base import HATBackbone


class StepSignals:
    """What a per-step rule reads of the current training step: the per-layer mask sparsity
    ``R_l`` (HAT Eq. 5's per-layer term, AdaHAT Eq. 7), computed on the first read.

    :param regularizer: the experience's :class:`~avalanche_fgadahat.masking.regularizer.MaskSparsityRegularizer`.
    :param flat_mask: the step's flat soft mask ``σ(s·e)`` (all unit groups, detached).
    :param layer_sparsity: ``{layer: R_l}`` given directly (tests, hand computations); then
        ``regularizer`` and ``flat_mask`` are not needed.

    Before the first step of the first experience ``layer_sparsity`` is empty.
    """

    def __init__(self, regularizer: Any = None, flat_mask: torch.Tensor | None = None,
                 layer_sparsity: Mapping[str, torch.Tensor] | None = None) -> None:
        self._regularizer = regularizer
        self._flat_mask = flat_mask
        self._layer_sparsity = None if layer_sparsity is None else dict(layer_sparsity)
        self._memo: dict[Any, Any] = {}

    @property
    def layer_sparsity(self) -> dict[str, torch.Tensor]:
        """``{layer: R_l}`` (0-d tensors): one matrix-vector product on the first read, so
        HAT's own rules, which never read it, do not pay for it."""
        if self._layer_sparsity is None:
            keys, vector = self.sparsity_vector()
            self._layer_sparsity = dict(zip(keys, vector.unbind())) if keys else {}
        return self._layer_sparsity

    def sparsity_vector(self) -> tuple[list[str], torch.Tensor | None]:
        """``(layers, R)``: the same ``R_l`` as one vector ``(layers,)`` in the layers' order
        (``None`` when there is none), for rules that compute with every layer's value at once
        (one op instead of one per layer). Computed once per step."""
        return self.memo(StepSignals.sparsity_vector, self._sparsity_vector)

    def _sparsity_vector(self) -> tuple[list[str], torch.Tensor | None]:
        if self._layer_sparsity is not None:
            keys = list(self._layer_sparsity)
            return keys, torch.stack([self._layer_sparsity[k] for k in keys]) if keys else None
        if self._flat_mask is None:
            return [], None
        return list(self._regularizer.keys), self._regularizer.sparsity(self._flat_mask)

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per step for ``key`` (e.g. a rule's per-layer values)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


#: per-unit measure name → ``{unit group: tensor (units,)}`` read from the model's buffers
UNIT_MEASURES: dict[str, Callable[[HATBackbone], dict[str, torch.Tensor]]] = {
    "cumulative": lambda model: model.cumulative_masks(),  # M^{<t} (HAT)
    "summative": lambda model: model.summative_masks(),  # S^{<t} (AdaHAT)
    "importance": lambda model: {k: s.summed_importance for k, s in model.unit_state.items()},  # I^{<t}
}


class AdjustmentRule:
    """How one adjustment mode turns ``P`` into rates (subclasses set the class attributes).

    * ``measure``: the per-unit measure broadcast into ``P`` (``cumulative``, ``summative``,
      ``importance``), or ``None``: rate 1 everywhere, nothing is done;
    * ``aggregation``: the neuron→parameter aggregation (``min``, ``max``, ``mean``);
    * ``per_step``: the rate reads the step (``R_l``, fresh noise); otherwise it is computed
      once per experience;
    * ``binary_rates``: every rate is exactly 0 or 1 (``hat``), so an adjusted gradient is
      never smaller than the gradient was; otherwise the engine flushes the adjusted
      gradients below ``masking.subnormals.GRADIENT_FLOOR`` (``docs/deviations.md`` H16).

    :meth:`adjust_` is the list form of the rate, applied in the training step by
    ``torch._foreach_*`` ops; it must give the same numbers as multiplying by :meth:`rate`
    (tests check it). Rules that do not override it are applied one parameter at a time.
    """

    measure: str | None = "cumulative"
    aggregation: str = "min"
    per_step: bool = False
    has_list_form: bool = False
    binary_rates: bool = False

    def prepare(self, model: HATBackbone) -> None:
        """Per-experience work before the measure is broadcast (e.g. the task's position)."""

    def unit_measure(self, model: HATBackbone) -> dict[str, torch.Tensor]:
        """``{unit group: per-unit measure}`` named by ``measure`` (:data:`UNIT_MEASURES`)."""
        return UNIT_MEASURES[self.measure](model)

    def parameter_factors(self, model: HATBackbone) -> list[torch.Tensor] | None:
        """Per-parameter factors folded into ``P`` once per experience (in the engine's
        entry order), or ``None``."""
        return None

    def rate(self, measure: torch.Tensor, key: str, signals: StepSignals) -> torch.Tensor:
        """The rates of one parameter (its ``P``; ``key``: its output unit group)."""
        raise NotImplementedError

    def adjust_(self, grads: list[torch.Tensor], measures: list[torch.Tensor], keys: list[str],
                signals: StepSignals) -> None:
        """Multiply ``grads`` by their rates in place (list form; see class doc)."""
        raise NotImplementedError

    def soft_coefficients(self, keys: list[str], signals: StepSignals) -> list[torch.Tensor] | None:
        """When the list form is ``grad ← grad / (1 + P·k)``: the ``k`` of each parameter (0-d
        tensors; ``keys``: their output unit groups), which the fused step
        (``adjustment/gradient_step.py``) applies in one compiled kernel. ``None`` (default):
        the rate has no such form, and the fused step applies it eagerly."""
        return None
