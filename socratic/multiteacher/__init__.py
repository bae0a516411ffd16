"""Multi-teacher knowledge distillation: teacher pools, per-sample teacher-weighting strategies (AVER, EB-KD,
CA-MKD, AEKD) and MTKD-RL's reinforcement-learned weights. See docs/methods/multiteacher.md.

The methods are registered as distillers `aver`, `ebkd`, `camkd`, `aekd`, `mtkd_rl` and configured by the
`multiteacher:` config section (`socratic.config.schema.MultiTeacherConfig`).
"""

from socratic.multiteacher.agent import MTKDAgent, MTKDRLStrategy
from socratic.multiteacher.distiller import MultiTeacherDistiller
from socratic.multiteacher.options import check_options
from socratic.multiteacher.pool import FeatureRegressor, TeacherPool, check_class_counts, head_logits
from socratic.multiteacher.strategies import (
    AverageStrategy,
    BatchView,
    ConfidenceStrategy,
    EntropyStrategy,
    GradientSpaceStrategy,
    WeightingStrategy,
    average_weights,
    confidence_weights,
    divergence_weights,
    entropy_weights,
    gradient_space_weights,
)

__all__ = [
    "AverageStrategy", "BatchView", "ConfidenceStrategy", "EntropyStrategy", "FeatureRegressor",
    "GradientSpaceStrategy", "MTKDAgent", "MTKDRLStrategy", "MultiTeacherDistiller", "TeacherPool",
    "WeightingStrategy", "average_weights", "check_class_counts", "check_options", "confidence_weights",
    "divergence_weights", "entropy_weights", "gradient_space_weights", "head_logits",
]
