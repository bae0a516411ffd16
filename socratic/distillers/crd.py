"""CRD: contrastive representation distillation with a memory bank of both embeddings and an NCE objective."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from socratic.context import TrainContext
from socratic.distillers.base import Distiller, feature_fields, register_distiller
from socratic.distillers.taps import require_embeddings
from socratic.losses import cross_entropy, kd_loss
from socratic.registry import Options


def nce_loss(scores: Tensor, num_data: int, eps: float = 1e-7) -> Tensor:
    """The NCE loss of CRD (Tian et al. 2020, eq. 18) for (B, K + 1) normalised scores, the positive in column 0.

    With noise probability 1/N for each of K negatives: log D1 = log(P_pos / (P_pos + K/N + eps)) and
    log D0 = log((K/N) / (P_neg + K/N + eps)); the loss is -(sum log D1 + sum log D0) / B (summed over the
    negatives, averaged over the batch). fp32.
    """
    scores = scores.float()
    k = scores.shape[1] - 1
    noise = k / num_data
    log_d1 = torch.log(scores[:, 0] / (scores[:, 0] + noise + eps))
    log_d0 = torch.log(noise / (scores[:, 1:] + noise + eps))
    return -(log_d1.sum() + log_d0.sum()) / scores.shape[0]


class Embed(nn.Module):
    """CRD's projection head: Linear(d_in, dim) then division by the L2 norm (no epsilon, as the reference)."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(x.flatten(1).float())
        return x / x.pow(2).sum(1, keepdim=True).sqrt()


class ContrastMemory(nn.Module):
    """The two memory banks of CRD, one row per training sample: `student` (the student's embeddings, the anchors
    of the teacher's scores) and `teacher`; initialised U(-s, s), s = 1/sqrt(dim / 3). `z_student`/`z_teacher`
    are the normalising constants, set once from the first batch (-1 until then). All are buffers: saved in the
    checkpoint and restored on resume, never touched by the optimiser."""

    def __init__(self, num_data: int, dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("student", torch.rand(num_data, dim).mul_(2 * bound).sub_(bound))
        self.register_buffer("teacher", torch.rand(num_data, dim).mul_(2 * bound).sub_(bound))
        self.register_buffer("z_student", torch.tensor(-1.0))
        self.register_buffer("z_teacher", torch.tensor(-1.0))

    @property
    def num_data(self) -> int:
        return self.student.shape[0]

    def scores(self, e_s: Tensor, e_t: Tensor, contrast: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
        """(student scores, teacher scores), each (B, K + 1): exp(<memory row, embedding> / T) / Z, the student's
        embedding against the teacher memory and the teacher's against the student memory (memories detached).
        Z = mean(score) * N is fixed from the first call on."""
        rows_t = self.teacher[contrast].detach()  # (B, K + 1, dim)
        rows_s = self.student[contrast].detach()
        out_s = torch.exp(torch.bmm(rows_t, e_s.unsqueeze(2)).squeeze(2) / temperature)
        out_t = torch.exp(torch.bmm(rows_s, e_t.unsqueeze(2)).squeeze(2) / temperature)
        with torch.no_grad():
            if self.z_student < 0:
                self.z_student.fill_(float(out_s.detach().mean()) * self.num_data)
            if self.z_teacher < 0:
                self.z_teacher.fill_(float(out_t.detach().mean()) * self.num_data)
        return out_s / self.z_student, out_t / self.z_teacher

    @torch.no_grad()
    def update(self, e_s: Tensor, e_t: Tensor, index: Tensor, momentum: float) -> None:
        """memory[i] <- normalise(momentum * memory[i] + (1 - momentum) * embedding) at the batch's dataset
        indices, after the scores are taken."""
        for bank, emb in ((self.student, e_s), (self.teacher, e_t)):
            rows = bank[index] * momentum + emb.detach().float() * (1 - momentum)
            bank.index_copy_(0, index, rows / rows.pow(2).sum(1, keepdim=True).sqrt())


class NegativeSampler:
    """CRD's index sampler: for each sample, its positive (its own index, mode `exact`, or a random index of its
    class, mode `relax`) and K negatives drawn from the samples of the other classes, without replacement when
    every class leaves at least K others (else with replacement, as the reference). Draws from torch's global
    CPU generator, whose state every checkpoint carries, so a resumed run draws the same indices."""

    def __init__(self, labels: Tensor, num_negatives: int, mode: str = "exact") -> None:
        self.labels = labels.detach().cpu().long()
        self.num_negatives, self.mode = num_negatives, mode
        counts = torch.bincount(self.labels)
        self.with_replacement = bool(num_negatives > len(self.labels) - int(counts.max()))
        if int((counts > 0).sum()) < 2:
            raise ValueError("method.name 'crd' needs a training set of at least two classes (its negatives come "
                             "from the other classes)")

    def __call__(self, index: Tensor) -> Tensor:
        """(B, K + 1) dataset indices, the positive first, on the device of `index`."""
        index_cpu = index.detach().cpu().long()
        y = self.labels[index_cpu]
        same = self.labels.unsqueeze(0) == y.unsqueeze(1)  # (B, N)
        if self.with_replacement:
            negatives = torch.multinomial((~same).float(), self.num_negatives, replacement=True)
        else:  # K smallest of uniform keys over the other classes = K distinct uniform draws
            keys = torch.rand(same.shape).masked_fill_(same, 2.0)
            negatives = keys.topk(self.num_negatives, dim=1, largest=False).indices
        if self.mode == "exact":
            positive = index_cpu
        else:
            positive = torch.multinomial(same.float(), 1).squeeze(1)
        return torch.cat([positive.unsqueeze(1), negatives], dim=1).to(index.device)


@dataclass
class CRDOptions(Options):
    """`method: {name: crd, ...}`; defaults are the reference's (RepDistiller / mdistiller: CE 1, CRD 0.8, no KD
    term, 128-d embeddings, 16384 negatives, NCE temperature 0.07, memory momentum 0.5, exact positives)."""

    name: str = "crd"
    ce_weight: float = 1.0  # weight of the cross-entropy on labels
    crd_weight: float = 0.8  # weight of the two NCE losses (mdistiller FEAT_W, RepDistiller -b)
    kd_weight: float = 0.0  # CRD+KD: weight of T^2 * KL at `temperature` (RepDistiller -a 1)
    temperature: float = 4.0  # KD temperature (used only with kd_weight > 0)
    feat_dim: int = 128  # embedding width
    num_negatives: int = 16384  # K negatives per sample
    nce_temperature: float = 0.07  # T of exp(<memory, embedding> / T)
    momentum: float = 0.5  # memory update: normalise(momentum * old + (1 - momentum) * new)
    mode: str = "exact"  # positive: the sample itself (exact) or a random sample of its class (relax)

    def check(self, prefix: str) -> None:
        self.require_non_negative(prefix, "ce_weight", "crd_weight", "kd_weight")
        self.require_positive(prefix, "temperature", "feat_dim", "num_negatives", "nce_temperature")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"{prefix}.momentum must be in [0, 1), got {self.momentum}")
        if self.mode not in ("exact", "relax"):
            raise ValueError(f"{prefix}.mode must be 'exact' or 'relax', got {self.mode!r}")


@register_distiller("crd", options=CRDOptions, teachers=(1, 1), features=True, sample_indices=True)
class CRD(Distiller):
    """Tian, Krishnan & Isola, "Contrastive Representation Distillation", ICLR 2020.

    Both pooled embeddings go through a trainable Linear + L2 normalisation (`Embed`) to `feat_dim`; each is
    scored against the other network's memory bank at its positive and K negatives (other classes' samples),
    and loss = ce_weight * CE + crd_weight * (NCE(student scores) + NCE(teacher scores)) [+ kd_weight * KD].
    The memory rows of the batch are then moved toward the new embeddings. The memory bank is sized by
    `bind_train_set` (the experiment calls it with the training labels) and indexed by the dataset indices
    the loader gives (`ctx.indices`; the method is registered with `sample_indices=True`). Embeddings are
    trainable extras (`extra_modules()["embed"]`), the memory bank is state (`extra_modules()["memory"]`, buffers
    only); both are saved in every checkpoint.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | Sequence[nn.Module], ce_weight: float = 1.0,
                 crd_weight: float = 0.8, kd_weight: float = 0.0, temperature: float = 4.0, feat_dim: int = 128,
                 num_negatives: int = 16384, nce_temperature: float = 0.07, momentum: float = 0.5,
                 mode: str = "exact") -> None:
        super().__init__(student, teacher)
        require_embeddings("crd", ("student", student), ("teacher", self.teacher))
        self.teacher_fields = feature_fields(self.teacher, embedding=True, logits=kd_weight > 0)
        self.ce_weight, self.crd_weight = ce_weight, crd_weight
        self.kd_weight, self.temperature = kd_weight, temperature
        self.feat_dim, self.num_negatives, self.nce_temperature = feat_dim, num_negatives, nce_temperature
        self.momentum, self.mode = momentum, mode
        self.embed = nn.ModuleDict({"student": Embed(student.embedding_dim, feat_dim),
                                    "teacher": Embed(self.teacher.embedding_dim, feat_dim)})
        self.memory: ContrastMemory | None = None
        self.sampler: NegativeSampler | None = None

    def bind_train_set(self, labels: Tensor) -> None:
        """Size the memory bank to the training set and build the negative sampler from its labels."""
        self.sampler = NegativeSampler(labels, self.num_negatives, self.mode)
        device = next(self.embed.parameters()).device
        self.memory = ContrastMemory(len(labels), self.feat_dim).to(device)

    def extra_modules(self) -> dict[str, nn.Module]:
        extras: dict[str, nn.Module] = {"embed": self.embed}
        if self.memory is not None:
            extras["memory"] = self.memory
        return extras

    def teacher_cache_fields(self) -> list[tuple[str, ...]]:
        return [self.teacher_fields]

    def forward_train(self, x: Tensor, y: Tensor, ctx: TrainContext | None = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        if self.memory is None or self.sampler is None:
            raise ValueError("CRD needs its memory bank: call bind_train_set(train labels) before training "
                             "(DistillationLoss.bind_train_set in your own loop)")
        if ctx is None or ctx.indices is None:
            raise ValueError("CRD needs each sample's dataset index: pass indices=... to DistillationLoss, or "
                             "TrainContext(indices=...) from a "
                             "TensorLoader(with_indices=True)")
        index = ctx.indices.to(x.device).long()
        features = self.student.forward_features(x)
        teacher = self.teacher_features(x, self.teacher_fields)
        with torch.autocast(x.device.type, enabled=False):
            e_s = self.embed["student"](features.embedding)
            e_t = self.embed["teacher"](teacher.embedding)
            scores_s, scores_t = self.memory.scores(e_s, e_t, self.sampler(index), self.nce_temperature)
            crd = nce_loss(scores_s, self.memory.num_data) + nce_loss(scores_t, self.memory.num_data)
        self.memory.update(e_s, e_t, index, self.momentum)
        losses = {"ce": self.ce_weight * cross_entropy(features.logits, y), "crd": self.crd_weight * crd}
        if self.kd_weight > 0:
            losses["kd"] = self.kd_weight * kd_loss(features.logits, teacher.logits, self.temperature)
        return features.logits, losses
