"""One class per method: `forward_train(x, y) -> (logits, {loss name: tensor})`."""

from socratic.distillers.base import Distiller, create_distiller, list_distillers, register_distiller
from socratic.distillers.fitnet import FitNet, HintRegressor
from socratic.distillers.kd import KD
from socratic.distillers.multiteacher import MULTI_TEACHER_METHODS, is_multi_teacher
from socratic.distillers.vanilla import Vanilla

__all__ = [
    "KD", "MULTI_TEACHER_METHODS", "Distiller", "FitNet", "HintRegressor", "Vanilla", "create_distiller",
    "is_multi_teacher", "list_distillers", "register_distiller",
]
