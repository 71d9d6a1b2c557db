"""Checks a HAT-family plugin runs before it trains, each raising an error that names the
cause and the fix (``docs/bad_input.md`` lists every one with its test).

* :func:`unwrap_hat_model`: the strategy's model is a masked backbone, not wrapped in a
  module that hides the task labels (``DataParallel``);
* :func:`find_hat_plugin` / :func:`find_hat_plugins`: exactly one HAT-family plugin;
* :func:`experience_task`: the training experience has exactly one task label;
* :func:`check_optimizer`: the optimizer trains this model without weight decay on masked
  weights;
* :func:`check_no_task_mixing`: no strategy or plugin that mixes other tasks' samples into
  training or replaces the model (:data:`TASK_MIXING`), refused before anything trains;
* :func:`check_single_task_data` and :func:`mixed_batch_message`: the training data holds
  only the experience's task (the fallback for mixers this package does not know).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from ..models.base import HATBackbone
from ..models.conversion import refuse_wrapper

if TYPE_CHECKING:  # pragma: no cover
    from .hat import HATPlugin

MASKED_MODEL_NAMES = "HATMLP, HATAlexNet, HATResNet18 (or a HATBackbone subclass)"


def unwrap_hat_model(model: Any) -> HATBackbone:
    """Return ``model`` if it is a :class:`HATBackbone`; ``TypeError`` otherwise.

    A wrapper such as ``torch.nn.DataParallel`` (``.module``) or ``torch.compile``'s
    ``OptimizedModule`` (``._orig_mod``) is refused with its reason: Avalanche's training
    and evaluation loops (``avalanche_forward``) pass task labels only to a
    ``MultiTaskModule``, so a wrapped backbone would be called without them and could not
    pick its masks.
    """
    if isinstance(model, HATBackbone):
        return model
    refuse_wrapper(model)
    raise TypeError(
        f"model is a {type(model).__name__}, which has no HAT masks; HAT-family "
        f"strategies need a masked backbone: {MASKED_MODEL_NAMES}"
    )


class HATFamilyPlugin:
    """Marker base of the HAT-family plugins (``HATPlugin`` and its subclasses): the checks
    recognise them by it, so this module does not import the plugins (no import cycle)."""


def find_hat_plugins(plugins: Iterable[Any]) -> list["HATPlugin"]:
    """The HAT-family plugins (:class:`HATPlugin` and subclasses) in ``plugins``, in order."""
    return [plugin for plugin in plugins if isinstance(plugin, HATFamilyPlugin)]


def find_hat_plugin(strategy: Any, what: str = "strategy.plugins") -> "HATPlugin":
    """The one HAT-family plugin of ``strategy``; ``ValueError`` naming the count otherwise."""
    found = find_hat_plugins(getattr(strategy, "plugins", []))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ValueError(
            f"{what} holds no HATPlugin: use the HAT/AdaHAT/FGAdaHAT strategies or add one "
            "HATPlugin/AdaHATPlugin/FGAdaHATPlugin to the strategy's plugins"
        )
    raise ValueError(two_plugins_message(found, where=what))


def two_plugins_message(found: list[Any], where: str = "strategy.plugins") -> str:
    """The error text for several HAT-family plugins found in ``where``."""
    names = ", ".join(type(p).__name__ for p in found)
    return (
        f"{where} holds {len(found)} HAT-family plugins ({names}); use exactly one: each "
        "stores its own mask of every task in the same model. HAT/AdaHAT/FGAdaHAT already hold "
        "their plugin (e.g. AdaHAT(...) instead of HAT(..., plugins=[AdaHATPlugin()])), or use a "
        "plain template such as Naive(..., plugins=[AdaHATPlugin()])"
    )


def experience_task(experience: Any) -> int:
    """The one task label of a training experience; ``ValueError`` otherwise."""
    labels = getattr(experience, "task_labels", None)
    if labels is None:
        raise ValueError(
            "the training experience has no task labels; HAT-family strategies need them "
            "to pick masks: build the benchmark with return_task_id=True (classic Avalanche "
            "generators) or give the datasets TaskLabels"
        )
    labels = list(labels)
    if len(labels) != 1:
        raise ValueError(
            f"the training experience holds task labels {sorted(labels)}; HAT trains one "
            "task per experience: split the stream so that each experience has one task label"
        )
    return int(labels[0])


def check_optimizer(optimizer: torch.optim.Optimizer, strategy_model: torch.nn.Module,
                    model: HATBackbone, require_all: bool = True) -> None:
    """Refuse an optimizer that cannot train ``model`` as HAT needs.

    * it holds no parameter of the model at all (it was built from another model);
    * it has ``weight_decay`` on a masked-layer parameter (decay moves frozen weights);
    * ``require_all``: it lacks a masked-layer parameter (checked after Avalanche's
      ``make_optimizer``, which adds the model's new parameters).

    Parameters that are no longer the model's are tolerated, as Avalanche's own
    ``make_optimizer`` does: an evaluation grows a head by replacing its ``nn.Linear``, and
    the old weight stays in the optimizer without ever getting a gradient.
    """
    model_params = {id(p) for p in strategy_model.parameters()}
    masked = {id(layout.weight) for layout in model.param_layouts}
    masked |= {id(layout.bias) for layout in model.param_layouts if layout.bias is not None}
    in_optimizer = set()
    for group in optimizer.param_groups:
        for param in group["params"]:
            in_optimizer.add(id(param))
            if id(param) in masked and group.get("weight_decay", 0.0):
                raise ValueError(
                    f"optimizer has weight_decay={group['weight_decay']} on masked-layer "
                    "parameters; weight decay moves weights that HAT freezes for earlier "
                    "tasks. Use weight_decay=0 (decay only the heads in a separate param group)"
                )
    if in_optimizer and not in_optimizer & model_params:
        raise ValueError(
            "optimizer holds only parameters that are not the model's (it was built from "
            "another model): build the optimizer from this model's parameters (model.parameters())"
        )
    missing = masked - in_optimizer
    if missing and require_all:
        raise ValueError(
            f"optimizer does not hold {len(missing)} masked-layer parameters of the model: "
            "build the optimizer from model.parameters()"
        )


#: Avalanche strategies and plugins that cannot train with a HAT-family plugin, by class
#: name (subclasses included) → why. HAT trains one task at a time on the experience's own
#: data with the model it built; these mix other tasks' samples into training, run the model
#: on them in training mode, or replace the model.
TASK_MIXING: dict[str, str] = {
    "Cumulative": "concatenates the earlier experiences' data into each new one",
    "JointTraining": "trains on all experiences at once",
    "FromScratchTraining": "re-initialises the model at every experience (the stored masks would be lost)",
    "FromScratchTrainingPlugin": "re-initialises the model at every experience (the stored masks would be lost)",
    "MER": "replays a memory buffer inside meta-updates",
    "GSS_greedy": "replays a memory buffer (and calls the model without task labels)",
    "GSS_greedyPlugin": "replays a memory buffer (and calls the model without task labels)",
    "CoPEPlugin": "replaces the classifier and the loss, and replays a memory buffer",
    "DER": "replays a memory buffer (and calls the model without task labels)",
    "ER_ACE": "replays a memory buffer",
    "ER_AML": "replays a memory buffer",
    "SCR": "replays a memory buffer",
    "ICaRL": "replays exemplars of earlier classes",
    "FeatureReplay": "replays stored features",
    "LaMAML": "replays a memory buffer",
    "ReplayPlugin": "adds a memory buffer of earlier tasks' samples to every mini-batch",
    "GDumbPlugin": "replaces the model at every experience and trains it on its memory buffer",
    "AGEMPlugin": "runs the model on a memory of earlier tasks' samples in training mode",
    "GEMPlugin": "runs the model on a memory of earlier tasks' samples in training mode",
    "MIRPlugin": "replays memory samples chosen by their loss increase",
    "RARPlugin": "replays a memory buffer with adversarial augmentation",
    "BiCPlugin": "replays a memory buffer and adds a bias-correction layer",
    "GenerativeReplayPlugin": "adds generated samples of earlier tasks to the mini-batches",
}


def _known_mixer(obj: Any) -> str | None:
    for cls in type(obj).__mro__:
        if cls.__name__ in TASK_MIXING:
            return f"{type(obj).__name__} ({TASK_MIXING[cls.__name__]})"
    if hasattr(obj, "storage_policy"):
        return f"{type(obj).__name__} (holds a replay memory, storage_policy)"
    return None


def check_no_task_mixing(strategy: Any) -> None:
    """Refuse, before anything trains, a strategy or plugin listed in :data:`TASK_MIXING` (or
    holding a replay ``storage_policy``) next to a HAT-family plugin; ``ValueError`` naming it."""

    found = [_known_mixer(strategy)]
    found += [_known_mixer(p) for p in getattr(strategy, "plugins", []) if not isinstance(p, HATFamilyPlugin)]
    found = [f for f in found if f is not None]
    if found:
        raise ValueError(
            f"HAT-family plugins cannot train with {'; '.join(found)}. HAT trains one task at a time "
            "on the experience's own data and keeps the old tasks with its stored masks: use "
            "HAT/AdaHAT/FGAdaHAT, or a plain template such as Naive with the HAT-family plugin, "
            "without replay (docs/bad_input.md)"
        )


def _mixing_sources(strategy: Any) -> list[str]:
    """What in ``strategy`` may add other tasks' samples to its training data: the known
    mixers (:func:`_known_mixer`), plugins named like replay, a replay data loader."""

    sources = [type(strategy).__name__] if _known_mixer(strategy) else []
    for plugin in getattr(strategy, "plugins", []):
        name = type(plugin).__name__
        if not isinstance(plugin, HATFamilyPlugin) and (_known_mixer(plugin) or "replay" in name.lower()):
            sources.append(name)
    loader = type(getattr(strategy, "dataloader", None)).__name__
    if "replay" in loader.lower():
        sources.append(f"its data loader ({loader})")
    return sources


def _cause(strategy: Any) -> str:
    sources = _mixing_sources(strategy)
    named = f" here: {', '.join(sources)}" if sources else ""
    return (
        "the strategy or a plugin mixes other tasks' samples into training (Cumulative and "
        "JointTraining concatenate experiences, replay plugins add a memory buffer)"
        f"{named}. HAT keeps old tasks with its stored masks and trains one task at a time on "
        "the experience's own data: use HAT/AdaHAT/FGAdaHAT or a plain template such as Naive "
        "with the HAT-family plugin, without replay"
    )


def check_single_task_data(strategy: Any, task: int) -> None:
    """Refuse adapted training data holding task labels other than ``task``."""
    dataset = getattr(strategy, "adapted_dataset", None)
    labels = getattr(dataset, "targets_task_labels", None)
    if labels is None:
        return
    found = sorted(int(t) for t in getattr(labels, "uniques", set(labels)))
    if found and found != [task]:
        raise ValueError(
            f"the training data of task {task}'s experience holds task labels {found}: {_cause(strategy)}"
        )


def mixed_batch_message(strategy: Any, task: int, found: list[int], iteration: int) -> str:
    """The error of a training mini-batch holding other tasks than ``task``."""
    return (
        f"task_labels of a training mini-batch must all equal the task being trained ({task}); "
        f"found {found} at iteration {iteration}: {_cause(strategy)}"
    )


def is_finite_loss(loss: torch.Tensor) -> bool:
    """Whether every element of ``loss`` is finite (one host read for a one-element loss: Avalanche's
    ``strategy.loss`` is a ``(1,)`` tensor, a criterion's a 0-d one)."""
    if loss.numel() == 1:
        return math.isfinite(loss.item())
    return bool(torch.isfinite(loss).all())
