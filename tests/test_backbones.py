"""Every backbone passes the conformance checks of ``backbone_conformance.py``: one
subclass per backbone (a new backbone, e.g. one converted from torchvision or Avalanche,
adds its own). The conv backbones read Split Digits as 8×8 images."""

from __future__ import annotations

import pytest
from backbone_conformance import BackboneConformance
from hat_test_support import DIGITS_IMAGE, OPTIMIZERS, digits_alexnet, digits_resnet

from avalanche_fgadahat.models import HATMLP

pytestmark = pytest.mark.filterwarnings("ignore:No loggers specified")


class TestHATMLP(BackboneConformance):
    input_shape = (64,)
    frozen_optimizers = tuple(sorted(OPTIMIZERS))  # no optimizer's state may move a frozen weight

    def build(self):
        return HATMLP(64, (32, 32))


class TestHATAlexNet(BackboneConformance):
    input_shape = DIGITS_IMAGE

    def build(self):
        return digits_alexnet()


class TestHATResNet18(BackboneConformance):
    input_shape = DIGITS_IMAGE

    def build(self):
        return digits_resnet()


class TestHATResNet18PerTaskBatchNorm(BackboneConformance):
    input_shape = DIGITS_IMAGE
    buffers_moved_by_training = ("norms.1.running_mean",)  # task 1's own BatchNorm statistics

    def build(self):
        return digits_resnet(batch_norm="per_task")

