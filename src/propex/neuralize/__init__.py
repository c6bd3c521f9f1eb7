"""Neuralization: fitted scikit-learn models as strictly equivalent PyTorch networks, and NEON.

Supported: KernelDensity (gaussian), OneClassSVM (rbf), KMeans / MiniBatchKMeans,
LogisticRegression, Pipelines of per-feature scalers ending in one of them, and kernel k-means
from data + labels (``propex.neuralize.kernel_kmeans``). See docs/beyond.md.

``propex.neuralize(estimator)`` returns a :class:`NeuralizedModel`; ``propex.explain(model, x,
"neon")`` propagates relevance through it (any other propex method applies too: it is a plain
``nn.Module``). The package itself is callable, ``propex.neuralize(est) == propex.neuralize.neuralize(est)``,
so the function and the submodules share one name.
"""
import sys as _sys
import types as _types

from .convert import SUPPORTED, neuralize
from .kernel_kmeans import KernelKMeansNet, kernel_kmeans
from .layers import PairwiseLinear, SoftMin, SquaredDistance
from .model import Neuralized, NeuralizedModel
from .neon import NEON

__all__ = ["neuralize", "kernel_kmeans", "Neuralized", "NeuralizedModel", "KernelKMeansNet", "NEON",
           "SquaredDistance", "PairwiseLinear", "SoftMin", "SUPPORTED"]


class _CallableModule(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        return neuralize(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
