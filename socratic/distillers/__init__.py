"""One class per method: `forward_train(x, y, ctx) -> (logits, {loss name: tensor})`.

Each module of this package registers its method with `socratic.registry.METHODS` (found by discovery: nothing
here lists them); the multi-teacher methods register from `socratic.multiteacher`.
"""

from socratic.distillers.base import Distiller, create_distiller, list_distillers, method_options, register_distiller
from socratic.distillers.fitnet import FitNet, FitNetOptions, HintRegressor
from socratic.distillers.kd import KD, KDOptions
from socratic.distillers.vanilla import Vanilla

__all__ = [
    "KD", "Distiller", "FitNet", "FitNetOptions", "HintRegressor", "KDOptions", "Vanilla", "create_distiller",
    "list_distillers", "method_options", "register_distiller",
]
