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

Any other ``nn.Module`` gets the same API from :func:`as_feature_model`: its
stages are found by one probe forward (:func:`find_feature_layers`: the last
module output at each spatial resolution), at an input shape taken from the
model (``input_shape``), its first layer, or a few probe sizes
(:func:`infer_input_shape`), not assumed to be 224 x 224.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

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
        input_size: ``(C, H, W)`` of the dummy forward that measures channels;
            None: :func:`infer_input_shape` (the model's own ``input_shape``,
            its first layer, or the first of a few probe sizes that runs).
        expand_gray: repeat a 1-channel input to 3 channels (for models that
            only take RGB, e.g. torchvision's).
        require_classifier: False: a model without a findable classifier
            gets no embedding (``embedding_dim`` None; methods that need one
            say so) instead of an error.
    """

    def __init__(
        self,
        model: nn.Module,
        feature_layers: Sequence[str],
        classifier: str | None = None,
        input_size: Sequence[int] | None = None,
        expand_gray: bool = False,
        require_classifier: bool = True,
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
        try:
            self.classifier_name: str | None = classifier or self._find_classifier()
        except ValueError:
            if require_classifier:
                raise
            self.classifier_name = None
        self.has_head = False
        if self.classifier_name is not None:
            self._get(self.classifier_name, "classifier").register_forward_pre_hook(self._embedding_hook)
        if input_size is None:
            input_size = infer_input_shape(model)
            if input_size is None:
                raise ValueError(f"cannot infer the input shape of {type(model).__name__}: pass "
                                 f"input_size=(C, H, W) (or input_shape=... to socratic.create_distiller)")
        self.input_shape = tuple(int(v) for v in input_size)

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
        self.embedding_dim = int(feats.embedding.shape[1]) if feats.embedding is not None else None

    # -- hooks -----------------------------------------------------------
    def _get(self, name: str, what: str) -> nn.Module:
        try:
            return self.model.get_submodule(name)
        except AttributeError as exc:
            raise ValueError(f"{what} {name!r} is not a submodule of {type(self.model).__name__}") from exc

    def get_classifier(self) -> nn.Module | None:
        """The wrapped model's final classifier module (None when it has none that could be found)."""
        return self.model.get_submodule(self.classifier_name) if self.classifier_name is not None else None

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
        if missing or (self.classifier_name is not None and "__embedding__" not in captured):
            raise RuntimeError(
                f"hooks did not fire for {missing or [self.classifier_name]}: "
                "those modules are not used by the forward pass"
            )
        embedding = captured["__embedding__"].flatten(1) if "__embedding__" in captured else None
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


_PROBE_SIZES = (32, 28, 64, 96, 224)


def _device_of(model: nn.Module) -> torch.device | None:
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else None


def _runs(model: nn.Module, shape: Sequence[int]) -> bool:
    """Whether a no-grad forward of one zero input of `shape` (C, H, W) goes through (in eval mode)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *shape, device=_device_of(model)))
        return True
    except (RuntimeError, ValueError, TypeError, IndexError):
        return False
    finally:
        model.train(was_training)


def infer_input_shape(model: nn.Module) -> tuple[int, ...] | None:
    """An input shape (C, H, W) that `model` runs on, for the probe forward of its feature taps.

    The model's own ``input_shape`` attribute when it has one (``socratic.load_teacher`` sets it from the
    checkpoint's image shape, `HookedModel` keeps its own); else the channels of its first ``Conv2d`` with the
    first of 32, 28, 64, 96, 224 pixels square that runs, or, for a first ``Linear`` on flattened images, the
    square C x H x W (C = 3 or 1) its input width allows. None when nothing fits.
    """
    shape = getattr(model, "input_shape", None)
    if shape:
        return tuple(int(v) for v in shape)
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    if isinstance(first, nn.Conv2d):
        candidates = [(first.in_channels, size, size) for size in _PROBE_SIZES]
    elif isinstance(first, nn.Linear):
        candidates = [(c, side, side) for c in (3, 1) for side in [round((first.in_features / c) ** 0.5)]
                      if c * side * side == first.in_features]
    else:
        return None
    return next((shape for shape in candidates if _runs(model, shape)), None)


def find_feature_layers(model: nn.Module, input_shape: Sequence[int]) -> list[str]:
    """The module names whose outputs are a plain model's stages: one probe forward at `input_shape` records
    every submodule's output in the order they finish; of the (B, C, H, W) maps larger than 1 x 1, the last
    one at each spatial resolution is a stage (the output just before each downsampling, and the last map
    before pooling), as a ResNet's ``layer1 .. layer4``. Modules called more than once per forward (a shared
    ReLU) are skipped: their output is not one place of the network."""
    finished: list[tuple[str, tuple[int, ...] | None]] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def record(mod: nn.Module, args: Any, output: Any, name: str = name) -> None:
            is_map = isinstance(output, Tensor) and output.dim() == 4
            finished.append((name, tuple(output.shape[-2:]) if is_map else None))

        handles.append(module.register_forward_hook(record))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=_device_of(model)))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    calls: dict[str, int] = {}
    for name, _ in finished:
        calls[name] = calls.get(name, 0) + 1
    maps = [(name, size) for name, size in finished if size is not None and calls[name] == 1 and size != (1, 1)]
    return [name for i, (name, size) in enumerate(maps) if i + 1 == len(maps) or maps[i + 1][1] != size]


def has_feature_api(model: nn.Module) -> bool:
    """Whether `model` offers the zoo's feature API (`forward_features() -> Features`, `stage_channels`)."""
    return callable(getattr(model, "forward_features", None)) and getattr(model, "stage_channels", None) is not None


def as_feature_model(model: nn.Module, input_shape: Sequence[int] | None = None,
                     feature_layers: Sequence[str] | None = None, classifier: str | None = None) -> nn.Module:
    """`model` itself when it has the feature API (zoo models, `HookedModel`, `socratic.load_teacher`'s
    teachers), else wrapped in `HookedModel`: stages from `feature_layers`, timm's ``feature_info``,
    ResNet-style ``layer1..4`` or :func:`find_feature_layers`; the embedding is the input of `classifier`
    (default: the last ``nn.Linear``); the probe forward at `input_shape` (C, H, W), or
    :func:`infer_input_shape`'s. The parameters are the model's own (nothing is copied); the hooks it adds record
    only inside ``forward_features``."""
    if has_feature_api(model):
        return model
    shape = tuple(input_shape) if input_shape is not None else infer_input_shape(model)
    if shape is None:
        raise ValueError(f"cannot infer the input shape of {type(model).__name__} for its feature taps: pass "
                         f"input_shape=(C, H, W)")
    layers = list(feature_layers) if feature_layers is not None else (
        _default_feature_layers(model) or find_feature_layers(model, shape))
    return HookedModel(model, layers, classifier=classifier, input_size=shape, require_classifier=False)


def as_feature_models(models: Sequence[nn.Module], input_shape: Sequence[int] | None = None) -> list[nn.Module]:
    """`as_feature_model` for models that see the same inputs (a student and its teachers): without
    `input_shape`, one known by any of them (a teacher's checkpoint image shape) serves them all."""
    if input_shape is None:
        input_shape = next((tuple(m.input_shape) for m in models if getattr(m, "input_shape", None)), None)
    return [as_feature_model(m, input_shape) for m in models]


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
