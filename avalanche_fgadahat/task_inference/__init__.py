"""Class- and domain-incremental learning with the HAT family: infer the task at test time.

HAT stores one binary mask and one head per task. Without task identity at test time
(Avalanche's class-incremental benchmarks, ``SplitMNIST(5, return_task_id=False)``; Permuted
MNIST without task labels), every trained task's masked sub-network is run on the batch, each is
scored by how confident its head is (:data:`~.scores.TASK_SCORES`), and the answer is the most
confident task's prediction, in global class ids (task-identity prediction × within-task
prediction; Kim et al., "A theoretical study on solving continual learning", NeurIPS 2022).

* :mod:`.scores`: the confidence scores (``max_softmax``, ``entropy``, ``energy`` on a head's
  logits; ``mahalanobis`` on the masked features);
* :mod:`.feature_statistics`: the per-task class means and covariance ``mahalanobis`` reads,
  stored after each task's training;
* :mod:`.inference`: the batched forward over the trained tasks and the choice
  (:func:`~.inference.infer_tasks`, :class:`~.inference.TaskInference`);
* :mod:`.adaptation`: training experiences become HAT tasks in training order whatever their
  task label (Avalanche's model adaptation relabelled; :class:`~.adaptation.RelabeledExperience`).

Turned on by ``task_inference="<score>"`` on the strategies and plugins; the metric is
:func:`~avalanche_fgadahat.metrics.task_identification_accuracy`.
"""

from .feature_statistics import TaskFeatureStatistics, collect_task_statistics
from .inference import TaskInference, infer_tasks
from .scores import DEFAULT_TASK_SCORE, FEATURE_SCORES, LOGIT_SCORES, TASK_SCORES

__all__ = ["DEFAULT_TASK_SCORE", "FEATURE_SCORES", "LOGIT_SCORES", "TASK_SCORES", "TaskFeatureStatistics",
           "TaskInference", "collect_task_statistics", "infer_tasks"]
