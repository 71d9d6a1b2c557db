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

**The pickling repair, applied where checkpoints are written and read.** On this torch,
``torch/optim/__init__.py`` deletes its submodule attributes (``del sgd, adam, ...``), so
dill cannot find ``torch.optim.sgd.SGD`` by reference, pickles the class by value, reaches
an unpicklable ``typing_extensions`` sentinel and Avalanche's ``save_checkpoint`` fails
for every strategy. :func:`save_checkpoint` and :func:`maybe_load_checkpoint` re-attach
the imported submodules to ``torch.optim`` for the duration of the call only and remove
them again afterwards, so ``torch.optim`` and dill are left exactly as they were; importing
this package changes neither. To call Avalanche's own ``save_checkpoint`` /
``maybe_load_checkpoint`` instead, call :func:`prepare_checkpointing` once first: that
repair is global and stays for the rest of the process (it sets back the attributes
``torch.optim`` held before its ``__init__`` deleted them; nothing else). We do not set
``dill.settings["byref"] = True``, not even for the duration of a call: that switch makes
dill pickle classes of the user's ``__main__`` (e.g. a custom plugin defined in the
training script) by reference, which cannot be loaded from another script.

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

import contextlib
import copy
import importlib
import os
import sys
import threading
import warnings
from collections.abc import Collection, Iterator
from typing import Any, TypeVar

from avalanche import checkpointing as _avalanche
from avalanche.training.determinism.rng_manager import RNGManager

from .models.heads import check_state_dict_fits
from .plugins.checks import find_hat_plugin, unwrap_hat_model
from .plugins.hat import ExperiencePhase, HATPlugin

S = TypeVar("S")


_repair_lock = threading.Lock()
_repair_users = 0  # save/load calls in progress (any thread) that rely on the repair
_repair_attached: list[str] = []  # leaves attached by those calls, removed by the last one
_prepared = False  # prepare_checkpointing() was called: the repair is permanent


def _attach_torch_optim_submodules() -> list[str]:
    """Set ``torch.optim.<leaf>`` for every imported ``torch.optim.<leaf>`` module missing it."""
    optim = importlib.import_module("torch.optim")
    attached = []
    for name, module in list(sys.modules.items()):
        parent, _, leaf = name.rpartition(".")
        if parent == "torch.optim" and module is not None and not hasattr(optim, leaf):
            setattr(optim, leaf, module)
            attached.append(leaf)
    return attached


@contextlib.contextmanager
def _torch_optim_repaired() -> Iterator[None]:
    """The pickling repair (module doc) for the duration of a ``with`` block.

    On exit, the attributes the block attached are removed again (unless
    :func:`prepare_checkpointing` made the repair permanent meanwhile, or another thread's
    save/load still runs: the last one out removes them), so ``torch.optim`` is left as it
    was found. An attribute rebound to another object during the block is left alone.
    """
    global _repair_users
    with _repair_lock:
        _repair_attached.extend(_attach_torch_optim_submodules())  # empty when already repaired
        _repair_users += 1
    try:
        yield
    finally:
        with _repair_lock:
            _repair_users -= 1
            if _repair_users == 0:
                if not _prepared:
                    optim = sys.modules["torch.optim"]
                    for leaf in _repair_attached:
                        if getattr(optim, leaf, None) is sys.modules.get(f"torch.optim.{leaf}"):
                            delattr(optim, leaf)
                _repair_attached.clear()


def prepare_checkpointing() -> list[str]:
    """Make Avalanche's own ``save_checkpoint`` / ``maybe_load_checkpoint`` work on this torch.

    **Global and permanent:** re-attaches every imported ``torch.optim.<submodule>`` to
    ``torch.optim`` for the rest of the process (module doc); ``dill.settings`` are not
    touched. Not needed with this module's :func:`save_checkpoint` /
    :func:`maybe_load_checkpoint`, which apply the repair for the duration of the call only.
    Idempotent; returns the ``torch.optim.<name>`` modules re-attached by this call (empty
    when nothing was missing).
    """
    global _prepared
    with _repair_lock:
        _prepared = True
        attached = _attach_torch_optim_submodules()
    return [f"torch.optim.{leaf}" for leaf in attached]


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
    """Avalanche's ``save_checkpoint``, written atomically; call it between experiences.

    Applies the pickling repair for the duration of the call only (module doc).
    """
    problem = _not_between_experiences(_hat_plugin(strategy, "the strategy"))
    if problem is not None:
        raise ValueError(
            f"save_checkpoint was called {problem}; a checkpoint must hold whole "
            "tasks: call it after strategy.train(experience) has returned (or from an "
            "after_training callback)"
        )
    fname = os.fspath(fname)
    temporary = f"{fname}.tmp-{os.getpid()}"
    try:
        with _torch_optim_repaired():
            _avalanche.save_checkpoint(strategy, temporary, exclude=exclude)
        os.replace(temporary, fname)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _check_compatible(strategy: Any, loaded: Any, fname: str) -> None:
    """Raise ``ValueError`` if the checkpoint's algorithm or model differs from ``strategy``'s; warn
    if its settings do (:func:`_warn_on_other_settings`)."""
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
    # a plain network (Naive + a HAT plugin, not converted before its first train()): compare its conversion
    model = unwrap_hat_model(mine.hat_network(strategy.model))
    saved = unwrap_hat_model(loaded.model)
    if type(model) is not type(saved):
        raise ValueError(
            f"checkpoint {fname!r} holds a {type(saved).__name__}, this strategy's model is a "
            f"{type(model).__name__}: build the model the run was started with"
        )
    try:
        check_state_dict_fits(model, saved.state_dict())
    except ValueError as err:
        raise ValueError(f"checkpoint {fname!r} comes from a model of another shape: {err}") from None
    _warn_on_other_settings(mine.config, theirs.config, fname)


class CheckpointSettingsWarning(UserWarning):
    """A resumed strategy keeps the checkpoint's HAT-family settings where the strategy passed to
    :func:`maybe_load_checkpoint` was built with others."""


def _warn_on_other_settings(mine: Any, theirs: Any, fname: str) -> None:
    """Warn (:class:`CheckpointSettingsWarning`) naming every setting of the strategy's HAT-family
    config ``mine`` that differs from the checkpoint's ``theirs`` (one config class: checked before);
    the checkpoint's plugin, with its settings, replaces the strategy's."""
    changed = {name: (value, getattr(mine, name)) for name, value in theirs.settings().items()
               if getattr(mine, name) != value}
    if changed:
        listed = ", ".join(f"{name}={saved!r} (this strategy: {given!r})" for name, (saved, given) in changed.items())
        warnings.warn(f"resuming {fname!r} keeps the checkpoint's settings: {listed}; the run continues as it "
                      "was started (to change them, start a new run)", CheckpointSettingsWarning, stacklevel=4)


def maybe_load_checkpoint(
    strategy: S,
    fname: str | os.PathLike,
    map_location: Any = None,
    unique_objects: Any = None,
) -> tuple[S, int]:
    """Avalanche's ``maybe_load_checkpoint`` after compatibility checks (see module doc).

    Applies the pickling repair for the duration of the call only, as :func:`save_checkpoint`.

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
            with _torch_optim_repaired():
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
    "prepare_checkpointing",
    "save_checkpoint",
    "train_resumable",
]
