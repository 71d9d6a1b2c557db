"""The one rate engine: broadcast a rule's measure once per experience, apply it every step.

At the start of an experience :meth:`RateEngine.prepare` broadcasts the rule's per-unit
measure to every masked-layer parameter (weights, existing biases; ``masking.broadcast``),
folds in the rule's per-parameter factors, and evaluates the rates once when the rule does
not depend on the step. Every training step :meth:`RateEngine.adjust_` multiplies the
gradients by the rates in place: constant rates in one ``torch._foreach_mul_`` (a first-layer
weight's, the same along its inputs, kept per output unit and multiplied broadcast); AdaHAT's and
FG-AdaHAT's soft rate, where ``P`` is a ``min``/``max`` of two per-unit vectors, from those
vectors on the CPU (``adjustment/separable.py``: the same bits, no read of the stored ``P``; on a
GPU the list form launches fewer kernels); other
per-step rules with a list form a group of parameters at a time (a group's temporaries never
exceed the largest parameter); the rest one parameter at a time. The caller hands in
gradients already flushed below ``masking.subnormals.GRADIENT_FLOOR``; unless every rate is 0
or 1 (``AdjustmentRule.binary_rates``) the adjusted gradients are flushed again, so the
optimizer never sees a gradient below it (``docs/deviations.md`` H16).

:meth:`RateEngine.capacity` is AdaHAT's network capacity (Wang et al. 2024, Sec. 4.3): the
mean rate over every masked-layer parameter (under ``hat``, the fraction still free).
"""

from __future__ import annotations

import torch

from ..masking.broadcast import broadcast
from ..masking.subnormals import flush_gradients_
from ..models.base import HATBackbone
from .base import AdjustmentRule, StepSignals
from .separable import SeparableMeasure, divide_by_soft_rates_, same_bits, separable_measures, usable_coefficients

#: ``(parameter, per-parameter measure P, output unit group)``
Entry = tuple[torch.nn.Parameter, torch.Tensor, str]
#: ``(parameters, rates or P, k or None)``: :meth:`RateEngine.fused_operands`
FusedOperands = tuple[list[torch.nn.Parameter], list[torch.Tensor], list[torch.Tensor] | None]


def groups_up_to_largest(sizes: list[int]) -> list[list[int]]:
    """Consecutive index groups whose total size stays within the largest single size."""
    limit, groups, total = max(sizes, default=0), [], 0
    for index, size in enumerate(sizes):
        if not groups or total + size > limit:
            groups.append([])
            total = 0
        groups[-1].append(index)
        total += size
    return groups


def compact_rate(rate: torch.Tensor) -> torch.Tensor:
    """``rate`` as ``(out, 1, …)`` when it is the same along every dim but the first (a first-layer
    weight's: ``P = M_l[i]`` over its inputs), checked bit for bit; else ``rate`` itself. The step
    multiplies by it broadcast (the same products) and reads no parameter-sized rate tensor."""
    if rate.dim() < 2:
        return rate
    first = rate[(slice(None),) + (slice(0, 1),) * (rate.dim() - 1)]
    return first.clone() if same_bits(first.expand_as(rate), rate) else rate


def mean_rate(rates: list[torch.Tensor]) -> float:
    """Mean over every element of ``rates`` (one host synchronisation); 1.0 if empty."""
    count = sum(r.numel() for r in rates)
    if count == 0:
        return 1.0
    total = torch.stack([r.sum(dtype=torch.float32) for r in rates]).sum()
    return float(total) / count


class RateEngine:
    """Applies one :class:`~.base.AdjustmentRule` to a model's masked-layer gradients.

    :param rule: the rule (it carries its own parameters).

    State (one experience): ``entries`` (:data:`Entry` per parameter, weights then bias per
    layout), ``constant_rates`` (rules that do not read the step, else ``None``; a first-layer
    weight's kept as ``(out, 1, …)``, :func:`compact_rate`), ``separable``
    (entry index → per-unit vectors of its ``P``, for a soft rate with a list form; the step
    divides those entries' gradients from the vectors), ``groups`` (the other entries).
    """

    #: the list :meth:`non_embedding_parameters` keeps (a class default: engines pickled before it existed)
    _other_parameters: list[torch.nn.Parameter] | None = None
    #: class default for engines pickled before it existed (they are prepared again before a step)
    separable: dict[int, SeparableMeasure] = {}

    def __init__(self, rule: AdjustmentRule) -> None:
        self.rule = rule
        self.entries: list[Entry] = []
        self.constant_rates: list[torch.Tensor] | None = None
        self.groups: list[list[int]] = []
        self.separable: dict[int, SeparableMeasure] = {}
        self.constant_capacity: float | None = None
        self.step_capacity: float | None = None
        self._other_parameters: list[torch.nn.Parameter] | None = None

    def prepare(self, model: HATBackbone) -> None:
        """Start of an experience: broadcast the measure once; evaluate constant rates once."""
        rule = self.rule
        self.entries, self.constant_rates, self.groups, self.separable = [], None, [], {}
        self.constant_capacity = self.step_capacity = None
        self._other_parameters = None
        rule.prepare(model)
        if rule.measure is None:
            self.constant_capacity = 1.0
            return
        unit = rule.unit_measure(model)
        for layout in model.param_layouts:
            weight_measure, bias_measure = broadcast(layout, unit, rule.aggregation)
            self.entries.append((layout.weight, weight_measure.contiguous(), layout.out_key))
            if bias_measure is not None:
                self.entries.append((layout.bias, bias_measure, layout.out_key))
        factors = rule.parameter_factors(model)
        if factors is not None:
            if len(factors) != len(self.entries):
                raise RuntimeError("the rule's parameter factors do not match the broadcast parameter entries")
            self.entries = [(param, (measure * factor).contiguous(), key)
                            for (param, measure, key), factor in zip(self.entries, factors)]
        if (rule.per_step and rule.has_list_form and type(rule).soft_coefficients is not AdjustmentRule.soft_coefficients
                and all(param.device.type == "cpu" for param, _, _ in self.entries)):
            # on the CPU the per-vector form saves memory passes; on a GPU the list form's
            # ``torch._foreach_*`` kernels (three launches per group) beat its launches per parameter
            self.separable = separable_measures(model.param_layouts, unit, rule.aggregation,
                                                [m for _, m, _ in self.entries], factors)
        general = [i for i in range(len(self.entries)) if i not in self.separable]
        self.groups = [[general[i] for i in group]
                       for group in groups_up_to_largest([self.entries[i][1].numel() for i in general])]
        if not rule.per_step:
            signals = StepSignals()
            rates = [rule.rate(m, k, signals) for _, m, k in self.entries]
            self.constant_capacity = mean_rate(rates)
            self.constant_rates = [compact_rate(rate) for rate in rates]

    def frozen_rates(self) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
        """``(parameter, constant rate)`` pairs (empty for per-step rules)."""
        if self.constant_rates is None:
            return []
        return [(param, rate) for (param, _, _), rate in zip(self.entries, self.constant_rates)]

    def non_embedding_parameters(self, model: HATBackbone) -> list[torch.nn.Parameter]:
        """Every parameter of ``model`` but its task embeddings: the gradients the step flushes.
        Listed on the first call after :meth:`prepare` or :meth:`relist_parameters` (the first
        step of an experience and of each epoch, after every plugin's start-of-experience and
        start-of-epoch work, e.g. a new head) and kept until then: walking the module tree every
        step cost as much as the flush itself on the benchmark MLP. A parameter added in the middle
        of an epoch is flushed from the next epoch on."""
        if self._other_parameters is None:
            embedding = model.task_embeddings
            self._other_parameters = [p for p in model.parameters() if p is not embedding]
        return self._other_parameters

    def relist_parameters(self) -> None:
        """List the flushed parameters anew on the next call (HAT plugin: at each epoch's start)."""
        self._other_parameters = None

    def new_step(self) -> None:
        """A new training step began: forget the last step's capacity."""
        self.step_capacity = None

    def adjust_(self, signals: StepSignals, guards: bool = True) -> None:
        """Multiply every masked-layer gradient by its rate, in place; then, for rates other
        than 0 and 1, flush the results below ``GRADIENT_FLOOR`` (module doc), unless
        ``guards=False`` (``subnormal_guards`` off for the model's device, H16a)."""
        self._apply_rates(signals)
        if guards and self.entries and not self.rule.binary_rates:
            flush_gradients_(param for param, _, _ in self.entries)

    def _apply_rates(self, signals: StepSignals) -> None:
        if self.constant_rates is not None:
            grads, rates = [], []
            for (param, _, _), rate in zip(self.entries, self.constant_rates):
                if param.grad is None:
                    continue
                if rate.shape == param.grad.shape:
                    grads.append(param.grad)
                    rates.append(rate)
                else:  # a compact rate (``compact_rate``), broadcast
                    param.grad.mul_(rate)
            if grads:
                torch._foreach_mul_(grads, rates)
            return
        rule = self.rule
        if self.separable:
            live = [i for i in self.separable if self.entries[i][0].grad is not None]
            grads, keys = [self.entries[i][0].grad for i in live], [self.entries[i][2] for i in live]
            coefficients = rule.soft_coefficients(keys, signals)
            if coefficients is None or not usable_coefficients(coefficients):  # the list form on the stored P
                rule.adjust_(grads, [self.entries[i][1] for i in live], keys, signals)
            else:
                divide_by_soft_rates_(grads, [self.separable[i] for i in live], coefficients, rule.aggregation)
        if not rule.has_list_form:
            for param, measure, key in self.entries:
                if param.grad is not None:
                    param.grad.mul_(rule.rate(measure, key, signals))
            return
        for group in self.groups:
            live = [self.entries[i] for i in group if self.entries[i][0].grad is not None]
            if live:
                rule.adjust_([p.grad for p, _, _ in live], [m for _, m, _ in live], [k for _, _, k in live], signals)

    def fused_operands(self, signals: StepSignals) -> FusedOperands | None:
        """The rate's operands for the fused step (``adjustment/gradient_step.py``), over the
        entries whose parameter has a gradient: ``(parameters, rates, None)`` for constant rates
        (``grad × rate``; no parameters when the rule has no measure), ``(parameters, P, k)`` for a
        rule whose list form is ``grad / (1 + P·k)`` (:meth:`~.base.AdjustmentRule.soft_coefficients`);
        ``None`` for the other per-step rules (``hat_random``, ``adahat_no_sum``): :meth:`adjust_`
        applies those eagerly."""
        live = [index for index, (param, _, _) in enumerate(self.entries) if param.grad is not None]
        params = [self.entries[i][0] for i in live]
        if self.constant_rates is not None or not self.entries:
            return params, [self.constant_rates[i] for i in live], None
        coefficients = self.rule.soft_coefficients([self.entries[i][2] for i in live], signals)
        if coefficients is None:
            return None
        return params, [self.entries[i][1] for i in live], coefficients

    def capacity(self, signals: StepSignals) -> float:
        """Mean rate over every masked-layer parameter; per-step rules use the last step's
        signals, computed once per step (``hat_random``: one fresh draw). 1.0 before the
        first experience."""
        if self.constant_capacity is not None:
            return self.constant_capacity
        if not self.entries:
            return 1.0
        if self.step_capacity is None:
            rule = self.rule
            with torch.no_grad():
                rates = [torch.as_tensor(rule.rate(m, k, signals)).expand_as(m) for _, m, k in self.entries]
            self.step_capacity = mean_rate(rates)
        return self.step_capacity
