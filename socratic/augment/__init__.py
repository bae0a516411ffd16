"""Batch transforms that need the models: Disagreement Augmentation (Wong et al., ICCV 2025 submission),
its robustness evaluation and its visualisation.

They sit between the loader and `Distiller.forward_train`: `x = augmentation(x, student, teachers)`.
"""

from socratic.augment.disagreement import (
    OBJECTIVES,
    OPTIMIZERS,
    DisagreementAugmentation,
    disagreement_score,
    disagreement_per_sample,
    frozen_running_stats,
)

__all__ = [
    "OBJECTIVES", "OPTIMIZERS", "DisagreementAugmentation", "disagreement_score",
    "disagreement_per_sample", "frozen_running_stats",
]
