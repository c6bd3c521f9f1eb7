"""Which torch operations the propagation engine recognises, and as what.

Every op the model calls is classified into a *kind*; a propagation policy (LRP,
DeepLIFT, Guided Backprop, ...) says what each kind does to the backward message:

* ``linear``      conv*/conv_transpose*/linear: has weight (and bias) parameters;
* ``batch_norm``  eval-mode batch norm (an affine map per channel);
* ``pool``        parameter-free linear maps: average pooling, mean, sum;
* ``max_pool``    max pooling (winner takes all);
* ``activation``  element-wise nonlinearities (ReLU, GELU, SiLU, sigmoid, ...);
* ``add``/``sub`` sums of tensors (residual connections) or of a tensor and a constant;
* ``mul``/``div`` products (by a constant: linear; of two activations: gating);
* ``neg``         unary minus;
* ``route``       ops that only move, copy or select values (view, cat, getitem, ...):
                  the gradient already redistributes any message exactly;
* ``identity``    eval-mode dropout.

Transformer ops (their LRP/DeepLIFT rules live in ``transformer.py``):

* ``softmax``     softmax over one dimension;
* ``matmul``      matmul/bmm/mm/einsum/addmm: a linear map when one operand is a constant
                  (a parameter), a bilinear product when both depend on the input (q·kᵀ, A·v);
* ``attention``   ``F.scaled_dot_product_attention``; ``multi_head_attention``:
                  ``F.multi_head_attention_forward`` (``nn.MultiheadAttention``);
* ``layer_norm``  ``F.layer_norm``, ``F.rms_norm``, ``F.normalize`` (L2);
* ``elementwise`` element-wise maps that are not activations (pow, exp, log, erf, ...);
* ``normalizer``  ``rsqrt``/``sqrt``/``var``/``std``: the normaliser of hand-written norms;
* ``select``      ``where``/``masked_fill`` (attention masks).

Ops not listed that touch a tensor of the explained graph are *unsupported*: the engine
refuses them (naming the op and the module) instead of being silently wrong;
``register_op`` adds a classification for a new op.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
import torch.nn.functional as F


KINDS = ("linear", "batch_norm", "pool", "max_pool", "activation", "add", "sub", "mul", "div", "neg", "route",
         "identity",
         # transformer ops (rules in propagation/transformer.py)
         "softmax", "matmul", "attention", "multi_head_attention", "layer_norm", "elementwise", "normalizer",
         "select")

_T = torch.Tensor
_KIND: dict[Any, str] = {}
# in-place op -> its out-of-place twin (the engine never mutates tensors of the graph)
_OUT_OF_PLACE: dict[Any, Callable] = {}


def _add(kind: str, *funcs: Any) -> None:
    for f in funcs:
        if f is not None:
            _KIND[f] = kind


def _inplace(inplace: Any, outplace: Callable) -> None:
    if inplace is not None:
        _OUT_OF_PLACE[inplace] = outplace


def register_op(func: Any, kind: str, out_of_place: Callable | None = None) -> None:
    """Tell the propagation engine how to treat ``func`` (a torch function or Tensor method).

    ``kind`` is one of ``propex.propagation.ops.KINDS``; e.g. a custom element-wise
    activation ``register_op(my_act, "activation")``, a custom reshape
    ``register_op(my_view, "route")``. ``out_of_place`` maps an in-place op to its
    out-of-place twin.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not a known op kind; choose one of {', '.join(KINDS)}")
    _KIND[func] = kind
    if out_of_place is not None:
        _OUT_OF_PLACE[func] = out_of_place


_SIGNATURES: dict[Any, Any] = {}


def _signature(func: Any) -> Any:
    if func not in _SIGNATURES:
        try:
            _SIGNATURES[func] = inspect.signature(func)
        except (TypeError, ValueError):
            _SIGNATURES[func] = None
    return _SIGNATURES[func]


def split_inplace(func: Any, args: tuple, kwargs: dict) -> tuple[bool, tuple, dict]:
    """Whether the call asks for ``inplace=True`` (by keyword or position), and the arguments with
    ``inplace=False`` (``nn.Hardswish`` calls ``F.hardswish(x, self.inplace)`` positionally)."""
    if "inplace" in kwargs:
        if not kwargs["inplace"]:
            return False, args, kwargs
        return True, args, {**kwargs, "inplace": False}
    sig = _signature(func)
    if sig is None or "inplace" not in sig.parameters:
        return False, args, kwargs
    try:
        bound = sig.bind_partial(*args, **kwargs)
    except TypeError:
        return False, args, kwargs
    if not bound.arguments.get("inplace"):
        return False, args, kwargs
    bound.arguments["inplace"] = False
    return True, bound.args, bound.kwargs


def kind_of(func: Any) -> str | None:
    return _KIND.get(func)


def out_of_place(func: Any) -> Callable | None:
    return _OUT_OF_PLACE.get(func)


def op_name(func: Any) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    if name.startswith("boolean_dispatch"):
        name = getattr(func, "__name__", name)
    if name.startswith("_VariableFunctionsClass."):
        return "torch." + name.split(".", 1)[1]
    if name.startswith("TensorBase."):
        return "Tensor." + name.split(".", 1)[1]
    mod = getattr(func, "__module__", None) or ""
    return f"{mod}.{name}" if mod and not name.startswith("Tensor") else name


_add("linear", F.linear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d,
     torch.conv1d, torch.conv2d, torch.conv3d)
_add("batch_norm", F.batch_norm)
_add("pool", F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
     F.adaptive_avg_pool3d, torch.avg_pool1d, torch.mean, _T.mean, torch.sum, _T.sum)
_add("max_pool", F.max_pool1d, F.max_pool2d, F.max_pool3d, torch.max_pool1d, torch.max_pool2d, torch.max_pool3d,
     F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d)
_ACTIVATIONS = [F.relu, torch.relu, _T.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish,
                F.softplus, F.hardswish, F.hardsigmoid, F.hardtanh, F.sigmoid, torch.sigmoid, _T.sigmoid, F.tanh,
                torch.tanh, _T.tanh, F.logsigmoid, F.softsign, F.tanhshrink]
_add("activation", *_ACTIVATIONS)
for _name, _twin in [("relu_", torch.relu), ("sigmoid_", torch.sigmoid), ("tanh_", torch.tanh)]:
    _add("activation", getattr(torch, _name, None), getattr(_T, _name, None))
    _inplace(getattr(torch, _name, None), _twin)
    _inplace(getattr(_T, _name, None), _twin)
for _name, _twin in [("relu_", F.relu), ("leaky_relu_", F.leaky_relu), ("elu_", F.elu), ("hardtanh_", F.hardtanh)]:
    _add("activation", getattr(F, _name, None))
    _inplace(getattr(F, _name, None), _twin)
_add("add", torch.add, _T.add, _T.__add__, _T.__radd__, _T.add_, _T.__iadd__)
_inplace(_T.add_, torch.add)
_inplace(_T.__iadd__, torch.add)
_add("sub", torch.sub, _T.sub, _T.__sub__, _T.__rsub__, _T.sub_, _T.__isub__)
_inplace(_T.sub_, torch.sub)
_inplace(_T.__isub__, torch.sub)
_add("mul", torch.mul, _T.mul, _T.__mul__, _T.__rmul__, _T.mul_, _T.__imul__)
_inplace(_T.mul_, torch.mul)
_inplace(_T.__imul__, torch.mul)
_add("div", torch.div, _T.div, _T.__truediv__, _T.div_, _T.__itruediv__)
_inplace(_T.div_, torch.div)
_inplace(_T.__itruediv__, torch.div)
_add("neg", torch.neg, _T.neg, _T.__neg__, torch.negative, _T.negative)
_add("route", torch.flatten, _T.flatten, _T.view, _T.view_as, _T.reshape, torch.reshape, _T.reshape_as, _T.permute,
     torch.permute, _T.transpose, torch.transpose, _T.t, torch.t, _T.contiguous, _T.squeeze, torch.squeeze,
     _T.unsqueeze, torch.unsqueeze, _T.expand, _T.expand_as, torch.cat, torch.concat, torch.stack, torch.split,
     _T.split, torch.chunk, _T.chunk, _T.__getitem__, _T.narrow, torch.narrow, _T.select, torch.select, _T.clone,
     torch.clone, torch.roll, _T.roll, F.pad, torch.flip, _T.flip, _T.unflatten, torch.unflatten, _T.repeat,
     _T.float, _T.double, _T.to, _T.type_as, _T.unbind, torch.unbind, torch.movedim, _T.movedim, torch.swapaxes,
     _T.swapaxes, F.pixel_shuffle, F.pixel_unshuffle, F.channel_shuffle, torch.tile, _T.tile, torch.gather,
     _T.gather, torch.index_select, _T.index_select, torch.take_along_dim, _T.take_along_dim)
_add("pool", F.interpolate)  # a fixed linear map of its input
_add("identity", F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout)

# transformer ops ---------------------------------------------------------------------------
_add("route", _T.type, _T.half, _T.bfloat16, torch.repeat_interleave, _T.repeat_interleave)
_add("softmax", F.softmax, torch.softmax, _T.softmax)
_add("matmul", torch.matmul, _T.matmul, _T.__matmul__, _T.__rmatmul__, torch.bmm, _T.bmm, torch.mm, _T.mm,
     torch.einsum, torch.addmm, _T.addmm)
_add("attention", F.scaled_dot_product_attention)
_add("multi_head_attention", F.multi_head_attention_forward)
_add("layer_norm", F.layer_norm, torch.layer_norm, getattr(F, "rms_norm", None), getattr(torch, "rms_norm", None),
     F.normalize)
_add("elementwise", torch.pow, _T.pow, _T.__pow__, torch.square, _T.square, torch.exp, _T.exp, torch.log, _T.log,
     torch.erf, _T.erf, torch.abs, _T.abs, _T.__abs__, torch.reciprocal, _T.reciprocal)
_add("normalizer", torch.rsqrt, _T.rsqrt, torch.sqrt, _T.sqrt, torch.var, _T.var, torch.std, _T.std)
_add("select", torch.where, _T.where, torch.masked_fill, _T.masked_fill)
