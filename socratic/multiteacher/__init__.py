"""Multi-teacher knowledge distillation: teacher pools, per-sample teacher-weighting strategies (AVER, EB-KD,
CA-MKD, AEKD) and MTKD-RL's reinforcement-learned weights. See docs/methods/multiteacher.md.

Each teacher-weighting strategy registered with `socratic.registry.WEIGHTINGS` (`aver`, `ebkd`, `camkd`, `aekd`,
`mtkd_rl`) is a method of the same name, configured by its `method:` section (`MultiTeacherOptions`).
"""

from socratic.multiteacher.agent import MTKDAgent, MTKDRLStrategy
from socratic.multiteacher.distiller import MultiTeacherDistiller
from socratic.multiteacher.options import AgentOptions, MultiTeacherOptions
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
    "WeightingStrategy", "AgentOptions", "MultiTeacherOptions", "average_weights", "check_class_counts",
    "confidence_weights", "divergence_weights", "entropy_weights", "gradient_space_weights", "head_logits",
]
