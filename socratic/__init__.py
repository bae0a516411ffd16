"""socratic: teacher-student learning for PyTorch."""
__version__ = "0.2.0.dev0"  # the one place the version is written (pyproject.toml reads it)

# The public API for a user's own loop (docs/own-loop.md), imported on first use so that `import socratic`
# (and the CLI's start-up) does not pay for torch and the methods: name -> the module that defines it.
_LAZY = {
    "DistillationLoss": "socratic.api", "load_teacher": "socratic.api", "methods": "socratic.api",
    "create_distiller": "socratic.distillers.base", "method_options": "socratic.distillers.base",
    "Distiller": "socratic.distillers.base", "KD": "socratic.distillers.kd",
    "DistillerUsageError": "socratic.distillers.usage",
    "DisagreementAugmentation": "socratic.augment.disagreement",
    "MultiTeacherDistiller": "socratic.multiteacher.distiller",
    "Teacher": "socratic.models.teacher", "InputNormalizationWarning": "socratic.models.teacher",
    "HookedModel": "socratic.models.external", "as_feature_model": "socratic.models.external",
    "create_model": "socratic.models.registry", "list_models": "socratic.models.registry",
    "TrainContext": "socratic.context",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str):  # PEP 562: socratic.KD imports socratic.distillers.kd on first access
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'socratic' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
