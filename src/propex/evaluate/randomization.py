"""Randomisation sanity checks (Adebayo et al. 2018): does the explanation depend on the model?

* ``randomization_check``: model-parameter randomisation, cascading (from the output layer
  down, layers accumulating) or independent (one layer at a time), on a deep copy of the
  model — the user's model is never touched;
* ``random_target_check``: the explanation for the explained class against the explanation
  for a random other class (Sixt et al. 2020's / Quantus' "random logit" test).

An explanation that passes changes when the weights it claims to explain change: its
similarity to the original map falls towards 0. One that ignores the model (the input itself,
an edge detector) stays similar at every layer.

Similarities, per sample (maps m = the attribution summed over channels for image-like x
``[N, C, H, W]``, the attribution itself otherwise):

* ``spearman``: rank correlation of m and the randomised model's m' (signs kept);
* ``spearman_abs``: rank correlation of |m| and |m'|;
* ``ssim``: structural similarity (Wang et al. 2004, Gaussian window) of |m| and |m'|, each
  scaled to [0, 1] by its maximum (data range 1);
* ``hog``: Pearson correlation of the HOG features of the same scaled maps.

SSIM and HOG need 2-D maps; for other inputs they are NaN.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ._common import check_choice, check_inputs, check_int, check_seed, fixed_target, prepare
from ._stats import hog_similarity, spearman, ssim
from .robustness import _explain, _explainer, guarded

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def _owned_params(m: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in m.named_parameters(recurse=False) if p is not None]


def _layers_in_forward_order(model: nn.Module, x: Tensor, tgt_rows: int = 1) -> list[str]:
    """Names of the modules that own parameters, in the order their forward first runs (one
    forward pass on one sample of x); modules never called come last, in registration order."""
    names = {m: n for n, m in model.named_modules()}
    candidates = [m for m in model.modules() if _owned_params(m)]
    order: list[str] = []
    seen: set[int] = set()
    handles = []

    def hook(mod: nn.Module, *_: Any) -> None:
        if id(mod) not in seen:
            seen.add(id(mod))
            order.append(names[mod])

    try:
        for m in candidates:
            handles.append(m.register_forward_pre_hook(hook))
        with torch.no_grad():
            model(x[:tgt_rows])
    finally:
        for h in handles:
            h.remove()
    rest = [names[m] for m in candidates if id(m) not in seen]
    return order + rest


def _randomize(module: nn.Module, gen: torch.Generator) -> None:
    """Re-draw the parameters a module owns.

    Layers with a weight matrix/kernel (conv, linear, embeddings, ...) are re-initialised by
    their own ``reset_parameters`` (PyTorch's default initialisation, as a freshly built
    network) under a seeded RNG; other parameters (norm layers' scale and shift, free
    parameters) are drawn from a normal distribution with the original tensor's mean and
    standard deviation (std 1 for a constant tensor), so that they change too.
    """
    params = _owned_params(module)
    has_kernel = any(p.dim() >= 2 for _, p in params)
    if has_kernel and hasattr(module, "reset_parameters") and not isinstance(module, _NORM_TYPES):
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        devices = [p.device for _, p in params if p.device.type == "cuda"]
        with torch.random.fork_rng(devices=list({d.index or 0 for d in devices}) if devices else []):
            torch.manual_seed(seed)
            module.reset_parameters()
        return
    with torch.no_grad():
        for _, p in params:
            mean = p.float().mean()
            std = p.float().std() if p.numel() > 1 else torch.tensor(0.0)
            std = std if float(std) > 0 else torch.tensor(1.0)
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.device)
            p.copy_((mean.to(p.device) + std.to(p.device) * noise).to(p.dtype))


def _maps(a: Tensor, x: Tensor) -> Tensor:
    return a.sum(dim=1) if x.dim() >= 3 else a


def _similarities(m0: Tensor, m1: Tensor) -> dict[str, Tensor]:
    n = m0.shape[0]
    out = {"spearman": spearman(m0, m1), "spearman_abs": spearman(m0.abs(), m1.abs())}
    if m0.dim() == 3 and min(m0.shape[1:]) >= 3:
        s0, s1 = _unit_abs(m0), _unit_abs(m1)
        out["ssim"] = ssim(s0, s1, data_range=1.0)
        out["hog"] = hog_similarity(s0, s1)
    else:
        nan = torch.full((n,), float("nan"), dtype=out["spearman"].dtype, device=m0.device)
        out["ssim"], out["hog"] = nan, nan.clone()
    return out


def _unit_abs(m: Tensor) -> Tensor:
    a = m.abs()
    peak = a.reshape(a.shape[0], -1).amax(dim=1).reshape(-1, *([1] * (a.dim() - 1)))
    return a / torch.where(peak > 0, peak, torch.ones_like(peak))


@guarded
def randomization_check(model: nn.Module, x: Tensor, method: Any = "saliency", target: Any = None, *,
                        order: str = "cascading", seed: int = 0, layers: Sequence[str] | None = None,
                        method_options: dict[str, Any] | None = None) -> dict[str, Any]:
    r"""Model-parameter randomisation test (Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim,
    "Sanity Checks for Saliency Maps", NeurIPS 2018).

    The layers that own parameters are listed in the order of the forward pass and taken
    from the output down. ``order="cascading"``: row l of the result compares the original
    map with the map of a copy whose layers 0..l (the top l + 1 layers) are all randomised;
    ``"independent"``: only layer l is randomised. Similarities per sample (see the module
    docstring): Spearman of signed and of absolute maps, SSIM and HOG similarity.

    .. math:: s_l(x) = \operatorname{sim}\big(\Phi(f, x),\ \Phi(f_{\theta^{(l)}}, x)\big)

    A method that explains the model scores near 0 after full randomisation; one that ignores
    the model stays near 1. The class explained is the one resolved on x with the original
    model (``None``: its top class), kept for every randomised copy. Randomisation runs on a
    ``copy.deepcopy`` of ``model`` with a generator seeded by ``seed`` (layers with kernels
    re-initialised by ``reset_parameters``, others redrawn with their own mean and std);
    ``model`` is left exactly as it was.

    Args:
        layers: names of the modules to randomise (default: every module owning parameters),
            randomised in the order given (default: output layer first).

    Returns:
        dict with ``layers`` (the names, in the order randomised) and ``spearman``,
        ``spearman_abs``, ``ssim``, ``hog``: tensors ``[L, N]``; also ``order``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"randomization_check randomises the parameters of an nn.Module; model is a "
                        f"{type(model).__name__}")
    x = check_inputs(x)
    mode = check_choice(order, "order", ("cascading", "independent"))
    seed = check_seed(seed)
    explainer = _explainer(method, method_options)
    _, prep = prepare(model, x, target)
    tgt = fixed_target(prep, target)
    n = x.shape[0]
    idx = torch.arange(n, device=x.device)
    a0 = _explain(explainer, model, x, tgt, idx)
    m0 = _maps(a0, x)

    work = copy.deepcopy(model)
    if layers is None:
        # on a throwaway copy: a model in training mode would update its batch statistics
        names = list(reversed(_layers_in_forward_order(copy.deepcopy(work), x)))
    else:
        if isinstance(layers, str) or not all(isinstance(v, str) for v in layers):
            raise TypeError("layers must be a sequence of module names (str)")
        names = list(layers)
        known = dict(work.named_modules())
        for name in names:
            if name not in known:
                raise ValueError(f"layers: no module named {name!r} in the model")
            if not _owned_params(known[name]):
                raise ValueError(f"layers: module {name!r} has no parameters of its own to randomise")
    if not names:
        raise ValueError("the model has no parameters to randomise")
    pristine = copy.deepcopy(work) if mode == "independent" else None
    gen = torch.Generator().manual_seed(seed)
    rows: dict[str, list[Tensor]] = {"spearman": [], "spearman_abs": [], "ssim": [], "hog": []}
    for name in names:
        if mode == "independent":
            work = copy.deepcopy(pristine)
        _randomize(dict(work.named_modules())[name], gen)
        a1 = _explain(explainer, work, x, tgt, idx)
        sims = _similarities(m0, _maps(a1, x))
        for key in rows:
            rows[key].append(sims[key])
    result: dict[str, Any] = {"layers": names, "order": mode}
    result.update({key: torch.stack(vals) for key, vals in rows.items()})
    return result


@guarded
def random_target_check(model: nn.Module, x: Tensor, method: Any = "saliency", target: Any = None, *,
                        seed: int = 0, method_options: dict[str, Any] | None = None) -> dict[str, Tensor]:
    r"""Random-target (random logit) check: similarity between the map for the explained class
    and the map for a class drawn uniformly from the other classes, per sample.

    .. math:: s(x) = \operatorname{sim}\big(\Phi(f, x, y),\ \Phi(f, x, \tilde y)\big), \quad \tilde y \ne y

    Sixt, Granz & Landgraf, "When Explanations Lie: Why Many Modified BP Attributions Fail",
    ICML 2020 (class-insensitive maps: a method whose map hardly changes with the class does not
    explain the decision); Quantus' ``RandomLogit``. Same similarities as
    ``randomization_check``; returns them as ``[N]`` tensors plus ``random_target`` ``[N]``.
    """
    x = check_inputs(x)
    seed = check_seed(seed)
    explainer = _explainer(method, method_options)
    _, prep = prepare(model, x, target)
    classes = prep.target.public()
    if classes is None:
        raise ValueError("random_target_check needs class-index targets (None, an int or N ints), not a callable")
    n_classes = prep.outputs.shape[1]
    check_int(n_classes, "the number of classes (model output dim 1)", minimum=2)
    n = x.shape[0]
    gen = torch.Generator().manual_seed(seed)
    offset = torch.randint(1, n_classes, (n,), generator=gen)
    other = (classes.cpu() + offset) % n_classes
    idx = torch.arange(n, device=x.device)
    m0 = _maps(_explain(explainer, model, x, classes.to(x.device), idx), x)
    m1 = _maps(_explain(explainer, model, x, other.to(x.device), idx), x)
    out = _similarities(m0, m1)
    out["random_target"] = other
    return out

