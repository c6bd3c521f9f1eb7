"""Meaningful perturbation (Fong & Vedaldi 2017): the smallest smooth deletion mask that
destroys the target score, found by gradient descent on a low-resolution mask."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ..api import register
from ..gradient.base import make_generator
from ..batching import CPU_AUTOGRAD_BUDGET, SavedBytes, chunk_size, ranges
from ..inputs import index_kwargs
from ..model_call import ModelCall, _owning_module, frozen_parameters
from .base import PerturbationMethod, baseline_tensors, check_baseline_spec, check_seed
from .engine import PreparedPerturbation
from .masks import (check_output_transform, check_positive_int, check_real, grid_shape, output_transform_fn,
                    spatial_shape, upsample)


@register
class MeaningfulPerturbation(PerturbationMethod):
    r"""Meaningful perturbation: learn a smooth mask whose deletion drops the target score.

    A mask :math:`m \in [0, 1]` (1 = keep) of low resolution is upsampled bilinearly to the
    input, :math:`M = \mathrm{up}(m)`, and blends the input with a perturbed copy :math:`x_0`
    (a blurred copy, a constant or noise — the paper's three "meaningful" perturbations):

    .. math:: \phi(x; M) = x \odot M + x_0 \odot (1 - M)

    and the mask minimises, by projected Adam (``m`` clamped to ``[0, 1]`` after each step),

    .. math:: \lambda_1\,\overline{|1 - m|} + \lambda_2\,\mathrm{TV}_\beta(m) + f_c(\phi(x; M)),
              \qquad \mathrm{TV}_\beta(m) = \overline{|\partial_h m|^\beta} + \overline{|\partial_w m|^\beta}

    (bars: means over the mask's cells, so the weights do not depend on the resolution;
    :math:`f_c`: the target score after ``output_transform``, the class probability by default
    as in the paper). The explanation is the deleted region, ``1 - M``: high = important,
    shaped ``[N, 1, H, W]`` (``[N, T, 1, H, W]`` for T targets; one mask per input tensor of a tuple).

    Every sample (and target) has its own mask, but all are optimised together: one forward
    and one backward per iteration for the whole batch (chunks of ``batch_size`` rows). The
    loss is a sum of per-sample terms and Adam acts elementwise, so each mask is exactly what
    a separate optimisation would give. The mask starts from uniform noise drawn with
    ``seed`` (the paper's random initialisation: results depend on it, see its section on
    stability). The model's parameters do not require grad while this runs (restored after);
    no ``.grad`` is written on the model.

    Fong & Vedaldi, "Interpretable Explanations of Black Boxes by Meaningful Perturbation",
    ICCV 2017 (arXiv:1704.03296). Not implemented from the paper: the random jitter of the
    input during optimisation and the spatially varying blur (the perturbed copy is a fixed
    blurred image here, blended by the mask, as in the lecture formulation and common
    re-implementations).

    Options: ``iterations`` (300), ``learning_rate`` (0.1), ``l1_weight`` λ1 (0.05),
    ``tv_weight`` λ2 (0.2), ``tv_beta`` β (3), ``mask_size`` (28 cells per spatial dim, at most
    the input size), ``baseline`` (``"blur"`` default; ``"noise"``, a number or ``"mean"`` for a
    constant, any baseline spec), ``output_transform`` (``"softmax"`` default, ``"log_softmax"``,
    ``"sigmoid"``, ``None`` for raw scores, or a callable ``outputs -> outputs``), ``seed``,
    ``batch_size`` (rows per forward/backward; by default as many as fit ``memory_budget``,
    measured from the bytes autograd saves for one row).
    """

    name = "meaningful_perturbation"
    aliases = ("mp", "meaningful_perturbations", "mask_perturbation")

    def __init__(self, model: Any, *, iterations: int = 300, learning_rate: float = 0.1, l1_weight: float = 0.05,
                 tv_weight: float = 0.2, tv_beta: float = 3.0, mask_size: int | tuple[int, ...] = 28,
                 baseline: Any = "blur", output_transform: str | Callable[[Tensor], Tensor] | None = "softmax",
                 seed: int | None = None, **options: Any):
        iterations = check_positive_int(iterations, "iterations")
        learning_rate = check_real(learning_rate, "learning_rate", low=0.0, low_open=True)
        l1_weight = check_real(l1_weight, "l1_weight", low=0.0)
        tv_weight = check_real(tv_weight, "tv_weight", low=0.0)
        tv_beta = check_real(tv_beta, "tv_beta", low=1.0)
        if isinstance(mask_size, (tuple, list)):
            mask_size = tuple(check_positive_int(m, "mask_size") for m in mask_size)
        else:
            mask_size = check_positive_int(mask_size, "mask_size")
        super().__init__(model, iterations=iterations, learning_rate=learning_rate, l1_weight=l1_weight,
                         tv_weight=tv_weight, tv_beta=tv_beta, mask_size=mask_size,
                         baseline=check_baseline_spec(baseline), output_transform=check_output_transform(output_transform),
                         seed=check_seed(seed), **options)
        self.iterations, self.learning_rate = iterations, learning_rate
        self.l1_weight, self.tv_weight, self.tv_beta = l1_weight, tv_weight, tv_beta
        self.mask_size, self.baseline, self.output_transform = mask_size, baseline, output_transform
        self.seed = seed
        self.call = ModelCall(model)

    def _attribute(self, prep: PreparedPerturbation) -> tuple[Tensor, ...]:
        inputs = prep.inputs
        sizes = [spatial_shape(t, self.name) for t in inputs]
        for i, t in enumerate(inputs):
            if not t.is_floating_point():
                raise TypeError(f"{self.name} blends x with a perturbed copy, so x must be floating point; "
                                f"x{f'[{i}]' if prep.was_tuple else ''} has dtype {t.dtype}")
        transform = output_transform_fn(self.output_transform, prep.outputs, self.name)
        baselines = baseline_tensors(self.baseline, prep, self.seed)
        n, n_targets = prep.n, prep.target.n_targets
        rows = n * n_targets                                   # row r = t * N + s: target t of sample s
        gen = make_generator(self.seed, torch.device("cpu"))  # the same start on every device
        masks = []
        for t, size in zip(inputs, sizes):
            res = tuple(min(m, s) for m, s in zip(grid_shape(self.mask_size, len(size), "mask_size"), size))
            masks.append(torch.rand((rows, 1, *res), generator=gen, dtype=torch.float64).to(device=t.device, dtype=t.dtype))
        masks = self._optimise(prep, masks, baselines, sizes, transform, rows)
        maps = []
        for m, size in zip(masks, sizes):
            sal = 1.0 - upsample(m, size)                      # [R, 1, *size]
            maps.append(sal.reshape(n_targets, n, 1, *size).transpose(0, 1))
        return tuple(maps)

    def _optimise(self, prep: PreparedPerturbation, masks: list[Tensor], baselines: tuple[Tensor, ...],
                  sizes: list[tuple[int, ...]], transform: Callable[[Tensor], Tensor] | None, rows: int) -> list[Tensor]:
        n = prep.n
        device = prep.device
        r_all = torch.arange(rows, device=device)
        sample_of, target_of = r_all % n, r_all // n
        params = [m.clone().requires_grad_() for m in masks]
        opt = torch.optim.Adam(params, lr=self.learning_rate)

        def loss_and_grads(start: int, stop: int) -> tuple[Tensor, ...]:
            s, t = sample_of[start:stop], target_of[start:stop]
            with torch.enable_grad():
                leaves = [p.detach()[start:stop].requires_grad_() for p in params]
                perturbed = []
                reg = torch.zeros((), dtype=leaves[0].dtype, device=device)
                for leaf, x, b, size in zip(leaves, prep.inputs, baselines, sizes):
                    xs, bs = x.index_select(0, s), b.index_select(0, s)
                    perturbed.append(bs + (xs - bs) * upsample(leaf, size))
                    reg = reg + self.l1_weight * (1.0 - leaf).abs().flatten(1).mean(1).sum()
                    reg = reg + self.tv_weight * _tv(leaf, self.tv_beta).sum()
                kwargs = index_kwargs(prep.forward_kwargs, n, s) if prep.forward_kwargs else {}
                out = self.call(tuple(perturbed), kwargs)
                if transform is not None:
                    out = transform(out)
                score = prep.target.select(out, s).gather(1, t.unsqueeze(1))
                return torch.autograd.grad(score.sum() + reg, leaves)

        with frozen_parameters(self.model):
            chunk = self._chunk(prep, rows, loss_and_grads)
            for _ in range(self.iterations):
                grads = [torch.empty_like(p) for p in params]
                for start, stop in ranges(rows, chunk):
                    for g, cg in zip(grads, loss_and_grads(start, stop)):
                        g[start:stop] = cg
                for p, g in zip(params, grads):
                    p.grad = g
                opt.step()
                with torch.no_grad():
                    for p in params:
                        p.clamp_(0.0, 1.0)
        return [p.detach() for p in params]

    def _chunk(self, prep: PreparedPerturbation, rows: int, step: Callable[[int, int], Any]) -> int:
        """Rows per forward/backward: ``batch_size``, or what fits the memory budget given the bytes
        autograd saves for one row (measured on one extra row; parameters excluded)."""
        engine = self.engine
        if engine.batch_size is not None:
            return max(1, min(engine.batch_size, rows))
        if rows == 1:
            return 1
        module = _owning_module(self.model)
        probe = SavedBytes(exclude=list(module.parameters()) if module is not None else [])
        with probe.measure():
            step(0, 1)
        budget = engine.memory_budget
        if prep.device.type == "cpu" and not engine.budget_given:
            budget = min(budget, CPU_AUTOGRAD_BUDGET)   # a forward+backward chunk, as the gradient engine
        return chunk_size(None, budget, probe.total, rows)


def _tv(m: Tensor, beta: float) -> Tensor:
    """Per-row total variation ``mean |∂m|^β`` summed over the spatial axes, ``[R]``."""
    total = torch.zeros(m.shape[0], dtype=m.dtype, device=m.device)
    for dim in range(2, m.dim()):
        if m.shape[dim] > 1:
            d = m.diff(dim=dim).abs()
            total = total + (d ** beta).flatten(1).mean(1)
    return total


