"""The package's own networks as builders on the conversion: :class:`BuiltHATModel`.

``HATMLP``, ``HATAlexNet`` and ``HATResNet18`` each write their plain network (``torch.nn``
layers and a forward without any mask) and hand it to :func:`~.conversion.masked_body_of`,
the same rewrite :func:`~.conversion.to_hat` applies to a user's model; HAT's gates,
recordings, per-task BatchNorms and layouts come from there, not from hand-written code.
Their outputs and gradients are bit-identical to the hand-written networks they replace
(``tests/test_builders.py``), and a model of the earlier classes loads:

* a state dict with the layers named without ``body.`` (``fc.0.weight``) loads into a new
  model (:meth:`~.converted.ConvertedHATModel.load_state_dict`);
* a pickled model (an Avalanche checkpoint) is rebuilt around its own layer objects when
  unpickled, so the optimizer pickled with it still holds the model's parameters.
"""

from __future__ import annotations

from torch import nn

from .conversion import masked_body_of
from .converted import ConvertedHATModel


class BuiltHATModel(ConvertedHATModel):
    """Base of the package's networks: a plain network converted (see module doc).

    Subclasses set :attr:`NETWORK` (the plain network's class), :attr:`LEGACY_LAYERS` (the
    attributes that held its layers on the hand-written class) and :meth:`unit_names`.

    :param network: the plain network, ``forward(x) → (B, feature_size)``.
    :param feature_size: the width of the network's output (the head's input).
    :param multihead: Avalanche's ``MultiHeadClassifier`` (one head per task) or one shared
        ``IncrementalClassifier``; created after the task embeddings.
    """

    NETWORK: type[nn.Module] = nn.Module
    LEGACY_LAYERS: tuple[str, ...] = ()
    #: fold the mask of a conv gated right after it into its kernel in training (``gates.masked_conv``)
    FOLD_CONV_MASKS = True

    def __init__(self, network: nn.Module, feature_size: int, *, multihead: bool) -> None:
        masked = masked_body_of(network, unit_names=self.unit_names(network), fold_conv_masks=self.FOLD_CONV_MASKS)
        super().__init__(masked.body, masked.layouts, masked.unit_sizes, head=None, feature_size=feature_size,
                         multihead=multihead, source=type(self).__name__)

    @classmethod
    def unit_names(cls, network: nn.Module) -> dict[str, str]:
        """``{masked layer of the plain network: unit group name}`` (default names otherwise)."""
        return {}

    def __setstate__(self, state: dict) -> None:
        """Unpickle; a model of the hand-written class (its layers are direct children, there is
        no ``body``) gets the body built around its own layer objects."""
        modules = state.get("_modules", {})
        if "body" in modules or not self.LEGACY_LAYERS:
            super().__setstate__(state)
            return
        network = self.NETWORK.__new__(self.NETWORK)
        nn.Module.__init__(network)
        for name in self.LEGACY_LAYERS:
            setattr(network, name, modules.pop(name) if name in modules else state.pop(name, None))
        super().__setstate__(state)
        masked = masked_body_of(network, unit_names=self.unit_names(network), fold_conv_masks=self.FOLD_CONV_MASKS)
        self._modules = {"body": masked.body, **self._modules}  # the layers first, as a new model has them
        self._set_layouts(masked.layouts)
        self.source = type(self).__name__
