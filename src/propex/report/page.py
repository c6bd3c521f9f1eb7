"""The HTML skeleton of a report: inline CSS, escaping and small element helpers (no external files)."""
from __future__ import annotations

import html
from typing import Any, Iterable

CSS = """
:root { --fg: #1d1d1f; --muted: #5f6368; --line: #d9dce0; --best: #e6f4ea; --best-fg: #0b6b2b; }
* { box-sizing: border-box; }
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--fg);
       margin: 0 auto; padding: 1.5em 2em 3em; max-width: 1400px; line-height: 1.45; }
h1 { font-size: 1.6em; margin: 0 0 .2em; }
h2 { font-size: 1.25em; margin: 1.6em 0 .5em; border-bottom: 1px solid var(--line); padding-bottom: .2em; }
h3 { font-size: 1.05em; margin: .2em 0 .4em; }
.px-sub { color: var(--muted); margin: 0 0 1em; }
.px-note { color: var(--muted); font-size: .9em; }
.px-input { border: 1px solid var(--line); border-radius: 8px; padding: .8em 1em; margin: 1em 0; }
.px-row { display: flex; flex-wrap: wrap; gap: 1.2em; align-items: flex-start; }
.px-original img, .px-map img { width: 136px; height: auto; image-rendering: pixelated;
       border: 1px solid var(--line); background: #fff; display: block; }
figure { margin: 0; }
figcaption { font-size: .82em; color: var(--muted); text-align: center; max-width: 136px; overflow-wrap: anywhere; }
.px-maps { gap: .8em; }
.px-topk { margin: 0; padding-left: 1.6em; font-size: .92em; min-width: 12em; }
.px-topk li.px-target { font-weight: 600; }
.px-bar { display: inline-block; height: .6em; background: #4a78c2; vertical-align: middle; margin-left: .4em; }
.px-scale { display: flex; align-items: center; gap: .5em; font-size: .85em; color: var(--muted); margin: .3em 0 .8em; }
.px-scale img { width: 180px; height: 12px; border: 1px solid var(--line); }
table { border-collapse: collapse; font-size: .9em; margin: .4em 0 1em; }
th, td { border: 1px solid var(--line); padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f5f6f7; }
td.px-num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.px-best { background: var(--best); color: var(--best-fg); font-weight: 700; }
td.px-error { color: #b3261e; }
.px-tokens { font-size: 1em; margin: .2em 0 .6em; }
.px-text-map { margin: .2em 0 .5em; }
.px-text-map h4 { margin: 0; font-size: .85em; color: var(--muted); font-weight: 600; }
.px-curves { max-width: 100%; height: auto; border: 1px solid var(--line); }
.px-curve-list { display: flex; flex-wrap: wrap; gap: 1em; }
.px-store { margin-top: 1em; }
footer { margin-top: 2em; color: var(--muted); font-size: .8em; }
"""


def esc(value: Any) -> str:
    """``value`` as text, HTML-escaped (quotes too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


def img(uri: str, cls: str, alt: str, **data: Any) -> str:
    """An ``<img>`` with a data URI, a class and ``data-*`` attributes."""
    attrs = "".join(f' data-{k.replace("_", "-")}="{esc(v)}"' for k, v in data.items())
    return f'<img class="{cls}" src="{uri}" alt="{esc(alt)}"{attrs}>'


def table(rows: Iterable[tuple[str, Any]], cls: str) -> str:
    """A two-column key/value table."""
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="{cls}"><tbody>{body}</tbody></table>'


def document(title: str, subtitle: str, body: str) -> str:
    """The whole page: one file, inline CSS, no scripts, no external resources."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><p class=\"px-sub\">{subtitle}</p></header>"
            f"<main>{body}</main><footer>Made by propex. This file is self-contained: every image is "
            "embedded; it needs no server and no network.</footer></body></html>\n")
