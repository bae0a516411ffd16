"""Trajectory matching with `torch.func`: a student's N inner SGD steps on the synthetic set, started from an
expert's θ_t, matched to the expert's θ_{t+M}; the meta-gradient with respect to the synthetic images, their
target representations and the inner step size.

Cazenavette et al., "Dataset Distillation by Matching Training Trajectories", CVPR 2022 (MTT), as MKDT (Joshi, Ni &
Mirzasoleiman, ICLR 2025) uses it with an MSE inner loss to learnable targets:

    θ_{i+1} = θ_i − α ∇_θ ℓ(θ_i; X_{b_i}, Y_{b_i}),   L = ‖θ_N − θ*‖² / ‖θ_0 − θ*‖²

The student is the model's parameters as one flat vector (`FlatModel`: `torch.func.functional_call` on views of
it, no module copies). Two ways to get dL/d(X, Y, α), which agree to float rounding (tests/test_mkdt.py):

* ``unrolled`` -- keep the graph of all N steps and backpropagate through it (MTT; activation memory grows
  linearly with N).
* ``recompute`` -- constant activation memory by recomputation, as TESLA (Cui et al., "Scaling Up Dataset
  Distillation to ImageNet-1K with Constant Memory", ICML 2023) does for MTT: the forward pass keeps no graph,
  only the N + 1 parameter vectors; the backward sweep recomputes one step at a time and carries the adjoint
  λ_i = ∂L/∂θ_i backwards, λ_i = λ_{i+1} − α H_i λ_{i+1}, with H_i λ and the step's image/target gradients from
  one vector-Jacobian product of the gradient function (`torch.func.vjp` of `torch.func.grad`). Unlike TESLA's
  published estimator, which drops the Hessian terms through later steps, this is the exact meta-gradient.
  Memory: one step's double-backward graph plus (N + 1) x P floats for the parameter vectors (P = 1.35 M for the
  paper's ConvNet: 5.4 MB a step, against hundreds of MB of activations a step for the unrolled graph).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad, vjp

from socratic.distill_data.losses import match_loss, representation_mse

from socratic.distill_data.config import META_GRADIENTS


class FlatModel:
    """A module evaluated on a flat parameter vector: ``flat(theta, x)`` = the module with those parameters.

    The vector's layout is `model.parameters()` order (`torch.nn.utils.parameters_to_vector`), which is how
    the experts' trajectories are saved. The module must have no buffers that the forward pass updates.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.names = [name for name, _ in model.named_parameters()]
        self.shapes = [p.shape for _, p in model.named_parameters()]
        self.numels = [p.numel() for _, p in model.named_parameters()]
        self.buffers = dict(model.named_buffers())

    @property
    def size(self) -> int:
        return sum(self.numels)

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: chunk.view(shape)
                for name, chunk, shape in zip(self.names, theta.split(self.numels), self.shapes)}

    def vector(self) -> torch.Tensor:
        """The module's own parameters as a flat vector (detached)."""
        return nn.utils.parameters_to_vector(self.model.parameters()).detach().clone()

    def __call__(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, {**self.unflatten(theta), **self.buffers}, (x,))


def inner_loss(flat: FlatModel) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """ℓ(θ; x, y) = MSE(f_θ(x), y): the inner (student) loss of MKDT."""

    def loss(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return representation_mse(flat(theta, x), y)

    return loss


def minibatches(n: int, batch_size: int, steps: int, generator: torch.Generator) -> list[torch.Tensor]:
    """The index batches of `steps` inner steps: consecutive chunks of random permutations of range(n), a new
    permutation when one is used up (MTT's `indices_chunks`; the last chunk of a permutation may be short)."""
    batches: list[torch.Tensor] = []
    while len(batches) < steps:
        batches.extend(torch.randperm(n, generator=generator).split(batch_size))
    return batches[:steps]


@dataclass
class MetaGradient:
    """One iteration's matching loss and its gradients (None where the input needs none)."""

    loss: torch.Tensor
    images: torch.Tensor
    targets: torch.Tensor
    lr: torch.Tensor


def unrolled_meta_gradient(flat: FlatModel, theta_start: torch.Tensor, theta_target: torch.Tensor,
                           images: torch.Tensor, targets: torch.Tensor, lr: torch.Tensor,
                           batches: Sequence[torch.Tensor]) -> MetaGradient:
    """Backpropagation through the whole unrolled inner loop (memory grows with len(batches))."""
    x = images.detach().requires_grad_(True)
    y = targets.detach().requires_grad_(True)
    alpha = lr.detach().requires_grad_(True)
    step_grad = grad(inner_loss(flat))
    theta = theta_start
    for idx in batches:
        theta = theta - alpha * step_grad(theta, x[idx], y[idx])
    loss = match_loss(theta, theta_start, theta_target)
    if not batches:  # no step: the loss does not depend on the synthetic set
        return MetaGradient(loss.detach(), torch.zeros_like(x), torch.zeros_like(y), torch.zeros_like(alpha))
    gx, gy, glr = torch.autograd.grad(loss, (x, y, alpha))
    return MetaGradient(loss.detach(), gx, gy, glr)


def recompute_meta_gradient(flat: FlatModel, theta_start: torch.Tensor, theta_target: torch.Tensor,
                            images: torch.Tensor, targets: torch.Tensor, lr: torch.Tensor,
                            batches: Sequence[torch.Tensor]) -> MetaGradient:
    """The same gradient in constant activation memory: a graph-free forward pass keeping θ_0..θ_N, then a
    backward sweep that recomputes each step's gradient and carries the adjoint (module docstring)."""
    x, y, alpha = images.detach(), targets.detach(), lr.detach()
    step_grad = grad(inner_loss(flat))
    thetas = [theta_start.detach()]
    with torch.no_grad():
        for idx in batches:
            thetas.append(thetas[-1] - alpha * step_grad(thetas[-1], x[idx], y[idx]))
    theta_end = thetas[-1]
    denominator = (theta_start - theta_target).pow(2).sum()
    loss = (theta_end - theta_target).pow(2).sum() / denominator
    adjoint = 2 * (theta_end - theta_target) / denominator  # ∂L/∂θ_N
    gx, gy = torch.zeros_like(x), torch.zeros_like(y)
    glr = torch.zeros_like(alpha)
    for i in range(len(batches) - 1, -1, -1):
        idx = batches[i]
        g, pullback = vjp(step_grad, thetas[i], x[idx], y[idx])
        h_adjoint, g_x, g_y = pullback(adjoint)
        glr -= (g * adjoint).sum()
        gx.index_add_(0, idx, -alpha * g_x)
        gy.index_add_(0, idx, -alpha * g_y)
        adjoint = adjoint - alpha * h_adjoint
        del g, pullback, h_adjoint, g_x, g_y  # free this step's graph before the next one is built
        thetas.pop()  # θ_{i+1} is no longer needed
    return MetaGradient(loss, gx, gy, glr.reshape(alpha.shape))


def meta_gradient(mode: str, flat: FlatModel, theta_start: torch.Tensor, theta_target: torch.Tensor,
                  images: torch.Tensor, targets: torch.Tensor, lr: torch.Tensor,
                  batches: Sequence[torch.Tensor]) -> MetaGradient:
    """The meta-gradient by `mode` (`META_GRADIENTS`: recompute | unrolled)."""
    if mode == "recompute":
        return recompute_meta_gradient(flat, theta_start, theta_target, images, targets, lr, batches)
    if mode == "unrolled":
        return unrolled_meta_gradient(flat, theta_start, theta_target, images, targets, lr, batches)
    raise ValueError(f"meta_grad {mode!r} is not one of {', '.join(META_GRADIENTS)}")


def student_steps(flat: FlatModel, theta: torch.Tensor, images: torch.Tensor, targets: torch.Tensor,
                  lr: float | torch.Tensor, batches: Sequence[torch.Tensor]) -> torch.Tensor:
    """θ after plain inner SGD steps on the given batches (no graph): the student of one iteration."""
    step_grad = grad(inner_loss(flat))
    with torch.no_grad():
        for idx in batches:
            theta = theta - lr * step_grad(theta, images[idx], targets[idx])
    return theta


def is_finite(value: torch.Tensor) -> bool:
    return bool(torch.isfinite(value).all()) and not math.isnan(float(value.sum()))


__all__ = ["FlatModel", "META_GRADIENTS", "MetaGradient", "inner_loss", "meta_gradient", "minibatches",
           "recompute_meta_gradient", "student_steps", "unrolled_meta_gradient"]
