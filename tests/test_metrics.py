"""Network-capacity and mask metrics, the CSV logger and the mask figure.

Every expected value is computed by hand from the stored binary masks, independently of
the broadcast code the plugin uses.
"""

from __future__ import annotations

import csv
import pickle

import pytest
import torch
from avalanche.logging import TensorboardLogger
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from hat_test_support import quiet
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from avalanche_fgadahat import HAT, AdaHAT
from avalanche_fgadahat.figures import plot_masks, render_figure, save_mask_figure
from avalanche_fgadahat.metrics import (
    MetricsCSVLogger,
    find_hat_plugin,
    hat_capacity_metrics,
    hat_mask_metrics,
)
from avalanche_fgadahat.models import HATMLP

pytestmark = [
    pytest.mark.filterwarnings("ignore:No loggers specified"),
    pytest.mark.filterwarnings("ignore::avalanche_fgadahat.models.UntrainedTaskWarning"),
]

MB = "NetworkCapacity_MB/train_phase/train_stream/Task{t:03}"
EXP = "NetworkCapacity_Exp/train_phase/train_stream/Task{t:03}/Exp{t:03}"
STREAM = "NetworkCapacity_Stream/eval_phase/test_stream"
FIGURE = "MaskFigure/train_phase/train_stream"


def _all_metrics(figure: bool):
    return [
        *hat_capacity_metrics(minibatch=True, experience=True, stream=True),
        *hat_mask_metrics(usage=True, figure=figure, dpi=40),
    ]


def _stored(model, key, tasks):
    return [model.unit_state[key].task_masks[t] for t in tasks]


def _hat_free_fraction(model: HATMLP, tasks: list[int]) -> float:
    """Fraction of masked-layer parameters with no earlier-task unit at both ends (HAT Eq. 2)."""
    free = total = 0.0
    previous_used = None
    for index, layer in enumerate(model.fc):
        key = f"fc{index}"
        n_out, n_in = layer.out_features, layer.in_features
        if tasks:
            used_mask = torch.stack(_stored(model, key, tasks)).amax(0)
        else:
            used_mask = torch.zeros(n_out)
        used = float(used_mask.sum())
        used_inputs = n_in if previous_used is None else previous_used
        free += n_out * n_in - used * used_inputs + (n_out - used)
        total += n_out * n_in + n_out
        previous_used = used
    return free / total


def _train_hat(bench, loggers, n_tasks=3, figure=False):
    torch.manual_seed(0)
    model = HATMLP(64, (16, 12))
    evaluator = EvaluationPlugin(*_all_metrics(figure), loggers=loggers)
    strategy = HAT(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
                   train_mb_size=100, train_epochs=1, eval_mb_size=512, evaluator=evaluator)
    train_results = [strategy.train(exp) for exp in bench.train_stream[:n_tasks]]
    return model, strategy, train_results


# ---------------------------------------------------------------- capacity
def test_capacity_reaches_train_and_eval_dicts_and_tensorboard(digits5, tmp_path):
    tb = TensorboardLogger(tb_log_dir=tmp_path / "tb")
    model, strategy, train_results = _train_hat(digits5, [tb], figure=True)
    eval_result = strategy.eval(digits5.test_stream[:3])
    tb.writer.close()

    expected = [_hat_free_fraction(model, list(range(t))) for t in range(3)]
    assert expected[0] == 1.0 and 0.0 < expected[2] < expected[1] < 1.0  # not vacuous
    for t in range(3):
        assert train_results[t][EXP.format(t=t)] == pytest.approx(expected[t], abs=1e-6)
        assert train_results[t][MB.format(t=t)] == pytest.approx(expected[t], abs=1e-6)
    # at eval time: the capacity of the last training step
    assert eval_result[STREAM] == pytest.approx(expected[2], abs=1e-6)

    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    iterations = [len(exp.dataset) // 100 + bool(len(exp.dataset) % 100) for exp in digits5.train_stream[:3]]
    step = 0
    for t in range(3):
        mb = events.Scalars(MB.format(t=t))
        assert [e.step for e in mb] == list(range(step, step + iterations[t]))
        assert all(e.value == pytest.approx(expected[t], abs=1e-6) for e in mb)
        step += iterations[t]
        (exp_event,) = events.Scalars(EXP.format(t=t))
        assert exp_event.step == step and exp_event.value == pytest.approx(expected[t], abs=1e-6)
    (stream_event,) = events.Scalars(STREAM)
    assert stream_event.value == pytest.approx(expected[2], abs=1e-6)
    assert "MaskUsage/Cumulative/fc0" in scalars
    assert FIGURE in events.Tags()["images"]
    images = events.Images(FIGURE)
    assert len(images) == 3 and images[0].width > 0 and images[0].height > 0


def test_capacity_before_training_is_one_and_experience_is_mean_of_iterations(digits5):
    torch.manual_seed(0)
    model = HATMLP(64, (32, 32))
    evaluator = quiet(*hat_capacity_metrics(minibatch=True, experience=True, stream=True))
    strategy = AdaHAT(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
                      adjustment_intensity=0.05, train_mb_size=32, train_epochs=1, evaluator=evaluator)
    assert strategy.eval(digits5.test_stream[:1])[STREAM] == 1.0
    for exp in digits5.train_stream[:2]:
        strategy.train(exp)
    all_metrics = evaluator.get_all_metrics()
    mb_values = all_metrics[MB.format(t=1)][1]
    assert len(set(mb_values)) > 1  # R_l moves the AdaHAT rates step by step
    (exp_value,) = all_metrics[EXP.format(t=1)][1]
    assert exp_value == pytest.approx(sum(mb_values) / len(mb_values), rel=1e-12)
    assert strategy.eval(digits5.test_stream[:1])[STREAM] == mb_values[-1]


def test_capacity_metric_needs_exactly_one_hat_plugin(digits5):
    model = HATMLP(64, (8,))
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), train_mb_size=500,
                     evaluator=quiet(*hat_capacity_metrics(minibatch=True)))
    with pytest.raises(ValueError, match="no HATPlugin"):
        strategy.train(digits5.train_stream[0])
    hat = HAT(model=HATMLP(64, (8,)), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert find_hat_plugin(hat) is hat.hat_plugin


@pytest.mark.parametrize("helper,kwargs,needle", [
    (hat_capacity_metrics, {}, "no metric selected"),
    (hat_capacity_metrics, {"minibatch": 1}, "minibatch must be True or False"),
    (hat_mask_metrics, {}, "set at least one of usage=True, figure=True"),
    (hat_mask_metrics, {"figure": True, "dpi": 0}, "dpi must be >= 1"),
])
def test_metric_helpers_reject_bad_arguments(helper, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        helper(**kwargs)


# ---------------------------------------------------------------- mask usage
def test_mask_usage_equals_hand_computation_from_stored_masks(digits5):
    model, strategy, train_results = _train_hat(digits5, [])
    for t, result in enumerate(train_results):
        tasks = list(range(t + 1))
        for key, n in model.unit_sizes.items():
            stored = _stored(model, key, tasks)
            for task, mask in zip(tasks, stored):
                expected = sum(float(v) for v in mask) / n
                assert result[f"MaskUsage/Task{task:03}/{key}"] == expected
            union = sum(1 for i in range(n) if any(float(m[i]) > 0 for m in stored)) / n
            assert result[f"MaskUsage/Cumulative/{key}"] == union
    final = train_results[-1]
    values = [v for k, v in final.items() if k.startswith("MaskUsage/Task")]
    assert any(0.0 < v < 1.0 for v in values)
    assert final["MaskUsage/Cumulative/fc0"] >= max(final[f"MaskUsage/Task{t:03}/fc0"] for t in range(3))


# ---------------------------------------------------------------- figure
def test_mask_figure_png_and_image(tmp_path):
    torch.manual_seed(0)
    model = HATMLP(64, (16, 8))
    model.commit_task(0)
    model.initialize_task_embeddings()
    model.commit_task(3)
    path = save_mask_figure(model, tmp_path / "new" / "masks.png", dpi=50)
    assert path == tmp_path / "new" / "masks.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    figure = plot_masks(model, dpi=50)
    panels = [axis for axis in figure.axes if axis.get_title(loc="left")]
    assert [axis.get_title(loc="left") for axis in panels] == [
        f"fc0: {int(model.unit_state['fc0'].cumulative.sum())}/16 units used", "fc0: tasks using each unit",
        f"fc1: {int(model.unit_state['fc1'].cumulative.sum())}/8 units used", "fc1: tasks using each unit",
    ]
    # left panel: stored masks of tasks 0 and 3, then the cumulative mask
    shown = panels[0].get_images()[0].get_array()
    expected = torch.stack([model.unit_state["fc0"].task_masks[0], model.unit_state["fc0"].task_masks[3],
                            model.unit_state["fc0"].cumulative])
    assert torch.equal(torch.as_tensor(shown.data), expected)
    image = render_figure(figure)
    assert image.dtype == torch.uint8 and image.shape[0] == 3 and image.shape[1] > 10
    with pytest.raises(TypeError, match="no HAT masks"):
        plot_masks(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------- CSV logger
def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_csv_logger_writes_capacity_rows(digits5, tmp_path):
    path = tmp_path / "logs" / "metrics.csv"
    logger = MetricsCSVLogger(path)
    model, strategy, _ = _train_hat(digits5, [logger], n_tasks=2)
    strategy.eval(digits5.test_stream[:2])
    rows = _read_csv(path)
    assert list(rows[0]) == ["name", "x", "value", "phase"]
    for t in range(2):
        expected = _hat_free_fraction(model, list(range(t)))
        mb_rows = [r for r in rows if r["name"] == MB.format(t=t)]
        assert mb_rows and all(r["phase"] == "train" for r in mb_rows)
        assert all(float(r["value"]) == pytest.approx(expected, abs=1e-6) for r in mb_rows)
        (exp_row,) = [r for r in rows if r["name"] == EXP.format(t=t)]
        assert int(exp_row["x"]) == int(mb_rows[-1]["x"]) + 1
    (stream_row,) = [r for r in rows if r["name"] == STREAM]
    assert stream_row["phase"] == "eval"
    assert float(stream_row["value"]) == pytest.approx(_hat_free_fraction(model, [0]), abs=1e-6)
    assert any(r["name"] == "MaskUsage/Task001/fc1" for r in rows)
    assert not any(r["name"].startswith("MaskFigure") for r in rows)  # an image, not a number

    # a checkpoint round trip reopens the file for appending; no second header
    restored = pickle.loads(pickle.dumps(logger))
    logger.close()
    strategy.evaluator.loggers = [restored]
    strategy.eval(digits5.test_stream[:1])
    restored.close()
    again = _read_csv(path)
    assert again[: len(rows)] == rows and len(again) > len(rows)
    assert sum(1 for r in again if r["name"] == "name") == 0
    assert [r["name"] for r in again].count(STREAM) == 2


def test_csv_logger_append_and_fresh(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("name,x,value,phase\nold,0,1.0,train\n")
    MetricsCSVLogger(path, append=True).close()
    assert path.read_text() == "name,x,value,phase\nold,0,1.0,train\n"
    MetricsCSVLogger(path).close()
    assert path.read_text() == "name,x,value,phase\n"
    with pytest.raises(ValueError, match="append must be True or False"):
        MetricsCSVLogger(path, append="yes")
