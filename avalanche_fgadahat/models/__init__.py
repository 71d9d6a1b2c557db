"""HAT-masked backbones: Avalanche ``MultiTaskModule`` s with one HAT mask per unit group."""

from .alexnet import HATAlexNet
from .base import TASK_EMBEDDING_INITIALIZERS, HATBackbone, MixedTaskBatchError, UntrainedTaskWarning
from .conversion import ConversionError, to_hat
from .converted import ConvertedHATModel
from .export import export_task
from .mlp import HATMLP
from .resnet import HATResNet18, PerTaskBatchNorm2d

__all__ = [
    "ConversionError",
    "ConvertedHATModel",
    "export_task",
    "to_hat",
    "HATAlexNet",
    "HATBackbone",
    "HATMLP",
    "HATResNet18",
    "PerTaskBatchNorm2d",
    "TASK_EMBEDDING_INITIALIZERS",
    "UntrainedTaskWarning",
]
