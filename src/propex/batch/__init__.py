"""``propex.batch``: explain whole datasets into a resumable Zarr store, and read global explanations back.

>>> run = propex.batch.explain_dataset(model, dataset, ["integrated_gradients", ("lrp", {"composite": "epsilon_plus_flat"})],
...                                    store="out.zarr", batch_size=64)
>>> st = propex.batch.open_store("out.zarr")
>>> st.global_explanation("integrated_gradients", by="class")

Needs ``zarr`` (``pip install 'propex[batch]'``); ``engine="ray"`` needs ``ray[data]`` (``propex[ray]``).
See docs/batch.md.
"""
from .job import BatchError
from .reader import BatchStore, open_store
from .run import BatchRun, explain_dataset
from .store import StoreError


def store_summary_html(store, **options):
    """An HTML fragment ``<section class="px-store">`` summarising a store (see ``propex.batch.html``)."""
    from .html import store_summary_html as _html
    return _html(store, **options)


__all__ = ["explain_dataset", "open_store", "store_summary_html", "BatchRun", "BatchStore", "BatchError", "StoreError"]
