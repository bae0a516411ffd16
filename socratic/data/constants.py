"""Constants of the data package that belong to no single dataset.

Per-dataset facts (normalisation, class names, default augmentation) live in that dataset's module of
`socratic.data.sources`, as metadata of its `socratic.registry.DATASETS` entry.
"""

from __future__ import annotations

SPLITS: tuple[str, ...] = ("train", "test")
SPLIT_ALIASES: dict[str, str] = {"train": "train", "test": "test", "val": "test"}
