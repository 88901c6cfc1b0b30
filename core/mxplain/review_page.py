"""The page of ``mxplain review``: one self-contained HTML file (tiles as PNG data URIs, inline CSS
and JavaScript, a Content-Security-Policy that allows no request at all), which works from
``file://`` without a server.

Everything from the run (lot and attribute names, definitions, the run name) travels in one JSON
block (``<`` ``>`` ``&`` written as ``\\u003c`` ...) and reaches the page through ``textContent``
only, so a name such as ``<img src=x onerror=alert(1)>`` is shown as text. The page holds pair ids,
tiles, attribute names and definitions, never which side is the edit or which way it went (that
key stays in the run folder, ``review/pairs.json``).

The script keeps the answers in ``localStorage`` (key ``mxplain-review:<set id>``) after every
answer, so a reload or a closed tab loses nothing; ``window.mxplainReview.answersJSON()`` is what
the "download answers" button saves.
"""

from __future__ import annotations

import base64
import html
import io
import json

import numpy as np

#: the page's first line after the doctype: how ``mxplain review`` recognises a page it wrote
MARKER = '<meta name="generator" content="mxplain review">'
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "connect-src 'none'; form-action 'none'; base-uri 'none'")

STYLE = """body{font-family:system-ui,sans-serif;margin:1em auto;max-width:980px;color:#222}
header{display:flex;flex-wrap:wrap;gap:1em;align-items:center}h1{font-size:1.3em;margin:.2em 0}
.bar{flex:1;min-width:200px;height:12px;background:#eee;border-radius:6px;overflow:hidden}
#bar{height:100%;width:0;background:#2a7ae2}#question{font-size:1.4em;margin:.6em 0 .2em}
#definition{color:#444;margin:.2em 0 .8em}.pair{display:flex;gap:2em;justify-content:center}
figure{margin:0;text-align:center}figure img{width:360px;height:360px;image-rendering:pixelated;
border:3px solid #ccc;background:#000}figure.chosen img{border-color:#2a7ae2}
.answers{display:flex;gap:1em;justify-content:center;margin:1em 0}
button{font-size:1em;padding:.4em 1em;cursor:pointer}button.chosen{background:#2a7ae2;color:#fff}
#meta{color:#666;font-size:.85em;text-align:center}#msg{color:#a33}kbd{border:1px solid #aaa;
border-radius:3px;padding:0 .3em;font-size:.85em}.help{color:#555;font-size:.85em}"""

BODY = """<header><h1>Expert review of edits</h1>
<label>Your name <input id="reviewer" autocomplete="name" size="18"></label>
<div class="bar" title="answered"><div id="bar"></div></div><span id="count"></span></header>
<p id="question">Which tile has more <b id="attr"></b>?</p>
<p id="definition"></p>
<div class="pair"><figure id="fig-left"><img id="left" alt="left tile">
<figcaption>left</figcaption></figure><figure id="fig-right"><img id="right" alt="right tile">
<figcaption>right</figcaption></figure></div>
<div class="answers"><button data-answer="left">left <kbd>&larr;</kbd> <kbd>1</kbd></button>
<button data-answer="cant_tell">can't tell <kbd>&darr;</kbd> <kbd>0</kbd></button>
<button data-answer="right">right <kbd>&rarr;</kbd> <kbd>2</kbd></button></div>
<p id="meta"></p>
<p style="text-align:center"><button id="prev">previous <kbd>&uarr;</kbd></button>
<button id="next">next <kbd>n</kbd></button>
<button id="download">download answers <kbd>s</kbd></button></p><p id="msg"></p>
<p class="help">Both tiles come from the same editor, one of them with a single attribute changed;
which side is which is random. Answer by what you see; choose "can't tell" when the tiles do not
differ in this attribute. Answers are kept in this browser as you go (a reload loses nothing);
download them when you are done and send the file back. The page makes no network request.</p>"""

SCRIPT = r"""(function () {
"use strict";
var DATA = JSON.parse(document.getElementById("mxplain-review-data").textContent);
var KEY = "mxplain-review:" + DATA.set_id, pairs = DATA.pairs, $ = document.getElementById.bind(document);
function fresh() { return {reviewer: "", answers: {}, current: 0, started_at: new Date().toISOString()}; }
function load() {
  try { var s = JSON.parse(localStorage.getItem(KEY) || "null");
        if (s && typeof s.answers === "object") { return s; } } catch (e) {}
  return fresh();
}
var state = load(), shownAt = performance.now();
function msg(text) { $("msg").textContent = text; }
function save() {
  try { localStorage.setItem(KEY, JSON.stringify(state)); }
  catch (e) { msg("This browser does not keep the answers: download them before you close the page."); }
}
function count() { return pairs.filter(function (p) { return state.answers[p.id]; }).length; }
function show() {
  var p = pairs[state.current], a = state.answers[p.id];
  $("attr").textContent = p.attribute;
  $("definition").textContent = p.definition || "(no definition set: [data] attribute_descriptions)";
  $("left").src = p.left; $("right").src = p.right;
  $("meta").textContent = "pair " + (state.current + 1) + " of " + pairs.length + " \u00b7 lot " + p.lot;
  document.querySelectorAll("[data-answer]").forEach(function (b) {
    b.classList.toggle("chosen", !!a && a.answer === b.getAttribute("data-answer")); });
  $("fig-left").classList.toggle("chosen", !!a && a.answer === "left");
  $("fig-right").classList.toggle("chosen", !!a && a.answer === "right");
  var n = count();
  $("bar").style.width = (100 * n / pairs.length) + "%";
  $("count").textContent = n + " / " + pairs.length + " answered";
  shownAt = performance.now();
}
function go(i) { state.current = Math.max(0, Math.min(pairs.length - 1, i)); save(); show(); }
function nextOpen() {
  for (var k = 1; k <= pairs.length; k++) {
    var i = (state.current + k) % pairs.length;
    if (!state.answers[pairs[i].id]) { return i; } }
  return Math.min(state.current + 1, pairs.length - 1);
}
function answer(choice) {
  var p = pairs[state.current], old = state.answers[p.id];
  var ms = performance.now() - shownAt + (old ? old.ms : 0);
  state.answers[p.id] = {answer: choice, ms: Math.round(ms), at: new Date().toISOString()};
  if (count() === pairs.length) { msg("All pairs answered: download the answers."); }
  go(nextOpen());
}
function answersJSON() {
  return JSON.stringify({format: DATA.format, version: 1, run_id: DATA.run_id, set_id: DATA.set_id,
    reviewer: state.reviewer, pair_ids: pairs.map(function (p) { return p.id; }),
    answers: pairs.filter(function (p) { return state.answers[p.id]; }).map(function (p) {
      var a = state.answers[p.id];
      return {pair: p.id, answer: a.answer, seconds: a.ms / 1000, answered_at: a.at}; }),
    started_at: state.started_at, downloaded_at: new Date().toISOString()}, null, 1);
}
function download() {
  if (!state.reviewer.trim()) { msg("Enter your name first."); $("reviewer").focus(); return false; }
  var url = URL.createObjectURL(new Blob([answersJSON()], {type: "application/json"}));
  var a = document.createElement("a");
  a.href = url; a.download = "review-" + state.reviewer.trim().replace(/[^A-Za-z0-9_-]+/g, "_")
    + "-" + DATA.set_id + ".json";
  document.body.appendChild(a); a.click(); a.remove();
  setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
  msg(""); return true;
}
var KEYS = {ArrowLeft: "left", "1": "left", ArrowRight: "right", "2": "right",
            ArrowDown: "cant_tell", "0": "cant_tell"};
document.addEventListener("keydown", function (e) {
  if (e.target && e.target.tagName === "INPUT") { if (e.key === "Enter") { e.target.blur(); } return; }
  if (e.ctrlKey || e.metaKey || e.altKey) { return; }
  if (KEYS[e.key]) { answer(KEYS[e.key]); }
  else if (e.key === "ArrowUp" || e.key === "Backspace") { go(state.current - 1); }
  else if (e.key === "n") { go(state.current + 1); }
  else if (e.key === "s") { download(); }
  else { return; }
  e.preventDefault();
});
document.querySelectorAll("[data-answer]").forEach(function (b) {
  b.addEventListener("click", function () { answer(b.getAttribute("data-answer")); b.blur(); }); });
$("prev").onclick = function () { go(state.current - 1); };
$("next").onclick = function () { go(state.current + 1); };
$("download").onclick = download;
$("reviewer").value = state.reviewer;
$("reviewer").addEventListener("input", function () { state.reviewer = this.value; save(); });
if (state.current >= pairs.length) { state.current = 0; }
show();
window.mxplainReview = {answersJSON: answersJSON, download: download, answer: answer,
  state: function () { return JSON.parse(JSON.stringify(state)); }};
})();"""


def png_data_uri(tile_u8: np.ndarray) -> str:
    """A ``uint8`` ``(H, W)`` tile as a ``data:image/png;base64,`` URI (grey, no metadata)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(tile_u8, dtype=np.uint8), mode="L").save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def script_json(obj) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&`` (so no
    ``</script>`` or ``<!--`` can end or change the block), non-ASCII kept as escapes."""
    text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(data: dict, title: str) -> str:
    """The page for ``data`` (``format``, ``run_id``, ``set_id`` and ``pairs``: a list of dicts
    with ``id``, ``lot``, ``attribute``, ``definition``, ``left`` and ``right`` data URIs)."""
    return ("<!doctype html>\n" + MARKER + "\n<html lang='en'><head><meta charset='utf-8'>"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<meta name='mxplain-review-set' content='{html.escape(data['set_id'], quote=True)}'>"
            f"<title>mxplain review: {html.escape(title, quote=True)}</title>"
            f"<style>{STYLE}</style></head><body>\n{BODY}\n"
            f'<script type="application/json" id="mxplain-review-data">{script_json(data)}'
            f"</script>\n<script>{SCRIPT}</script></body></html>\n")


def is_review_page(path) -> bool:
    """Whether the file at ``path`` is a page this module wrote (its marker line)."""
    try:
        with open(path, "rb") as f:
            head = f.read(200)
    except OSError:
        return False
    return head.startswith(b"<!doctype html>\n" + MARKER.encode())
