"""The masked-backbone base class shared by every HAT-family model.

A :class:`HATBackbone` is an Avalanche ``MultiTaskModule``. It owns

* one task embedding per unit group (``task_embedding[key]``, views of the single flat
  parameter ``task_embeddings``, so the gate, its compensation and the regulariser run as
  a few vectorised ops over all layers at once; one set, re-initialised for
  every new task and thrown away once its binary mask is stored — HAT Sec. 2.1);
* the HAT-family buffers of each unit group (:class:`~.state.UnitGroupState`);
* ``importance_steps``: FG-AdaHAT's count of the steps summed into each group's
  ``importance_step_sum`` during the current task (a scalar buffer);
* the ordered :class:`~avalanche_fgadahat.masking.ParamLayout` list of its masked
  weight-bearing layers, which the neuron→parameter broadcast needs;
* a head: Avalanche's ``MultiHeadClassifier`` (task-incremental, default) or one shared
  ``IncrementalClassifier`` (domain-incremental, ``multihead=False``). Heads are not masked.

Which mask a forward pass uses (:meth:`HATBackbone.masks_for_task`):

* the task being trained (an open :class:`~.training_step.TrainingStep`), in train mode
  with the step's gate scale set by the plugin: the soft mask ``σ(s·e)`` (the forward
  writes it into the step, for the regulariser);
* the task being trained, otherwise (e.g. a periodic eval): ``1[e > 0]``;
* a trained task: its stored binary mask (``task_positions[t]`` = 1-based training
  position of task label t, 0 if untrained);
* a task never trained: the union of the stored masks (all ones before the first task
  is stored), with a one-time warning. Avalanche evaluates the whole test stream after
  each experience, future tasks included; this keeps that loop running and gives a
  well-defined, documented number. It is *not* chance level in general: the task's head
  is Avalanche's untrained ``IncrementalClassifier``, grown during that evaluation to the
  task's largest class id with fresh random rows and every output unit active, so the
  predictions are arbitrary classes and the accuracy can be anything from 0 up (e.g. 0.0
  when a task's class ids do not start at 0 and the random head prefers a lower id).

The package's networks and the user's converted ones are :class:`~.converted.ConvertedHATModel`
(built by the conversion, :mod:`.conversion`). A hand-written subclass builds its layers, calls
:meth:`_finish_init` with their layouts, and implements :meth:`forward_features`, calling
:meth:`_gate` on every masked pre-activation and :meth:`_record` on every masked activation.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import torch
from avalanche.models import IncrementalClassifier, MultiHeadClassifier, MultiTaskModule
from torch import nn

from .._validation import check_choice
from ..masking.gate import binary_mask, soft_mask
from ..masking.layout import ParamLayout
from .gates import apply_gate
from .layer_checks import check_supported_layers
from .heads import check_state_dict_fits, restore_heads_, restore_per_task_modules_
from .state import UnitGroupState
from .task_embeddings import TASK_EMBEDDING_INITIALIZERS, MixedTaskBatchError, UntrainedTaskWarning
from .training_step import TrainingStep
from ..task_inference.feature_statistics import task_statistics_of
from ..task_inference.model_mode import TaskInferenceMixin

__all__ = ["HATBackbone", "MixedTaskBatchError", "TASK_EMBEDDING_INITIALIZERS", "UntrainedTaskWarning"]


class HATBackbone(TaskInferenceMixin, MultiTaskModule):
    """Base of the masked backbones (see module doc; task inference: :class:`~avalanche_fgadahat.
    task_inference.model_mode.TaskInferenceMixin`)."""

    def __init__(self, *, multihead: bool = True) -> None:
        super().__init__()
        self.multihead = bool(multihead)
        #: the open training step (``None`` between experiences): the only per-step state
        self.training_step: TrainingStep | None = None
        self._warned_untrained: set[int] = set()

    # ------------------------------------------------------------------ construction
    def _finish_init(
        self, layouts: Sequence[ParamLayout], feature_size: int, unit_sizes: Mapping[str, int],
        head: nn.Module | None = None,
    ) -> None:
        """Register embeddings, buffers and head (``head``, or Avalanche's multi-head / incremental
        classifier of ``feature_size`` inputs); check that every layer is supported."""
        self.unit_sizes = dict(unit_sizes)
        self._set_layouts(layouts)
        self.feature_size = feature_size
        self.unit_keys = list(self.unit_sizes)
        self.task_embeddings = nn.Parameter(torch.randn(sum(self.unit_sizes.values())))
        self.unit_state = nn.ModuleDict({k: UnitGroupState(n) for k, n in self.unit_sizes.items()})
        self.register_buffer("task_positions", torch.zeros(0, dtype=torch.long))
        # FG-AdaHAT: optimizer steps accumulated into ``importance_step_sum`` this task.
        self.register_buffer("importance_steps", torch.zeros((), dtype=torch.long))
        if head is not None:
            self.classifier = head
        elif self.multihead:
            self.classifier = MultiHeadClassifier(feature_size)
        else:
            self.classifier = IncrementalClassifier(feature_size)
        self._check_supported_layers()

    def _set_layouts(self, layouts: Sequence[ParamLayout]) -> None:
        """Hold ``layouts`` and what is derived from them: ``gate_extra_dims``, ``{unit group: trailing
        (spatial) dims of its layers' outputs}`` (0 ``nn.Linear``, 1 ``nn.Conv1d``, 2 ``nn.Conv2d``; the
        gate needs no shape test, so ``torch.fx`` traces it)."""
        self.param_layouts = list(layouts)
        self.gate_extra_dims = {layout.out_key: layout.weight.dim() - 2 for layout in self.param_layouts}

    def _check_supported_layers(self) -> None:
        """``TypeError`` naming a parameter-bearing layer no mask covers (``layer_checks.py``)."""
        check_supported_layers(self)

    # ------------------------------------------------------------------ training steps
    def begin_training(self, task: int, *, record_activations: bool = False) -> TrainingStep:
        """Open the :class:`~.training_step.TrainingStep` of ``task`` (start of its experience)."""
        self.training_step = TrainingStep(task=int(task), record_activations=bool(record_activations))
        return self.training_step

    def end_training(self) -> None:
        """Close the training step (end of the experience, or its rollback)."""
        self.training_step = None

    @property
    def current_train_task(self) -> int | None:
        """The task label being trained, ``None`` between experiences."""
        return None if self.training_step is None else self.training_step.task

    # ------------------------------------------------------------------ task bookkeeping
    def trained_tasks(self) -> list[int]:
        """Task labels whose binary masks are stored, in the order they were trained."""
        positions = self.task_positions.tolist()
        trained = [task for task, position in enumerate(positions) if position > 0]
        return sorted(trained, key=lambda task: positions[task])

    def is_trained(self, task: int) -> bool:
        """Whether ``task`` (a task label) has a stored mask."""
        positions = self.task_positions
        return 0 <= task < positions.shape[0] and bool(positions[task] > 0)

    @property
    def task_embedding(self) -> dict[str, torch.Tensor]:
        """``{unit group: e_l}``: views of the flat ``task_embeddings`` parameter."""
        return self.split_units(self.task_embeddings)

    def split_units(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat per-unit vector (all unit groups, in order) into ``{key: view}``."""
        return dict(zip(self.unit_keys, flat.split(list(self.unit_sizes.values()))))

    def initialize_task_embeddings(self, mode: str = "N01") -> None:
        """Re-initialise the embeddings for a new task (CLArena's ``task_embedding_init_mode``).

        The values are drawn on the CPU's global generator and copied to the model's device
        (as ``nn.Linear`` weights are drawn at construction), so a seed gives the same
        embeddings on every device; on the CPU the draw is the one ``nn.init`` makes in place.
        """
        init = TASK_EMBEDDING_INITIALIZERS[
            check_choice("task_embedding_init_mode", mode, TASK_EMBEDDING_INITIALIZERS)
        ]
        if init is None:
            return
        values = torch.empty(self.task_embeddings.shape, dtype=self.task_embeddings.dtype)
        init(values)
        with torch.no_grad():
            self.task_embeddings.copy_(values)

    def cumulative_masks(self) -> dict[str, torch.Tensor]:
        """``M^{<t}``: the union of the stored masks, per unit group."""
        return {k: s.cumulative for k, s in self.unit_state.items()}

    def summative_masks(self) -> dict[str, torch.Tensor]:
        """``S^{<t}``: how many stored tasks use each unit, per unit group."""
        return {k: s.summative for k, s in self.unit_state.items()}

    def stored_masks(self, task: int) -> dict[str, torch.Tensor]:
        """``{unit group: m^t}``: the stored binary mask of ``task``, shape ``(units,)`` each;
        ``KeyError`` naming the trained tasks if it has none."""
        if not self.is_trained(task):
            raise KeyError(f"task {task} has no stored mask; trained tasks: {self.trained_tasks()}")
        return {k: s.task_masks[task] for k, s in self.unit_state.items()}

    @torch.no_grad()
    def commit_task(self, task: int) -> dict[str, torch.Tensor]:
        """Store ``1[e > 0]`` as the mask of ``task``; update ``M`` (max) and ``S`` (sum)."""
        if self.is_trained(task):
            raise ValueError(f"task {task} already has a stored mask")
        if self.task_positions.shape[0] <= task:
            positions = self.task_positions.new_zeros(task + 1)
            positions[: self.task_positions.shape[0]] = self.task_positions
            self.task_positions = positions
        position = int((self.task_positions > 0).sum()) + 1
        masks = {}
        current = self.split_units(binary_mask(self.task_embeddings))
        for key, state in self.unit_state.items():
            mask = current[key]
            state.grow_(task + 1)
            state.task_masks[task] = mask
            torch.maximum(state.cumulative, mask, out=state.cumulative)
            state.summative.add_(mask)
            masks[key] = mask
        self.task_positions[task] = position
        return masks

    def __setstate__(self, state: dict) -> None:
        """Load a model pickled before the per-step state became one object (an Avalanche
        checkpoint of an earlier version, saved between experiences)."""
        for old in ("gate_scale", "current_train_task", "record_activations", "last_masks",
                    "last_mask_flat", "last_activations"):
            state.pop(old, None)
        state.setdefault("training_step", None)
        super().__setstate__(state)
        if "gate_extra_dims" not in self.__dict__:
            self._set_layouts(self.param_layouts)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """PyTorch's ``load_state_dict`` after a shape check that changes nothing on failure.

        Works on a freshly built model: the saved heads are re-created (``models/heads.py``).
        """
        check_state_dict_fits(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "task_positions")
        if saved is not None:
            self.task_positions = torch.zeros_like(saved)
        restore_heads_(self, state_dict, prefix)
        restore_per_task_modules_(self, state_dict, prefix)
        if any(k.startswith(prefix + "task_statistics.") for k in state_dict):
            task_statistics_of(self, create=True)  # the saved mahalanobis statistics (sized by their loader)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ forward
    def masks_for_task(self, task: int) -> dict[str, torch.Tensor]:
        """The per-unit-group masks a forward pass of ``task`` uses (see module doc); no side effect."""
        step = self.training_step
        if step is not None and task == step.task:
            if self.training and step.gate_scale is not None:
                return self.split_units(soft_mask(self.task_embeddings, step.gate_scale, step.subnormal_guards))
            return self.split_units(binary_mask(self.task_embeddings))
        if self.is_trained(task):
            return self.stored_masks(task)
        if task not in self._warned_untrained:
            self._warned_untrained.add(task)
            warnings.warn(
                f"task {task} was never trained by HAT: it is evaluated with the union of the "
                "masks of the trained tasks (all units before any task is trained) and its "
                "untrained head",
                UntrainedTaskWarning,
                stacklevel=3,
            )
        if bool((self.task_positions > 0).any()):
            return self.cumulative_masks()
        return {k: torch.ones_like(s.cumulative) for k, s in self.unit_state.items()}

    def _gate(self, key: str, pre_activation: torch.Tensor, masks: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Multiply a pre-activation by its unit group's mask (broadcast over conv maps;
        :func:`~.gates.apply_gate`), for subclasses that write their forward by hand."""
        return apply_gate(pre_activation, masks, key, self.gate_extra_dims[key])

    def _record(self, key: str, activation: torch.Tensor) -> None:
        """Record a masked layer's activation into the open training step, when it asks."""
        step = self.training_step
        if step is not None and step.record_activations and self.training:
            step.activations[key] = activation

    def forward_features(self, x: torch.Tensor, masks: Mapping[str, torch.Tensor], task: int) -> torch.Tensor:
        """The masked body: ``x`` (batch first) → features ``(B, feature_size)``, every masked
        pre-activation multiplied by ``masks[key]`` (via :meth:`_gate`). Subclasses implement it."""
        raise NotImplementedError

    def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
        """Logits ``(B, classes of the task's head)`` of one task: its masks
        (:meth:`masks_for_task`), the body, then its head (or the shared head)."""
        task = int(task_label)
        step = self.training_step
        if self.training and step is not None and task == step.task and step.gate_scale is not None:
            flat = soft_mask(self.task_embeddings, step.gate_scale, step.subnormal_guards)
            masks = self.split_units(flat)
            step.masks, step.mask_flat = masks, flat
        else:
            masks = self.masks_for_task(task)
        features = self.forward_features(x, masks, task)
        if self.multihead:
            return self.classifier(features, task)
        return self.classifier(features)

    def forward(self, x: torch.Tensor, task_labels) -> torch.Tensor:
        """Logits for a mini-batch (Avalanche's ``MultiTaskModule`` contract).

        :param x: inputs, batch first.
        :param task_labels: an ``int`` (one task), a ``(B,)`` tensor (per sample; outputs
            zero-padded to the widest head of the batch), or ``None`` (a dict of every
            known task's logits).
        :raises ValueError: a training mini-batch holding another task than the one trained.

        With task inference (:meth:`set_task_inference`) the labels are not read: training runs
        the task being trained; evaluation infers each sample's task (``(B, classes seen)``).
        """
        if task_labels is None:
            return self.forward_all_tasks(x)
        if self.task_inference is not None:
            return self._forward_inferred(x)
        if isinstance(task_labels, torch.Tensor) and task_labels.dim() == 0:
            task_labels = int(task_labels)
        if isinstance(task_labels, int):
            return self.forward_single_task(x, task_labels)
        if self.training and self.training_step is not None:
            task = self.training_step.task
            if bool((task_labels != task).any()):
                raise MixedTaskBatchError(task, sorted(set(task_labels.tolist())))
            return self.forward_single_task(x, task)
        return self._forward_mixed_tasks(x, task_labels)

    def _forward_mixed_tasks(self, x: torch.Tensor, task_labels: torch.Tensor) -> torch.Tensor:
        """Each sample through its task's masks and head; logits zero-padded on the right to
        the widest head among the batch's tasks (at least Avalanche's ``max_class_label``).

        Avalanche's ``MultiTaskModule.forward`` pads to ``max_class_label`` only, which a
        model that was never adapted (or a head grown at evaluation) can exceed.
        """
        tasks = torch.unique(task_labels)
        if tasks.numel() == 0:
            return x.new_zeros(x.shape[0], self.max_class_label)
        outputs = []
        for task in tasks.tolist():
            selected = task_labels == task
            outputs.append((selected, self.forward_single_task(x[selected], int(task))))
        width = max([self.max_class_label] + [out.shape[1] for _, out in outputs])
        first = outputs[0][1]
        result = first.new_zeros(x.shape[0], width)
        for selected, out in outputs:
            result[selected, : out.shape[1]] = out
        return result
