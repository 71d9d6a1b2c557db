"""Checkpoint and resume HAT-family strategies with Avalanche's own checkpointing.

Avalanche 0.6 (``avalanche.checkpointing``) pickles the whole strategy with dill: model
(with every HAT-family buffer), optimizer, plugins, evaluator (with its metric history),
clock, and the state of the global RNGs. Resuming in a new process is::

    strategy = HAT(model=HATMLP(...), optimizer=..., ...)          # same configuration
    strategy, start = maybe_load_checkpoint(strategy, "run.ckpt")  # (strategy, 0) if no file
    for experience in benchmark.train_stream[start:]:
        strategy.train(experience)
        strategy.eval(benchmark.test_stream)
        save_checkpoint(strategy, "run.ckpt")

(:func:`train_resumable` is that loop.) After loading, ``strategy.model``,
``strategy.optimizer`` and ``strategy.plugins`` are the checkpoint's objects: re-fetch
them from the strategy (``strategy.hat_plugin``), never use variables held from before.

**The pickling fix.** On this torch, ``torch/optim/__init__.py`` deletes its submodule
attributes (``del sgd, adam, ...``), so dill cannot find ``torch.optim.sgd.SGD`` by
reference, pickles the class by value, reaches an unpicklable ``typing_extensions``
sentinel and Avalanche's ``save_checkpoint`` fails for every strategy. Importing
``avalanche_fgadahat`` re-attaches those submodules to ``torch.optim``
(:func:`repair_torch_optim_references`), restoring the normal package layout; Avalanche's
own functions then work unchanged. We do not set ``dill.settings["byref"] = True``: that
global switch also makes dill pickle classes of the user's ``__main__`` (e.g. a custom
plugin defined in the training script) by reference, which cannot be loaded from another
script.

**The wrappers** below have Avalanche's signatures and add:

* :func:`save_checkpoint` writes to a temporary file and renames it (a crash while saving
  keeps the previous checkpoint), and refuses to save while an experience is being
  trained (Avalanche's rule; the checkpoint would hold a half-trained task).
* :func:`maybe_load_checkpoint` checks the file before touching the strategy: it must be
  an Avalanche checkpoint, saved by the same HAT-family algorithm, with a model of the
  same class and shape. Otherwise it raises ``ValueError`` naming the mismatch, and the
  strategy and the global RNGs are left as they were.
"""

from __future__ import annotations

import copy
import importlib
import os
import sys
from collections.abc import Collection
from typing import Any, TypeVar

from avalanche import checkpointing as _avalanche
from avalanche.training.determinism.rng_manager import RNGManager

from .models.heads import check_state_dict_fits
from .plugins.checks import find_hat_plugin, unwrap_hat_model
from .plugins.hat import ExperiencePhase, HATPlugin

S = TypeVar("S")


def repair_torch_optim_references() -> list[str]:
    """Re-attach imported ``torch.optim.<submodule>`` modules to ``torch.optim``.

    Returns the names re-attached (empty when nothing was missing). Idempotent.
    """
    optim = importlib.import_module("torch.optim")
    repaired = []
    for name, module in list(sys.modules.items()):
        parent, _, leaf = name.rpartition(".")
        if parent == "torch.optim" and module is not None and not hasattr(optim, leaf):
            setattr(optim, leaf, module)
            repaired.append(name)
    return repaired


repair_torch_optim_references()


def _hat_plugin(strategy: Any, what: str) -> HATPlugin:
    try:
        return find_hat_plugin(strategy, what)
    except ValueError as err:
        raise ValueError(f"{err}; the checkpoint helpers need exactly one") from None


_PHASE_PROBLEMS = {
    ExperiencePhase.TRAINING: (
        "while an experience is being trained (from a callback, or after an error inside "
        "strategy.train)"
    ),
    ExperiencePhase.FINISHING: (
        "from an after_training_exp callback (or after an error raised in one): the task's mask "
        "is stored but Avalanche's clock (the last plugin) has not counted the experience yet, "
        "so a resume would start at the experience just trained"
    ),
}


def _not_between_experiences(plugin: HATPlugin) -> str | None:
    """Why a checkpoint of ``plugin`` now would not hold whole tasks, or ``None``."""
    return _PHASE_PROBLEMS.get(plugin.phase)


def save_checkpoint(strategy: Any, fname: str | os.PathLike, exclude: Collection[str] | None = None) -> None:
    """Avalanche's ``save_checkpoint``, written atomically; call it between experiences."""
    problem = _not_between_experiences(_hat_plugin(strategy, "the strategy"))
    if problem is not None:
        raise ValueError(
            f"save_checkpoint was called {problem}; a checkpoint must hold whole "
            "tasks: call it after strategy.train(experience) has returned (or from an "
            "after_training callback)"
        )
    repair_torch_optim_references()
    fname = os.fspath(fname)
    temporary = f"{fname}.tmp-{os.getpid()}"
    try:
        _avalanche.save_checkpoint(strategy, temporary, exclude=exclude)
        os.replace(temporary, fname)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _check_compatible(strategy: Any, loaded: Any, fname: str) -> None:
    """Raise ``ValueError`` if the checkpoint's algorithm or model differs from ``strategy``'s."""
    mine = _hat_plugin(strategy, "the strategy")
    theirs = _hat_plugin(loaded, f"the checkpoint {fname!r}")
    problem = _not_between_experiences(theirs)
    if problem is not None:
        raise ValueError(
            f"checkpoint {fname!r} is inconsistent: it was written {problem}, not "
            "between experiences (e.g. by Avalanche's own save_checkpoint). Resuming it would "
            "retrain or skip a task: delete it and resume from an earlier checkpoint, or start "
            "afresh"
        )
    if type(mine) is not type(theirs):
        raise ValueError(
            f"checkpoint {fname!r} was saved by a strategy using {type(theirs).__name__}, this "
            f"strategy uses {type(mine).__name__}: resume with the algorithm the run was "
            "started with, or use another checkpoint path"
        )
    model, saved = unwrap_hat_model(strategy.model), unwrap_hat_model(loaded.model)
    if type(model) is not type(saved):
        raise ValueError(
            f"checkpoint {fname!r} holds a {type(saved).__name__}, this strategy's model is a "
            f"{type(model).__name__}: build the model the run was started with"
        )
    try:
        check_state_dict_fits(model, saved.state_dict())
    except ValueError as err:
        raise ValueError(f"checkpoint {fname!r} comes from a model of another shape: {err}") from None


def maybe_load_checkpoint(
    strategy: S,
    fname: str | os.PathLike,
    map_location: Any = None,
    unique_objects: Any = None,
) -> tuple[S, int]:
    """Avalanche's ``maybe_load_checkpoint`` after compatibility checks (see module doc).

    :return: ``(strategy, index of the next training experience)``; ``(strategy, 0)`` when
        ``fname`` does not exist.
    """
    fname = os.fspath(fname)
    if not os.path.exists(fname):
        return strategy, 0
    _hat_plugin(strategy, "the strategy")
    rng_state = RNGManager.__getstate__()
    probe = copy.copy(strategy)
    try:
        try:
            probe, next_experience = _avalanche.maybe_load_checkpoint(
                probe, fname, map_location=map_location, unique_objects=unique_objects
            )
        except Exception as err:
            raise ValueError(
                f"{fname!r} is not a checkpoint written by save_checkpoint "
                f"({type(err).__name__}: {err}); delete it to start afresh, or pass the right path"
            ) from err
        _check_compatible(strategy, probe, fname)
    except BaseException:
        RNGManager.__setstate__(rng_state)
        raise
    strategy.__dict__.update(probe.__dict__)
    return strategy, next_experience


def train_resumable(
    strategy: S,
    train_stream: Any,
    fname: str | os.PathLike,
    *,
    eval_stream: Any = None,
    map_location: Any = None,
    **train_kwargs: Any,
) -> S:
    """Resume from ``fname`` if it exists, then train the rest of ``train_stream``.

    After every experience: ``strategy.eval(eval_stream)`` (when given; its results stay
    in the evaluator, which the checkpoint carries), then :func:`save_checkpoint`.
    Returns the (possibly re-loaded) strategy.
    """
    strategy, start = maybe_load_checkpoint(strategy, fname, map_location=map_location)
    for experience in train_stream[start:]:
        strategy.train(experience, **train_kwargs)
        if eval_stream is not None:
            strategy.eval(eval_stream)
        save_checkpoint(strategy, fname)
    return strategy


__all__ = [
    "maybe_load_checkpoint",
    "repair_torch_optim_references",
    "save_checkpoint",
    "train_resumable",
]
