"""socratic: teacher-student learning for PyTorch."""
__version__ = "0.2.0.dev0"  # the one place the version is written (pyproject.toml reads it)
