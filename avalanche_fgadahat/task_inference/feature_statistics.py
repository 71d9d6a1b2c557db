"""Per-task Gaussian statistics of the masked features: what the ``mahalanobis`` score reads.

After a task is trained, one pass over its training data under its stored mask gives, for the
features ``f`` ``(feature_size,)`` of each class ``c`` of the task, the class mean ``μ_c`` and one
covariance ``Σ`` shared by the task's classes (the tied-covariance Gaussian of Lee et al., "A
simple unified framework for detecting out-of-distribution samples and adversarial attacks",
NeurIPS 2018, Eq. 1). The distance of a sample to task ``t`` is

    d_t(f) = min_c (f − μ_c)ᵀ Σ_t⁻¹ (f − μ_c) / k_t,

with ``Σ_t`` shrunk towards its mean variance (``Σ + ε·tr(Σ)/k·I``, ``ε`` =
:data:`SHRINKAGE`) so it is invertible, and divided by ``k_t``, the number of feature units
task ``t``'s data ever switches on: a task whose mask keeps fewer units is not favoured (the
expected squared distance of its own data is about ``k_t``). A unit switched off by the task's
mask is 0 for every input, so it adds nothing; a unit the task's data never fires but another
task's input does adds a large distance, which is the out-of-distribution evidence wanted.

Memory: per task ``classes × feature_size + feature_size²`` floats (64 features, 10 classes: 4,736
floats, 18.5 KiB), no stored samples. The statistics live in buffers of
:class:`TaskFeatureStatistics` (``model.task_statistics``), so state dicts and checkpoints hold
them. Under AdaHAT and FG-AdaHAT later tasks move earlier tasks' parameters a little, and the
statistics are not recomputed (no data of earlier tasks is kept): ``docs/class_incremental.md``.
"""

from __future__ import annotations

import torch
from torch import nn

#: ``ε``: the covariance is shrunk by ``ε × (its mean variance over the units in use)`` on the diagonal
SHRINKAGE = 0.01


def _grown(buffer: torch.Tensor, shape: tuple[int, ...], fill: float = 0.0) -> torch.Tensor:
    """``buffer`` zero-padded (or ``fill``-padded) to ``shape`` (each dim at least as large)."""
    out = buffer.new_full(shape, fill)
    out[tuple(slice(0, n) for n in buffer.shape)] = buffer
    return out


class TaskFeatureStatistics(nn.Module):
    """Class means, shrunk precision and unit count of each trained task's features (module doc).

    :param feature_size: ``F``, the width of the model's features (the heads' input).
    :ivar means: ``(T, C, F)`` class means (rows of classes a task has no sample of are 0).
    :ivar present: ``(T, C)`` bool, the classes task ``t``'s data holds.
    :ivar precisions: ``(T, F, F)`` ``Σ_t⁻¹`` (shrunk).
    :ivar units: ``(T,)`` ``k_t``; 0 for a task without statistics.
    """

    def __init__(self, feature_size: int) -> None:
        super().__init__()
        self.feature_size = int(feature_size)
        f = self.feature_size
        self.register_buffer("means", torch.zeros(0, 0, f))
        self.register_buffer("present", torch.zeros(0, 0, dtype=torch.bool))
        self.register_buffer("precisions", torch.zeros(0, f, f))
        self.register_buffer("units", torch.zeros(0))

    def has(self, task: int) -> bool:
        """Whether ``task`` has statistics."""
        return task < self.units.shape[0] and bool(self.units[task] > 0)

    def tasks(self) -> list[int]:
        """The tasks with statistics, ascending."""
        return [t for t in range(self.units.shape[0]) if self.has(t)]

    def _grow(self, tasks: int, classes: int) -> None:
        t, c = max(tasks, self.means.shape[0]), max(classes, self.means.shape[1])
        f = self.feature_size
        self.means = _grown(self.means, (t, c, f))
        self.present = _grown(self.present, (t, c))
        self.precisions = _grown(self.precisions, (t, f, f))
        self.units = _grown(self.units, (t,))

    @torch.no_grad()
    def store(self, task: int, sums: torch.Tensor, counts: torch.Tensor, scatter: torch.Tensor) -> None:
        """Compute and keep task ``task``'s statistics from one pass's sums (float64 advised).

        :param sums: ``(C, F)`` per-class feature sums.
        :param counts: ``(C,)`` per-class sample counts (at least one positive).
        :param scatter: ``(F, F)`` ``Σ_i f_i f_iᵀ`` over all the task's samples.
        :raises ValueError: no sample, or a feature width other than ``feature_size``.
        """
        if sums.shape[-1] != self.feature_size or scatter.shape != (self.feature_size,) * 2:
            raise ValueError(f"features of width {sums.shape[-1]} given, the model's are {self.feature_size}")
        total = counts.sum()
        if total <= 0:
            raise ValueError(f"task {task} has no sample to compute feature statistics from")
        present = counts > 0
        means = sums / counts.clamp(min=1).unsqueeze(1)
        within = (scatter - (means.T * counts) @ means) / total  # Σ_i f fᵀ − Σ_c n_c μ_c μ_cᵀ, over N
        in_use = within.diagonal() > 0
        units = int(in_use.sum())
        scale = float(within.diagonal()[in_use].mean()) if units else 1.0
        shrunk = within + SHRINKAGE * scale * torch.eye(self.feature_size, dtype=within.dtype, device=within.device)
        self._grow(task + 1, means.shape[0])
        self.means[task] = 0
        self.means[task, : means.shape[0]] = means.to(self.means.dtype)
        self.present[task] = False
        self.present[task, : present.shape[0]] = present
        self.precisions[task] = torch.linalg.inv(shrunk).to(self.precisions.dtype)
        self.units[task] = max(units, 1)

    def distance(self, task: int, features: torch.Tensor) -> torch.Tensor:
        """``d_t(f)`` (module doc) of each row of ``features`` ``(B, F)`` → ``(B,)``; ``+inf`` if
        ``task`` has no statistics."""
        if not self.has(task):
            return features.new_full(features.shape[:1], float("inf"))
        classes = self.present[task].nonzero().squeeze(1)
        means, precision = self.means[task, classes], self.precisions[task]
        diff = features.unsqueeze(1) - means.unsqueeze(0)  # (B, C, F)
        squared = torch.einsum("bcf,fg,bcg->bc", diff, precision, diff)
        return squared.amin(dim=1) / self.units[task]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Take the saved buffers' task and class counts (a fresh module has none)."""
        for name in ("means", "present", "precisions", "units"):
            saved = state_dict.get(prefix + name)
            if isinstance(saved, torch.Tensor) and saved.dim() == getattr(self, name).dim():
                setattr(self, name, torch.zeros_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def task_statistics_of(model: nn.Module, create: bool = False) -> TaskFeatureStatistics | None:
    """``model.task_statistics`` (created on ``model``'s device when ``create``), or ``None``."""
    statistics = getattr(model, "task_statistics", None)
    if statistics is None and create:
        device = next(model.parameters()).device
        model.task_statistics = TaskFeatureStatistics(model.feature_size).to(device)
        statistics = model.task_statistics
    return statistics


@torch.no_grad()
def collect_task_statistics(model: nn.Module, dataset, task: int, batch_size: int,
                            device: torch.device | str | None = None) -> TaskFeatureStatistics:
    """One pass over ``dataset`` (an experience's training data, its evaluation transforms where
    it has them) under ``task``'s stored mask, in evaluation mode; store the task's statistics in
    ``model.task_statistics`` (created if needed). The model's train/eval mode is restored and the
    global random state is not used.

    :param model: a :class:`~avalanche_fgadahat.models.HATBackbone` where ``task`` has a stored mask.
    :param dataset: yields ``(x, y, ...)``; ``y`` global class ids.
    :returns: the model's :class:`TaskFeatureStatistics`.
    """
    statistics = task_statistics_of(model, create=True)
    data = dataset.eval() if hasattr(dataset, "eval") else dataset
    # its own generator: a DataLoader draws a base seed even unshuffled, and the global RNG must
    # not move (training with mahalanobis must equal training with a logit score)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, generator=torch.Generator())
    device = device if device is not None else next(model.parameters()).device
    masks = model.stored_masks(task)
    f = model.feature_size
    sums = torch.zeros(0, f, dtype=torch.float64, device=device)
    counts = torch.zeros(0, dtype=torch.float64, device=device)
    scatter = torch.zeros(f, f, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    try:
        for batch in loader:
            x, y = batch[0].to(device), batch[1].to(device).long()
            features = model.forward_features(x, masks, task).double()
            classes = int(y.max()) + 1
            if classes > sums.shape[0]:
                sums, counts = _grown(sums, (classes, f)), _grown(counts, (classes,))
            sums.index_add_(0, y, features)
            counts.index_add_(0, y, torch.ones_like(y, dtype=counts.dtype))
            scatter += features.T @ features
    finally:
        model.train(was_training)
    statistics.store(task, sums, counts, scatter)
    return statistics
