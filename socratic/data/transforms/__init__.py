"""Training batch transforms on uint8 tensors, one module each; every module registers itself with
`socratic.registry.AUGMENTATIONS` (the `data.augment` config section selects one by `name`)."""
