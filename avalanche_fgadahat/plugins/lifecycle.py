"""The experience lifecycle of a HAT-family plugin: its explicit phase, and where its
end-of-``train()`` warnings point.

A plugin is ``IDLE`` between experiences, ``TRAINING`` from ``before_training_exp`` until
the task's mask is stored, then ``FINISHING`` until Avalanche's clock has counted the
experience (``after_training``, or the next ``before_training_exp``). Checkpoints are
consistent only in ``IDLE`` and ``ROLLED_BACK`` (``checkpoint.py``); an error while
``TRAINING`` rolls the experience back (``rollback.py``) to ``ROLLED_BACK``.
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path


def user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside Avalanche and this
    package (the user's ``strategy.train(...)`` line), counted from the caller of ``warn``."""
    ours = (str(Path(__file__).resolve().parents[1]), str(Path(sys.modules["avalanche"].__file__).resolve().parent))
    frame, level = sys._getframe(2), 2
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(ours):
        frame, level = frame.f_back, level + 1
    return level


class ExperiencePhase(enum.Enum):
    """Where a HAT-family plugin is in the training of an experience.

    ``IDLE`` → (``before_training_exp``) ``TRAINING`` → (``after_training_exp``: mask stored)
    ``FINISHING`` → (``after_training`` or the next ``before_training_exp``) ``IDLE``;
    an error while ``TRAINING`` rolls the experience back: ``ROLLED_BACK`` (the model is as
    at the start of that experience, the task not stored; the next ``train()`` call starts
    again from ``IDLE``). A checkpoint is consistent in ``IDLE`` and ``ROLLED_BACK``: in
    ``FINISHING`` the task is stored but Avalanche's clock (the last plugin) has not yet
    counted the experience.
    """

    IDLE = "idle"
    TRAINING = "training"
    FINISHING = "finishing"
    ROLLED_BACK = "rolled_back"

    @property
    def consistent(self) -> bool:
        """Whether a checkpoint taken now is consistent (no experience half-done)."""
        return self in (ExperiencePhase.IDLE, ExperiencePhase.ROLLED_BACK)
