"""Writes the legacy-model fixtures of ``tests/test_builders.py`` (run once, with the code of
commit f5e1c8a, before HATMLP, HATAlexNet and HATResNet18 became builders on ``to_hat``).

Each ``<name>.pt`` holds what an Avalanche checkpoint pickles of a model: the model object
after two tasks of HAT training on Split Digits, the Adam optimizer built from its parameters,
its ``state_dict()``, and each task's evaluation inputs and logits. Usage (from the repository
root): ``.venv/bin/python tests/data/legacy_models/make_fixtures.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # tests/: hat_test_support

from hat_test_support import digits_benchmark, quiet, stream_inputs  # noqa: E402

from avalanche_fgadahat import HAT, set_seed  # noqa: E402
from avalanche_fgadahat.models import HATAlexNet, HATMLP, HATResNet18  # noqa: E402

BUILDERS = {
    "hatmlp": (lambda: HATMLP(64, (16, 12), dropout=0.1), (64,)),
    "hatalexnet": (lambda: HATAlexNet((1, 8, 8), conv_channels=(4, 6), kernel_sizes=(3, 2), fc_sizes=(16,)),
                   (1, 8, 8)),
    "hatresnet18": (lambda: HATResNet18((1, 8, 8), widths=(4, 4, 8, 8), small_input_stem=True,
                                        batch_norm="per_task"), (1, 8, 8)),
}


def main() -> None:
    torch.set_num_threads(1)
    for name, (build, shape) in BUILDERS.items():
        set_seed(0)
        model = build()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        strategy = HAT(model=model, optimizer=optimizer, train_mb_size=32, train_epochs=1,
                       evaluator=quiet(), device="cpu")
        bench = digits_benchmark(5, shape)
        for experience in bench.train_stream[:2]:
            strategy.train(experience)
        model.eval()
        inputs, outputs = {}, {}
        for task, experience in enumerate(bench.test_stream[:2]):
            x = stream_inputs(experience)[:20]
            inputs[task], outputs[task] = x, model(x, task).detach()
        torch.save({"model": model, "optimizer": optimizer, "state_dict": model.state_dict(),
                    "inputs": inputs, "outputs": outputs}, HERE / f"{name}.pt")
        print(name, {k: tuple(v.shape) for k, v in outputs.items()})


if __name__ == "__main__":
    main()
