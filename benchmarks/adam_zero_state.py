"""Why HAT's iteration costs more than plain training on some CPUs: Adam on frozen weights.

HAT zeroes the gradients of the weights earlier tasks use, so Adam's second moment ``v`` of
those weights stays exactly 0, and every step takes ``sqrt(v)`` of a mostly-zero tensor. On
the CPU, torch's vectorised ``sqrt`` can be several times slower on zeros than on positive
numbers (seen on this project's AVX-512 machine), and many times slower on subnormal floats
(``docs/deviations.md`` H16: a gradient of ``3e-20`` gives ``v = (1 − β₂)·g² ≈ 9e-43``, which is
what H16's gradient floor prevents and what ``subnormal_guards="never"`` lets through). This
script measures it on the first layer's shape of the Permuted MNIST MLP (256 × 784): ``sqrt``
and one full Adam step (torch's default ``foreach`` implementation and ``fused=True``), with
all-positive, all-zero and all-subnormal second moments.

    python benchmarks/adam_zero_state.py
"""

from __future__ import annotations

import statistics
import time

import torch


def _median_us(call, repeats: int = 200) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        call()
        times.append(time.process_time() - start)
    return 1e6 * statistics.median(times)


def adam_step_us(gradient: torch.Tensor, fused: bool = False) -> float:
    param = torch.nn.Parameter(torch.randn_like(gradient))
    optimizer = torch.optim.Adam([param], lr=1e-3, fused=fused)

    def step():
        param.grad = gradient
        optimizer.step()

    return _median_us(step)


def main() -> None:
    torch.set_num_threads(1)
    shape = (256, 784)
    positive, zeros = torch.rand(shape) + 0.1, torch.zeros(shape)
    subnormal = torch.full(shape, 1e-40)  # float32: between 1.4e-45 and 1.18e-38
    tiny_gradient = torch.full(shape, 3e-20)  # Adam's v = (1 − β₂)·g² ≈ 9e-43: subnormal
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, 1 thread; "
          "CPU time, median of 200")
    print("| operation on a 256×784 float32 tensor | positive values (µs) | zeros (µs) | ratio | "
          "subnormals (µs) | ratio |")
    print("|---|---|---|---|---|---|")
    rows = [
        ("`torch.sqrt`", _median_us(positive.sqrt), _median_us(zeros.sqrt), _median_us(subnormal.sqrt)),
        ("Adam step (gradient positive / zero / 3e-20, from fresh state)", adam_step_us(positive),
         adam_step_us(zeros), adam_step_us(tiny_gradient)),
        ("Adam step, `fused=True`", adam_step_us(positive, fused=True), adam_step_us(zeros, fused=True),
         adam_step_us(tiny_gradient, fused=True)),
    ]
    for name, a, b, c in rows:
        print(f"| {name} | {a:.1f} | {b:.1f} | {b / a:.2f}× | {c:.1f} | {c / a:.2f}× |")


if __name__ == "__main__":
    main()
