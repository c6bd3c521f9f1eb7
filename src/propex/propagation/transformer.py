r"""Transformer-aware propagation rules: softmax, products of two activations, attention, norms.

Two families of rules for LRP (``LRP(..., attention="attnlrp" | "cp")``):

**AttnLRP** (Achtibat et al., "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for
Transformers", ICML 2024), the default:

* softmax :math:`s = \mathrm{softmax}(x)`: the first-order Taylor decomposition at :math:`x` with
  its bias left out, :math:`R_{x_i} = x_i\,(R_{s_i} - s_i \sum_j R_{s_j})` — i.e.
  :math:`x \odot J^\top (R_s \oslash s)`, gradient × input of the relevance per unit output.
  The bias of that expansion (:math:`\sum R_s - \sum R_x`, the 0th-order term) is absorbed. With
  ``ignore_bias=True`` it is instead spread over the logits in proportion to the attention weights,
  :math:`R_{x_i} \mathrel{+}= s_i\,(\sum_j R_{s_j} - \sum_j x_j (R_{s_j} - s_j \sum_k R_{s_k}))`, which
  conserves relevance exactly and needs no division (the ε-rule of the bias-free linearisation,
  :math:`q_j = R_j / (s_j (x_j - \bar x))`, was tried and rejected: every row has an
  :math:`x_j \approx \bar x`, and on torchvision's swin_t its ε-absorption gave a conservation error of
  21·f(x)).
* a product of two tensors that both depend on the input, :math:`y = f(a, b)` bilinear
  (``q @ kᵀ``, ``A @ v``, ``bmm``, ``einsum``): the ε-rule over the products
  :math:`a_{ik} b_{kj}`, split uniformly (50/50) between the two factors,
  :math:`R_a = \tfrac12\, a \odot \partial_a\langle f(a, b), R_y \oslash (y + \epsilon)\rangle`,
  :math:`R_b` likewise. (Element-wise ``a * b`` keeps the LRP policy's uniform rule,
  :math:`R_a = R_b = R_y/2`.)
* attention as a whole (``F.scaled_dot_product_attention``, ``nn.MultiheadAttention``) is
  decomposed into these ops: :math:`\mathrm{softmax}(q k^\top\!\cdot\mathrm{scale} + M)\, v`.
  The additive mask :math:`M` is a constant: relevance of the scores passes to :math:`q k^\top`.
* LayerNorm / RMSNorm / ``F.normalize``: the normaliser :math:`\sigma` is a constant (CP-LRP's detach), so
  :math:`y = w \odot (x - \mu(x)) / \sigma + b` is linear in :math:`x` and gets the ε-rule
  (for RMSNorm :math:`y = w \odot x/\sigma`, the identity :math:`R_x = R_y`). Hand-written norms
  (HF's ``x * torch.rsqrt(x.pow(2).mean(-1) + eps)``) get the same: ``rsqrt``/``sqrt``/``var``/``std``
  of the graph are constants.
* GELU, SiLU and other element-wise activations: the identity :math:`R_x = R_y`, also for
  hand-written activation *modules* (HF's ``NewGELUActivation``: ``0.5 x (1 + tanh(...))``),
  whose inner ops run as plain values and whose output is wired to their input. Other
  element-wise maps on the graph (``pow``, ``exp``, ``erf``, ...) also pass relevance unchanged.

**CP-LRP** (Ali et al., "XAI for Transformers: Better Explanations through Conservative
Propagation", ICML 2022): the attention probabilities are constants (``softmax`` returns a
plain value), so :math:`y = A v` is linear in :math:`v` with weights :math:`A` and gets the
composite's dense-layer rule; queries and keys get no relevance through the attention.
Norms and activations as in AttnLRP. CP-LRP conserves relevance exactly with ``ignore_bias=True``.

**DeepLIFT** (Rescale) gets exact decompositions, so summation-to-delta holds:
softmax :math:`= e \cdot (\sum e)^{-1}` with :math:`e = \exp(x - c)` (:math:`c` a per-pair
constant), each part by its rule (secants for ``exp`` and the reciprocal, the product rule
:math:`\Delta(ab) = \Delta a\,\bar b + \bar a\,\Delta b` for the product); a bilinear product
:math:`\Delta f(a, b) = f(\Delta a, \bar b) + f(\bar a, \Delta b)` (exact for bilinear maps);
LayerNorm/RMSNorm :math:`= (x - \mu)\cdot \mathrm{rsqrt}(\mathrm{mean}((x-\mu)^2) + \epsilon)\cdot w + b`
with the product rule for the squares and the product, the secant for ``rsqrt``.
``var``/``std`` of the graph are refused (write the norm with ``pow``/``mean``/``rsqrt`` or use
``nn.LayerNorm``); RevealCancel refuses every transformer op.
"""
from __future__ import annotations

import inspect
import math
import re
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import ops
from .functions import Combine, ModInput, PassThrough, inverse
from .tracing import OpCall, UnsupportedOpError, graph_tensors, is_graph

ATTENTION_RULES = ("attnlrp", "cp")

# hand-written element-wise activation modules (HF's NewGELUActivation, FastGELUActivation, ...)
_ACTIVATION_MODULE = re.compile(r"(GELU|SiLU|Swish|Mish|Activation)[A-Za-z0-9]*$")
_NOT_ELEMENTWISE = re.compile(r"GLU(Activation)?$")
_MHA_SIGNATURE = inspect.signature(F.multi_head_attention_forward)


def check_attention(value: Any) -> str:
    """Validate the ``attention=`` option of LRP."""
    if value not in ATTENTION_RULES:
        raise ValueError(f"attention must be one of {', '.join(repr(a) for a in ATTENTION_RULES)} "
                         f"(AttnLRP or CP-LRP), got {value!r}")
    return value


def is_activation_module(module: Any) -> bool:
    """A parameter-free leaf module outside torch whose class name says it is an element-wise activation."""
    if not isinstance(module, nn.Module) or type(module).__module__.startswith("torch."):
        return False
    name = type(module).__name__
    if not _ACTIVATION_MODULE.search(name) or _NOT_ELEMENTWISE.search(name):
        return False
    return next(module.children(), None) is None and next(module.parameters(recurse=False), None) is None


# ---- shared helpers -------------------------------------------------------------------------
def _arg(call: OpCall, i: int, name: str, default: Any = None) -> Any:
    if name in call.kwargs:
        return call.kwargs[name]
    return call.args[i] if len(call.args) > i else default


def _synthetic(parent: OpCall, func: Any, *args: Any, **kwargs: Any) -> OpCall:
    """An op call made up by a decomposition; index -1: position selectors never match it."""
    return OpCall(func, ops.kind_of(func), args, kwargs, parent.module, parent.module_name, -1)


def dispatch(policy: Any, parent: OpCall, func: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``func`` as the policy would if the model had called it (inside a decomposition the
    tracing mode is off, so ops on the graph are handed to the policy here; others run plainly)."""
    tracked = getattr(policy, "tracked", is_graph)
    if not graph_tensors(args, kwargs, tracked):
        return func(*args, **kwargs)
    out = policy(_synthetic(parent, func, *args, **kwargs))
    materialize = getattr(policy, "_materialize", None)
    return materialize(out) if materialize is not None else out


def matmul_operands(call: OpCall) -> tuple[Callable[[Tensor, Tensor], Tensor], Tensor, Tensor, Tensor | None]:
    """A two-operand product as ``(f, a, b, bias)`` with ``f(a, b)`` bilinear (``bias`` for addmm)."""
    func, args = call.func, call.args
    if func in (torch.addmm, Tensor.addmm):
        beta, alpha = call.kwargs.get("beta", 1), call.kwargs.get("alpha", 1)
        bias, a, b = args[0], _arg(call, 1, "mat1"), _arg(call, 2, "mat2")
        if beta != 1 or alpha != 1:
            raise UnsupportedOpError(f"{call.where()}: addmm with beta/alpha other than 1 is not supported")
        return torch.matmul, a, b, bias
    if func is torch.einsum:
        operands = args[1:]
        if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
            operands = tuple(operands[0])
        if len(operands) != 2:
            raise UnsupportedOpError(f"{call.where()}: einsum with {len(operands)} operands; only products of two "
                                     "tensors are supported")
        equation = args[0]
        return (lambda p, q: torch.einsum(equation, p, q)), operands[0], operands[1], None
    a, b = args[0], _arg(call, 1, "other", call.kwargs.get("mat2"))
    if func is Tensor.__rmatmul__:
        a, b = b, a
    return torch.matmul, a, b, None


def _masked(scores: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return scores
    if mask.dtype == torch.bool:     # True: may attend
        return scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return scores + mask.to(scores.dtype)


def _causal(q: Tensor, k: Tensor) -> Tensor:
    return torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()


def attention_core(policy: Any, parent: OpCall, q: Tensor, k: Tensor, v: Tensor, masks: list[Tensor | None],
                   scale: float) -> tuple[Tensor, Tensor]:
    r"""``softmax(q kᵀ · scale + masks) v`` for ``[..., L, d]`` tensors, each op through the policy."""
    scores = dispatch(policy, parent, torch.matmul, q, k.transpose(-2, -1))
    scores = dispatch(policy, parent, torch.mul, scores, scale)
    for mask in masks:
        scores = _masked(scores, mask)       # constants: the scores keep their relevance
    probs = dispatch(policy, parent, torch.softmax, scores, -1)
    return dispatch(policy, parent, torch.matmul, probs, v), probs


def sdpa(policy: Any, call: OpCall) -> Tensor:
    """``F.scaled_dot_product_attention`` decomposed into ops the policy has rules for."""
    q, k, v = _arg(call, 0, "query"), _arg(call, 1, "key"), _arg(call, 2, "value")
    mask = _arg(call, 3, "attn_mask")
    dropout = _arg(call, 4, "dropout_p", 0.0)
    causal = _arg(call, 5, "is_causal", False)
    scale = _arg(call, 6, "scale")
    if dropout:
        raise UnsupportedOpError(f"{call.where()} uses attention dropout (dropout_p={dropout}); call model.eval()")
    if _arg(call, 7, "enable_gqa", False) and q.shape[-3] != k.shape[-3]:
        rep = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(rep, dim=-3), v.repeat_interleave(rep, dim=-3)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    masks = [mask, _causal(q, k) if causal else None]
    return attention_core(policy, call, q, k, v, masks, scale)[0]


def multi_head_attention(policy: Any, call: OpCall) -> tuple[Tensor, Tensor | None]:
    """``F.multi_head_attention_forward`` (``nn.MultiheadAttention``) decomposed into linear ops and
    :func:`attention_core`, in batch-first layout (DeepLIFT pairs rows along dim 0)."""
    bound = _MHA_SIGNATURE.bind(*call.args, **call.kwargs)
    bound.apply_defaults()
    a = bound.arguments
    if a["bias_k"] is not None or a["add_zero_attn"] or a["static_k"] is not None or a["static_v"] is not None:
        raise UnsupportedOpError(f"{call.where()}: bias_k/bias_v, add_zero_attn and static keys are not supported")
    if a["training"] and a["dropout_p"]:
        raise UnsupportedOpError(f"{call.where()} runs attention dropout in training mode; call model.eval()")
    query, key, value = a["query"], a["key"], a["value"]
    unbatched = query.dim() == 2
    if unbatched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
    heads, embed = a["num_heads"], query.shape[-1]
    if a["use_separate_proj_weight"]:
        weights = (a["q_proj_weight"], a["k_proj_weight"], a["v_proj_weight"])
    else:
        weights = a["in_proj_weight"].chunk(3)
    biases = (None,) * 3 if a["in_proj_bias"] is None else a["in_proj_bias"].chunk(3)
    projected = []
    for x, w, b in zip((query, key, value), weights, biases):
        h = dispatch(policy, call, F.linear, x.transpose(0, 1), w, b)           # [N, L, E]
        n, length = h.shape[0], h.shape[1]
        projected.append(h.reshape(n, length, heads, -1).transpose(1, 2))        # [N, H, L, d]
    q, k, v = projected
    n, s_len = q.shape[0], k.shape[-2]
    masks: list[Tensor | None] = []
    attn_mask, padding = a["attn_mask"], a["key_padding_mask"]
    if attn_mask is None and a["is_causal"]:
        masks.append(_causal(q, k))
    elif attn_mask is not None:
        m = ~attn_mask if attn_mask.dtype == torch.bool else attn_mask        # nn.MHA: True = masked out
        masks.append(m.reshape(n, heads, *m.shape[-2:]) if m.dim() == 3 else m)
    if padding is not None:
        m = ~padding if padding.dtype == torch.bool else padding
        masks.append(m.reshape(n, 1, 1, s_len))
    out, probs = attention_core(policy, call, q, k, v, masks, 1.0 / math.sqrt(q.shape[-1]))
    out = out.transpose(1, 2).reshape(n, -1, embed)
    out = dispatch(policy, call, F.linear, out, a["out_proj_weight"], a["out_proj_bias"]).transpose(0, 1)
    weights_out = None
    if a["need_weights"]:
        weights_out = probs.detach()
        if a["average_attn_weights"]:
            weights_out = weights_out.mean(1)
        if unbatched:
            weights_out = weights_out.squeeze(0)
    return (out.squeeze(1) if unbatched else out), weights_out


def norm_parts(call: OpCall) -> tuple[Tensor, tuple[int, ...], Tensor | None, Tensor | None, float, str]:
    """``(x, dims, weight, bias, eps, mode)`` of a ``layer_norm`` / ``rms_norm`` / ``normalize`` call;
    ``mode``: ``"layer"`` (centred, σ² = mean of squares), ``"rms"`` (σ² = mean of squares), ``"l2"``
    (``F.normalize``: σ = max(‖x‖₂, eps))."""
    x = _arg(call, 0, "input")
    if call.func is F.normalize:
        if _arg(call, 1, "p", 2.0) != 2:
            raise UnsupportedOpError(f"{call.where()}: only the L2 norm (p=2) is supported")
        dim = _arg(call, 2, "dim", 1)
        return x, (dim,), None, None, _arg(call, 3, "eps", 1e-12), "l2"
    shape = _arg(call, 1, "normalized_shape")
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    dims = tuple(range(-len(shape), 0))
    weight = _arg(call, 2, "weight")
    if call.func in (F.layer_norm, torch.layer_norm):
        return x, dims, weight, _arg(call, 3, "bias"), _arg(call, 4, "eps", 1e-5), "layer"
    eps = _arg(call, 3, "eps")
    return x, dims, weight, None, torch.finfo(x.dtype).eps if eps is None else eps, "rms"


def inverse_sigma(x: Tensor, dims: tuple[int, ...], eps: float, mode: str) -> Tensor:
    """1/σ of a norm (the value; DeepLIFT takes its secant as a function of the sum of squares)."""
    if mode == "layer":
        return torch.rsqrt(x.var(dims, unbiased=False, keepdim=True) + eps)
    if mode == "rms":
        return torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + eps)
    return _inverse_l2(x.pow(2).sum(dims, keepdim=True), eps * eps)


def _inverse_l2(squares: Tensor, eps2: float) -> Tensor:
    """``1 / max(‖x‖₂, eps)`` from the sum of squares (as ``F.normalize``)."""
    return torch.rsqrt(squares.clamp_min(eps2))


# ---- LRP ------------------------------------------------------------------------------------
class _SoftmaxRule(torch.autograd.Function):
    """Forward: the softmax ``s`` of ``x``. Backward: :math:`x \\odot (R - s \\sum R)` (AttnLRP), plus
    with ``conserve`` the bias's relevance :math:`s\\,(\\sum R - \\sum x \\odot (R - s \\sum R))`."""

    @staticmethod
    def forward(ctx, x: Tensor, s: Tensor, dim: int, conserve: bool) -> Tensor:
        xd = x.detach()
        xf = torch.where(torch.isfinite(xd), xd, torch.zeros((), dtype=xd.dtype))
        ctx.save_for_backward(xf, s)
        ctx.dim, ctx.conserve = dim, conserve
        return s.detach()

    @staticmethod
    def backward(ctx, r: Tensor):
        x, s = ctx.saved_tensors
        s = s.to(x.dtype)
        r = r.to(x.dtype)
        dim = ctx.dim
        total = r.sum(dim, keepdim=True)
        out = x * (r - s * total)
        if ctx.conserve:        # the relevance of the expansion's bias, spread over the logits by s
            out = out + s * (total - out.sum(dim, keepdim=True))
        return out, None, None, None


def bilinear_epsilon(f: Callable[[Tensor, Tensor], Tensor], a: Tensor, b: Tensor, epsilon: float) -> Tensor:
    r"""The uniform ε-rule for a bilinear ``f(a, b)``: each factor gets half of
    :math:`x \odot \partial_x \langle f, R \oslash (y + \epsilon)\rangle` (native backward of ``f``)."""
    ad, bd = a.detach(), b.detach()
    za = f(ModInput.apply(a, ad), bd)
    zb = f(ad, ModInput.apply(b, bd))
    half = inverse(za.detach(), epsilon).mul_(0.5)
    return Combine.apply([za.detach()], (half, half), za, zb)


class LRPTransformerRules:
    """The transformer ops of ``LRPPolicy`` (a mixin; see the module docstring for the rules)."""

    attention = "attnlrp"
    epsilon = 1e-6           # stabiliser of the softmax, product and norm rules

    def __call__(self, call: OpCall) -> Any:
        if call.module is not None and is_activation_module(call.module):
            return call.value()      # inside a hand-written activation: on_module_output wires it
        return super().__call__(call)  # type: ignore[misc]

    def on_module_output(self, module: nn.Module, args: Any, output: Any) -> Any:
        """Identity rule for hand-written element-wise activation modules."""
        if not is_activation_module(module) or not args or not isinstance(output, Tensor):
            return None
        with torch._C.DisableTorchFunction():
            x = args[0]
            materialize = getattr(self, "_materialize", None)
            x = materialize(x) if materialize is not None else x
            if not is_graph(x):
                return None
            if x.shape != output.shape:
                raise UnsupportedOpError(f"LRP: the activation module {type(module).__name__} changes the shape "
                                         f"{tuple(x.shape)} -> {tuple(output.shape)}; no element-wise rule applies")
            return PassThrough.apply(x, output.detach())

    def on_softmax(self, call: OpCall) -> Any:
        x = graph_tensors(call.args, call.kwargs)[0]
        s = call.value()
        if self.attention == "cp":
            return s                 # CP-LRP: attention probabilities are constants
        dim = _arg(call, 1, "dim")
        return _SoftmaxRule.apply(x, s, dim, bool(getattr(self, "ignore_bias", False)))

    def on_matmul(self, call: OpCall) -> Any:
        f, a, b, bias = matmul_operands(call)
        ga, gb = is_graph(a), is_graph(b)
        if ga and gb:
            if bias is not None:
                raise UnsupportedOpError(f"LRP: {call.where()}: addmm of two input-dependent matrices")
            return bilinear_epsilon(f, a, b, self.epsilon)
        x, w = (a, b) if ga else (b, a)
        if ga and f is torch.matmul and w.dim() == 2 and a.dim() >= 2:     # x @ W (+ bias): a dense layer
            linear = OpCall(F.linear, "linear", (a, w.t(), bias), {}, call.module, call.module_name, -1)
            return self.on_linear(linear)  # type: ignore[attr-defined]
        from .rules import Epsilon, Gradient, LinearCall, Rule
        rule = self._rule(OpCall(F.linear, "linear", call.args, call.kwargs, call.module,  # type: ignore[attr-defined]
                                 call.module_name, -1))
        if isinstance(rule, Gradient):
            return call.run()
        if not isinstance(rule, Rule):
            rule = Epsilon(self.epsilon)

        def fn(xx: Tensor, ww: Tensor | None, bb: Tensor | None) -> Tensor:
            out = f(xx, ww) if ga else f(ww, xx)
            return out if bb is None else out + bb
        return rule.apply(LinearCall(x, w, bias, fn, getattr(self, "ignore_bias", False)))

    def on_attention(self, call: OpCall) -> Any:
        return sdpa(self, call)

    def on_multi_head_attention(self, call: OpCall) -> Any:
        return multi_head_attention(self, call)

    def on_layer_norm(self, call: OpCall) -> Any:
        from .rules import Epsilon, LinearCall
        x, dims, weight, bias, eps, mode = norm_parts(call)
        centred = mode == "layer"
        with torch.no_grad():
            inv_sigma = inverse_sigma(x.detach(), dims, eps, mode)

        def fn(xx: Tensor, ww: Tensor | None, bb: Tensor | None) -> Tensor:
            h = (xx - xx.mean(dims, keepdim=True)) if centred else xx
            h = h * inv_sigma
            h = h if ww is None else h * ww
            return h if bb is None else h + bb
        lcall = LinearCall(x, weight, bias, fn, getattr(self, "ignore_bias", False), cached=call.value())
        return Epsilon(self.epsilon).apply(lcall)

    def on_elementwise(self, call: OpCall) -> Any:
        return PassThrough.apply(graph_tensors(call.args, call.kwargs)[0], call.value())

    def on_normalizer(self, call: OpCall) -> Any:
        return call.value()          # the normaliser of a hand-written norm is a constant

    def on_select(self, call: OpCall) -> Any:
        return call.run()            # where / masked_fill with a constant mask: selection routes relevance


# ---- DeepLIFT -------------------------------------------------------------------------------
def _halves(t: Tensor) -> tuple[Tensor, Tensor]:
    b = t.shape[0] // 2
    return t[:b], t[b:]


def _pair_mean(t: Tensor) -> Tensor:
    """The mean of x and reference rows, on both halves."""
    t1, t0 = _halves(t.detach())
    m = (t1 + t0) / 2
    return torch.cat([m, m])


class RescaleTransformerRules:
    """The transformer ops of ``RescalePolicy`` (a mixin; exact decompositions, see the module docstring)."""

    def _secant(self, parent: OpCall, func: Any, x: Tensor, *extra: Any) -> Tensor:
        return self.on_activation(_synthetic(parent, func, x, *extra))  # type: ignore[attr-defined]

    def _product(self, parent: OpCall, a: Tensor, b: Tensor) -> Tensor:
        return self.on_mul(_synthetic(parent, torch.mul, a, b))  # type: ignore[attr-defined]

    def on_softmax(self, call: OpCall) -> Any:
        x = graph_tensors(call.args, call.kwargs)[0]
        dim = _arg(call, 1, "dim")
        dtype = call.kwargs.get("dtype")
        if dtype is not None:
            x = x.to(dtype)
        xd = x.detach()
        finite = torch.isfinite(xd)
        low = torch.finfo(x.dtype).min
        x = torch.where(finite, x, torch.full((), low, dtype=x.dtype))
        top = xd.masked_fill(~finite, low).amax(dim, keepdim=True)
        t1, t0 = _halves(top)
        top = torch.maximum(t1, t0)
        e = self._secant(call, torch.exp, x - torch.cat([top, top]))        # exp(x - c), c shared by a pair
        r = self._secant(call, torch.reciprocal, e.sum(dim, keepdim=True))
        return self._product(call, e, r)

    def on_matmul(self, call: OpCall) -> Any:
        f, a, b, bias = matmul_operands(call)
        if not (is_graph(a) and is_graph(b)):
            return call.run()        # linear in the graph operand: the gradient is exact for differences
        if bias is not None:
            raise UnsupportedOpError(f"DeepLIFT: {call.where()}: addmm of two input-dependent matrices")
        with torch.no_grad():
            y = f(a, b)
        # Δf(a, b) = f(Δa, b̄) + f(ā, Δb) for bilinear f: the surrogate's gradient carries these multipliers
        surrogate = f(a, _pair_mean(b)) + f(_pair_mean(a), b)
        return PassThrough.apply(surrogate, y)

    def on_attention(self, call: OpCall) -> Any:
        return sdpa(self, call)

    def on_multi_head_attention(self, call: OpCall) -> Any:
        return multi_head_attention(self, call)

    def on_layer_norm(self, call: OpCall) -> Any:
        x, dims, weight, bias, eps, mode = norm_parts(call)
        c = x - x.mean(dims, keepdim=True) if mode == "layer" else x
        squares = self._product(call, c, c)
        if mode == "l2":
            inv = self._secant(call, _inverse_l2, squares.sum(dims, keepdim=True), eps * eps)
        else:
            inv = self._secant(call, torch.rsqrt, squares.mean(dims, keepdim=True) + eps)
        y = self._product(call, c, inv)
        y = y if weight is None else y * weight
        return y if bias is None else y + bias

    def on_elementwise(self, call: OpCall) -> Any:
        if len(graph_tensors(call.args, call.kwargs)) != 1:
            raise UnsupportedOpError(f"DeepLIFT: {call.where()} has two input-dependent operands")
        return self.on_activation(call)  # type: ignore[attr-defined]

    def on_normalizer(self, call: OpCall) -> Any:
        if call.func in (torch.rsqrt, Tensor.rsqrt, torch.sqrt, Tensor.sqrt):
            return self.on_activation(call)  # type: ignore[attr-defined]
        raise UnsupportedOpError(f"DeepLIFT: no rule for {call.where()} (var/std of the input); write the norm "
                                 "with pow/mean/rsqrt or use nn.LayerNorm / F.layer_norm")

    def on_select(self, call: OpCall) -> Any:
        cond = call.args[0] if call.func is torch.where else _arg(call, 1, "mask", call.kwargs.get("condition"))
        if isinstance(cond, Tensor) and cond.dim() > 0 and cond.shape[0] % 2 == 0 and cond.shape[0] > 1:
            c1, c0 = _halves(cond)
            if not torch.equal(c1, c0):
                raise UnsupportedOpError(f"DeepLIFT: {call.where()} selects differently for x and the reference "
                                         "(a data-dependent where/masked_fill); no Rescale rule for that")
        return call.run()
