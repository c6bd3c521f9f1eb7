"""The model the app serves, its preprocessing, its bundled example images, and the lock.

Every call into the model (prediction, explanation, metric) holds :attr:`ServedModel.lock`:
explanation methods temporarily change the model (hooks, ``requires_grad``) while they run, so
two requests must never use it at the same time. Jobs are therefore serialised per model
call; their results live in separate :class:`~propex.serve.jobs.Job` objects.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn


@dataclass
class Example:
    """A bundled example: ``tensor`` is the model input ``[C, H, W]``; ``png`` its thumbnail."""

    name: str
    tensor: Tensor
    png: bytes


@dataclass
class ServedModel:
    """What the app needs to know about the model (a ``propex.loading.LoadedModel`` plus extras)."""

    model: nn.Module
    preprocess: Callable[[Any], Tensor]
    labels: list[str]
    input_size: tuple[int, int]
    name: str
    examples: list[Example] = field(default_factory=list)
    references: Tensor | None = None     # reference inputs [M, C, H, W] (expected gradients, patterns)
    display: Callable[[Tensor], Tensor] | None = None   # model input [C, H, W] -> picture values in [0, 1]
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def predict(self, x: Tensor) -> Tensor:
        """Class probabilities ``[N, K]`` (softmax of the outputs), under the lock."""
        with self.lock, torch.no_grad():
            out = self.model(x)
        out = getattr(out, "logits", out)
        return torch.softmax(out.detach().float().reshape(out.shape[0], -1), dim=1)

    def input_png(self, x: Tensor) -> bytes:
        """A model input ``[C, H, W]`` as the PNG a person would recognise (normalisation undone)."""
        from .images import tensor_png
        return tensor_png(self.display(x) if self.display is not None else x)

    def label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else f"class {index}"

    def extra_options(self, method: str) -> dict[str, Any]:
        """Options the app adds for methods that need data (reference samples, fitted patterns)."""
        if self.references is None:
            return {}
        if method == "expected_gradients":
            return {"baseline": self.references}
        if method == "pattern_attribution":
            with self.lock:
                if "patterns" not in self._cache:
                    from ..propagation import fit_patterns
                    self._cache["patterns"] = fit_patterns(self.model, self.references)
            return {"patterns": self._cache["patterns"]}
        return {}


def load_served_model(spec: Any = "demo", weights: str | None = None, device: str = "cpu") -> ServedModel:
    """Load ``spec`` (see ``propex.loading.load_model``) or wrap an already loaded model.

    ``spec`` may be a model spec string, a ``ServedModel``, or any object with the attributes of
    ``propex.loading.LoadedModel`` (``model``, ``preprocess``, ``labels``, ``input_size``, ``name``).
    """
    if isinstance(spec, ServedModel):
        return spec
    if not isinstance(spec, str):
        served = _wrap(spec)
        _add_sample_images(served)
        return served
    from ..loading import load_model
    loaded = load_model(spec, weights=weights, device=device)
    served = _wrap(loaded)
    if spec == "demo":
        _add_digit_examples(served)
    else:
        _add_sample_images(served)
    return served


def _wrap(loaded: Any) -> ServedModel:
    missing = [a for a in ("model", "preprocess") if not hasattr(loaded, a)]
    if missing:
        raise TypeError(f"model_spec must be a spec string or a LoadedModel-like object with .model and .preprocess; "
                        f"got {type(loaded).__name__} without {', '.join(missing)}")
    model = loaded.model
    size = tuple(getattr(loaded, "input_size", None) or (224, 224))
    n_classes = _n_classes(model, size)
    labels = list(getattr(loaded, "labels", None) or [])
    if len(labels) < n_classes:
        labels += [f"class {i}" for i in range(len(labels), n_classes)]
    return ServedModel(model=model, preprocess=loaded.preprocess, labels=labels, input_size=size,
                       name=str(getattr(loaded, "name", None) or type(model).__name__),
                       display=getattr(loaded, "unnormalize", None))


def _n_classes(model: nn.Module, size: tuple[int, int]) -> int:
    """The number of outputs, from one forward pass on zeros (channels from the first parameter)."""
    channels = 3
    for p in model.parameters():
        if p.dim() == 4:
            channels = p.shape[1]
            break
    try:
        from ..model_call import model_guard
        with model_guard(model), torch.no_grad():
            out = model(torch.zeros(1, channels, *size))
        out = getattr(out, "logits", out)
        return int(out.reshape(1, -1).shape[1])
    except Exception:   # the labels then stay as given
        return 0


# --------------------------------------------------------------------------- the demo model
def _add_digit_examples(served: ServedModel) -> None:
    """One held-out test digit per class (0-9) as examples; 64 training digits as references."""
    try:
        from ..models import load_digits_data
        x, y = load_digits_data("test")
        train_x, _ = load_digits_data("train")
    except ImportError:       # scikit-learn missing: uploads still work
        return
    first: dict[int, int] = {}
    for i, label in enumerate(y.tolist()):
        first.setdefault(label, i)
    served.examples = [Example(f"digit {c}", x[first[c]].clone(), served.input_png(x[first[c]])) for c in sorted(first)]
    served.references = train_x[torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0))[:64]]


def _add_sample_images(served: ServedModel) -> None:
    """scikit-learn's bundled sample photos (china, flower), preprocessed for the model; they are
    also the reference samples of expected gradients."""
    try:
        from PIL import Image
        from sklearn.datasets import load_sample_images
        images = load_sample_images()
    except ImportError:
        return
    examples = []
    for fname, arr in zip(images.filenames, images.images):
        try:
            tensor = served.preprocess(Image.fromarray(arr)).float()
        except Exception:    # a model whose preprocessing does not take photos
            return
        name = fname.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
        examples.append(Example(name, tensor, served.input_png(tensor)))
    served.examples = examples
    if examples and all(e.tensor.shape == examples[0].tensor.shape for e in examples):
        served.references = torch.stack([e.tensor for e in examples])
