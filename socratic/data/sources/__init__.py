"""One module per dataset; each registers itself with `socratic.registry.DATASETS`."""
