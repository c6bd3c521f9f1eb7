"""Seeing every op of a forward pass, with the module it runs in.

``PropagationMode`` is a ``TorchFunctionMode``: each torch function or Tensor method the
model calls (module or functional, in-place or not, in a module used twice) reaches
``__torch_function__``, is classified (``ops.kind_of``) and handed to the active
*policy* together with its module context (the innermost module being executed, its
dotted name, and the op's position among the linear ops). Module context comes from
forward pre/post hooks installed on every submodule for the duration of the pass.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from . import ops

_ALWAYS_PLAIN = {Tensor.dim, Tensor.size, Tensor.numel, Tensor.__len__, Tensor.__bool__, Tensor.__format__,
                 Tensor.__repr__, Tensor.item, Tensor.tolist, Tensor.detach, Tensor.requires_grad_,
                 Tensor.__eq__, Tensor.__ne__, Tensor.__lt__, Tensor.__le__, Tensor.__gt__, Tensor.__ge__,
                 Tensor.__hash__, Tensor.data_ptr, Tensor.stride, Tensor.is_contiguous, Tensor.element_size,
                 Tensor.get_device, Tensor.new_zeros, Tensor.new_ones, Tensor.new_empty, Tensor.new_full,
                 Tensor.new_tensor, Tensor.__index__, Tensor.__int__, Tensor.__float__, Tensor.argmax,
                 Tensor.argmin, Tensor.argsort, torch.argmax, torch.argmin, torch.argsort, torch.zeros_like,
                 torch.ones_like, torch.empty_like, torch.full_like, torch.rand_like, torch.randn_like,
                 torch._assert, torch.isfinite, torch.isnan, Tensor.__setstate__}


class UnsupportedOpError(ValueError):
    """An op touches the explained graph and the active method has no rule for it."""


@dataclass
class OpCall:
    """One op call seen during the forward pass."""

    func: Any
    kind: str | None
    args: tuple
    kwargs: dict
    module: nn.Module | None
    module_name: str
    index: int              # position among the calls of the same kind in this forward pass
    meta: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return ops.op_name(self.func)

    def where(self) -> str:
        if self.module is None:
            mod = ""
        elif self.module_name:
            mod = f" in module '{self.module_name}' ({type(self.module).__name__})"
        else:
            mod = f" in the model's own forward ({type(self.module).__name__})"
        return f"{self.name}{mod}"

    def value(self, *args: Any, **kwargs: Any) -> Any:
        """``run`` without recording autograd history: the output as a plain value, for rules that
        attach their own backward (and must not keep the op's saved tensors alive)."""
        with torch.no_grad():
            return self.run(*args, **kwargs)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Call the op (its out-of-place twin for in-place ops) with these or the original arguments."""
        func = ops.out_of_place(self.func) or self.func
        _, a, kw = ops.split_inplace(self.func, args if args else self.args, kwargs if kwargs else self.kwargs)
        return func(*a, **kw)


def is_graph(t: Any) -> bool:
    """A tensor that depends on the explained inputs (not a parameter, buffer or constant)."""
    return isinstance(t, Tensor) and t.requires_grad and (t.grad_fn is not None or getattr(t, "_propex_leaf", False))


def graph_tensors(args: tuple, kwargs: dict, tracked: Callable[[Any], bool] = is_graph) -> list[Tensor]:
    """The arguments (also inside lists/tuples) that belong to the explained graph."""
    out = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, (list, tuple)):
            out.extend(x for x in a if tracked(x))
        elif tracked(a):
            out.append(a)
    return out


class ModuleStack:
    """Tracks which module is executing, via pre/post forward hooks on every submodule."""

    def __init__(self, model: Any):
        self.model = model
        self.names = {m: n for n, m in model.named_modules()} if isinstance(model, nn.Module) else {}
        self.stack: list[nn.Module] = []
        # optional ``(module, args, output) -> replacement or None``: set by PropagationMode from the
        # policy's ``on_module_output`` (LRP: the identity rule for hand-written activation modules)
        self.on_output: Callable[[nn.Module, Any, Any], Any] | None = None

    @contextlib.contextmanager
    def active(self) -> Iterator["ModuleStack"]:
        handles = []
        try:
            for module in self.names:
                handles.append(module.register_forward_pre_hook(self._push))
                handles.append(module.register_forward_hook(self._pop, always_call=True))
            yield self
        finally:
            for h in handles:
                h.remove()
            self.stack.clear()

    def _push(self, module: nn.Module, args: Any) -> None:
        self.stack.append(module)

    def _pop(self, module: nn.Module, args: Any, output: Any) -> Any:
        if self.stack and self.stack[-1] is module:
            self.stack.pop()
        if self.on_output is not None:
            return self.on_output(module, args, output)
        return None

    def current(self) -> tuple[nn.Module | None, str]:
        if not self.stack:
            return None, ""
        m = self.stack[-1]
        return m, self.names.get(m, "")


class PropagationMode(TorchFunctionMode):
    """Routes every op of the forward pass to ``policy(call) -> output``."""

    def __init__(self, policy: Callable[[OpCall], Any], modules: ModuleStack):
        super().__init__()
        self.policy = policy
        # a policy may track tensors itself (DeepLIFT-RevealCancel keeps differences beside the values)
        self.tracked = getattr(policy, "tracked", is_graph)
        self.modules = modules
        modules.on_output = getattr(policy, "on_module_output", None)
        self.counts: dict[str, int] = {}

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _ALWAYS_PLAIN or not graph_tensors(args, kwargs, self.tracked):
            return func(*args, **kwargs)
        kind = ops.kind_of(func)
        if kind is None and getattr(func, "__name__", "") == "__get__":
            return func(*args, **kwargs)         # attribute access such as .shape, .T is routed below
        module, name = self.modules.current()
        key = kind or "unknown"
        index = self.counts.get(key, 0)
        self.counts[key] = index + 1
        out = self.policy(OpCall(func, kind, args, kwargs, module, name, index))
        if ops.out_of_place(func) is not None or ops.split_inplace(func, args, kwargs)[0]:
            return self._write_back(args[0] if args else kwargs.get("input"), out)
        return out

    def _write_back(self, target: Any, out: Any) -> Any:
        """Policies compute in-place ops out of place; the result is copied into the original tensor
        (autograd records the copy) so code that ignores the return value, ``h.relu_()``, still sees it."""
        if not isinstance(target, Tensor) or not isinstance(out, Tensor) or out is target:
            return out
        if target.shape != out.shape or (target.is_leaf and target.requires_grad):
            return out
        target.copy_(out)
        alias = getattr(self.policy, "alias", None)
        if alias is not None:
            alias(target, out)
        return target
