"""socratic's model zoo: CIFAR definitions of the KD literature plus torchvision/timm wrappers.

>>> from socratic.models import create_model
>>> model = create_model("resnet8x4", num_classes=100)
>>> feats = model.forward_features(x)  # Features(stages, embedding, logits)
"""

from .features import FeatureModel, Features
from .registry import create_model, list_models, register_model
from .summary import count_call_flops, count_flops, count_parameters, describe_models

# The architectures register themselves with socratic.registry.MODELS when first looked up (discovery).

__all__ = [
    "Features",
    "FeatureModel",
    "create_model",
    "list_models",
    "register_model",
    "count_parameters",
    "count_call_flops",
    "count_flops",
    "describe_models",
]
