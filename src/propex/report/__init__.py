"""``propex.report``: one self-contained HTML file per run.

* ``build_report(path, inputs=..., explanations=..., comparison=..., curves=...)`` writes the page
  from results you already have;
* ``run_report(model, x, methods, metrics=..., path=...)`` computes them (explanations, timed;
  ``propex.evaluate.compare``; deletion / insertion curves) and writes the page.

Images are embedded as PNG data URIs and the CSS is inline: the file opens from disk with no
server and no network. Needs Pillow and matplotlib (the ``viz`` extra).
"""
from .builder import SCALES, build_report, metrics_table
from .run import run_report

__all__ = ["build_report", "run_report", "metrics_table", "SCALES"]
