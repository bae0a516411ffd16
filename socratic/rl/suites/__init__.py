"""Environment suites for policy distillation, one module each; every module registers itself with
`socratic.registry.ENV_SUITES` (`env.suite` in the RL configs selects one by name)."""
