"""``propex serve``: a local web app to explain images with any propex method.

>>> from propex.serve import create_app, run
>>> run("127.0.0.1", 8000, model_spec="demo")        # then open http://127.0.0.1:8000

Pick the demo model or a model spec (``propex.loading.load_model``), upload an image or pick a
bundled example, choose methods and their main options, and watch heatmaps and metrics appear
per method; download the heatmaps (PNG) and raw attributions (NPZ). Needs the ``serve`` extra
(fastapi, uvicorn, python-multipart) and Pillow. See docs/serve.md.
"""
from .app import DEFAULT_MAX_UPLOAD_BYTES, create_app, run

__all__ = ["create_app", "run", "DEFAULT_MAX_UPLOAD_BYTES"]
