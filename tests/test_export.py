"""``export_task``: a trained task as a plain torch module, its stored mask folded into the
weights (``conv(x)·m = conv_{W·m, b·m}(x)``, ``BN(x)·m = BN_{γ·m, β·m}(x)``), whose outputs equal
the HAT model's for that task bit for bit (the stored masks are 0/1)."""

from __future__ import annotations

import operator
import warnings

import pytest
import torch
from avalanche.models import MTSimpleMLP

from avalanche_fgadahat import HAT
from avalanche_fgadahat.models import HATAlexNet, HATMLP, HATResNet18, export_task
from hat_test_support import digits_benchmark, quiet

BUILDERS = {
    "HATMLP": (lambda: HATMLP(64, (16, 8)), (64,)),
    "HATAlexNet": (lambda: HATAlexNet((1, 8, 8), conv_channels=(4, 4), kernel_sizes=(3, 2), fc_sizes=(16,)), (1, 8, 8)),
    "HATResNet18": (lambda: HATResNet18((1, 8, 8), widths=(4, 4, 8, 8), batch_norm="per_task",
                                        small_input_stem=True), (1, 8, 8)),
    "MTSimpleMLP (to_hat)": (lambda: MTSimpleMLP(64, 16), (64,)),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_exported_task_equals_the_hat_model_and_holds_no_hat_state(name):
    build, shape = BUILDERS[name]
    torch.manual_seed(0)
    bench = digits_benchmark(5, shape)
    model = build()
    strategy = HAT(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), train_mb_size=32,
                   evaluator=quiet())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for experience in bench.train_stream[:2]:
            strategy.train(experience)
    model = strategy.model.eval()
    for task in (0, 1):
        x = torch.stack([bench.test_stream[task].dataset[i][0] for i in range(16)])
        exported = export_task(model, task)
        with torch.no_grad():
            assert torch.equal(exported(x), model(x, task)), (name, task)
        names = [n for n, _ in exported.named_parameters()] + [n for n, _ in exported.named_buffers()]
        assert not any("task_embeddings" in n or "unit_state" in n or "task_positions" in n for n in names)
        assert not any(f"classifiers.{1 - task}." in n for n in names)  # the other task's head is not there
        muls = [n for n in exported.graph.nodes if n.op == "call_function" and n.target in (operator.mul, torch.mul)]
        if name in ("HATMLP", "HATAlexNet", "MTSimpleMLP (to_hat)"):
            assert muls == []  # every gate folded into its layer
    zero_rows = (exported.get_submodule("model.body.fc.0").weight == 0).all(dim=1) if name == "HATMLP" else None
    if zero_rows is not None:  # units off in the last task's mask have zero rows (folded)
        assert torch.equal(zero_rows, model.stored_masks(1)["fc0"] == 0)


def test_export_of_an_untrained_task_names_the_trained_ones():
    with pytest.raises(KeyError, match=r"task 3 has no stored mask; trained tasks: \[\]"):
        export_task(HATMLP(64, (8,)), 3)
