"""Datasets as in-memory uint8 tensors, a decode-once disk cache, and a tensor batch loader.

    ds = load_dataset("cifar10", root="data/cifar10", split="train")
    ds = stratified_subset(ds, fraction=0.1, seed=0)
    loader = TensorLoader(ds, 128, shuffle=True, augment=default_augment(ds.name), seed=0)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x, y in loader: ...
"""

from .augment import BatchAugment, BatchTransform, build_augment, default_augment, normalize
from .cache import resolve_cache_dir
from .datasets import ImageDataset, LoadOptions, compute_mean_std, load_dataset, make_payload, normalization
from .errors import DataFormatError, DatasetNotFoundError
from .fashion_mnist_setup import download_fashion_mnist, ensure_fashion_mnist, find_fashion_mnist
from .loader import TensorLoader
from .sources.fashion_mnist import FASHION_MNIST_CLASSES
from .subset import stratified_indices, stratified_subset


__all__ = [
    "BatchAugment",
    "BatchTransform",
    "build_augment",
    "DataFormatError",
    "DatasetNotFoundError",
    "FASHION_MNIST_CLASSES",
    "ImageDataset",
    "LoadOptions",
    "TensorLoader",
    "compute_mean_std",
    "default_augment",
    "download_fashion_mnist",
    "ensure_fashion_mnist",
    "find_fashion_mnist",
    "load_dataset",
    "make_payload",
    "normalization",
    "normalize",
    "resolve_cache_dir",
    "stratified_indices",
    "stratified_subset",
]
