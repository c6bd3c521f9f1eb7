"""RISE (Petsiuk, Das & Saenko 2018): saliency as the score-weighted average of random masks."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..api import register
from ..batching import ranges
from ..gradient.base import make_generator
from .base import PerturbationMethod, baseline_tensors, check_baseline_spec, check_seed
from .engine import PreparedPerturbation
from .masks import (RiseMasks, check_output_transform, check_positive_int, check_probability, grid_shape,
                    output_transform_fn, spatial_shape)


@register
class RISE(PerturbationMethod):
    r"""RISE: Randomized Input Sampling for Explanation.

    .. math:: S(u) = \frac{1}{N_m\, p} \sum_{i=1}^{N_m} f\big(x \odot M_i + b \odot (1 - M_i)\big)\, M_i(u)

    Each mask :math:`M_i` is a random binary grid of ``grid`` cells (each cell kept with
    probability ``p``), upsampled bilinearly to ``(grid + 1) · cell`` pixels
    (``cell = ceil(size / grid)``) and cropped to the input at a random offset in
    ``[0, cell)`` — the paper's smooth masks with random shifts. :math:`f` is the target score
    after ``output_transform`` (the class probability by default, as in the paper), ``b`` the
    baseline for the masked-out part (0 by default, as in the paper).

    Normalisation: the paper's Monte-Carlo estimate of
    :math:`E[f(x \odot M) \mid M(u) = 1]`, i.e. dividing by :math:`N_m \cdot E[M(u)]` with
    :math:`E[M(u)] = p` (exact for the upsampled masks too: interpolation keeps the mean). So
    the map is on the scale of the score: a pixel the model ignores gets about the mean
    score over masks, not 0. ``center=True`` subtracts that mean score,
    :math:`\bar f = \frac{1}{N_m}\sum_i f(\cdot)`, so that ignored pixels get about 0 and
    the map shows what keeping a pixel adds (for signed heatmaps; the ranking is unchanged).

    The same masks are used for every sample of the batch; all perturbed copies go through the
    perturbation engine in chunks of ``batch_size``. Returns ``[N, 1, H, W]`` (``[N, 1, L]``
    for 1-D signals; ``[N, T, 1, ...]`` for T targets; one map per tensor of a tuple input,
    each with its own masks).

    Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
    Models", BMVC 2018 (arXiv:1806.07421).

    Options: ``n_masks`` (4000, as in the paper for ResNet-50), ``grid`` s (7; an int or one
    per spatial dim), ``p`` (0.5), ``baseline`` (0), ``output_transform`` (``"softmax"``,
    ``"log_softmax"``, ``"sigmoid"``, ``None`` for raw scores, or a callable), ``center`` (False),
    ``seed``, ``batch_size``,
    ``memory_budget``.
    """

    name = "rise"
    aliases = ("randomized_input_sampling",)

    def __init__(self, model: Any, *, n_masks: int = 4000, grid: int | tuple[int, ...] = 7, p: float = 0.5,
                 baseline: Any = 0.0, output_transform: Any = "softmax", center: bool = False,
                 seed: int | None = None, **options: Any):
        if not isinstance(center, bool):
            raise TypeError(f"center must be True or False, got {type(center).__name__}")
        n_masks = check_positive_int(n_masks, "n_masks")
        p = check_probability(p, "p")
        if isinstance(grid, (tuple, list)):
            grid = tuple(check_positive_int(g, "grid") for g in grid)
        else:
            grid = check_positive_int(grid, "grid")
        super().__init__(model, n_masks=n_masks, grid=grid, p=p, baseline=check_baseline_spec(baseline),
                         output_transform=check_output_transform(output_transform), center=center,
                         seed=check_seed(seed), **options)
        self.center = center
        self.n_masks, self.grid, self.p, self.baseline = n_masks, grid, p, baseline
        self.output_transform, self.seed = output_transform, seed

    def _attribute(self, prep: PreparedPerturbation) -> tuple[Tensor, ...]:
        inputs = prep.inputs
        sizes = [spatial_shape(t, self.name) for t in inputs]
        for i, t in enumerate(inputs):
            if not t.is_floating_point():
                raise TypeError(f"{self.name} blends x with a baseline, so x must be floating point; "
                                f"x{f'[{i}]' if prep.was_tuple else ''} has dtype {t.dtype}")
        transform = output_transform_fn(self.output_transform, prep.outputs, self.name)
        mask_gen = make_generator(self.seed, torch.device("cpu"))     # the same masks on every device
        masks = [RiseMasks(self.n_masks, size, grid_shape(self.grid, len(size)), self.p, mask_gen, prep.device, t.dtype)
                 for t, size in zip(inputs, sizes)]
        baselines = baseline_tensors(self.baseline, prep, self.seed)
        getters = tuple(lambda k, s, m=m: m.get(k) for m in masks)
        scores = self.engine.evaluate_masks(prep, getters if prep.was_tuple else getters[0], baselines,
                                            n_masks=self.n_masks, output_transform=transform)   # [N, K, T]
        maps = []
        for m, size in zip(masks, sizes):
            flat = scores.new_zeros((prep.n, scores.shape[2], m.pixels))
            for start, stop in ranges(self.n_masks, 256):
                mk = m.get(torch.arange(start, stop, device=prep.device)).reshape(stop - start, -1)   # [B, P]
                flat += torch.einsum("nkt,kp->ntp", scores[:, start:stop], mk.to(scores.dtype))
            saliency = flat / (self.n_masks * self.p)
            if self.center:
                saliency = saliency - scores.mean(1).unsqueeze(2)          # [N, T, 1]: the mean score
            maps.append(saliency.reshape(prep.n, scores.shape[2], 1, *size))
        return tuple(maps)
