"""Tell users when HAT cannot learn: the end-of-experience diagnostics against hand
computations, the warnings on a run that cannot learn, silence on one that does, the
metrics, and the thresholds' validation."""

from __future__ import annotations

import warnings

import pytest
import torch
from hat_test_support import quiet, set_embedding_signs

from avalanche_fgadahat import (
    HAT,
    AdaHAT,
    HATDiagnosticWarning,
    LearningDiagnostics,
    hat_diagnostic_metrics,
    set_seed,
)
from avalanche_fgadahat.models import HATMLP
from avalanche_fgadahat.diagnostics import diagnose, snapshot_cumulative

pytestmark = pytest.mark.filterwarnings("ignore:No loggers specified")


def test_report_against_hand_computation():
    model = HATMLP(3, (4, 2))  # fc.0: 4×3 weights + 4 biases; fc.1: 2×4 + 2
    set_embedding_signs(model, {"fc0": [1, 1, 0, 0], "fc1": [1, 0]})
    model.commit_task(0)
    previous = snapshot_cumulative(model)
    set_embedding_signs(model, {"fc0": [0, 1, 1, 0], "fc1": [1, 1]})
    start = model.task_embeddings.detach().clone()
    with torch.no_grad():  # the task moved two units' embeddings across 0, by 2 each
        model.task_embeddings[0] += 2.0   # fc0 unit 0: off → on
        model.task_embeddings[2] -= 2.0   # fc0 unit 2: on → off
    # task 1 stores fc0 = [1, 1, 0, 0], fc1 = [1, 1]
    model.commit_task(1)
    report = diagnose(model, 1, start, previous, LearningDiagnostics(min_free_capacity=0.0,
                                                                     min_trainable_used=0.0))
    assert report.mask_change == pytest.approx(2 / 6)
    assert report.embedding_shift == pytest.approx(4 / 6)
    # after both tasks M = fc0 [1,1,0,0], fc1 [1,1]; frozen: fc.0 weights 2 rows × 3 + 2 biases;
    # fc.1 weights min(M1[i], M0[j]): 2 rows × 2 used inputs = 4, biases 2
    frozen = 2 * 3 + 2 + 4 + 2
    assert report.free_capacity == pytest.approx(1 - frozen / (12 + 4 + 8 + 2))
    # task 1 uses fc.0 rows 0, 1 (6 weights), all frozen by task 0 before → 0 trainable;
    # fc.1: uses min(m1[i], m0[j]) = rows 0, 1 × inputs 0, 1 = 4 weights; frozen before:
    # row 0 (M1 = 1) × inputs 0, 1 (M0 = 1) = 2 → 2 of 4 trainable
    assert report.trainable_used == {"fc.0": 0.0, "fc.1": pytest.approx(0.5)}
    assert report.warnings == ()


def test_thresholds_decide_which_warnings_fire():
    model = HATMLP(3, (4, 2))
    set_embedding_signs(model, {"fc0": [1, 1, 0, 0], "fc1": [1, 0]})
    previous = snapshot_cumulative(model)
    start = model.task_embeddings.detach().clone()
    model.commit_task(0)  # embeddings never moved
    report = diagnose(model, 0, start, previous, LearningDiagnostics(min_free_capacity=0.9))
    messages = report.warnings
    assert len(messages) == 2
    assert "only 0.00% of the mask bits changed" in messages[0] and "lr x optimizer steps" in messages[0]
    assert "free for the next task" in messages[1]
    # AdaHAT-style rules: capacity is reported, not warned about
    soft = diagnose(model, 0, start, previous, LearningDiagnostics(min_mask_change=0.0, min_free_capacity=0.9,
                                                                   min_trainable_used=1.0), hard_freeze=False)
    assert soft.warnings == () and soft.free_capacity == report.free_capacity
    assert diagnose(model, 0, start, previous, None).warnings == ()  # diagnostics=None: numbers only


def test_an_empty_mask_is_named_as_such_not_as_a_full_network():
    """A layer with no unit on (e.g. ``task_embedding_init_mode='U-10'``): the task cannot learn
    there; the network is not full (the trainable-share check skips that layer)."""
    model = HATMLP(3, (4, 2))
    previous = snapshot_cumulative(model)
    set_embedding_signs(model, {"fc0": [0, 0, 0, 0], "fc1": [1, 0]})
    start = model.task_embeddings.detach().clone()
    model.commit_task(0)
    report = diagnose(model, 0, start, previous, LearningDiagnostics(min_mask_change=0.0))
    assert report.empty_groups == ("fc0",) and report.free_capacity > 0.5
    assert len(report.warnings) == 1
    assert "task 0's mask is empty in fc0" in report.warnings[0] and "full" not in report.warnings[0]


def test_a_run_that_cannot_learn_warns_and_one_that_can_does_not(digits5):
    """The issue's case: 3 epochs at batch 32 (≈ 27 Adam steps at lr 1e-3 per task)."""
    def run(epochs, batch):
        set_seed(1)
        model = HATMLP(64, (256, 256))
        strategy = HAT(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                       train_mb_size=batch, train_epochs=epochs, evaluator=quiet())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for experience in digits5.train_stream[:2]:
                strategy.train(experience)
        return [str(w.message) for w in caught if w.category is HATDiagnosticWarning], strategy

    few, strategy = run(3, 32)
    assert sum("mask bits changed" in m for m in few) == 2
    assert strategy.hat_plugin.last_report.embedding_shift < 0.02
    enough, strategy = run(20, 16)
    assert not [m for m in enough if "mask bits changed" in m]
    assert strategy.hat_plugin.last_report.embedding_shift > 0.02


def test_warnings_come_at_the_end_of_train_so_an_error_leaves_a_consistent_strategy(digits5):
    """With warnings turned into errors (``pytest -W error``), the raise happens after
    Avalanche counted the experience: the task is stored, the clock agrees, a checkpoint
    may be saved, and the next experience trains."""
    set_seed(1)
    model = HATMLP(64, (256, 256))
    strategy = HAT(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), train_mb_size=32,
                   train_epochs=1, evaluator=quiet())
    with warnings.catch_warnings():
        warnings.simplefilter("error", HATDiagnosticWarning)
        with pytest.raises(HATDiagnosticWarning, match="mask bits changed"):
            strategy.train(digits5.train_stream[0])
    assert model.trained_tasks() == [0] and strategy.clock.train_exp_counter == 1
    assert strategy.hat_plugin.last_report.task == 0
    # train() had finished: every plugin's after_training and Avalanche's clean-up ran
    assert strategy.experience is None and strategy._eval_streams is None
    from avalanche_fgadahat.plugins.hat import ExperiencePhase

    assert strategy.hat_plugin.phase is ExperiencePhase.IDLE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HATDiagnosticWarning)
        strategy.train(digits5.train_stream[1])
    assert model.trained_tasks() == [0, 1]


def test_diagnostics_none_silences_the_warnings_but_keeps_the_report(digits5):
    set_seed(1)
    model = HATMLP(64, (32,))
    strategy = AdaHAT(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), train_mb_size=32,
                      evaluator=quiet(), diagnostics=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HATDiagnosticWarning)
        strategy.train(digits5.train_stream[0])
    report = strategy.hat_plugin.last_report
    assert report.task == 0 and report.mask_change < 0.01 and report.warnings == ()


def test_metrics_emit_the_report(digits5):
    set_seed(1)
    model = HATMLP(64, (32,))
    evaluator = quiet(*hat_diagnostic_metrics())
    strategy = HAT(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), train_mb_size=32,
                   evaluator=evaluator, diagnostics=None)
    strategy.train(digits5.train_stream[0])
    strategy.train(digits5.train_stream[1])
    report = strategy.hat_plugin.last_report
    metrics = evaluator.get_all_metrics()
    suffix = "train_phase/train_stream/Task001/Exp001"
    assert metrics[f"HATDiag_MaskChange_Exp/{suffix}"][1] == [report.mask_change]
    assert metrics[f"HATDiag_FreeCapacity_Exp/{suffix}"][1] == [report.free_capacity]
    assert metrics[f"HATDiag_EmbeddingShift_Exp/{suffix}"][1] == [report.embedding_shift]
    assert metrics[f"HATDiag_TrainableUsed_Exp/{suffix}/fc.0"][1] == [report.trainable_used["fc.0"]]
    assert metrics[f"HATDiag_Warnings_Exp/{suffix}"][1] == [0.0]  # diagnostics=None: nothing warned
    assert metrics[f"HATDiag_EmptyGroups_Exp/{suffix}"][1] == [float(len(report.empty_groups))]
    assert len(metrics[f"HATDiag_MaskChange_Exp/train_phase/train_stream/Task000/Exp000"][1]) == 1


@pytest.mark.parametrize("kwargs, match", [
    ({"min_mask_change": 1.5}, "diagnostics.min_mask_change must be <= 1"),
    ({"min_free_capacity": -0.1}, "diagnostics.min_free_capacity must be >= 0"),
    ({"min_embedding_shift": float("nan")}, "diagnostics.min_embedding_shift must be finite"),
])
def test_bad_thresholds_name_the_setting(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LearningDiagnostics(**kwargs)


def test_diagnostics_of_the_wrong_type_are_refused():
    with pytest.raises(ValueError, match="diagnostics must be a LearningDiagnostics or None"):
        HAT(model=HATMLP(3, (4,)), optimizer=torch.optim.SGD(HATMLP(3, (4,)).parameters(), lr=0.1),
            diagnostics={"min_mask_change": 0.1})


def test_warnings_of_a_failed_train_call_are_not_issued_by_the_next_one(digits5):
    set_seed(1)
    model = HATMLP(64, (256,))
    strategy = HAT(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), train_mb_size=64,
                   evaluator=quiet())
    with pytest.raises(ValueError, match="already trained"):
        strategy.train([digits5.train_stream[0], digits5.train_stream[0]])  # task 0 warns, then the error
    assert strategy.hat_plugin.last_report.warnings  # kept in the task's report
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        strategy.train(digits5.train_stream[1])
    tasks = [str(w.message).split(":")[0] for w in caught if w.category is HATDiagnosticWarning]
    assert tasks and all(t == "task 1" for t in tasks)
