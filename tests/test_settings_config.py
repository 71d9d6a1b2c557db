"""Settings held once (``avalanche_fgadahat.config``): plugins and strategies are built from one
frozen config, their signatures list the config's settings with its defaults, derived settings
cannot be passed, and FG-AdaHAT's attribution settings reach every training step."""

from __future__ import annotations

import dataclasses
import inspect
import warnings

import pytest
import torch
from hat_test_support import quiet

from avalanche_fgadahat import HAT, AdaHAT, AdaHATPlugin, FGAdaHAT, FGAdaHATPlugin, HATPlugin
from avalanche_fgadahat.adjustment import ADJUSTMENT_RULES, build_rule
from avalanche_fgadahat.config import AdaHATConfig, FGAdaHATConfig, HATConfig
from avalanche_fgadahat.importance import IMPORTANCE_TYPES, AttributionSettings
from avalanche_fgadahat.models import HATMLP

METHODS = [(HAT, HATPlugin, HATConfig), (AdaHAT, AdaHATPlugin, AdaHATConfig), (FGAdaHAT, FGAdaHATPlugin, FGAdaHATConfig)]


@pytest.mark.parametrize("strategy_class, plugin_class, config_class", METHODS)
def test_signatures_list_every_setting_with_the_configs_default(strategy_class, plugin_class, config_class):
    settings = {f.name: f.default for f in dataclasses.fields(config_class) if f.init}
    for owner in (strategy_class, plugin_class):
        params = inspect.signature(owner).parameters
        assert {n: params[n].default for n in settings} == settings, owner
        assert params["config"].default is None


@pytest.mark.parametrize("strategy_class, plugin_class, config_class", METHODS)
def test_keywords_and_config_build_the_same_settings(strategy_class, plugin_class, config_class):
    config = config_class(s_max=123.0, mask_sparsity_reg_factor=0.5)
    assert plugin_class(s_max=123.0, mask_sparsity_reg_factor=0.5).config == config
    assert plugin_class(config).config == config
    assert plugin_class(config, s_max=7.0).config == config.replace(s_max=7.0)
    model = HATMLP(64, (4,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    by_keyword = strategy_class(model=model, optimizer=optimizer, s_max=123.0, mask_sparsity_reg_factor=0.5)
    by_config = strategy_class(model=model, optimizer=optimizer, config=config)
    assert by_keyword.hat_plugin.config == by_config.hat_plugin.config == config
    assert by_keyword.hat_plugin.s_max == 123.0  # settings read as attributes


def test_a_config_of_another_method_is_refused():
    with pytest.raises(TypeError, match=r"HATPlugin takes config=HATConfig\(...\).*AdaHATConfig"):
        HATPlugin(AdaHATConfig())
    with pytest.raises(TypeError, match=r"AdaHATPlugin takes config=AdaHATConfig"):
        AdaHATPlugin(FGAdaHATConfig())


def test_unknown_and_derived_settings_are_refused_naming_the_accepted_ones():
    with pytest.raises(TypeError, match=r"HATPlugin got unexpected argument\(s\) s_maxx; its settings are: adjustment_mode, s_max"):
        HATPlugin(s_maxx=1.0)
    with pytest.raises(TypeError, match="epsilon"):
        FGAdaHATConfig(epsilon=0.2)  # FG-AdaHAT's ε is base_mask_sparsity_reg
    with pytest.raises(TypeError, match="alpha"):
        AdaHATPlugin(alpha=0.5)  # AdaHAT's α of hat_const_alpha is adjustment_intensity
    with pytest.raises(ValueError, match="adjustment_mode='adahat' is not supported"):
        HATConfig(adjustment_mode="adahat")


def test_derived_settings_and_frozen_configs():
    assert FGAdaHATConfig(base_mask_sparsity_reg=0.3).epsilon == 0.3
    assert AdaHATConfig(adjustment_intensity=5.0).alpha == 1.0 and AdaHATConfig(adjustment_intensity=0.2).alpha == 0.2
    assert FGAdaHATConfig(importance_type="icu").importance_type == "input_weight_abs_sum_x_activation_abs"
    config = HATConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.s_max = 1.0
    with pytest.raises(ValueError, match="attribution_settings must be an"):
        FGAdaHATConfig(attribution_settings={"conductance_steps": 2})


def test_every_accepted_mode_has_a_rule_carrying_its_parameters():
    for config_class in (HATConfig, AdaHATConfig):
        for mode in config_class.ADJUSTMENT_MODES:
            rule = build_rule(config_class(adjustment_mode=mode))
            assert rule is not None, mode
    assert set(ADJUSTMENT_RULES) == set(AdaHATConfig.ADJUSTMENT_MODES) | {"fgadahat"}
    rule = build_rule(AdaHATConfig(adjustment_intensity=0.3, epsilon=0.7))
    assert (rule.adjustment_intensity, rule.epsilon) == (0.3, 0.7)
    fg = build_rule(FGAdaHATConfig(base_mask_sparsity_reg=0.4, base_linear=2.0, filter_by_cumulative_mask=True,
                                   neuron_to_weight_importance_aggregation_mode="max"))
    assert (fg.epsilon, fg.base_linear, fg.filter_by_cumulative_mask, fg.aggregation) == (0.4, 2.0, True, "max")


def test_attribution_settings_reach_every_training_step(monkeypatch, digits5):
    """The user's ``attribution_settings`` is the one each step's importance function reads."""
    seen = []
    original = IMPORTANCE_TYPES["conductance_abs"]

    def spy(ctx):
        seen.append(ctx.attribution_settings)
        return original.function(ctx)

    monkeypatch.setitem(IMPORTANCE_TYPES, "conductance_abs", dataclasses.replace(original, function=spy))
    settings = AttributionSettings(conductance_steps=3, max_rows=64)
    bench = digits5
    model = HATMLP(64, (8,))
    strategy = FGAdaHAT(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), train_mb_size=64,
                        importance_type="conductance_abs", attribution_settings=settings,
                        evaluator=quiet())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        strategy.train(bench.train_stream[0])
    assert seen and all(s is settings for s in seen)


def test_settings_are_read_only_on_the_plugin_and_configs_keyword_only():
    plugin = HATPlugin()
    with pytest.raises(AttributeError, match=r"s_max is a setting of HATPlugin's config and read-only"):
        plugin.s_max = 3.0
    assert plugin.config.s_max == 400.0
    with pytest.raises(TypeError, match="positional"):
        AdaHATConfig("adahat", 1e-3, 0.2)  # would have set s_max=1e-3 by field order
    with pytest.raises(ValueError, match="check_finite_loss must be True or False, got 'false'"):
        HATConfig(check_finite_loss="false")


def test_user_subclasses_keep_their_own_init_and_signature():
    class MyHAT(HAT):
        def __init__(self, my_flag: bool = False, **kwargs):
            super().__init__(**kwargs)
            self.my_flag = my_flag

    class LoggingHAT(HATPlugin):
        def __init__(self, log_every: int = 10, **settings):
            super().__init__(**settings)
            self.log_every = log_every

    model = HATMLP(64, (4,))
    strategy = MyHAT(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), my_flag=True, s_max=50.0)
    assert strategy.my_flag is True and strategy.hat_plugin.s_max == 50.0
    assert "log_every" in inspect.signature(LoggingHAT).parameters
    assert LoggingHAT(log_every=3, s_max=100.0).config.s_max == 100.0
    with pytest.raises(TypeError, match=r"^HAT\(\) missing required keyword argument\(s\): model, optimizer"):
        HAT()
