"""torchvision / timm models behind the zoo's feature API.

``create_model("torchvision:resnet18", num_classes=10)`` or
``create_model("timm:resnet18", num_classes=10, in_channels=1)`` build the
external model (torchvision and timm are optional, imported only here) and
wrap it in :class:`HookedModel`, which exposes ``forward_features`` /
``stage_channels`` / ``embedding_dim`` through forward hooks:

* stages: the outputs of the modules named by ``feature_layers=[...]`` if
  given, else of timm's ``feature_info`` modules, else of torchvision
  ResNet-style ``layer1 .. layer4``; none found -> no stages (a warning);
* embedding: the input of the final classifier layer (a forward pre-hook),
  flattened to ``(B, D)``;
* channels: measured by one dummy forward at construction.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import Tensor, nn

from .features import Features

INSTALL_HINT = 'pip install "socratic-kd[vision]"'
_RESNET_LAYERS = ("layer1", "layer2", "layer3", "layer4")


def _first_tensor(value) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, Tensor):
                return item
    if isinstance(value, dict):
        for item in value.values():
            if isinstance(item, Tensor):
                return item
    raise TypeError(f"hooked module returned no tensor ({type(value).__name__})")


def _channels(t: Tensor) -> int:
    # (B, C, H, W) feature maps -> C; token / vector outputs (B, ..., D) -> D.
    return int(t.shape[1]) if t.dim() == 4 else int(t.shape[-1])


class _StageHook:
    """Forward hook storing a module's output in its owner's capture buffer.

    An object rather than a closure so that ``copy.deepcopy`` / pickling of the
    wrapper rebinds the hook to the copy.
    """

    def __init__(self, owner: "HookedModel", name: str):
        self.owner = owner
        self.name = name

    def __call__(self, module: nn.Module, args, output) -> None:
        if self.owner._capturing:
            self.owner._captured[self.name] = _first_tensor(output)


class HookedModel(nn.Module):
    """Wrap any classifier so that it offers the zoo's feature API (not its separable head: ``has_head`` is
    False, so CA-MKD's confidence feature weights refuse it with a clear message).

    Args:
        model: the classifier, built with the right number of classes.
        feature_layers: names (``model.get_submodule`` paths) of the modules
            whose outputs are ``Features.stages``, shallow to deep.
        classifier: name of the final classifier module; default: timm's
            ``get_classifier()`` when available, else the last ``nn.Linear``.
        input_size: ``(C, H, W)`` of the dummy forward that measures channels.
        expand_gray: repeat a 1-channel input to 3 channels (for models that
            only take RGB, e.g. torchvision's).
    """

    def __init__(
        self,
        model: nn.Module,
        feature_layers: Sequence[str],
        classifier: str | None = None,
        input_size: Sequence[int] = (3, 224, 224),
        expand_gray: bool = False,
    ):
        super().__init__()
        self.model = model
        self.feature_layers = list(feature_layers)
        self.expand_gray = expand_gray
        self._capturing = False
        self._captured: dict[str, Tensor] = {}

        for name in self.feature_layers:
            module = self._get(name, "feature layer")
            module.register_forward_hook(_StageHook(self, name))
        self.classifier_name = classifier or self._find_classifier()
        self.has_head = False
        self._get(self.classifier_name, "classifier").register_forward_pre_hook(self._embedding_hook)

        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                param = next(iter(model.parameters()), None)
                device = param.device if param is not None else None
                feats = self.forward_features(torch.zeros(1, *input_size, device=device))
        finally:
            model.train(was_training)
        self.stage_channels = [_channels(t) for t in feats.stages]
        self.embedding_dim = int(feats.embedding.shape[1])

    # -- hooks -----------------------------------------------------------
    def _get(self, name: str, what: str) -> nn.Module:
        try:
            return self.model.get_submodule(name)
        except AttributeError as exc:
            raise ValueError(f"{what} {name!r} is not a submodule of {type(self.model).__name__}") from exc

    def get_classifier(self) -> nn.Module:
        """The wrapped model's final classifier module."""
        return self.model.get_submodule(self.classifier_name)

    @property
    def num_classes(self) -> int | None:
        return getattr(self.get_classifier(), "out_features", None)

    def _find_classifier(self) -> str:
        get_classifier = getattr(self.model, "get_classifier", None)
        if callable(get_classifier):
            head = get_classifier()
            if isinstance(head, nn.Module) and not isinstance(head, nn.Identity):
                for name, module in self.model.named_modules():
                    if module is head:
                        return name
        last = None
        for name, module in self.model.named_modules():
            if isinstance(module, nn.Linear):
                last = name
        if last is None:
            raise ValueError(
                f"cannot find the classifier of {type(self.model).__name__}; pass classifier='<module name>'"
            )
        return last

    def _embedding_hook(self, module, args):
        if self._capturing:
            self._captured["__embedding__"] = _first_tensor(args)

    # -- API -------------------------------------------------------------
    def _prepare(self, x: Tensor) -> Tensor:
        if self.expand_gray and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return _first_tensor(self.model(self._prepare(x)))

    def forward_features(self, x: Tensor) -> Features:
        self._captured = {}
        self._capturing = True
        try:
            logits = _first_tensor(self.model(self._prepare(x)))
        finally:
            self._capturing = False
        captured, self._captured = self._captured, {}
        missing = [n for n in self.feature_layers if n not in captured]
        if missing or "__embedding__" not in captured:
            raise RuntimeError(
                f"hooks did not fire for {missing or [self.classifier_name]}: "
                "those modules are not used by the forward pass"
            )
        embedding = captured["__embedding__"].flatten(1)
        return Features(stages=[captured[n] for n in self.feature_layers], embedding=embedding, logits=logits)


def _timm_feature_layers(model: nn.Module) -> list[str]:
    info = getattr(model, "feature_info", None)
    if info is None:
        return []
    if hasattr(info, "module_name"):  # timm.models.FeatureInfo
        return list(info.module_name())
    return [d["module"] for d in info if isinstance(d, dict) and d.get("module")]


def _default_feature_layers(model: nn.Module) -> list[str]:
    names = _timm_feature_layers(model)
    if names:
        return names
    children = dict(model.named_children())
    if all(n in children for n in _RESNET_LAYERS):
        return list(_RESNET_LAYERS)
    return []


def create_external_model(name: str, num_classes: int, in_channels: int = 3, **kwargs) -> HookedModel:
    """Build ``"torchvision:<name>"`` or ``"timm:<name>"`` wrapped in :class:`HookedModel`.

    Keyword arguments ``feature_layers``, ``classifier`` and ``input_size``
    go to the wrapper; the rest go to ``torchvision.models.get_model`` /
    ``timm.create_model`` (e.g. ``weights=...`` / ``pretrained=True``).
    torchvision models take RGB only: 1-channel inputs are repeated to 3.
    """
    source, _, model_name = name.partition(":")
    if not model_name:
        raise ValueError(f"{name!r} names no model")
    feature_layers = kwargs.pop("feature_layers", None)
    classifier = kwargs.pop("classifier", None)
    input_size = kwargs.pop("input_size", None)
    expand_gray = False
    if source == "torchvision":
        try:
            import torchvision
        except ImportError as exc:
            raise ImportError(f"{name!r} needs torchvision: {INSTALL_HINT}") from exc
        if in_channels not in (1, 3):
            raise ValueError(f"torchvision models take 1 (repeated to RGB) or 3 input channels, got {in_channels}")
        model = torchvision.models.get_model(model_name, num_classes=num_classes, **kwargs)
        expand_gray = in_channels == 1
        default_size = (in_channels, 224, 224)
    elif source == "timm":
        try:
            import timm
        except ImportError as exc:
            raise ImportError(f"{name!r} needs timm: {INSTALL_HINT}") from exc
        model = timm.create_model(model_name, num_classes=num_classes, in_chans=in_channels, **kwargs)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        size = cfg.get("input_size") if isinstance(cfg, dict) else None
        default_size = (in_channels, *size[1:]) if size else (in_channels, 224, 224)
    else:
        raise ValueError(f"unknown external model source {source!r} in {name!r} (use torchvision: or timm:)")
    if feature_layers is None:
        feature_layers = _default_feature_layers(model)
        if not feature_layers:
            warnings.warn(
                f"{name}: no stage layers found; Features.stages will be empty "
                "(pass feature_layers=[...] to choose modules)",
                stacklevel=3,
            )
    return HookedModel(
        model,
        feature_layers,
        classifier=classifier,
        input_size=tuple(input_size) if input_size is not None else default_size,
        expand_gray=expand_gray,
    )
