"""Load a model and images from the command line's vocabulary (shared by the CLI, web app and batch mode).

``load_model(spec, weights=None, device="cpu")`` understands

* ``"demo"``: the embedded digits CNN (:func:`propex.models.load_digits_model`; ``weights`` replaces the
  packaged state dict), with the digits' own preprocessing (grey-scale, 8×8, upsampled to 16×16);
* a torchvision classifier name (``"resnet18"``): built with ``weights=None`` (random weights; nothing
  is downloaded) and, given ``weights=FILE``, loaded from that state dict; preprocessing is that of the
  name's default weights (resize, centre crop, ImageNet mean/std) and labels are their categories —
  both read from torchvision's metadata, without a download;
* a TorchScript file (``.pt``/``.ts``/``.pth`` written by ``torch.jit.save``) or a ``torch.export``
  file (``.pt2``): the input size of an exported program is read from its signature;
* ``"module:factory"``: ``importlib.import_module(module)`` and ``factory()`` (any callable returning an
  ``nn.Module``, or a :class:`LoadedModel` to bring its own preprocessing).

``preprocess=`` (``size``, ``resize``, ``mean``, ``std``, ``grayscale``) overrides the preprocessing.
Every failure is a :class:`LoadError` (a ``ValueError``) with a one-line message: what was wrong and
what to do.
"""
from __future__ import annotations

import difflib
import importlib
import math
import os
import sys
import types
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = ["LoadError", "LoadedModel", "ImagePreprocess", "load_model", "load_images", "IMAGE_EXTENSIONS",
           "parse_preprocess"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".torchscript")
_DEFAULT_SIZE = (224, 224)


class LoadError(ValueError):
    """A model spec, weights file, preprocessing option or image that cannot be loaded (one-line message)."""


@dataclass(frozen=True)
class ImagePreprocess:
    """PIL image -> float tensor ``[C, H, W]``: optional resize of the shorter side to ``resize``
    (bilinear, antialiased, as torchvision does on PIL images), a centre crop to ``size`` (H, W)
    (plain resize to ``size`` when ``resize`` is None), scaling to [0, 1], then ``(x - mean) / std``.

    ``grayscale=True`` gives one channel (PIL "L"), else three (RGB). ``digits=True`` is the embedded
    digits model's preprocessing instead: grey-scale, box-resized to 8×8 and upsampled bilinearly
    (``align_corners=False``) to ``size``, exactly :func:`propex.models.preprocess_digits` on pixel
    values ``v / 16 = p / 255``; a picture with a bright border (dark ink on paper) is inverted first,
    since the digits are bright ink on a dark background. A picklable value object (the batch engines send it to workers).
    """

    size: tuple[int, int]
    resize: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    grayscale: bool = False
    digits: bool = False

    @property
    def channels(self) -> int:
        return 1 if self.grayscale or self.digits else 3

    def __call__(self, image: Any) -> Tensor:
        import numpy as np
        from PIL import Image

        if not isinstance(image, Image.Image):
            raise TypeError(f"preprocess expects a PIL.Image, got {type(image).__name__}")
        img = image.convert("L" if self.channels == 1 else "RGB")
        h, w = self.size
        if self.digits:
            if img.size != (8, 8):
                img = img.resize((8, 8), Image.BOX)
            grey = np.asarray(img, dtype=np.float32) / 255.0
            border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
            if border.mean() > 0.5:
                grey = 1.0 - grey
            x = torch.from_numpy(grey)[None, None]
            x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
            return x[0].clamp_(0.0, 1.0).contiguous()
        if self.resize is None:
            img = img.resize((w, h), Image.BILINEAR)
        else:
            iw, ih = img.size
            short, long_ = (iw, ih) if iw <= ih else (ih, iw)
            new_short, new_long = self.resize, int(self.resize * long_ / short)
            new_w, new_h = (new_short, new_long) if iw <= ih else (new_long, new_short)
            if (new_w, new_h) != (iw, ih):
                img = img.resize((new_w, new_h), Image.BILINEAR)
            img = _center_crop(img, h, w)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        x = torch.from_numpy(arr[:, :, None] if arr.ndim == 2 else arr).permute(2, 0, 1).contiguous()
        if self.mean is not None:
            x = x - torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        if self.std is not None:
            x = x / torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        return x

    def unnormalize(self, x: Tensor) -> Tensor:
        """Inverse of the normalisation, clamped to [0, 1]: the picture a person would recognise."""
        x = x.detach().float().cpu()
        if self.std is not None:
            x = x * torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        if self.mean is not None:
            x = x + torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        return x.clamp(0.0, 1.0)


def _center_crop(img: Any, h: int, w: int) -> Any:
    """torchvision's centre crop on a PIL image (pads with zeros when the image is smaller)."""
    from PIL import Image

    iw, ih = img.size
    if iw < w or ih < h:
        padded = Image.new(img.mode, (max(iw, w), max(ih, h)))
        padded.paste(img, ((max(iw, w) - iw) // 2, (max(ih, h) - ih) // 2))
        img, (iw, ih) = padded, padded.size
    top, left = int(round((ih - h) / 2.0)), int(round((iw - w) / 2.0))
    return img.crop((left, top, left + w, top + h))


@dataclass
class LoadedModel:
    """A model ready to explain: ``model`` (eval mode, on the device), ``preprocess`` (PIL image ->
    ``[C, H, W]``), ``labels`` (class names or None), ``input_size`` (H, W), ``name`` (for titles),
    ``kind`` (demo / torchvision / torchscript / export / factory), ``device``."""

    model: nn.Module
    preprocess: Callable[[Any], Tensor]
    labels: list[str] | None
    input_size: tuple[int, int]
    name: str
    kind: str = "factory"
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)

    def unnormalize(self, x: Tensor) -> Tensor:
        """Preprocessed input(s) back to displayable [0, 1] values (inverse of mean/std when known)."""
        fn = getattr(self.preprocess, "unnormalize", None)
        if fn is None:
            return x.detach().float().cpu()
        return torch.stack([fn(xi) for xi in x]) if x.dim() == 4 else fn(x)

    def inputs(self, images: Sequence[Any]) -> Tensor:
        """Preprocess PIL images into one batch ``[N, C, H, W]`` on the model's device."""
        return torch.stack([self.preprocess(img) for img in images]).to(self.device)


# --------------------------------------------------------------------------- preprocessing options

def parse_preprocess(options: Mapping[str, Any] | Sequence[str] | None) -> dict[str, Any]:
    """Validate preprocessing overrides: a mapping, or CLI strings ``"key=value"``.

    Keys: ``size`` (int or "H,W"), ``resize`` (int, shorter side before the crop; 0 = none), ``mean`` and
    ``std`` (one number or one per channel), ``grayscale`` (bool).
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        items: dict[str, Any] = {}
        for item in options:
            key, sep, value = str(item).partition("=")
            if not sep or not key.strip():
                raise LoadError(f"preprocess option {item!r} is not key=value: use e.g. size=224, "
                                "mean=0.485,0.456,0.406, std=0.229,0.224,0.225, grayscale=true")
            items[key.strip().lower()] = value.strip()
        options = items
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key == "size":
            nums = _numbers(key, value, int)
            if len(nums) not in (1, 2) or min(nums) < 1:
                raise LoadError(f"preprocess size={value!r} must be one or two positive integers (H or H,W)")
            out["size"] = (nums[0], nums[-1])
        elif key == "resize":
            nums = _numbers(key, value, int)
            if len(nums) != 1 or nums[0] < 0:
                raise LoadError(f"preprocess resize={value!r} must be one integer >= 0 (0: no resize before crop)")
            out["resize"] = nums[0] or None
        elif key in ("mean", "std"):
            nums = _numbers(key, value, float)
            if len(nums) not in (1, 3) or (key == "std" and min(nums) <= 0):
                raise LoadError(f"preprocess {key}={value!r} must be one number or three (one per channel)"
                                + (", all > 0" if key == "std" else ""))
            out[key] = tuple(nums)
        elif key == "grayscale":
            text = str(value).strip().lower()
            if text not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise LoadError(f"preprocess grayscale={value!r} must be true or false")
            out["grayscale"] = text in ("1", "true", "yes", "on")
        else:
            close = difflib.get_close_matches(str(key), ["size", "resize", "mean", "std", "grayscale"], n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise LoadError(f"unknown preprocess option {key!r}.{hint} Known: size, resize, mean, std, grayscale")
    return out


def _numbers(key: str, value: Any, kind: type) -> list[Any]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        values = [value]
    elif isinstance(value, (list, tuple)):
        values = list(value)
    else:
        values = [v for v in str(value).replace("x", ",").replace(" ", ",").split(",") if v]
    try:
        nums = [kind(float(v)) if kind is int else kind(v) for v in values]
    except (TypeError, ValueError):
        raise LoadError(f"preprocess {key}={value!r} is not a number list: use e.g. {key}=224 "
                        f"or {key}=0.5,0.5,0.5") from None
    if not nums or any(isinstance(n, float) and not math.isfinite(n) for n in nums):
        raise LoadError(f"preprocess {key}={value!r} needs finite numbers")
    return nums


def _apply_overrides(base: ImagePreprocess, overrides: Mapping[str, Any]) -> ImagePreprocess:
    if not overrides:
        return base
    changes = dict(overrides)
    if "size" in changes and "resize" not in changes and base.resize is not None:
        # keep torchvision's resize/crop ratio (256/224) at the new size
        changes["resize"] = int(round(base.resize * changes["size"][0] / base.size[0]))
    if changes.get("grayscale") is False and base.digits:
        raise LoadError("the demo model takes grey-scale images only: drop grayscale=false")
    new = replace(base, **changes)
    for key in ("mean", "std"):
        values = getattr(new, key)
        if values is not None and len(values) not in (1, new.channels):
            raise LoadError(f"preprocess {key} has {len(values)} values but the images have {new.channels} "
                            f"channel(s): give 1 or {new.channels}")
    return new


# --------------------------------------------------------------------------- models

def load_model(spec: str, *, weights: str | os.PathLike[str] | None = None, device: str = "cpu",
               preprocess: Mapping[str, Any] | Sequence[str] | None = None) -> LoadedModel:
    """Build the model named by ``spec`` (see the module docstring) in eval mode on ``device``.

    Args:
        spec: ``"demo"``, a torchvision classifier name, a TorchScript (``.pt``/``.ts``) or
            ``torch.export`` (``.pt2``) file, or ``"module:factory"``.
        weights: a state-dict file for ``demo``, torchvision names and factories (never downloaded).
        device: where to put the model (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).
        preprocess: overrides of the preprocessing (see :func:`parse_preprocess`).

    Raises:
        LoadError: (a ``ValueError``) with a one-line message naming what was wrong and what to do.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise LoadError(f"model spec must be a non-empty string such as 'demo' or 'resnet18', got {spec!r}")
    spec = spec.strip()
    dev = _device(device)
    overrides = parse_preprocess(preprocess)
    weights_path = _existing_file(weights, "weights file") if weights is not None else None
    path = Path(spec).expanduser()
    if spec.lower() == "demo":
        loaded = _load_demo(weights_path)
    elif path.is_file():
        if weights_path is not None:
            raise LoadError(f"--weights cannot be combined with the model file {spec!r}: a TorchScript/export "
                            "file carries its weights; drop --weights")
        loaded = _load_export(path) if path.suffix.lower() == ".pt2" else _load_torchscript(path)
    elif _looks_like_path(spec):
        raise LoadError(f"model file {spec!r} does not exist: check the path (or use 'demo', a torchvision "
                        "name such as 'resnet18', or module:factory)")
    elif ":" in spec:
        loaded = _load_factory(spec, weights_path)
    else:
        loaded = _load_torchvision(spec, weights_path)
    if overrides:
        if not isinstance(loaded.preprocess, ImagePreprocess):
            raise LoadError(f"preprocess options cannot change the preprocessing of {loaded.name!r} "
                            "(its factory brought its own): drop them")
        loaded.preprocess = _apply_overrides(loaded.preprocess, overrides)
        loaded.input_size = loaded.preprocess.size
    try:
        loaded.model = loaded.model.to(dev).eval()
    except Exception as err:  # e.g. a CUDA device on a machine without one
        raise LoadError(f"cannot move the model to device {device!r}: {_one_line(err)}; use --device cpu") from None
    loaded.device = str(dev)
    return loaded


def _device(device: Any) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise LoadError(f"device {device!r} is not a torch device: use cpu, cuda, cuda:0 or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LoadError(f"device {device!r} is not available (no CUDA on this machine): use --device cpu")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise LoadError(f"device {device!r} is not available on this machine: use --device cpu")
    return dev


def _existing_file(path: Any, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise LoadError(f"{what} {str(path)!r} does not exist: check the path")
    if not p.is_file():
        raise LoadError(f"{what} {str(path)!r} is not a file: give the path of a file")
    return p


def _looks_like_path(spec: str) -> bool:
    suffix = Path(spec).suffix.lower()
    return ("/" in spec or "\\" in spec or suffix in (*_TORCHSCRIPT_SUFFIXES, ".pt2")) and not (
        ":" in spec and "/" not in spec.split(":")[0] and suffix not in (*_TORCHSCRIPT_SUFFIXES, ".pt2"))


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise LoadError(f"weights file {str(path)!r} is not a torch state dict ({_one_line(err)[:120]}): "
                        "save it with torch.save(model.state_dict(), path)") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise LoadError(f"weights file {str(path)!r} does not hold a state dict of tensors: "
                        "save it with torch.save(model.state_dict(), path)")
    return dict(state)


def _load_state(model: nn.Module, path: Path, name: str) -> None:
    state = _read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of another shape (e.g. {k}: {list(state[k].shape)} in the file, "
                         f"{list(own[k].shape)} in the model)")
        raise LoadError(f"weights file {str(path)!r} does not fit {name}: keys {'; '.join(parts)}; "
                        "give the state dict saved from this architecture")
    model.load_state_dict(state)


def _load_demo(weights: Path | None) -> LoadedModel:
    from .models import DIGITS_CLASSES, DIGITS_INPUT_SHAPE, DigitsCNN, load_digits_model

    if weights is None:
        model = load_digits_model()
    else:
        model = DigitsCNN()
        _load_state(model, weights, "the demo digits model")
    size = DIGITS_INPUT_SHAPE[1:]
    return LoadedModel(model.eval(), ImagePreprocess(size=size, grayscale=True, digits=True),
                       [str(c) for c in DIGITS_CLASSES], size, "demo (digits CNN)", kind="demo")


def torchvision_names() -> list[str]:
    """The torchvision classification models (``torchvision.models.list_models``)."""
    try:
        import torchvision
    except ImportError:
        return []
    return list(torchvision.models.list_models(module=torchvision.models))


def _load_torchvision(name: str, weights: Path | None) -> LoadedModel:
    names = torchvision_names()
    if name not in names:
        key = name.lower()
        if key in names:
            name = key
        else:
            close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            where = ("" if names else " (torchvision is not installed: pip install torchvision)")
            raise LoadError(f"model spec {name!r} is not 'demo', a torchvision classifier name{where}, an existing "
                            f".pt/.pt2 file or module:factory.{hint}")
    import torchvision

    default = torchvision.models.get_model_weights(name).DEFAULT      # metadata only: nothing is downloaded
    tf = default.transforms()
    crop = tuple(tf.crop_size) * (2 if len(tf.crop_size) == 1 else 1)
    resize = tf.resize_size[0] if tf.resize_size else None
    preprocess = ImagePreprocess(size=(crop[0], crop[1]), resize=resize, mean=tuple(tf.mean), std=tuple(tf.std))
    labels = list(default.meta.get("categories") or []) or None
    model = torchvision.models.get_model(name, weights=None)
    notes = []
    if weights is not None:
        _load_state(model, weights, f"torchvision {name}")
    else:
        notes.append(f"{name} has random weights (no --weights given; nothing is downloaded)")
    return LoadedModel(model.eval(), preprocess, labels, preprocess.size, name, kind="torchvision", notes=notes)


def _load_torchscript(path: Path) -> LoadedModel:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)   # torch.jit is deprecated but still loads
            model = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:
        raise LoadError(f"model file {str(path)!r} is not a TorchScript file ({_one_line(err)[:100]}): save with "
                        "torch.jit.save / torch.export.save (.pt2), or pass a state dict as --weights with a "
                        "torchvision name or module:factory") from None
    preprocess = ImagePreprocess(size=_DEFAULT_SIZE)
    return LoadedModel(model.eval(), preprocess, None, preprocess.size, path.name, kind="torchscript",
                       notes=[f"TorchScript input size unknown: assumed {_DEFAULT_SIZE[0]}x{_DEFAULT_SIZE[1]} RGB "
                              "in [0, 1] (override with preprocess size=/mean=/std=/grayscale=)"])


def _load_export(path: Path) -> LoadedModel:
    try:
        program = torch.export.load(str(path))
        model = program.module()
    except Exception as err:
        raise LoadError(f"model file {str(path)!r} is not a torch.export program ({_one_line(err)[:100]}): "
                        "save it with torch.export.save(torch.export.export(model, (x,)), path)") from None
    size, channels = _DEFAULT_SIZE, 3
    notes = []
    shape = _exported_input_shape(program)
    if shape is not None and shape and isinstance(shape[0], int):
        raise LoadError(f"model file {str(path)!r} was exported with a fixed batch size {shape[0]}; the methods "
                        "evaluate many rows per call: export with a dynamic batch, torch.export.export(model, (x,), "
                        "dynamic_shapes=({0: torch.export.Dim('batch')},))")
    if shape is not None and len(shape) == 4 and all(isinstance(s, int) for s in shape[1:]):
        channels, size = shape[1], (shape[2], shape[3])
    else:
        notes.append(f"input size unknown: assumed {size[0]}x{size[1]}")
    preprocess = ImagePreprocess(size=size, grayscale=channels == 1)
    model = _allow_mode_switch(model)
    return LoadedModel(model, preprocess, None, size, path.name, kind="export", notes=notes)


def _allow_mode_switch(module: nn.Module) -> nn.Module:
    """torch.export's unlifted module refuses ``train()``/``eval()``; the explanation methods set modes
    while guarding the model, so make both plain flag changes on this instance (layer names unchanged)."""
    def train(self: nn.Module, mode: bool = True) -> nn.Module:
        self.training = mode
        return self

    module.train = types.MethodType(train, module)  # type: ignore[method-assign]
    module.eval = types.MethodType(lambda self: self.train(False), module)  # type: ignore[method-assign]
    return module


def _exported_input_shape(program: Any) -> tuple[Any, ...] | None:
    try:
        for node in program.graph.nodes:
            if node.op != "placeholder":
                continue
            name = node.name
            if name in program.graph_signature.user_inputs:
                val = node.meta.get("val")
                return tuple(int(s) if isinstance(s, int) else s for s in val.shape)
    except Exception:  # pragma: no cover - metadata layout differs between torch versions
        return None
    return None


def _load_factory(spec: str, weights: Path | None) -> LoadedModel:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise LoadError(f"model spec {spec!r} is not module:factory (e.g. mypackage.models:build)")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())    # `propex explain --model mymodels:net` from the project folder
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise LoadError(f"cannot import module {module_name!r} of model spec {spec!r} ({_one_line(err)}): "
                        "run from the folder that holds it or add it to PYTHONPATH") from None
    except Exception as err:
        raise LoadError(f"importing {module_name!r} for model spec {spec!r} failed: "
                        f"{type(err).__name__}: {_one_line(err)}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = [n for n in dir(module) if not n.startswith("_")]
            close = difflib.get_close_matches(part, public, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise LoadError(f"module {module_name!r} has no attribute {attr!r}.{hint}")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        result: Any = obj
    elif callable(obj):
        try:
            result = obj()
        except Exception as err:
            raise LoadError(f"calling the factory {spec!r}() failed: {type(err).__name__}: {_one_line(err)}") from None
    else:
        raise LoadError(f"{spec!r} is a {type(obj).__name__}, not a factory: point to a function or class "
                        "returning an nn.Module")
    if isinstance(result, LoadedModel):
        loaded = result
    elif isinstance(result, nn.Module):
        preprocess = ImagePreprocess(size=_DEFAULT_SIZE)
        loaded = LoadedModel(result, preprocess, None, preprocess.size, spec, kind="factory",
                             notes=[f"input size unknown: assumed {_DEFAULT_SIZE[0]}x{_DEFAULT_SIZE[1]} RGB in "
                                    "[0, 1] (override with preprocess size=/mean=/std=/grayscale=, or return a "
                                    "propex.loading.LoadedModel from the factory)"])
    else:
        raise LoadError(f"the factory {spec!r} returned a {type(result).__name__}, not an nn.Module")
    if weights is not None:
        _load_state(loaded.model, weights, spec)
    return loaded


# --------------------------------------------------------------------------- images

def load_images(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[tuple[str, Any]]:
    """Open image files, and the image files of folders (sorted, not recursive), as ``(path, PIL.Image)``.

    Raises:
        LoadError: a path that does not exist, a file PIL cannot read, a folder without images.
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("reading images needs Pillow: pip install 'propex[cli]'") from None
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise LoadError("no input images given: pass image files or folders")
    files: list[Path] = []
    for given in paths:
        p = Path(given).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise LoadError(f"input folder {str(given)!r} holds no image files "
                                f"({', '.join(IMAGE_EXTENSIONS[:5])}, ...): give a folder with images")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise LoadError(f"input {str(given)!r} does not exist: give an image file or a folder of images")
    out = []
    for f in files:
        try:
            with Image.open(f) as img:
                img.load()
                out.append((str(f), img.copy()))
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise LoadError(f"input {str(f)!r} is not an image Pillow can read ({_one_line(err)[:80]}): "
                            "give PNG/JPEG/BMP/TIFF/WebP files") from None
    return out
