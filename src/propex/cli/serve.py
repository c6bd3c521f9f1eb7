"""``propex serve``: the local web app (propex.serve, the ``serve`` extra)."""
from __future__ import annotations

import click

from .common import InputError, one_line, settings


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (127.0.0.1: this computer only; 0.0.0.0 exposes the app to the network).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port.")
@click.option("--model", "model_spec", default="demo", show_default=True, metavar="SPEC",
              help="The model the app explains (same SPEC as propex explain).")
@click.option("--weights", default=None, metavar="FILE", help="State dict for the model (never downloaded).")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Largest accepted upload in MiB (default: the app's).")
@click.option("--device", default=None, help="torch device (default: global --device).")
@click.pass_context
def serve_cmd(ctx: click.Context, host: str, port: int, model_spec: str, weights: str | None,
              max_upload_mb: float | None, device: str | None) -> int:
    """Start the local web app: pick an image and methods, see heatmaps and metrics.

    \b
    propex serve                       # the demo model on http://127.0.0.1:8000
    propex serve --model resnet18 --weights r18.pth --port 8080
    """
    cfg = settings(ctx, device)
    try:
        from ..serve import run
    except ImportError as err:
        raise InputError(f"propex serve needs the web app's packages ({one_line(err)}): "
                         "pip install 'propex[serve]'") from None
    kwargs = {"device": cfg.device}
    if max_upload_mb is not None:
        kwargs["max_upload_bytes"] = int(max_upload_mb * 1024 * 1024)
    click.echo(f"propex serve: {model_spec} on http://{host}:{port} (Ctrl+C stops)")
    try:
        run(host=host, port=port, model_spec=model_spec, weights=weights, **kwargs)
    except ValueError as err:       # a model spec, weights file or option the app cannot use
        raise InputError(one_line(err)) from None
    return 0
