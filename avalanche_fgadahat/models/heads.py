"""Loading a saved :class:`~.base.HATBackbone` state dict into a freshly built model.

Avalanche creates the heads of a model during *model adaptation* (one
``IncrementalClassifier`` per task label in a ``MultiHeadClassifier``, grown to the
classes seen), so a freshly built model has only head ``"0"`` with 2 outputs, and
``load_state_dict`` would fail on unexpected/missing keys. Before the state dict is
copied in, :func:`restore_heads_` re-creates every saved head with its saved shape
(weights, the heads' ``active_units`` buffers) and re-derives Avalanche's plain-attribute
bookkeeping, which a state dict does not hold:

* ``known_train_tasks_labels`` (model and ``MultiHeadClassifier``): the task labels whose
  ``active_units_T<t>`` mask has a unit set (Avalanche sets them only when adapting to a
  *training* experience) plus the tasks with a stored HAT mask;
* ``max_class_label``: the widest head (the ``MultiHeadClassifier`` keeps its floor of
  ``initial_out_features``). It only sizes the zero-padded output of a mini-batch holding
  several task labels; with tasks of one class it may be larger than Avalanche's value.

:func:`check_state_dict_fits` compares shapes *before* anything is copied, so a state dict
of another model shape is refused with a ``ValueError`` and leaves the model untouched
(PyTorch's own loader copies the matching entries before reporting the others).

Head creation runs under ``torch.random.fork_rng``: loading does not move the global RNG.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from avalanche.models import IncrementalClassifier, MultiHeadClassifier
from torch import nn

_MAX_REPORTED = 5


def _resize_incremental_(
    head: IncrementalClassifier, out_features: int, active_units: torch.Tensor | None, device: torch.device
) -> None:
    """Give ``head`` ``out_features`` outputs and an ``active_units`` buffer of the saved size."""
    linear = head.classifier
    if linear.out_features != out_features:
        head.classifier = nn.Linear(linear.in_features, out_features).to(
            device=device, dtype=linear.weight.dtype
        )
    if active_units is not None and head.active_units.shape != active_units.shape:
        head.active_units = torch.zeros(active_units.shape, dtype=active_units.dtype, device=device)


@torch.no_grad()
def restore_heads_(model, state_dict: Mapping[str, torch.Tensor], prefix: str) -> None:
    """Create/resize the heads of ``model`` to the shapes saved in ``state_dict`` (see module doc)."""
    head = model.classifier
    device = model.task_embeddings.device
    cls = prefix + "classifier."
    saved_positions = state_dict.get(prefix + "task_positions")
    trained = set()
    if saved_positions is not None:
        trained = {t for t, p in enumerate(saved_positions.tolist()) if p > 0}
    with torch.random.fork_rng(devices=[]):
        if isinstance(head, MultiHeadClassifier):
            pattern = re.compile(re.escape(cls) + r"classifiers\.([^.]+)\.classifier\.weight$")
            saved_heads = {}
            for key, weight in state_dict.items():
                match = pattern.match(key)
                if match is not None:
                    saved_heads[match.group(1)] = weight.shape[0]
            if not saved_heads:
                return
            known = set(trained)
            for tid, out_features in saved_heads.items():
                if tid not in head.classifiers:
                    head.classifiers[tid] = IncrementalClassifier(
                        head.in_features, out_features, masking=False, auto_adapt=False
                    ).to(device)
                _resize_incremental_(
                    head.classifiers[tid], out_features, state_dict.get(f"{cls}classifiers.{tid}.active_units"), device
                )
                units = state_dict.get(f"{cls}active_units_T{tid}")
                if units is not None:
                    name = f"active_units_T{tid}"
                    if name not in head._buffers or head._buffers[name].shape != units.shape:
                        head.register_buffer(name, torch.zeros(units.shape, dtype=units.dtype, device=device))
                    if bool(units.any()):
                        known.add(int(tid))
            widest = max(saved_heads.values())
            head.known_train_tasks_labels = set(known)
            head.max_class_label = max(head.starting_out_features, widest)
            model.known_train_tasks_labels = set(known)
            model.max_class_label = widest
        elif isinstance(head, IncrementalClassifier):
            weight = state_dict.get(cls + "classifier.weight")
            if weight is None:
                return
            _resize_incremental_(head, weight.shape[0], state_dict.get(cls + "active_units"), device)
            model.known_train_tasks_labels = set(trained)
            model.max_class_label = weight.shape[0]


def restore_per_task_modules_(model: nn.Module, state_dict: Mapping[str, torch.Tensor], prefix: str) -> None:
    """Create the per-task copies (per-task BatchNorm) a saved state dict holds and a freshly
    built model lacks: every submodule with ``ensure_tasks_`` gets the task labels of its saved
    ``<name>.norms.<task>.*`` entries, on the device of the model's task embeddings."""
    for name, module in model.named_modules():
        if not hasattr(module, "ensure_tasks_"):
            continue
        head = f"{prefix}{name}.norms."
        tasks = {key[len(head):].split(".", 1)[0] for key in state_dict if key.startswith(head)}
        module.ensure_tasks_(sorted(tasks, key=int), model.task_embeddings.device)


def check_state_dict_fits(model, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise ``ValueError`` naming every entry whose shape cannot fit ``model``.

    Shapes that legitimately differ are skipped: the heads' widths (re-created by
    :func:`restore_heads_`), the task dimension of the task-indexed HAT buffers and
    ``task_positions``. The heads' input width and the unit count of every HAT buffer
    must match.
    """
    own = model.state_dict()
    problems: list[str] = []
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            continue
        saved = tuple(value.shape)
        if key.startswith("classifier."):
            if key.endswith("classifier.weight") and value.dim() == 2 and saved[1] != model.feature_size:
                problems.append(f"{key} takes {saved[1]} features, here {model.feature_size}")
            continue
        if key.startswith("task_statistics."):
            if key.endswith("means") and value.dim() == 3 and saved[2] != model.feature_size:
                problems.append(f"{key} holds {saved[2]} features, here {model.feature_size}")
            continue
        if key == "task_positions" or key not in own:
            continue
        mine = tuple(own[key].shape)
        if key.startswith("unit_state."):
            if saved[-1:] != mine[-1:]:
                problems.append(f"{key} has {saved[-1]} units, here {mine[-1]}")
        elif saved != mine:
            problems.append(f"{key} is {saved}, here {mine}")
    if problems:
        more = f" (and {len(problems) - _MAX_REPORTED} more)" if len(problems) > _MAX_REPORTED else ""
        raise ValueError(
            f"the state dict does not fit this {type(model).__name__}: "
            + "; ".join(problems[:_MAX_REPORTED])
            + more
            + ". It was saved from a model built with other sizes: build the model with the "
            "sizes it was saved with (same input size, hidden sizes / channels), or load the "
            "file that belongs to this model. Nothing was loaded."
        )
