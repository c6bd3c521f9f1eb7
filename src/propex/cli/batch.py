"""``propex batch``: explain a whole folder of images (or a dataset factory) into a resumable Zarr store.

Registered lazily by ``propex.cli.app`` (the click command object ``batch``). See docs/batch.md.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import click

from .common import EXIT_FAILED, EXIT_OK, InputError, echo, model_options, one_line, parse_options, plan_methods, \
    settings


class ImageFolder:
    """Images of a folder, loaded one by one (bounded memory) and preprocessed by the model's
    preprocessing. Images directly in the folder: no labels; only class subfolders (ImageNet-style
    ``folder/<class>/*.png``): label = index of the subfolder in sorted order."""

    def __init__(self, folder: str, preprocess: Any):
        from ..loading import IMAGE_EXTENSIONS

        root = Path(folder).expanduser()
        if not root.is_dir():
            raise InputError(f"--data {folder!r} is neither a folder of images nor module:factory")

        def images(d: Path) -> list[Path]:
            return sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)

        self.files: list[Path] = images(root)
        self.labels: list[int] | None = None
        self.classes: list[str] = []
        if not self.files:
            subdirs = sorted(d for d in root.iterdir() if d.is_dir() and images(d))
            self.classes = [d.name for d in subdirs]
            pairs = [(f, i) for i, d in enumerate(subdirs) for f in images(d)]
            self.files, self.labels = [f for f, _ in pairs], [i for _, i in pairs]
        if not self.files:
            raise InputError(f"--data {folder!r} holds no images (nor class subfolders with images)")
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Any:
        from ..loading import load_images

        x = self.preprocess(load_images([self.files[i]])[0][1])
        return x if self.labels is None else (x, self.labels[i])


def _dataset_class():
    import torch.utils.data

    return type("ImageFolderDataset", (ImageFolder, torch.utils.data.Dataset), {})


def load_data(spec: str, preprocess: Any) -> Any:
    """``--data``: a folder of images, or ``module:factory`` returning a Dataset / DataLoader / batches."""
    if Path(spec).expanduser().is_dir() or ":" not in spec:
        return _dataset_class()(spec, preprocess)
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise InputError(f"--data {spec!r}: cannot load {attr!r} from {module_name!r} ({one_line(err)})") from None
    try:
        return obj() if callable(obj) and not hasattr(obj, "__getitem__") else obj
    except Exception as err:
        raise InputError(f"--data {spec!r}: the factory failed: {type(err).__name__}: {one_line(err)}") from None


def _target(text: str | None) -> Any:
    if text is None or text == "top":
        return None
    if text == "label":
        return "label"
    try:
        return int(text)
    except ValueError:
        raise InputError(f"--target {text!r}: use 'top' (the predicted class), 'label' or a class index") from None


@click.command("batch")
@model_options
@click.option("--data", "data_spec", required=True, metavar="FOLDER|MODULE:FACTORY",
              help="A folder of images (or of class subfolders), or module:factory returning a torch Dataset, "
                   "a DataLoader (shuffle=False) or a list of batches.")
@click.option("--method", "methods", multiple=True, metavar="NAME", help="A method (repeatable), e.g. saliency.")
@click.option("--option", "option_items", multiple=True, metavar="NAME.KEY=VALUE",
              help="A method or metric option, e.g. integrated_gradients.n_steps=32 or aopc.n_steps=10.")
@click.option("--metric", "metric_names", multiple=True, metavar="NAME",
              help="A per-sample metric of propex.evaluate stored for every method (repeatable), e.g. sparseness.")
@click.option("--store", required=True, metavar="PATH", help="The Zarr store (a directory, or an fsspec URL).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="engine=ray: actors (one model each).")
@click.option("--ray-address", default=None, help="engine=ray: the cluster (default: RAY_ADDRESS or a local Ray).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Samples per batch (a multiple of --chunk-size).")
@click.option("--chunk-size", type=click.IntRange(min=1), default=None, help="Samples per store chunk (default: batch).")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
@click.option("--reduce", type=click.Choice(["none", "sum", "abs_sum"]), default="none", show_default=True,
              help="Store channel-reduced maps.")
@click.option("--target", default=None, help="top (predicted class, default), label, or a class index.")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue a store of the same job.")
@click.option("--overwrite", is_flag=True, help="Delete an existing store first.")
@click.option("--device", default=None, help="torch device (default: the global --device).")
@click.option("--seed", type=int, default=None, help="Seed of the methods (default: the global --seed).")
@click.option("--num-workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="DataLoader worker processes reading the data.")
@click.pass_context
def batch(ctx: click.Context, model_spec: str, weights: str | None, preprocess: tuple[str, ...], data_spec: str,
          methods: tuple[str, ...], option_items: tuple[str, ...], metric_names: tuple[str, ...], store: str,
          engine: str, workers: int, ray_address: str | None, batch_size: int, chunk_size: int | None, dtype: str,
          reduce: str, target: str | None, resume: bool, overwrite: bool, device: str | None, seed: int | None,
          num_workers: int) -> int:
    """Explain every sample of a dataset into a resumable store (progress, samples/s, ETA).

    \b
    propex batch --model resnet18 --data images/ --method saliency --method integrated_gradients \\
                 --option integrated_gradients.n_steps=16 --metric sparseness --store out.zarr
    Run it again after an interruption: finished chunks are kept, the rest is computed.
    """
    from ..batch import BatchError, StoreError, explain_dataset
    from ..loading import load_model

    conf = settings(ctx, device, None, seed)
    try:
        loaded = load_model(model_spec, weights=weights, device=conf.device, preprocess=list(preprocess) or None)
    except ValueError as err:
        raise InputError(one_line(err)) from None
    metric_keys = [m.strip().lower().replace("-", "_") for m in metric_names]
    plan = plan_methods(methods, option_items, layer=None, seed=conf.seed, batch_size=None, extra_keys=metric_keys)
    metric_opts = parse_options([o for o in option_items if o.partition(".")[0].strip() in metric_keys])
    metrics = [(m, metric_opts.get(m, {})) for m in metric_keys] or None
    data = load_data(data_spec, loaded.preprocess)
    ray_options = {"num_workers": workers, **({"address": ray_address} if ray_address else {})}
    try:
        run = explain_dataset(loaded.model, data, [(n, plan.options[n]) for n in plan.names], store,
                              batch_size=batch_size, chunk_size=chunk_size, engine=engine, resume=resume,
                              overwrite=overwrite, metrics=metrics, target=_target(target), dtype=dtype,
                              reduce=None if reduce == "none" else reduce, seed=conf.seed, num_workers=num_workers,
                              progress=conf.progress if conf.progress is not None else sys.stderr.isatty(),
                              ray_options=ray_options if engine == "ray" else None)
    except BatchError as err:
        echo(f"error: {one_line(err)} (finished chunks are kept: fix it and run the same command again)", err=True)
        return EXIT_FAILED
    except (StoreError, ValueError, TypeError) as err:
        raise InputError(one_line(err)) from None
    echo(run.summary())
    return EXIT_OK
