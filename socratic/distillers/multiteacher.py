"""Registers the multi-teacher methods; their code lives in `socratic.multiteacher` (imported when one is built)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from socratic.config.schema import MethodConfig
from socratic.distillers.base import Distiller, register_distiller

# method name -> weighting strategy (socratic.multiteacher.strategies)
MULTI_TEACHER_METHODS = ("aver", "ebkd", "camkd", "aekd", "mtkd_rl")


def is_multi_teacher(method_name: str) -> bool:
    """True for the methods that distil from a pool of >= 2 teachers with per-sample teacher weights."""
    return method_name in MULTI_TEACHER_METHODS


def _factory(name: str):
    def build(method: MethodConfig, student: nn.Module, teachers: Sequence[nn.Module],
              multiteacher: Any = None) -> Distiller:
        from socratic.multiteacher.distiller import MultiTeacherDistiller

        return MultiTeacherDistiller.from_config(name, student, teachers, multiteacher)

    build.__name__ = f"build_{name}"
    return build


for _name in MULTI_TEACHER_METHODS:
    register_distiller(_name)(_factory(_name))
