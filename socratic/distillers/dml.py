"""DML: deep mutual learning, two or more peers trained together from scratch, each distilled from the others."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from socratic.context import TrainContext
from socratic.distillers.base import Distiller, register_distiller
from socratic.losses import cross_entropy
from socratic.registry import Options


def mutual_kl(logits: Sequence[Tensor]) -> list[Tensor]:
    """For each peer k, the mean over the other peers j of batchmean KL(softmax(z_j) || softmax(z_k)), z_j
    detached (each peer learns from the others' current predictions, no temperature). fp32."""
    if len(logits) < 2:
        raise ValueError("mutual_kl needs at least two peers")
    log_p = [F.log_softmax(z.float(), dim=1) for z in logits]
    terms = []
    for k, own in enumerate(log_p):
        others = [F.kl_div(own, other.detach(), reduction="batchmean", log_target=True)
                  for j, other in enumerate(log_p) if j != k]
        terms.append(torch.stack(others).mean())
    return terms


def _in_channels(model: nn.Module) -> int:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    raise ValueError(f"method.peers: cannot tell the input channels of the student {type(model).__name__}")


@dataclass
class DMLOptions(Options):
    """`method: {name: dml, peers: [resnet8], ...}`; defaults are the reference's (Zhang et al. 2018 / the
    Knowledge-Distillation-Zoo code: CE 1, KL 1, no temperature). The student is the first peer."""

    name: str = "dml"
    peers: list[str] = field(default_factory=list)  # model names of the other peers (at least one); modules in code
    ce_weight: float = 1.0  # weight of each peer's cross-entropy
    kl_weight: float = 1.0  # weight of each peer's mean KL to the other peers

    def check(self, prefix: str) -> None:
        self.require_non_negative(prefix, "ce_weight", "kl_weight")
        if not self.peers or not all(isinstance(p, nn.Module) or (isinstance(p, str) and p) for p in self.peers):
            raise ValueError(f"{prefix}.peers must list the model names of the other peers (at least one; the "
                             f"student is the first peer; in your own loop the peer modules), e.g. peers: "
                             f"[resnet8]; got {self.peers!r}")


@register_distiller("dml", options=DMLOptions, teachers=(0, 0), da_targets="peers")
class DML(Distiller):
    """Zhang, Xiang, Hospedales & Lu, "Deep Mutual Learning", CVPR 2018.

    No pretrained teacher: the student and the `peers` (fresh models of the zoo) train together. For each peer
    k, loss_k = ce_weight * CE(z_k, y) + kl_weight * mean_{j != k} KL(p_j || p_k), p_j detached; the losses
    are summed into one backward (each peer's gradient is its own loss's, as the peers share no parameters)
    and every peer has its own optimiser (`optimizer_groups`), stepped on every batch: the synchronous update of
    the reference code. The trainer evaluates every peer (`evaluated_models`); best.pt holds the student.

    With `da.enabled`, Disagreement Augmentation moves each batch toward disagreement between the student and
    its peers (their mean logits, or peer `da.target`; `disagreement_targets`): each peer is the others'
    teacher. This composition is socratic's, not the DML or DA papers'.
    """

    def __init__(self, student: nn.Module, teachers: Sequence[nn.Module] = (),
                 peers: Sequence[str | nn.Module] = (), ce_weight: float = 1.0, kl_weight: float = 1.0) -> None:
        super().__init__(student, teachers)
        from socratic.models import create_model

        built = []
        for i, peer in enumerate(peers):
            if isinstance(peer, nn.Module):  # a user's own loop may pass the peer modules themselves
                built.append(peer)
                continue
            num_classes = getattr(student, "num_classes", None)
            if num_classes is None:
                raise ValueError(f"method.peers[{i}]: the zoo model '{peer}' needs a student that knows its "
                                 f"num_classes (a zoo model); with a plain nn.Module, pass the peers as modules")
            try:
                built.append(create_model(peer, num_classes=num_classes, in_channels=_in_channels(student)))
            except ValueError as err:
                raise ValueError(f"method.peers[{i}]: {err}") from err
        if not built:
            raise ValueError("method.peers: DML needs at least one more peer, e.g. peers: [resnet8]")
        self.peers = nn.ModuleList(built)
        self.peer_names = [f"peer{i + 1}" for i in range(len(built))]
        self.ce_weight, self.kl_weight = ce_weight, kl_weight

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"peers": self.peers}

    def optimizer_groups(self) -> dict[str, list[nn.Module]]:
        return {"student": [self.student], **{name: [peer] for name, peer in zip(self.peer_names, self.peers)}}

    def evaluated_models(self) -> dict[str, nn.Module]:
        return dict(zip(self.peer_names, self.peers))

    def disagreement_targets(self) -> list[nn.Module]:
        return list(self.peers)

    def forward_train(self, x: Tensor, y: Tensor, ctx: TrainContext | None = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        logits = [self.student(x), *(peer(x) for peer in self.peers)]
        kls = mutual_kl(logits)
        losses = {"ce": self.ce_weight * cross_entropy(logits[0], y), "kl": self.kl_weight * kls[0]}
        for name, z, kl in zip(self.peer_names, logits[1:], kls[1:]):
            losses[f"{name}_ce"] = self.ce_weight * cross_entropy(z, y)
            losses[f"{name}_kl"] = self.kl_weight * kl
        return logits[0], losses
