"""The web app's single page: HTML, CSS and JavaScript inline (no build step, nothing external).

Hooks the browser tests use: ``#file``, ``.px-example``, ``input.px-method``, ``[data-option]``,
``input.px-metric``, ``#target``, ``#run``, ``#error``, ``#progress``, ``.px-result[data-method]``
(``data-state``), ``img.px-heatmap``, ``table.px-metrics`` (best cells ``.px-best``),
``ol.px-topk``, ``#download-npz``, ``#download-report``.
"""

CSS = """
:root { --fg: #1d232a; --muted: #5b6673; --line: #d8dee4; --accent: #1f6feb; --bad: #b42318; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); margin: 0; }
header { padding: 12px 20px; border-bottom: 1px solid var(--line); display: flex; gap: 16px; align-items: baseline; }
header h1 { font-size: 18px; margin: 0; }
header .model { color: var(--muted); }
main { display: grid; grid-template-columns: minmax(300px, 380px) 1fr; gap: 20px; padding: 16px 20px; }
fieldset { border: 1px solid var(--line); border-radius: 6px; margin: 0 0 12px; padding: 8px 12px; }
legend { font-weight: 600; padding: 0 4px; }
#examples { display: flex; flex-wrap: wrap; gap: 6px; margin-top: 8px; }
.px-example { border: 2px solid transparent; padding: 0; background: none; cursor: pointer; border-radius: 4px; }
.px-example img { width: 48px; height: 48px; object-fit: cover; display: block; image-rendering: pixelated; border-radius: 2px; }
.px-example.selected { border-color: var(--accent); }
.method { margin: 2px 0; }
.method .opts { margin: 2px 0 6px 22px; display: none; gap: 8px; flex-wrap: wrap; color: var(--muted); }
.method.checked .opts { display: flex; }
.opts input { width: 80px; }
.summary { color: var(--muted); font-size: 12px; }
#methods .list { max-height: 320px; overflow-y: auto; }
button#run { background: var(--accent); color: white; border: 0; border-radius: 6px; padding: 8px 18px; font-size: 15px; cursor: pointer; }
button#run:disabled { opacity: .6; cursor: progress; }
#error { color: var(--bad); font-weight: 600; margin: 10px 0; white-space: pre-wrap; }
#error:empty { display: none; }
#status { color: var(--muted); margin-bottom: 8px; }
progress { width: 100%; height: 10px; }
#inputs { display: flex; gap: 20px; align-items: flex-start; margin-bottom: 12px; }
#input-image { width: 160px; image-rendering: pixelated; border: 1px solid var(--line); }
#results { display: flex; flex-wrap: wrap; gap: 14px; }
.px-result { width: 180px; border: 1px solid var(--line); border-radius: 6px; padding: 8px; }
.px-result h3 { font-size: 13px; margin: 0 0 6px; overflow-wrap: anywhere; }
.px-result img { width: 160px; height: 160px; object-fit: contain; image-rendering: pixelated; display: block; }
.px-result .state { color: var(--muted); font-size: 12px; }
.px-result[data-state="error"] .state { color: var(--bad); }
.px-result a { font-size: 12px; margin-right: 8px; }
table.px-metrics { border-collapse: collapse; margin-top: 16px; }
table.px-metrics th, table.px-metrics td { border: 1px solid var(--line); padding: 4px 10px; text-align: right; }
table.px-metrics th:first-child, table.px-metrics td:first-child { text-align: left; }
td.px-best { background: #dafbe1; font-weight: 700; }
.placeholder { color: var(--muted); }
"""

BODY = """
<header><h1>propex</h1><span class="model">model: <b id="model-name">…</b></span></header>
<main>
<form id="form" novalidate>
  <fieldset><legend>Image</legend>
    <input type="file" id="file" name="file" accept="image/*">
    <div id="examples" aria-label="examples"></div>
  </fieldset>
  <fieldset><legend>Target</legend>
    <select id="target"><option value="">predicted class</option></select>
  </fieldset>
  <fieldset id="methods"><legend>Methods</legend><div class="list"></div></fieldset>
  <fieldset id="metrics-choice"><legend>Metrics</legend></fieldset>
  <button id="run" type="submit">Explain</button>
  <div id="error" role="alert"></div>
</form>
<section id="out">
  <div id="status" class="placeholder">Choose an image and methods, then press Explain.</div>
  <progress id="progress" value="0" max="1" hidden></progress>
  <div id="inputs" hidden>
    <figure><img id="input-image" alt="model input"><figcaption>model input</figcaption></figure>
    <div><b>top classes</b><ol class="px-topk" id="prediction"></ol>
      <a id="download-npz" href="#">download all attributions (NPZ)</a><br>
      <a id="download-report" href="#" hidden>download the HTML report</a></div>
  </div>
  <div id="results"></div>
  <table class="px-metrics" id="metrics" hidden></table>
</section>
</main>
"""

SCRIPT = r"""
"use strict";
const $ = (s, r = document) => r.querySelector(s);
const el = (tag, props = {}, ...kids) => { const e = Object.assign(document.createElement(tag), props);
  for (const k of kids) e.append(k); return e; };
let info = null, example = null, polling = null;

async function load() {
  info = await (await fetch("/api/info")).json();
  $("#model-name").textContent = info.model;
  info.labels.forEach((l, i) => $("#target").append(el("option", {value: i, textContent: `${i}: ${l}`})));
  for (const ex of info.examples) {
    const b = el("button", {type: "button", className: "px-example", title: ex.name}, el("img", {src: ex.url, alt: ex.name}));
    b.dataset.example = ex.id;
    b.onclick = () => { example = ex.id; $("#file").value = "";
      document.querySelectorAll(".px-example").forEach(x => x.classList.toggle("selected", x === b)); };
    $("#examples").append(b);
  }
  if (info.examples.length) $(".px-example").click();
  $("#file").onchange = () => { if ($("#file").files.length) { example = null;
    document.querySelectorAll(".px-example").forEach(x => x.classList.remove("selected")); } };
  for (const m of info.methods) {
    const box = el("input", {type: "checkbox", className: "px-method", value: m.name, checked: m.default});
    const row = el("div", {className: "method" + (m.default ? " checked" : "")},
      el("label", {title: m.summary}, box, " " + m.name));
    box.onchange = () => row.classList.toggle("checked", box.checked);
    const opts = el("div", {className: "opts"});
    for (const o of m.options) {
      let input;
      if (o.kind === "choice") { input = el("select"); o.choices.forEach(c => input.append(el("option", {value: c, textContent: c}))); input.value = o.default; }
      else input = el("input", {type: "number", value: o.default, step: o.kind === "int" ? 1 : "any", min: o.minimum ?? "", max: o.maximum ?? ""});
      input.dataset.method = m.name; input.dataset.option = o.name; input.title = o.help;
      opts.append(el("label", {}, o.name + " ", input));
    }
    row.append(opts);
    $("#methods .list").append(row);
  }
  for (const k of info.metrics)
    $("#metrics-choice").append(el("label", {title: k.help}, el("input", {type: "checkbox", className: "px-metric", value: k.name, checked: k.default}), ` ${k.label} `));
}

function showError(msg) { $("#error").textContent = msg || ""; }

async function submit(ev) {
  ev.preventDefault();
  showError("");
  const form = new FormData();
  const file = $("#file").files[0];
  if (file) form.append("file", file);
  else if (example !== null) form.append("example", example);
  else { showError("Choose an image file or an example first."); return; }
  const methods = [...document.querySelectorAll("input.px-method:checked")].map(b => b.value);
  if (!methods.length) { showError("Choose at least one method."); return; }
  const options = {};
  for (const m of methods) {
    options[m] = {};
    document.querySelectorAll(`[data-method="${m}"]`).forEach(i => options[m][i.dataset.option] = i.value);
  }
  methods.forEach(m => form.append("methods", m));
  document.querySelectorAll("input.px-metric:checked").forEach(b => form.append("metrics", b.value));
  form.append("options", JSON.stringify(options));
  form.append("target", $("#target").value);
  $("#run").disabled = true;
  let resp, body;
  try {
    resp = await fetch("/api/jobs", {method: "POST", body: form});
    body = await resp.json().catch(() => ({detail: `HTTP ${resp.status}`}));
  } catch (e) { showError("The server could not be reached: " + e); $("#run").disabled = false; return; }
  if (!resp.ok) { showError(body.detail || `HTTP ${resp.status}`); $("#run").disabled = false; return; }
  start(body.id);
}

function start(id) {
  clearTimeout(polling);
  $("#results").replaceChildren(); $("#metrics").hidden = true; $("#metrics").replaceChildren();
  $("#inputs").hidden = false; $("#input-image").src = `/api/jobs/${id}/input.png`;
  $("#download-npz").href = `/api/jobs/${id}/attributions.npz`;
  $("#download-report").href = `/api/jobs/${id}/report.html`; $("#download-report").hidden = true;
  $("#progress").hidden = false;
  poll(id);
}

async function poll(id) {
  let job;
  try { const r = await fetch(`/api/jobs/${id}`); job = await r.json(); if (!r.ok) throw new Error(job.detail); }
  catch (e) { showError("Lost the job: " + e.message); $("#run").disabled = false; return; }
  render(job);
  if (job.state !== "done") polling = setTimeout(() => poll(id), 250);
  else { $("#run").disabled = false;
         $("#download-report").hidden = !Object.values(job.methods).some(m => m.state === "done"); }
}

function render(job) {
  const p = job.progress;
  $("#progress").max = p.total; $("#progress").value = p.done;
  $("#status").textContent = job.state === "done" ? `done: ${p.done} of ${p.total} methods (${job.source})`
                                                  : `${job.state}: ${p.done} of ${p.total} methods finished…`;
  $("#status").className = "";
  $("#prediction").replaceChildren(...job.top.map(t => el("li", {textContent: `${t.label}: ${(100 * t.probability).toFixed(1)} %`})));
  for (const [name, m] of Object.entries(job.methods)) {
    let card = $(`.px-result[data-method="${name}"]`);
    if (!card) {
      card = el("div", {className: "px-result"}, el("h3", {textContent: name}), el("div", {className: "slot"}), el("div", {className: "state"}));
      card.dataset.method = name; $("#results").append(card);
    }
    if (card.dataset.state === m.state) continue;
    card.dataset.state = m.state;
    const state = $(".state", card), slot = $(".slot", card);
    if (m.state === "done") {
      const img = el("img", {className: "px-heatmap", src: m.heatmap_url, alt: `${name} heatmap`});
      img.dataset.method = name;
      slot.replaceChildren(img);
      state.replaceChildren(`${m.seconds.toFixed(2)} s `, el("a", {href: m.heatmap_url, download: `${name}.png`, className: "px-download", textContent: "PNG"}),
        el("a", {href: `/api/jobs/${job.id}/attributions.npz?method=${name}`, textContent: "NPZ"}));
    } else if (m.state === "error") {
      slot.replaceChildren(); state.textContent = m.error; state.classList.add("px-method-error");
    } else state.textContent = m.state === "running" ? "running…" : "queued";
  }
  metricsTable(job);
}

function metricsTable(job) {
  const names = Object.keys(job.methods).filter(n => job.methods[n].state === "done");
  if (!job.metrics.length || !names.length) return;
  const spec = Object.fromEntries(info.metrics.map(k => [k.name, k]));
  const table = $("#metrics"); table.hidden = false;
  const head = el("tr", {}, el("th", {textContent: "method"}),
    ...job.metrics.map(k => el("th", {textContent: spec[k].label + (spec[k].better === "higher" ? " ↑" : " ↓"), title: spec[k].help})),
    el("th", {textContent: "seconds"}));
  const rows = names.map(n => el("tr", {}, el("td", {textContent: n}),
    ...job.metrics.map(k => { const v = job.methods[n].metrics[k];
      const td = el("td", {className: "px-value", textContent: v === null || v === undefined ? "n/a" : v.toPrecision(4)});
      td.dataset.metric = k; td.dataset.value = v ?? ""; return td; }),
    el("td", {textContent: job.methods[n].seconds.toFixed(2)})));
  table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
  job.metrics.forEach((k, j) => {
    const cells = rows.map(r => r.children[j + 1]).filter(c => c.dataset.value !== "");
    if (cells.length < 2) return;
    const sign = spec[k].better === "higher" ? 1 : -1;
    const best = Math.max(...cells.map(c => sign * Number(c.dataset.value)));
    cells.filter(c => sign * Number(c.dataset.value) === best).forEach(c => c.classList.add("px-best"));
  });
}

$("#form").addEventListener("submit", submit);
load().catch(e => showError("Could not load the app's settings: " + e));
"""

PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>propex</title><style>{CSS}</style></head>
<body>{BODY}<script>{SCRIPT}</script></body></html>
"""
