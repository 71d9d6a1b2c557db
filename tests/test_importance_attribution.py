"""FG-AdaHAT's attribution importances (the ``importance/attribution`` package).

* the batched, all-layers-at-once values equal Captum called the reference's way (one
  ``attribute`` call per layer) on the same masked forward, in float64 with tight
  tolerances, for HATMLP, a small HATAlexNet (convs, reused max-pool, flatten) and a small
  HATResNet18 (residual additions, shortcut layouts, stem max-pool);
* hand-computed values on a one-hidden-layer MLP (G×A, Grad-CAM, feature ablation,
  DeepLIFT, LRP) and DeepLIFT's summation-to-delta on a conv net;
* the step leaves the model as it found it (modes, BatchNorm statistics, recordings, grads);
* clear errors (LRP on residual nets, bad settings);
* settings given in ``StepContext.attribution_settings`` take effect.

The reference (one Captum call per layer) is ``tests/captum_reference.py``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from avalanche.models.utils import avalanche_model_adaptation
from captum_reference import reference_importance
from hat_test_support import quiet

from avalanche_fgadahat.importance import (
    ATTRIBUTION_TYPES,
    IMPORTANCE_TYPES,
    IN_PASS_TYPES,
    REFERENCE_IMPORTANCE_TYPES,
    StepContext,
)
from avalanche_fgadahat.importance.attribution import (
    DEFAULT_SETTINGS,
    AttributionSettings,
    deeplift_maps,
    deepliftshap_baselines,
)
from avalanche_fgadahat.importance.forward_wrapper import TaskForward, attribution_layers, attribution_mode
from avalanche_fgadahat.models import HATAlexNet, HATMLP, HATResNet18

BATCH = 6


def _context(model, shape, experience, *, seed: int = 0, max_rows: int | None = 7) -> StepContext:
    """A float64 step of task 0 with random inputs, targets and soft masks."""
    torch.manual_seed(seed)
    avalanche_model_adaptation(model, experience)
    model.double()
    x = torch.randn(BATCH, *shape, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1, 0][:BATCH])
    masks = {k: torch.sigmoid(3 * torch.randn(n, dtype=torch.float64)) for k, n in model.unit_sizes.items()}
    # a small max_rows forces several chunks (interpolation steps split across chunks, etc.)
    settings = AttributionSettings(
        conductance_steps=6, integrated_gradients_steps=5, gradientshap_samples=3, deepliftshap_baselines=4,
        max_rows=max_rows,
    )
    return StepContext(
        model=model, task=0, inputs=x, targets=y, masks=masks, activations={}, gate_scale=3.0,
        attribution_settings=settings,
    )


def _fast_and_reference(name: str, ctx: StepContext):
    np.random.seed(11)
    torch.manual_seed(12)
    fast = IMPORTANCE_TYPES[name].function(ctx)
    torch.manual_seed(12)  # same DeepLIFT-SHAP baselines; numpy re-seeded per layer inside
    reference = reference_importance(name, ctx, numpy_seed=11)
    return fast, reference


def _assert_equal_per_unit(fast, reference, model):
    assert set(fast) == set(reference) == set(model.unit_sizes)
    for key, value in reference.items():
        assert fast[key].shape == (model.unit_sizes[key],)
        assert value.abs().sum() > 0, f"{key}: all-zero reference makes the comparison vacuous"
        torch.testing.assert_close(fast[key], value, rtol=1e-11, atol=1e-14, msg=lambda m: f"{key}: {m}")


def _tiny_mlp():
    return HATMLP(64, (7, 6, 5)), (64,)


def _tiny_alexnet():
    return HATAlexNet((2, 8, 8), conv_channels=(3, 4), kernel_sizes=(3, 2), fc_sizes=(6, 5)), (2, 8, 8)


def _tiny_resnet():
    return HATResNet18((2, 16, 16), widths=(2, 2, 3, 3)), (2, 16, 16)


# ---------------------------------------------------------------------------- registry
def test_all_reference_attribution_types_are_registered_with_labels():
    assert set(ATTRIBUTION_TYPES) <= set(IMPORTANCE_TYPES)
    assert len(ATTRIBUTION_TYPES) == 10 and not set(ATTRIBUTION_TYPES) & set(IN_PASS_TYPES)
    assert set(ATTRIBUTION_TYPES) | set(IN_PASS_TYPES) == set(REFERENCE_IMPORTANCE_TYPES)
    labels = {name: IMPORTANCE_TYPES[name].short_name for name in ATTRIBUTION_TYPES}
    assert labels["internal_influence_abs"] == "II"
    assert labels["deeplift_abs"] == "DL"
    assert labels["gradientshap_abs"] == "GS"
    assert labels["feature_ablation_abs"] == "FA"
    for name in ATTRIBUTION_TYPES:
        assert IMPORTANCE_TYPES[name].extra_passes != "none"
        assert not IMPORTANCE_TYPES[name].needs_activations


def test_captum_is_imported_only_inside_functions():
    """``import avalanche_fgadahat`` must not import captum (a subprocess check costs ~10 s
    of avalanche import here, so the module-level imports are read from the source)."""
    import ast
    import importlib

    import pkgutil

    from avalanche_fgadahat.importance import attribution

    modules = ["avalanche_fgadahat.importance.attribution", "avalanche_fgadahat.importance.forward_wrapper"]
    modules += [f"avalanche_fgadahat.importance.{name}" for name in ("forward_trace", "deeplift_rescale")]
    modules += [info.name for info in pkgutil.iter_modules(attribution.__path__, f"{attribution.__name__}.")]
    assert len(modules) > 4
    for module in modules:
        tree = ast.parse(open(importlib.import_module(module).__file__).read())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
        assert names and not any(name.split(".")[0] == "captum" for name in names), module


# ---------------------------------------------------------------------------- equality with Captum
@pytest.mark.parametrize("name", ATTRIBUTION_TYPES)
def test_mlp_fast_values_equal_captum_per_layer(name, first_experience):
    model, shape = _tiny_mlp()
    ctx = _context(model, shape, first_experience)
    fast, reference = _fast_and_reference(name, ctx)
    _assert_equal_per_unit(fast, reference, model)


@pytest.mark.parametrize("name", ATTRIBUTION_TYPES)
def test_alexnet_fast_values_equal_captum_per_layer(name, first_experience):
    model, shape = _tiny_alexnet()
    ctx = _context(model, shape, first_experience, max_rows=23)
    fast, reference = _fast_and_reference(name, ctx)
    _assert_equal_per_unit(fast, reference, model)


@pytest.mark.parametrize(
    "name", ["gradient_x_activation_abs", "gradcam_abs", "deeplift_abs", "deepliftshap_abs", "feature_ablation_abs"]
)
def test_resnet_fast_values_equal_captum_per_layer(name, first_experience):
    model, shape = _tiny_resnet()
    ctx = _context(model, shape, first_experience, max_rows=None)
    fast, reference = _fast_and_reference(name, ctx)
    _assert_equal_per_unit(fast, reference, model)


def test_chunking_does_not_change_values(first_experience):
    model, shape = _tiny_mlp()
    for name in ("conductance_abs", "integrated_gradients_abs", "feature_ablation_abs", "gradientshap_abs"):
        values = []
        for max_rows in (None, 5):
            ctx = _context(model, shape, first_experience, max_rows=max_rows)
            np.random.seed(3)
            values.append(IMPORTANCE_TYPES[name].function(ctx))
        for key in values[0]:
            torch.testing.assert_close(values[0][key], values[1][key], rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------- hand computations
def _one_layer_case(first_experience):
    """f_y(x) = v_y · relu(m ⊙ (W x + b)) + c_y with known numbers."""
    model = HATMLP(2, (3,))
    avalanche_model_adaptation(model, first_experience)
    model.double()
    head = model.classifier.classifiers["0"].classifier
    with torch.no_grad():
        model.fc[0].weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 1.0], [-1.0, 0.25]]))
        model.fc[0].bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        head.weight.copy_(torch.tensor([[2.0, -1.0, 0.5], [-0.5, 3.0, 1.5]]))
        head.bias.copy_(torch.tensor([0.05, -0.1]))
    x = torch.tensor([[1.0, 0.5], [-1.0, 2.0], [0.3, -0.7]], dtype=torch.float64)
    y = torch.tensor([0, 1, 1])
    m = torch.tensor([0.9, 0.4, 0.7], dtype=torch.float64)
    ctx = StepContext(model=model, task=0, inputs=x, targets=y, masks={"fc0": m}, activations={}, gate_scale=1.0)
    w, b = model.fc[0].weight.detach(), model.fc[0].bias.detach()
    z = x @ w.T + b
    v = head.weight.detach()[y]  # (B, 3): the target rows of the head
    return ctx, z, b, m, v


def test_hand_computed_values_on_one_hidden_layer(first_experience):
    ctx, z, b, m, v = _one_layer_case(first_experience)
    relu = torch.relu
    active = (m * z > 0).double()
    expected = {
        # ∂f_y/∂z_i = v_{y,i} m_i 1[m_i z_i > 0]
        "gradient_x_activation_abs": (v * m * active * z).abs().mean(0),
        "gradcam_abs": (v * m * active * z).abs().mean(0),  # a linear unit is a 1×1 map
        # zeroing z_i removes v_{y,i} relu(m_i z_i) from the logit
        "feature_ablation_abs": (v * relu(m * z)).abs().mean(0),
        # zero input → z = b; Rescale through relu: Δa = relu(m z) − relu(m b)
        "deeplift_abs": (v * (relu(m * z) - relu(m * b))).abs().mean(0),
        # LRP-ε: relevance of the head input v·a flows back through the mask multiply (× m)
        "lrp_abs": (m * v * relu(m * z)).abs().mean(0),
    }
    for name, value in expected.items():
        got = IMPORTANCE_TYPES[name].function(ctx)["fc0"]
        torch.testing.assert_close(got, value, rtol=1e-7, atol=1e-12, msg=lambda msg: f"{name}: {msg}")


def test_gradcam_differs_from_gradient_x_activation_on_convs(first_experience):
    model, shape = _tiny_alexnet()
    ctx = _context(model, shape, first_experience)
    gradcam = IMPORTANCE_TYPES["gradcam_abs"].function(ctx)
    gxa = IMPORTANCE_TYPES["gradient_x_activation_abs"].function(ctx)
    assert not torch.allclose(gradcam["conv0"], gxa["conv0"])
    torch.testing.assert_close(gradcam["fc0"], gxa["fc0"], rtol=1e-12, atol=0)


def test_deeplift_sums_to_the_logit_change_at_every_layer_of_a_conv_net(first_experience):
    """Summation-to-delta: Σ_units,positions DeepLIFT(a_l) = f_y(x) − f_y(0) (no skip connections)."""
    model, shape = _tiny_alexnet()
    ctx = _context(model, shape, first_experience)
    maps = deeplift_maps(ctx)
    forward = TaskForward(model, 0, ctx.masks)
    with attribution_mode(model), torch.no_grad():
        delta = forward(ctx.inputs) - forward(torch.zeros_like(ctx.inputs))
    delta = delta.gather(1, ctx.targets.view(-1, 1)).squeeze(1)
    assert delta.abs().max() > 1e-4  # not a trivially dead network
    for key, value in maps.items():
        torch.testing.assert_close(value.flatten(1).sum(1), delta, rtol=1e-9, atol=1e-12, msg=lambda m: f"{key}: {m}")


# ---------------------------------------------------------------------------- the forward wrapper
@pytest.mark.parametrize("multihead", [True, False])
def test_wrapper_reproduces_the_training_forward(multihead, first_experience):
    model = HATMLP(64, (7, 5), multihead=multihead)
    avalanche_model_adaptation(model, first_experience)
    step = model.begin_training(0)
    step.gate_scale = 2.5
    model.train()
    x = torch.randn(4, 64)
    logits = model(x, 0)
    masks = {k: v.detach() for k, v in step.masks.items()}
    for nonlinearity in ("plain", "modules"):
        wrapper = TaskForward(model, 0, masks, nonlinearity=nonlinearity, example=x)
        torch.testing.assert_close(wrapper(x), logits.detach())
    names = {name for name, _ in TaskForward(model, 0, masks, nonlinearity="modules", example=x).named_modules()}
    assert not any("task_embedding" in n or "unit_state" in n for n in names)


def test_attribution_layers_skip_resnet_shortcuts():
    model = HATResNet18((2, 16, 16), widths=(2, 2, 3, 3))
    layers = attribution_layers(model)
    block = model.blocks[2]  # first block of stage 2: has a 1×1 projection shortcut
    assert block.shortcut is not None
    assert layers["layer2_0_conv2"] is block.conv2
    assert all(layer is not b.shortcut for b in model.blocks for layer in layers.values())


def test_step_leaves_the_model_untouched(first_experience):
    """Modes (per module), BatchNorm statistics, recordings and the step's grads survive every type."""
    model = HATResNet18((2, 16, 16), widths=(2, 2, 3, 3), batch_norm="per_task")
    model_mlp, shape_mlp = _tiny_mlp()
    for net, shape in ((model, (2, 16, 16)), (model_mlp, shape_mlp)):
        ctx = _context(net, shape, first_experience, max_rows=None)
        ctx.attribution_settings = AttributionSettings(
            conductance_steps=2, internal_influence_steps=2, integrated_gradients_steps=2,
            gradientshap_samples=2, deepliftshap_baselines=2,
        )
        net.train()
        first_norm = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)) if net is model else None
        if first_norm is not None:
            first_norm.eval()  # a module in its own mode must keep it
        step = net.begin_training(0, record_activations=True)
        sentinel_acts, sentinel_masks = {"x": torch.ones(1)}, {"y": torch.ones(1)}
        step.activations, step.masks = sentinel_acts, sentinel_masks
        for p in net.parameters():
            p.grad = torch.full_like(p, 0.25)
        modes = {name: m.training for name, m in net.named_modules()}
        buffers = {name: b.clone() for name, b in net.named_buffers()}
        names = [n for n in ATTRIBUTION_TYPES if not (net is model and n == "lrp_abs")]
        for name in names:
            IMPORTANCE_TYPES[name].function(ctx)
            assert {n: m.training for n, m in net.named_modules()} == modes, name
            for key, value in net.named_buffers():
                assert torch.equal(value, buffers[key]), f"{name} changed buffer {key}"
            assert net.training_step is step and step.activations is sentinel_acts and step.masks is sentinel_masks
            assert step.record_activations is True
            assert all(torch.all(p.grad == 0.25) for p in net.parameters()), name


# ---------------------------------------------------------------------------- errors and settings
def test_lrp_on_a_residual_net_fails_clearly(first_experience):
    model, shape = _tiny_resnet()
    ctx = _context(model, shape, first_experience)
    for training in (True, False):
        model.train(training)
        with pytest.raises(NotImplementedError, match="residual"):
            IMPORTANCE_TYPES["lrp_abs"].function(ctx)
        assert model.training is training


def test_deepliftshap_baselines_are_zero_plus_batch_examples():
    x = torch.arange(12.0).view(6, 2) + 1
    baselines = deepliftshap_baselines(x, 4, generator=torch.Generator().manual_seed(0))
    assert baselines.shape == (4, 2)
    assert torch.equal(baselines[0], torch.zeros(2))
    rows = {tuple(r.tolist()) for r in x}
    assert all(tuple(r.tolist()) in rows for r in baselines[1:])
    assert len({tuple(r.tolist()) for r in baselines[1:]}) == 3
    with pytest.raises(ValueError, match="deepliftshap_baselines"):
        deepliftshap_baselines(x, 1)


@pytest.mark.parametrize(
    "kwargs, word",
    [({"conductance_steps": 0}, "conductance_steps"), ({"deepliftshap_baselines": 1}, "deepliftshap_baselines"),
     ({"max_rows": 0}, "max_rows"), ({"gradientshap_samples": 2.5}, "gradientshap_samples")],
)
def test_bad_settings_are_rejected(kwargs, word):
    with pytest.raises(ValueError, match=word):
        AttributionSettings(**kwargs)


def test_settings_of_the_wrong_type_are_rejected(first_experience):
    model, shape = _tiny_mlp()
    ctx = _context(model, shape, first_experience)
    ctx.attribution_settings = {"max_rows": 3}
    with pytest.raises(ValueError, match="AttributionSettings"):
        IMPORTANCE_TYPES["gradient_x_activation_abs"].function(ctx)
    with pytest.raises(ValueError, match="name"):
        reference_importance("input_weight_abs_sum", ctx)


def test_user_settings_in_the_step_context_change_the_result(first_experience):
    """``StepContext(attribution_settings=...)`` reaches the methods: conductance with 2 and
    with 50 steps differ, and each equals Captum called with that many steps. Without the
    argument a step uses the reference's settings."""
    model, shape = _tiny_mlp()
    base = _context(model, shape, first_experience)
    plain = StepContext(model=model, task=0, inputs=base.inputs, targets=base.targets, masks=base.masks,
                        activations={}, gate_scale=3.0)
    assert plain.attribution_settings is DEFAULT_SETTINGS
    results = {}
    for steps in (2, 50):
        settings = dataclasses.replace(base.attribution_settings, conductance_steps=steps)
        ctx = StepContext(model=model, task=0, inputs=base.inputs, targets=base.targets, masks=base.masks,
                          activations={}, gate_scale=3.0, attribution_settings=settings)
        fast, reference = _fast_and_reference("conductance_abs", ctx)
        _assert_equal_per_unit(fast, reference, model)
        results[steps] = fast
    assert any(not torch.allclose(results[2][key], results[50][key], rtol=1e-6, atol=0) for key in results[2])


# ---------------------------------------------------------------------------- inside the strategy
@pytest.mark.parametrize("importance_type", ["deeplift_abs", "lrp_abs", "feature_ablation_abs"])
def test_attribution_types_train_inside_fgadahat(importance_type, digits5):
    """The plugin calls the type after every optimizer step; training stays in train mode."""
    import warnings

    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import SupervisedPlugin

    from avalanche_fgadahat.strategies import FGAdaHAT

    torch.manual_seed(0)
    model = HATMLP(64, (12, 8))
    modes = []

    class _Spy(SupervisedPlugin):
        def before_forward(self, strategy, **kwargs):
            modes.append(strategy.model.training)

    strategy = FGAdaHAT(
        model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2), importance_type=importance_type,
        train_mb_size=128, train_epochs=1, eval_mb_size=256,
        evaluator=quiet(accuracy_metrics(experience=True)), plugins=[_Spy()],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        strategy.train(digits5.train_stream[0])
    assert len(modes) > 1 and all(modes)
    for key, state in model.unit_state.items():
        assert torch.isfinite(state.summed_importance).all() and state.summed_importance.abs().sum() > 0, key


# ---------------------------------------------------------------------------- independent oracle
class _PlainMaskedMLP(torch.nn.Module):
    """Written here, independently of the package's forward wrapper: the task's masked MLP
    as plain modules — ``Linear → × mask → ReLU`` per layer, then the task's head — with the
    weights copied from a HAT model. Captum is run on this model's ``Linear`` layers."""

    def __init__(self, hat_model: HATMLP, masks: dict, task: int) -> None:
        super().__init__()
        import copy

        self.fcs = torch.nn.ModuleList(copy.deepcopy(layer) for layer in hat_model.fc)
        self.masks = [masks[f"fc{i}"].detach().clone() for i in range(len(self.fcs))]
        self.relus = torch.nn.ModuleList(torch.nn.ReLU() for _ in self.fcs)
        self.head = copy.deepcopy(hat_model.classifier.classifiers[str(task)].classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for fc, mask, relu in zip(self.fcs, self.masks, self.relus):
            h = relu(fc(h) * mask)
        return self.head(h)


def _captum_on_plain_model(name: str, plain: _PlainMaskedMLP, x, y, settings) -> dict:
    import captum.attr as ca

    def attribute(layer):
        if name == "gradient_x_activation_abs":
            return ca.LayerGradientXActivation(plain, layer).attribute(x, target=y)
        if name == "conductance_abs":
            return ca.LayerConductance(plain, layer).attribute(x, target=y, n_steps=settings.conductance_steps)
        if name == "internal_influence_abs":
            return ca.InternalInfluence(plain, layer).attribute(x, target=y, n_steps=settings.internal_influence_steps)
        if name == "gradcam_abs":  # a linear unit is a 1×1 map: Grad-CAM kept per unit is g ⊙ a
            return ca.LayerGradCam(plain, layer).attribute(x, target=y, attr_dim_summation=False)
        if name == "deeplift_abs":
            return ca.LayerDeepLift(plain, layer).attribute(x, target=y)
        if name == "integrated_gradients_abs":
            return ca.LayerIntegratedGradients(plain, layer).attribute(
                x, target=y, n_steps=settings.integrated_gradients_steps
            )
        if name == "feature_ablation_abs":
            units = torch.arange(layer.out_features).unsqueeze(0)
            return ca.LayerFeatureAblation(plain, layer).attribute(x, target=y, layer_mask=units)
        if name == "lrp_abs":
            return ca.LayerLRP(plain, layer).attribute(x, target=y)
        raise AssertionError(name)

    return {f"fc{i}": attribute(layer).abs().mean(dim=0).detach() for i, layer in enumerate(plain.fcs)}


@pytest.mark.parametrize("name", [n for n in ATTRIBUTION_TYPES if n not in ("gradientshap_abs", "deepliftshap_abs")])
def test_values_equal_captum_on_an_independently_written_model(name, first_experience):
    """An oracle sharing no code with the package (its reference in ``captum_reference.py`` uses
    the same forward wrapper as the fast functions). The random-baseline methods
    (GradientSHAP, DeepLIFT-SHAP) are compared with Captum above with the same draws."""
    model, shape = _tiny_mlp()
    ctx = _context(model, shape, first_experience)
    settings = ctx.attribution_settings
    plain = _PlainMaskedMLP(model, ctx.masks, task=0).double().eval()
    fast = IMPORTANCE_TYPES[name].function(ctx)
    oracle = _captum_on_plain_model(name, plain, ctx.inputs.clone(), ctx.targets, settings)
    _assert_equal_per_unit(fast, oracle, model)
