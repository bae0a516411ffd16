"""Hyperparameter search over experiment configs with Optuna (`socratic search`; extra `[hpo]`).

Importing the package does not import Optuna; `run_search`, `search_report` and `load_study` do.
"""

from socratic.search.runner import load_study, run_search, search_report
from socratic.search.space import Param, SearchSpace, SearchSpaceError, load_search_space, parse_search_space

__all__ = ["Param", "SearchSpace", "SearchSpaceError", "load_search_space", "load_study", "parse_search_space",
           "run_search", "search_report"]
