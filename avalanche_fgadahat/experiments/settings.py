"""Every strategy's hyperparameters, in one place, with where each value comes from.

The strategy factory (``strategies.py``) passes ``STRATEGY_SETTINGS[name]`` to the strategy's
constructor unchanged, after the user's ``--set NAME.KEY=VALUE`` overrides. Optimiser,
learning rate, epochs and batch size are the preset's, the same for every strategy.

HAT family: CLArena's component configs ``configs/cl_algorithm/{hat,adahat,fgadahat}.yaml``
(in CLArena's experiment repository, github.com/pengxiang-wang/continual-learning-research, at
commit 07c8d26). Baselines: Avalanche's strategies with the values of
github.com/ContinualAI/continual-learning-baselines where that repository has the strategy,
otherwise the common defaults named below.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

#: HAT's settings (``hat.yaml``): Serrà et al. 2018 values.
_HAT = {
    "s_max": 400.0,
    "clamp_threshold": 50.0,
    "mask_sparsity_reg_factor": 0.1,
    "mask_sparsity_reg_mode": "original",
    "task_embedding_init_mode": "N01",
}

#: FG-AdaHAT's settings at CLArena HEAD (``fgadahat.yaml``); importance_type comes from the
#: strategy name (``fgadahat:<type>``) and the paper's per-type overrides below.
_FGADAHAT = {
    **_HAT,
    "adjustment_intensity": 1.5e-7,
    "importance_summing_strategy": "add_all",
    "importance_scheduler_type": "linear_sparsity_reg",
    "neuron_to_weight_importance_aggregation_mode": "min",
    "base_importance": 1e-8,
    "base_mask_sparsity_reg": 0.1,
    "base_linear": 5.0,
    "filter_by_cumulative_mask": False,
    "filter_unmasked_importance": False,
    "step_multiply_training_mask": True,
}

#: the HAT family's settings outside the reference's tables that ``--set`` also accepts (the
#: library's default applies unless set; a set value joins the run's settings, so its identity)
HAT_FAMILY_OPTIONAL = ("subnormal_guards",)

STRATEGY_SETTINGS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "fgadahat": MappingProxyType(_FGADAHAT),
        "adahat": MappingProxyType(
            {**_HAT, "adjustment_mode": "adahat", "adjustment_intensity": 1e-6, "epsilon": 0.1}
        ),
        "hat": MappingProxyType({**_HAT, "adjustment_mode": "hat"}),
        "hat_random": MappingProxyType({**_HAT, "adjustment_mode": "hat_random"}),
        "hat_const_alpha": MappingProxyType({**_HAT, "adjustment_mode": "hat_const_alpha", "alpha": 1e-6}),
        "hat_const_1": MappingProxyType({**_HAT, "adjustment_mode": "hat_const_1"}),
        "naive": MappingProxyType({}),
        "ewc": MappingProxyType({"ewc_lambda": 1000.0, "mode": "separate"}),
        "si": MappingProxyType({"si_lambda": 1.0, "eps": 0.1}),
        "lwf": MappingProxyType({"alpha": 1.0, "temperature": 2.0}),
        "mas": MappingProxyType({"lambda_reg": 1.0, "alpha": 0.5}),
        "packnet": MappingProxyType({"post_prune_epochs": "half", "prune_proportion": "equal_share"}),
        "replay": MappingProxyType({"mem_size": 200}),
        "gdumb": MappingProxyType({"mem_size": 200}),
        "der": MappingProxyType({"mem_size": 200, "alpha": 0.1, "beta": 0.5}),
        "joint": MappingProxyType({}),
    }
)

#: Where each strategy's values come from (printed by ``--list`` and in docs/experiments.md).
SETTINGS_SOURCES: Mapping[str, str] = MappingProxyType(
    {
        "fgadahat": "CLArena HEAD fgadahat.yaml; per importance type, the FG-AdaHAT paper index "
        "configs: alpha 1.5e-7 and b_L 5 (IG, CU, ICU, AFI, II, FA), alpha 1e-7 and b_L 10 (OG, GS, DL)",
        "adahat": "CLArena adahat.yaml (AdaHAT paper: alpha 1e-6, epsilon 0.1)",
        "hat": "CLArena hat.yaml (HAT paper: s_max 400, clamp 50, c 0.1)",
        "hat_random": "AdaHAT paper ablation: HAT with a U(0,1) rate on used parameters",
        "hat_const_alpha": "AdaHAT paper ablation: HAT with a constant rate alpha = 1e-6 on used parameters",
        "hat_const_1": "AdaHAT paper ablation: HAT masks without gradient protection (rate 1)",
        "naive": "fine-tuning: no protection (lower bound)",
        "ewc": "separate mode (one penalty per task); no reference gives lambda for these protocols: "
        "1000 is a common order of magnitude, not tuned (on digits lambda <= 1000 hardly changes "
        "the numbers, the Fisher of well-fit tasks being tiny); tune with --set ewc.ewc_lambda=...",
        "si": "continual-learning-baselines Split MNIST task-IL: lambda 1, epsilon 0.1",
        "lwf": "alpha 1, temperature 2 (Li & Hoiem 2017 default T=2)",
        "mas": "continual-learning-baselines Split Tiny ImageNet: lambda 1, alpha 0.5",
        "packnet": "post_prune_epochs 'half' = max(1, epochs // 2) (the baselines repo: 15 of 30); "
        "prune_proportion 'equal_share' = 1 - 1/(T - t) for task t = 0..T-1, every task keeping "
        "1/T of the weights (for T = 10 exactly the baselines repo's list .90, .88, ..., .50, 0)",
        "replay": "Avalanche Replay (class-balanced buffer); 200 and 500 samples are the issue's memories; "
        "replay:<N> names another",
        "gdumb": "Avalanche GDumb (Prabhu et al. 2020): the model retrained from its initial weights on the "
        "memory after every experience",
        "der": "Avalanche DER (Buzzega et al. 2020, DER++): alpha 0.1, beta 0.5 (Avalanche's defaults)",
        "joint": "Avalanche JointTraining on the concatenated stream: the upper bound, trained once",
    }
)

#: FG-AdaHAT paper overrides per importance type (by the type's short name).
FGADAHAT_TYPE_OVERRIDES: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        short: MappingProxyType({"adjustment_intensity": 1e-7, "base_linear": 10.0})
        for short in ("OG", "GS", "DL")
    }
)
