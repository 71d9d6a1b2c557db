"""Class- and domain-incremental learning with the HAT family: ``task_inference`` (issue 13).

Each training experience becomes a new HAT task in training order; at evaluation every
trained task's masked sub-network runs on the batch and the most confident task answers, in
global class ids. The scores are checked against hand computations, the inference on a network
whose answer is known by construction, the batched pass against one pass per task, and the
whole mechanism on Split Digits without task labels.
"""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import pytest
import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.models import SimpleMLP
from avalanche.training import Naive
from hat_test_support import quiet, stream_inputs, two_unit_task_network

from avalanche_fgadahat import HAT, AdaHAT, FGAdaHAT, HATPlugin, set_seed
from avalanche_fgadahat.data import permuted_digits, split_digits
from avalanche_fgadahat.metrics import task_identification_accuracy
from avalanche_fgadahat.models import HATMLP, HATResNet18
from avalanche_fgadahat.task_inference import LOGIT_SCORES, TASK_SCORES, infer_tasks
from avalanche_fgadahat.task_inference import inference as inference_module
from avalanche_fgadahat.task_inference.adaptation import adapt_relabeled


@pytest.fixture(scope="module")
def class_incremental():
    return split_digits(5, return_task_id=False)


# ---------------------------------------------------------------- scores
def test_scores_equal_hand_computations():
    z = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, -1.0]])
    e = math.e
    p = [e ** 2 / (e ** 2 + 1), 0.5, e / (e + e ** -1)]
    torch.testing.assert_close(TASK_SCORES["max_softmax"](z), torch.tensor(p))
    entropy = [-(q * math.log(q) + (1 - q) * math.log(1 - q)) for q in p]
    torch.testing.assert_close(TASK_SCORES["entropy"](z), -torch.tensor(entropy))
    torch.testing.assert_close(TASK_SCORES["energy"](z), torch.tensor([math.log(e ** 2 + 1), math.log(2.0),
                                                                        math.log(e + e ** -1)]))


@pytest.mark.parametrize("name", sorted(LOGIT_SCORES))
def test_classes_outside_the_head_s_task_change_no_score(name):
    """Avalanche masks a head's unseen classes with −1000: the score is the score of the task's own classes."""
    own = torch.tensor([[1.5, -0.5, 0.25]])
    masked = torch.tensor([[1.5, -1000.0, -0.5, -1000.0, 0.25]])
    torch.testing.assert_close(TASK_SCORES[name](masked), TASK_SCORES[name](own))


# ---------------------------------------------------------------- a network with a known answer
def _two_task_network(score: str = "entropy") -> HATMLP:
    """A head is confident only on its own unit's input (``two_unit_task_network``)."""
    return two_unit_task_network(score).eval()


@pytest.mark.parametrize("score", sorted(LOGIT_SCORES))
def test_the_confident_task_answers_in_global_class_ids(score):
    model = _two_task_network(score)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    logits = model(x, torch.zeros(3, dtype=torch.long))
    result = model.last_task_inference
    assert result.chosen.tolist() == [0, 1, 0]
    assert logits.argmax(dim=1).tolist() == [0, 3, 0]
    assert logits.shape == (3, 4)
    assert torch.equal(logits[1, :2], torch.full((2,), -1000.0))  # classes of the other task
    torch.testing.assert_close(result.scores[:, 0], TASK_SCORES[score](torch.tensor([[10.0, 0.0], [0.0, 0.0]])))


def test_stacked_pass_equals_one_pass_per_task(monkeypatch):
    set_seed(0)
    model = HATMLP(8, (16, 12))
    model.set_task_inference("energy")
    model.train()
    for task in range(3):
        adapt_relabeled(model, SimpleNamespace(classes_in_this_experience=[2 * task, 2 * task + 1], task_labels=[0]), task)
        model.task_embeddings.data.normal_(generator=torch.Generator().manual_seed(task))
        model.commit_task(task)
    model.eval()
    x = torch.randn(5, 8)
    stacked = infer_tasks(model, x, [0, 1, 2], TASK_SCORES["energy"])
    monkeypatch.setattr(inference_module, "MAX_STACKED_ROWS", 1)  # one task per pass
    looped = infer_tasks(model, x, [0, 1, 2], TASK_SCORES["energy"])
    for task in range(3):
        single = model.forward_single_task(x, task)
        torch.testing.assert_close(stacked.scores[task], TASK_SCORES["energy"](single), rtol=0, atol=1e-6)
    torch.testing.assert_close(stacked.scores, looped.scores, rtol=0, atol=1e-6)
    assert torch.equal(stacked.chosen, looped.chosen)


# ---------------------------------------------------------------- training on a class-incremental stream
def _strategy(cls, model, score="entropy", **kwargs):
    evaluator = quiet(accuracy_metrics(experience=True, stream=True), *task_identification_accuracy())
    return cls(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), train_mb_size=16,
               train_epochs=2, evaluator=evaluator, device="cpu", task_inference=score, **kwargs)


def test_with_one_trained_task_class_incremental_equals_task_incremental(class_incremental):
    set_seed(1)
    model = HATMLP(64, (32,))
    strategy = _strategy(HAT, model)
    strategy.train(class_incremental.train_stream[0])
    x = stream_inputs(class_incremental.test_stream[0])
    model.eval()
    inferred = model(x, torch.zeros(x.shape[0], dtype=torch.long))
    single = model.forward_single_task(x, 0)
    assert torch.equal(inferred[:, : single.shape[1]], single)
    assert torch.equal(inferred.argmax(1), single.argmax(1))
    assert model.last_task_inference.chosen.unique().tolist() == [0]


@pytest.mark.parametrize("cls", [HAT, AdaHAT, FGAdaHAT], ids=["HAT", "AdaHAT", "FGAdaHAT"])
def test_each_experience_is_a_new_task_with_its_own_head_and_metrics_report(cls, class_incremental):
    set_seed(2)
    model = HATMLP(64, (32,))
    strategy = _strategy(cls, model)
    for experience in class_incremental.train_stream[:3]:
        strategy.train(experience)
    assert model.trained_tasks() == [0, 1, 2]
    for task, experience in enumerate(class_incremental.train_stream[:3]):
        active = model.classifier._buffers[f"active_units_T{task}"].nonzero().flatten().tolist()
        assert active == sorted(experience.classes_in_this_experience)
    results = strategy.eval(class_incremental.test_stream[:4])
    assert 0.0 <= results["Top1_Acc_Stream/eval_phase/test_stream/Task000"] <= 1.0
    tid = {k: v for k, v in results.items() if k.startswith("TaskId_Acc_Exp")}
    assert sorted(tid) == [f"TaskId_Acc_Exp/eval_phase/test_stream/Exp00{k}" for k in range(3)]  # Exp003: untrained
    # the metric against a direct computation on the first test experience
    x = stream_inputs(class_incremental.test_stream[0])
    model.eval()
    model(x, torch.zeros(x.shape[0], dtype=torch.long))
    expected = float((model.last_task_inference.chosen == 0).float().mean())
    assert tid["TaskId_Acc_Exp/eval_phase/test_stream/Exp000"] == pytest.approx(expected)


def test_hat_keeps_earlier_tasks_within_task_outputs_bit_identical(class_incremental):
    set_seed(3)
    model = HATMLP(64, (32, 16))
    strategy = _strategy(HAT, model)
    strategy.train(class_incremental.train_stream[0])
    x = stream_inputs(class_incremental.test_stream[0])
    model.eval()
    before = model.forward_single_task(x, 0)
    for experience in class_incremental.train_stream[1:3]:
        strategy.train(experience)
    model.eval()
    assert torch.equal(model.forward_single_task(x, 0), before)


def test_plugin_on_naive_converts_a_plain_network_with_one_head_per_task(class_incremental):
    set_seed(4)
    network = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    strategy = Naive(model=network, optimizer=torch.optim.Adam(network.parameters(), lr=1e-3), train_mb_size=16,
                     train_epochs=1, evaluator=quiet(), device="cpu", plugins=[HATPlugin(task_inference="max_softmax")])
    for experience in class_incremental.train_stream[:2]:
        strategy.train(experience)
    assert strategy.model.trained_tasks() == [0, 1] and sorted(strategy.model.classifier.classifiers) == ["0", "1"]
    strategy.eval(class_incremental.test_stream[:2])
    assert strategy.model.last_task_inference.chosen.numel() > 0


def test_per_task_batch_norm_network_infers_task_by_task(class_incremental):
    set_seed(5)
    images = split_digits(5, return_task_id=False)
    model = HATResNet18((1, 8, 8), widths=(4, 4, 4, 4), small_input_stem=True, batch_norm="per_task")
    model.set_task_inference("entropy")
    model.train()
    for task in range(2):
        adapt_relabeled(model, images.train_stream[task], task)
        model.commit_task(task)
    model.eval()
    x = torch.randn(3, 1, 8, 8)
    result = infer_tasks(model, x, [0, 1], TASK_SCORES["entropy"])
    for task in range(2):
        torch.testing.assert_close(result.scores[task], TASK_SCORES["entropy"](model.forward_single_task(x, task)))


def test_domain_incremental_permuted_digits_trains_one_task_per_experience():
    set_seed(6)
    bench = permuted_digits(3, return_task_id=False)
    model = HATMLP(64, (64,))
    strategy = _strategy(HAT, model, score="energy")
    for experience in bench.train_stream:
        strategy.train(experience)
    results = strategy.eval(bench.test_stream)
    assert model.trained_tasks() == [0, 1, 2]
    assert results["TaskId_Acc_Stream/eval_phase/test_stream"] > 1 / 3  # better than guessing the task


def test_evaluation_before_any_training_answers_zeros(class_incremental):
    model = HATMLP(64, (8,))
    model.set_task_inference("entropy")
    model.eval()
    out = model(torch.randn(4, 64), torch.zeros(4, dtype=torch.long))
    assert torch.equal(out, torch.zeros_like(out)) and model.last_task_inference is None


# ---------------------------------------------------------------- bad input
def test_unknown_score_names_the_argument_and_the_choices():
    with pytest.raises(ValueError, match=r"task_inference='softmax' is not supported; accepted values are: None, "
                                         r"'max_softmax', 'entropy', 'energy'"):
        HATPlugin(task_inference="softmax")


def test_a_task_labelled_stream_is_refused_before_its_second_experience_changes_anything():
    bench = split_digits(5)  # task labels 0..4
    set_seed(7)
    model = HATMLP(64, (16,))
    strategy = _strategy(HAT, model, score="entropy")
    strategy.train(bench.train_stream[0])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"task_inference='entropy' is for streams without task identity.*"
                                         r"task label 1 and the first one trained had 0"):
        strategy.train(bench.train_stream[1])
    assert {k: v for k, v in model.state_dict().items()}.keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_a_shared_head_model_is_refused_at_construction_or_before_training(class_incremental):
    model = HATMLP(64, (16,), multihead=False)
    with pytest.raises(ValueError, match="task_inference needs one head per task"):
        _strategy(HAT, model)
    strategy = Naive(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), evaluator=quiet(),
                     device="cpu", plugins=[HATPlugin(task_inference="entropy")])
    with pytest.raises(ValueError, match="task_inference needs one head per task"):
        strategy.train(class_incremental.train_stream[0])
    assert model.trained_tasks() == []


def test_strategies_give_a_plain_single_head_network_one_head_per_task(class_incremental):
    set_seed(9)
    network = SimpleMLP(num_classes=10, input_size=64, hidden_size=32)
    strategy = _strategy(FGAdaHAT, network)
    for experience in class_incremental.train_stream[:2]:
        strategy.train(experience)
    assert sorted(strategy.model.classifier.classifiers) == ["0", "1"]


def test_periodic_evaluation_counts_the_experience_being_trained(class_incremental):
    set_seed(10)
    model = HATMLP(64, (32,))
    strategy = _strategy(HAT, model, eval_every=1)
    strategy.train(class_incremental.train_stream[0], eval_streams=[class_incremental.test_stream[:1]])
    values = strategy.evaluator.get_all_metrics()["TaskId_Acc_Exp/eval_phase/test_stream/Exp000"][1]
    assert len(values) == 2  # after each of the two epochs, while task 0 trains (before: none)
    assert values == [1.0, 1.0]  # one candidate task: always right


def test_an_evaluation_stream_with_task_labels_is_answered_with_a_warning(class_incremental):
    set_seed(11)
    model = HATMLP(64, (16,))
    strategy = _strategy(HAT, model)
    strategy.train(class_incremental.train_stream[0])
    with pytest.warns(UserWarning, match=r"this evaluation experience has task label\(s\) \[1\].*ignored"):
        strategy.eval(split_digits(5).test_stream[1:2])


def test_task_identification_metric_needs_task_inference(class_incremental):
    set_seed(8)
    model = HATMLP(64, (16,))
    evaluator = quiet(*task_identification_accuracy())
    strategy = HAT(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), train_mb_size=16,
                   evaluator=evaluator, device="cpu")
    strategy.train(split_digits(5).train_stream[0])
    with pytest.raises(ValueError, match="task-identification accuracy needs task_inference"):
        strategy.eval(split_digits(5).test_stream[:1])
