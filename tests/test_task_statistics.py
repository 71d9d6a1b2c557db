"""The ``mahalanobis`` task-identity score and the per-task feature statistics it reads.

Each test names the bug it catches: a wrong covariance (class means not removed, shrinkage on
the wrong scale, units counted wrongly), statistics computed under the wrong mask or lost by a
state dict, a task without statistics chosen, statistics that move after their task.
"""

from __future__ import annotations


import warnings

import numpy as np
import pytest
import torch
from hat_test_support import quiet, stream_inputs, two_unit_task_network

from avalanche_fgadahat import HAT, AdaHATPlugin, FGAdaHAT, HATPlugin, set_seed
from avalanche_fgadahat.data import split_digits
from avalanche_fgadahat.metrics import task_identification_accuracy
from avalanche_fgadahat.models import HATMLP
from avalanche_fgadahat.task_inference import (DEFAULT_TASK_SCORE, TASK_SCORES, TaskFeatureStatistics,
                                               collect_task_statistics, infer_tasks)
from avalanche_fgadahat.task_inference.feature_statistics import SHRINKAGE


def _hand_distance(features: np.ndarray, labels: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The module doc's d_t, written out in numpy (float64)."""
    classes = sorted(set(labels.tolist()))
    means = {c: features[labels == c].mean(0) for c in classes}
    centred = np.stack([f - means[y] for f, y in zip(features, labels)])
    cov = centred.T @ centred / len(features)
    used = np.diag(cov) > 0
    k = used.sum()
    shrunk = cov + SHRINKAGE * np.diag(cov)[used].mean() * np.eye(cov.shape[0])
    precision = np.linalg.inv(shrunk)
    per_class = [[(q - means[c]) @ precision @ (q - means[c]) for c in classes] for q in queries]
    return np.min(per_class, axis=1) / k


def _store(statistics: TaskFeatureStatistics, task: int, features: np.ndarray, labels: np.ndarray) -> None:
    f = torch.tensor(features, dtype=torch.float64)
    y = torch.tensor(labels)
    classes = int(y.max()) + 1
    sums = torch.zeros(classes, f.shape[1], dtype=torch.float64).index_add_(0, y, f)
    counts = torch.bincount(y, minlength=classes).double()
    statistics.store(task, sums, counts, f.T @ f)


def test_distance_equals_the_hand_computation_and_ignores_a_switched_off_unit():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 4)) * [1.0, 2.0, 0.5, 0.0] + [0.0, 1.0, 0.0, 0.0]
    labels = np.repeat([1, 3], 20)  # classes 1 and 3 of the global ids; 0 and 2 absent
    features[labels == 3, 0] += 4.0
    queries = rng.normal(size=(5, 4)) * 3
    statistics = TaskFeatureStatistics(4)
    _store(statistics, 0, features, labels)
    assert statistics.units.tolist() == [3.0]  # the unit that is always 0 is not counted
    assert statistics.present[0].tolist() == [False, True, False, True]
    got = statistics.distance(0, torch.tensor(queries, dtype=torch.float32))
    np.testing.assert_allclose(got.numpy(), _hand_distance(features, labels, queries), rtol=1e-5)
    # a query that differs only on the switched-off unit has... its own large distance (never fired)
    assert float(statistics.distance(0, torch.tensor([[0.0, 1.0, 0.0, 5.0]]))[0]) > 100


def test_a_task_without_statistics_is_never_chosen_over_one_with():
    statistics = TaskFeatureStatistics(2)
    _store(statistics, 1, np.array([[0.0, 1.0], [0.0, 3.0], [1.0, 2.0]]), np.array([0, 0, 0]))
    assert not statistics.has(0) and statistics.has(1) and statistics.tasks() == [1]
    far = torch.tensor([[100.0, -100.0]])
    assert torch.isinf(statistics.distance(0, far)).all() and torch.isfinite(statistics.distance(1, far)).all()


def test_bad_statistics_input_is_refused():
    statistics = TaskFeatureStatistics(3)
    with pytest.raises(ValueError, match="width 2"):
        statistics.store(0, torch.zeros(1, 2), torch.ones(1), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="no sample"):
        statistics.store(0, torch.zeros(1, 3), torch.zeros(1), torch.zeros(3, 3))
    assert statistics.tasks() == []  # nothing half-stored


# ---------------------------------------------------------------- a network with a known answer
def _two_task_network() -> HATMLP:
    """Heads at their initial weights: only the features should tell the tasks apart."""
    return two_unit_task_network("mahalanobis", confident_heads=False)


def _task_data(task: int, n: int = 50) -> torch.utils.data.TensorDataset:
    """Task 0: input unit 0 near 2 (class 0) or 4 (class 1); task 1: input unit 1 near 2 or 4."""
    generator = torch.Generator().manual_seed(task)
    y = torch.arange(n) % 2
    x = torch.zeros(n, 2)
    x[:, task] = 2.0 + 2.0 * y + 0.3 * torch.randn(n, generator=generator)
    return torch.utils.data.TensorDataset(x, y + 2 * task)


def test_statistics_are_of_the_task_s_masked_features_and_pick_the_right_task():
    model = _two_task_network()
    for task in (0, 1):
        model.store_task_statistics(_task_data(task), task, batch_size=7)
    statistics = model.task_statistics
    means = statistics.means
    assert torch.allclose(means[0, :2, 1], torch.zeros(2)) and torch.allclose(means[1, 2:, 0], torch.zeros(2))
    assert float(means[0, 1, 0]) == pytest.approx(4.0, abs=0.2) and statistics.units.tolist() == [1.0, 1.0]
    model.eval()
    x = torch.tensor([[2.1, 0.0], [0.0, 3.9], [4.2, 0.0], [0.0, 2.0]])
    result = infer_tasks(model, x, [0, 1], TASK_SCORES["mahalanobis"])
    assert result.chosen.tolist() == [0, 1, 0, 1]
    for task in (0, 1):
        torch.testing.assert_close(result.scores[task], -statistics.distance(task, model.forward_features(
            x, model.stored_masks(task), task)))


def test_statistics_survive_a_state_dict_into_a_fresh_model_and_a_wrong_width_is_refused():
    model = _two_task_network()
    for task in (0, 1):
        model.store_task_statistics(_task_data(task), task, batch_size=16)
    fresh = HATMLP(2, (2,))
    fresh.load_state_dict(model.state_dict())
    for name, buffer in model.task_statistics.named_buffers():
        assert torch.equal(getattr(fresh.task_statistics, name), buffer), name
    other = HATMLP(2, (3,))
    with pytest.raises(ValueError, match="task_statistics.means holds 2 features, here 3"):
        other.load_state_dict({**other.state_dict(), "task_statistics.means": model.task_statistics.means})


def test_logit_scores_store_no_statistics():
    model = _two_task_network()
    model.set_task_inference("entropy")
    model.store_task_statistics(_task_data(0), 0, batch_size=8)
    assert getattr(model, "task_statistics", None) is None


# ---------------------------------------------------------------- strategies
@pytest.mark.parametrize("cls", [HAT, FGAdaHAT], ids=["HAT", "FGAdaHAT"])
def test_training_stores_each_task_s_statistics_once_from_its_own_data(cls):
    set_seed(7)
    benchmark = split_digits(5, return_task_id=False)
    model = HATMLP(64, (32,))
    strategy = cls(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), train_mb_size=16,
                   train_epochs=2, device="cpu", task_inference="mahalanobis",
                   evaluator=quiet(*task_identification_accuracy()))
    strategy.train(benchmark.train_stream[0])
    first = {n: b.clone() for n, b in model.task_statistics.named_buffers()}
    # recomputed by hand from the experience's inputs under task 0's mask
    x = stream_inputs(benchmark.train_stream[0])
    y = torch.tensor(list(benchmark.train_stream[0].dataset.targets))
    model.eval()
    features = model.forward_features(x, model.stored_masks(0), 0).detach().double().numpy()
    expected = _hand_distance(features, y.numpy(), features[:5])
    np.testing.assert_allclose(model.task_statistics.distance(0, torch.tensor(features[:5]).float()).numpy(),
                               expected, rtol=1e-4)
    strategy.train(benchmark.train_stream[1])
    assert model.task_statistics.tasks() == [0, 1]
    for name, buffer in first.items():  # task 0's statistics are not recomputed by task 1
        saved = getattr(model.task_statistics, name)[0]
        assert torch.equal(saved[tuple(slice(0, n) for n in buffer[0].shape)], buffer[0]), name
    results = strategy.eval(benchmark.test_stream[:2])
    # HAT's statistics stay exact; FG-AdaHAT's drift a little after one more task (docs)
    assert results["TaskId_Acc_Stream/eval_phase/test_stream"] > (0.9 if cls is HAT else 0.5)


def test_training_with_mahalanobis_equals_training_with_a_logit_score():
    """The statistics pass must not move the global random state (a DataLoader draws a seed even
    unshuffled): the score may change evaluation only."""
    benchmark = split_digits(5, return_task_id=False)
    trained = {}
    for score in ("entropy", "mahalanobis"):
        set_seed(11)
        model = HATMLP(64, (32,))
        strategy = HAT(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), train_mb_size=32,
                       train_epochs=1, device="cpu", task_inference=score, evaluator=quiet())
        for experience in benchmark.train_stream[:3]:
            strategy.train(experience)
        trained[score] = {k: v for k, v in model.state_dict().items() if not k.startswith("task_statistics.")}
    assert trained["entropy"].keys() == trained["mahalanobis"].keys()
    for key, value in trained["entropy"].items():
        assert torch.equal(value, trained["mahalanobis"][key]), key
    state = torch.random.get_rng_state()
    collect_task_statistics(model, benchmark.train_stream[0].dataset, 0, batch_size=16)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_periodic_evaluation_scores_the_task_in_training_with_the_default_score():
    """The task in training has no statistics yet: a periodic evaluation (early stopping reads it)
    must still be able to choose it, so every task is scored with DEFAULT_TASK_SCORE then."""
    set_seed(12)
    benchmark = split_digits(5, return_task_id=False)
    model = HATMLP(64, (32,))
    strategy = HAT(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2), train_mb_size=16,
                   train_epochs=3, device="cpu", task_inference="mahalanobis", eval_every=1,
                   evaluator=quiet(*task_identification_accuracy()))
    strategy.train(benchmark.train_stream[0], eval_streams=[benchmark.test_stream[0]])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*no feature statistics")  # the task in training is expected
        strategy.train(benchmark.train_stream[1], eval_streams=[benchmark.test_stream[1]])
    _, values = strategy.evaluator.get_all_metrics()["TaskId_Acc_Exp/eval_phase/test_stream/Exp001"]
    # scored −inf, the task in training would never be chosen: 0.0 at every periodic evaluation
    assert min(values) > 0.05 and values[-1] > values[0]
    assert model.task_statistics.tasks() == [0, 1]


def test_tasks_without_statistics_fall_back_to_the_default_score_with_a_warning():
    model = two_unit_task_network("entropy").eval()  # trained without statistics
    model.set_task_inference("mahalanobis")
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    with pytest.warns(UserWarning, match=r"task\(s\) \[0, 1\] have no feature statistics"):
        model(x, torch.zeros(2, dtype=torch.long))
    expected = infer_tasks(model, x, [0, 1], TASK_SCORES[DEFAULT_TASK_SCORE])
    assert torch.equal(model.last_task_inference.scores, expected.scores)
    assert model.last_task_inference.chosen.tolist() == [0, 1]


def test_mahalanobis_outside_hat_warns_that_its_statistics_go_stale():
    with pytest.warns(UserWarning, match="go stale"):
        AdaHATPlugin(task_inference="mahalanobis")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*go stale")
        HATPlugin(task_inference="mahalanobis")
        AdaHATPlugin(task_inference="entropy")
