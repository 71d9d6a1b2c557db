"""Roll a model back to the start of a training experience after an error.

A HAT-family run must not be left half-way through an experience by an error (a NaN loss,
a bad mini-batch, an interrupt): the free weights and the current head would hold a
partial, unusable update, and the task's embedding a half-trained mask. The plugin takes a
:class:`ModelSnapshot` at the start of every training experience (after Avalanche's model
adaptation, before the task embeddings are re-initialised) and restores it on error, so
the experience can simply be trained again once the cause is fixed.

Cost: one copy of every parameter and buffer, kept in host memory (so the accelerator's
peak memory is untouched), taken once per experience.
"""

from __future__ import annotations

from itertools import chain

import torch
from torch import nn


class ModelSnapshot:
    """Copies of every parameter and buffer of ``model``, restorable in place."""

    def __init__(self, model: nn.Module) -> None:
        named = chain(model.named_parameters(), model.named_buffers())
        self._tensors = {name: tensor.detach().to("cpu", copy=True) for name, tensor in named}

    def names(self) -> list[str]:
        """The parameter and buffer names copied."""
        return list(self._tensors)

    @torch.no_grad()
    def restore_(self, model: nn.Module) -> None:
        """Write the copies back (in place, so the optimizer keeps its parameter objects).

        Entries created after the snapshot are left alone; a buffer whose shape changed is
        replaced by its copy.
        """
        for name, tensor in chain(model.named_parameters(), model.named_buffers()):
            saved = self._tensors.get(name)
            if saved is None:
                continue
            if tensor.shape == saved.shape:
                tensor.copy_(saved)
                continue
            owner_name, _, leaf = name.rpartition(".")
            owner = model.get_submodule(owner_name)
            if leaf in owner._buffers:
                owner._buffers[leaf] = saved.to(tensor.device, copy=True)
            else:
                tensor.data = saved.to(tensor.device, copy=True)
