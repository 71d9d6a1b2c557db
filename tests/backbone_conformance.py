"""The checks every HAT backbone passes, whatever built it (as HAT-CL's layer tests share
one base class).

A backbone's tests are a subclass of :class:`BackboneConformance` (``tests/test_backbones.py``)
that provides :meth:`~BackboneConformance.build` (a fresh model, task-incremental heads) and
``input_shape`` (one sample's input shape). The checks only use the public
:class:`~avalanche_fgadahat.models.HATBackbone` API — ``unit_sizes``, ``param_layouts``,
``task_embedding(s)``, ``masks_for_task``, ``commit_task``, ``trained_tasks``,
``begin_training`` (whose :class:`~avalanche_fgadahat.models.training_step.TrainingStep` gets
its ``gate_scale``), ``end_training``, ``state_dict``/``load_state_dict``, the forward
``model(x, task_labels)``, and what a ``MultiTaskModule`` with Avalanche's multi-head
``classifier`` has (``known_train_tasks_labels``, ``max_class_label``); the FG-AdaHAT round
trip reads ``unit_state`` — plus the package's strategies and importances. Nothing depends on
how the model was built, so a model converted from torchvision or Avalanche joins by adding a
subclass. A check a backbone fails because of a known library bug is overridden in its
subclass with a strict ``xfail`` naming the bug.

The checks: unit groups and layouts agree; layouts cover every parameter but the heads'; the
neuron→parameter broadcast has every parameter's shape; binary, soft and stored masks (no side
effect); the untrained-task union and its warning; the training forward's soft masks,
activations and embedding gradients; pickling; the forward contract (tensor and
zero-dimensional task labels, mixed-task batches refused in training and padded in
evaluation); old tasks' outputs bit-identical under HAT; state-dict round trip into a fresh
model (HAT, FG-AdaHAT); deep copies mid-experience; NaN-loss rollback of every parameter and
buffer; FG-AdaHAT's in-pass and attribution importances per unit.

Data: Split Digits with its 64 features in ``input_shape`` (:meth:`~BackboneConformance.benchmark`;
override it for another input shape) and random inputs (:meth:`~BackboneConformance.inputs`).

Class attributes a subclass may set:

* ``frozen_optimizers``: the optimizers (keys of ``hat_test_support.OPTIMIZERS``) of the
  frozen-outputs check (one test each);
* ``buffers_moved_by_training``: suffixes of state entries (e.g. BatchNorm statistics) that
  three training steps must move, so the rollback check is not vacuous for them.
"""

from __future__ import annotations

import copy
import math
import pickle
import warnings

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.models import MTSimpleMLP
from avalanche.models.utils import avalanche_model_adaptation
from hat_test_support import (
    OPTIMIZERS,
    digits_benchmark,
    one_training_step,
    quiet,
    rollback_case,
    same_state,
    set_embedding_signs,
    snapshot_state,
    stream_inputs,
)

from avalanche_fgadahat import HAT, FGAdaHAT, set_seed
from avalanche_fgadahat.importance import IMPORTANCE_TYPES, IN_PASS_TYPES, StepContext
from avalanche_fgadahat.masking import broadcast
from avalanche_fgadahat.models import HATBackbone, UntrainedTaskWarning

__all__ = ["BackboneConformance"]

STRATEGIES = {"HAT": HAT, "FGAdaHAT": FGAdaHAT}


class BackboneConformance:
    """Conformance checks of a masked backbone; subclasses provide :meth:`build` and
    ``input_shape`` (see the module doc)."""

    #: one sample's input shape, as ``model(x, task)`` takes it (batch first)
    input_shape: tuple[int, ...] = (64,)
    #: optimizers of the frozen-outputs check
    frozen_optimizers: tuple[str, ...] = ("adam",)
    #: state entries (suffixes) that a few training steps move, besides the parameters
    buffers_moved_by_training: tuple[str, ...] = ()

    def build(self) -> HATBackbone:
        """A fresh model (multi-head), deterministic given the global seed."""
        raise NotImplementedError

    def benchmark(self, n_experiences: int = 5):
        """Split Digits in ``n_experiences`` tasks, samples shaped ``input_shape`` (shared:
        do not mutate)."""
        return digits_benchmark(n_experiences, self.input_shape)

    def inputs(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` random inputs in [0, 1), from their own generator."""
        return torch.rand(n, *self.input_shape, generator=torch.Generator().manual_seed(seed))

    def adapted(self, model: HATBackbone, n_tasks: int = 1) -> HATBackbone:
        """``model`` adapted (Avalanche's model adaptation: heads, per-task modules) to the
        first ``n_tasks`` experiences of :meth:`benchmark`; a head outputs constants before."""
        for experience in self.benchmark().train_stream[:n_tasks]:
            avalanche_model_adaptation(model, experience)
        return model

    def pytest_generate_tests(self, metafunc):
        """One frozen-outputs test per optimizer in ``frozen_optimizers``."""
        if "optimizer" in metafunc.fixturenames:
            metafunc.parametrize("optimizer", list(self.frozen_optimizers))

    @pytest.fixture(autouse=True)
    def _seeded(self):
        """Every check starts from the same global RNG state (the models draw their weights
        from it), whatever ran before."""
        torch.manual_seed(0)

    # ---------------------------------------------------------------- structure
    def test_unit_groups_and_param_layouts_agree(self):
        model = self.build()
        sizes, layouts = model.unit_sizes, model.param_layouts
        assert sizes and all(isinstance(n, int) and n >= 1 for n in sizes.values())
        assert layouts
        names = [layout.name for layout in layouts]
        assert len(set(names)) == len(names), names
        assert len({id(layout.module) for layout in layouts}) == len(layouts)  # no layer listed twice
        submodules = {id(module) for module in model.modules()}
        for layout in layouts:
            assert id(layout.module) in submodules, f"{layout.name} is not a layer of the model"
            assert layout.out_key in sizes, layout.name
            assert layout.num_outputs == sizes[layout.out_key], layout.name
            if layout.bias is not None:
                assert layout.bias.shape == (layout.num_outputs,), layout.name
            if layout.in_key is not None:
                assert layout.in_key in sizes, layout.name
                assert layout.num_input_positions == sizes[layout.in_key] * layout.in_repeat, layout.name
        assert {layout.out_key for layout in layouts} == set(sizes)  # every unit group gates a layer
        assert any(layout.in_key is None for layout in layouts)  # some layer reads the raw input
        assert model.task_embeddings.shape == (sum(sizes.values()),)
        assert {k: v.shape for k, v in model.task_embedding.items()} == {k: (n,) for k, n in sizes.items()}

    def test_param_layouts_cover_every_masked_parameter(self):
        """Every parameter is a layout's weight or bias (masked), the task embeddings or a
        head's: nothing outside the heads escapes HAT's gradient masking."""
        model = self.build()
        masked = [p for layout in model.param_layouts for p in (layout.weight, layout.bias) if p is not None]
        assert len({id(p) for p in masked}) == len(masked)
        heads = {id(p) for p in model.classifier.parameters()}
        known = {id(p) for p in masked} | heads | {id(model.task_embeddings)}
        uncovered = [name for name, p in model.named_parameters() if id(p) not in known]
        assert not uncovered, uncovered
        assert not {id(p) for p in masked} & heads  # heads are not masked

    def test_broadcast_of_unit_measures_matches_every_parameter_shape(self):
        model = self.build()
        generator = torch.Generator().manual_seed(0)
        measure = {k: torch.rand(n, generator=generator) for k, n in model.unit_sizes.items()}
        for layout in model.param_layouts:
            for aggregation in ("min", "max", "mean"):
                weight, bias = broadcast(layout, measure, aggregation)
                assert weight.shape == layout.weight.shape, (layout.name, aggregation)
                assert (bias is None) == (layout.bias is None), layout.name
                if bias is not None:
                    assert torch.equal(bias, measure[layout.out_key]), layout.name
            weight, _ = broadcast(layout, measure, "min")
            rows = measure[layout.out_key].view(-1, *([1] * (weight.dim() - 1)))
            assert torch.all(weight <= rows), layout.name  # each row bounded by its output unit
            if layout.in_key is None:
                assert torch.equal(weight, rows.expand_as(weight)), layout.name

    # ---------------------------------------------------------------- masks
    def test_masks_for_task_binary_soft_and_stored_without_side_effect(self):
        model = self.build()
        sizes = model.unit_sizes
        step = model.begin_training(0)
        model.train()
        before = snapshot_state(model)
        binary = model.masks_for_task(0)  # no gate scale yet: 1[e > 0]
        assert set(binary) == set(sizes)
        for key, n in sizes.items():
            assert torch.equal(binary[key], (model.task_embedding[key] > 0).to(binary[key].dtype)), key
        step.gate_scale = 2.0
        soft = model.masks_for_task(0)
        for key, n in sizes.items():
            assert soft[key].shape == (n,) and soft[key].requires_grad, key
            torch.testing.assert_close(soft[key], torch.sigmoid(2.0 * model.task_embedding[key]))
        assert same_state(before, model) and step.masks == {} and step.mask_flat is None  # no side effect
        stored = model.commit_task(0)
        model.end_training()
        assert model.training_step is None and model.trained_tasks() == [0]
        model.eval()
        for key, n in sizes.items():
            assert stored[key].shape == (n,) and set(stored[key].unique().tolist()) <= {0.0, 1.0}, key
            assert torch.equal(stored[key], binary[key]), key
            assert torch.equal(model.masks_for_task(0)[key], stored[key]), key

    def test_untrained_task_uses_union_of_masks(self):
        """All units before any task is stored; then the union of the stored masks, with one
        warning per untrained task."""
        model = self.build()
        model.eval()
        with pytest.warns(UntrainedTaskWarning):
            ones = model.masks_for_task(7)
        for key, n in model.unit_sizes.items():
            assert torch.equal(ones[key], torch.ones(n)), key
        set_embedding_signs(model, {k: [float(i % 3 == 0) for i in range(n)] for k, n in model.unit_sizes.items()})
        model.commit_task(0)
        set_embedding_signs(model, {k: [float(i == 1) for i in range(n)] for k, n in model.unit_sizes.items()})
        model.commit_task(2)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UntrainedTaskWarning)  # warned once already
            union = model.masks_for_task(7)
        for key, n in model.unit_sizes.items():
            assert union[key].tolist() == [float(i % 3 == 0 or i == 1) for i in range(n)], key
        assert model.trained_tasks() == [0, 2]

    def test_training_forward_records_soft_masks_and_activations(self):
        model = self.adapted(self.build())
        sizes = model.unit_sizes
        x, y = self.inputs(8), torch.tensor([0, 1] * 4)
        for record in (False, True):
            step = model.begin_training(0, record_activations=record)
            step.gate_scale = 1.0
            model.train()
            model.zero_grad()
            logits = model(x, 0)
            assert logits.shape[0] == 8
            assert set(step.masks) == set(sizes) and step.mask_flat.shape == (sum(sizes.values()),)
            for key, n in sizes.items():
                assert step.masks[key].shape == (n,) and step.masks[key].requires_grad, key
            if not record:
                assert step.activations == {}
                continue
            assert set(step.activations) == set(sizes)
            for key, n in sizes.items():
                activation = step.activations[key]
                assert activation.shape[:2] == (8, n), (key, tuple(activation.shape))
            torch.nn.functional.cross_entropy(logits, y).backward()
            grads = model.task_embeddings.grad.split(list(sizes.values()))
            for key, grad in zip(sizes, grads):  # every unit group's gate is on the path to the loss
                assert float(grad.abs().sum()) > 0, key
        model.end_training()
        assert model.training_step is None

    def test_pickle_round_trip_between_experiences(self):
        """Checkpoints (Avalanche's, the package's) pickle the whole model between experiences."""
        model = self.adapted(self.build(), n_tasks=2)
        set_embedding_signs(model, {k: [float(i % 2 == 0) for i in range(n)] for k, n in model.unit_sizes.items()})
        model.commit_task(0)
        restored = pickle.loads(pickle.dumps(model))
        assert restored.trained_tasks() == [0] and restored.training_step is None
        state, loaded = model.state_dict(), restored.state_dict()
        assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
        assert [layout.name for layout in restored.param_layouts] == [layout.name for layout in model.param_layouts]
        restored_modules = {id(m) for m in restored.modules()}
        assert all(id(layout.module) in restored_modules for layout in restored.param_layouts)  # not the old model's
        model.eval()
        restored.eval()
        x = self.inputs(4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for task in (0, 1):
                assert torch.equal(restored(x, task), model(x, task)), task

    # ---------------------------------------------------------------- forward contract
    def test_fresh_model_with_tensor_task_labels_matches_the_int_form(self):
        model = self.build().eval()
        x = torch.randn(4, *self.input_shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = model(x, torch.zeros(4, dtype=torch.long))
            reference = MTSimpleMLP(input_size=math.prod(self.input_shape), hidden_size=10).eval()
            assert out.shape == (4, 2) == reference(x, torch.zeros(4, dtype=torch.long)).shape
            assert torch.equal(out, model(x, 0))

    def test_zero_dimensional_task_label_is_one_task(self):
        model = self.build().eval()
        x = torch.randn(3, *self.input_shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert torch.equal(model(x, torch.tensor(0)), model(x, 0))

    def test_training_batch_with_mixed_task_labels_is_refused_eval_accepts_it(self):
        bench = self.benchmark(2)
        model = self.build()
        for exp in bench.train_stream:
            avalanche_model_adaptation(model, exp)
        model.begin_training(0).gate_scale = 1.0
        model.train()
        with pytest.raises(ValueError, match=r"task_labels .* found \[0, 1\]"):
            model(torch.randn(4, *self.input_shape), torch.tensor([0, 0, 1, 1]))
        model.commit_task(0)
        model.end_training()
        model.eval()
        with pytest.warns(UntrainedTaskWarning):
            out = model(torch.randn(4, *self.input_shape), torch.tensor([0, 1, 0, 1]))
        assert out.shape == (4, 5)

    def test_mixed_task_labels_pad_every_head_to_the_widest(self):
        set_seed(0)
        model = self.build()
        strategy = HAT(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2), train_mb_size=64,
                       evaluator=quiet())
        strategy.train(self.benchmark(2).train_stream[0])  # task 0: a head of 5 classes
        avalanche_model_adaptation(model, self.benchmark(5).test_stream[3])  # task 3's head: 2 classes, untrained
        model.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = torch.randn(6, *self.input_shape)
            labels = torch.tensor([0, 3, 0, 3, 3, 0])  # task 3 never trained: its fresh 2-unit head
            out = model(x, labels)
            assert out.shape == (6, 5)
            torch.testing.assert_close(out[labels == 0], model(x[labels == 0], 0), rtol=0, atol=0)
            three = model(x[labels == 3], 3)
            assert torch.equal(out[labels == 3, : three.shape[1]], three)
            assert torch.all(out[labels == 3, three.shape[1]:] == 0)

    # ---------------------------------------------------------------- training under the strategies
    def test_old_tasks_outputs_bit_identical_after_a_new_task(self, optimizer):
        """HAT: every earlier task's test outputs are bit-identical after each later task."""
        torch.manual_seed(0)
        bench = self.benchmark()
        model = self.build()
        strategy = HAT(model=model, optimizer=OPTIMIZERS[optimizer](model.parameters()),
                       train_mb_size=64, train_epochs=2, eval_mb_size=512, evaluator=quiet())
        test_x = [stream_inputs(exp) for exp in bench.test_stream]
        reference = {}
        first_weight = model.param_layouts[0].weight
        for t, exp in enumerate(bench.train_stream):
            strategy.train(exp)
            if t == 0:
                after_first = first_weight.detach().clone()
            model.eval()
            with torch.no_grad():
                reference[t] = model(test_x[t], t)
                for old in range(t):
                    assert torch.equal(model(test_x[old], old), reference[old]), f"task {old} changed after task {t}"
        # not vacuous: later tasks did move the shared weights that task 0 left free
        assert not torch.equal(first_weight.detach(), after_first)

    @pytest.mark.parametrize("name", ["HAT", "FGAdaHAT"])
    def test_state_dict_round_trip_into_fresh_model(self, name):
        bench = self.benchmark()
        set_seed(0)
        model = self.build()
        strategy = STRATEGIES[name](
            model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
            train_mb_size=32, train_epochs=2, eval_mb_size=512, evaluator=quiet(accuracy_metrics(experience=True)),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for exp in bench.train_stream[:3]:
                strategy.train(exp)
                strategy.eval(bench.test_stream)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        assert model.trained_tasks() == [0, 1, 2]
        fresh = self.build()
        assert set(fresh.classifier.classifiers) == {"0"}  # Avalanche made the other heads
        rng = torch.get_rng_state()
        fresh.load_state_dict(state)  # strict: no missing/unexpected keys
        assert torch.equal(rng, torch.get_rng_state())  # loading does not move the global RNG
        loaded = fresh.state_dict()
        assert loaded.keys() == state.keys()
        assert all(torch.equal(loaded[k], state[k]) and loaded[k].dtype == state[k].dtype for k in state)
        assert fresh.trained_tasks() == [0, 1, 2]
        assert fresh.known_train_tasks_labels == model.known_train_tasks_labels == {0, 1, 2}
        assert fresh.classifier.known_train_tasks_labels == {0, 1, 2}
        assert fresh.max_class_label == model.max_class_label
        model.eval()
        fresh.eval()
        x = torch.stack([bench.test_stream[t].dataset[i][0] for t in range(5) for i in range(8)])
        labels = torch.arange(5).repeat_interleave(8)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for task in range(3):
                assert torch.equal(fresh(x, task), model(x, task))
            assert torch.equal(fresh(x, labels), model(x, labels))  # mixed-task batch, padded output
        if name == "FGAdaHAT":
            for key, group in model.unit_state.items():
                assert group.summed_importance.abs().sum() > 0
                assert torch.equal(fresh.unit_state[key].summed_importance, group.summed_importance)

    def test_deepcopy_of_the_model_during_training_works(self):
        """EMA / best-model plugins copy the model mid-experience; the last step's soft masks are
        part of an autograd graph and are not copied."""
        copies = []

        class Snapshot(SupervisedPlugin):
            def after_training_iteration(self, strategy, **kwargs):
                copies.append(copy.deepcopy(strategy.model))

        model = self.build()
        strategy = HAT(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), train_mb_size=128,
                       plugins=[Snapshot()], evaluator=quiet())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            strategy.train(self.benchmark().train_stream[0])
        assert copies and copies[-1].training_step.mask_flat is None and model.trained_tasks() == [0]
        assert torch.equal(copies[-1].param_layouts[0].weight, model.param_layouts[0].weight)

    def test_nan_loss_rollback_restores_every_parameter_and_buffer(self):
        model = self.build()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            moved = rollback_case(model, HAT, self.benchmark())
        assert moved  # the three steps did change the model
        for suffix in self.buffers_moved_by_training:
            assert any(k.endswith(suffix) for k in moved), suffix

    # ---------------------------------------------------------------- FG-AdaHAT's importances
    def _step_context(self, model) -> StepContext:
        """One training step of task 0 (forward with recorded activations, backward, SGD step)."""
        return one_training_step(model, self.inputs(6), torch.tensor([0, 1, 1, 0, 1, 0]), task=0)

    def test_every_in_pass_importance_gives_one_finite_value_per_unit(self):
        model = self.adapted(self.build())
        ctx = self._step_context(model)
        for name in IN_PASS_TYPES:
            values = IMPORTANCE_TYPES[name].function(ctx)
            assert set(values) == set(model.unit_sizes), name
            for key, n in model.unit_sizes.items():
                assert values[key].shape == (n,), (name, key)
                assert torch.isfinite(values[key]).all() and not values[key].requires_grad, (name, key)

    def test_attribution_importance_gives_one_value_per_unit_and_leaves_the_model_as_it_was(self):
        model = self.adapted(self.build())
        ctx = self._step_context(model)
        modes = {name: m.training for name, m in model.named_modules()}
        before = snapshot_state(model)
        values = IMPORTANCE_TYPES["gradient_x_activation_abs"].function(ctx)
        assert set(values) == set(model.unit_sizes)
        for key, n in model.unit_sizes.items():
            assert values[key].shape == (n,) and torch.isfinite(values[key]).all() and (values[key] >= 0).all(), key
        assert float(sum(v.sum() for v in values.values())) > 0
        assert {name: m.training for name, m in model.named_modules()} == modes
        assert same_state(before, model)
        model.end_training()
