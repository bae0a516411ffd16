"""One module per dataset, each registering itself in `socratic.registry.DATASETS`.

A dataset module defines a loader `load(root, split, options) -> payload` (see `socratic.data.datasets`:
`LoadOptions`, `make_payload`) and registers it with its metadata::

    @DATASETS.register("cifar10", mean=(...), std=(...), augment={"name": "crop_flip", "padding": 4, "flip": True})
    def load_cifar10(root, split, options): ...

Metadata keys: `mean`, `std` (the default normalisation over [0, 1] pixels; None when computed from the data,
as for image folders), `augment` (the default training augmentation as plain options), `description`, and
optionally `install` (a function that installs the data, for `socratic data <name> --install`). Adding a
dataset is one new module here; `load_dataset`, the config and the CLI find it through the registry.
"""
