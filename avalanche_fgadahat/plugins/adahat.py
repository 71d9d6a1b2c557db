"""AdaHATPlugin: adaptive soft gradient adjustment (Wang et al., ECML-PKDD 2024).

AdaHAT replaces HAT's hard rate ``1 − min(M_l[i], M_{l−1}[j])`` by a soft one driven by the
summative mask ``S`` and the current task's mask sparsity ``R_l``
(:mod:`avalanche_fgadahat.adjustment.adahat_rules`); HAT's modes stay available. The
settings are :class:`~avalanche_fgadahat.config.AdaHATConfig`'s; the callbacks are
:class:`~.hat.HATPlugin`'s.
"""

from __future__ import annotations

from ..config import AdaHATConfig
from .hat import HATPlugin


class AdaHATPlugin(HATPlugin):
    """AdaHAT on any Avalanche ``SupervisedTemplate`` (e.g. ``Naive(plugins=[AdaHATPlugin()])``).

    Built from an :class:`~avalanche_fgadahat.config.AdaHATConfig` or its settings as keywords
    (``adjustment_mode``, ``adjustment_intensity``, ``epsilon`` and HAT's), documented there.
    """

    config_class = AdaHATConfig
