/* featurepath report: sortable/filterable feature table and an interactive pathway graph.
 *
 * No libraries and no network: the page must work offline, years from now. All data come from
 * JSON islands (script elements of type application/json); every string from them is put into the page with
 * textContent (never innerHTML), so model-written text can never become markup.
 */
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";

  function readJSON(id, fallback) {
    var el = document.getElementById(id);
    if (!el) { return fallback; }
    try { return JSON.parse(el.textContent); } catch (e) { return fallback; }
  }

  var graph = readJSON("graph-data", { nodes: [], edges: [] });
  var features = readJSON("features-data", {});
  var tests = readJSON("tests-data", {});
  var chains = readJSON("chains-data", []);
  var meta = readJSON("meta-data", {});

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) { Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); }); }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function svgEl(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    return e;
  }
  function fmt(v) {
    if (v === null || v === undefined) { return "–"; }
    if (typeof v === "boolean") { return v ? "yes" : "no"; }
    if (typeof v === "number") {
      if (!isFinite(v)) { return String(v); }
      if (v === 0) { return "0"; }
      if (Number.isInteger(v)) { return String(v); }
      var a = Math.abs(v);
      if (a < 1e-3) { return v.toExponential(2); }
      if (a >= 1000) { return v.toFixed(0); }
      return String(Number(v.toPrecision(3)));
    }
    if (typeof v === "object") { return JSON.stringify(v); }
    return String(v);
  }
  function kvTable(obj, keys) {
    var t = el("table");
    (keys || Object.keys(obj)).forEach(function (k) {
      if (!(k in obj)) { return; }
      var tr = el("tr");
      tr.appendChild(el("th", null, k));
      tr.appendChild(el("td", null, fmt(obj[k])));
      t.appendChild(tr);
    });
    return t;
  }
  function npLink(layer, fid) {
    if (!meta.neuronpedia || layer === null || layer === undefined || fid === null ||
        fid === undefined) { return null; }
    var url = meta.neuronpedia.replace("{layer}", String(layer)).replace("{feature_id}", String(fid));
    var a = el("a", { href: url, target: "_blank", rel: "noopener noreferrer", "class": "np" },
      "Open on Neuronpedia");
    return a;
  }

  /* ---------------- sortable, filterable feature table ---------------- */
  function initTable(table) {
    var tbody = table.tBodies[0];
    var headers = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(headers, function (th, idx) {
      if (th.classList.contains("nosort")) { return; }
      function sort() {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(headers, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var rows = Array.prototype.slice.call(tbody.rows);
        var keyed = rows.map(function (r, i) {
          var c = r.cells[idx];
          var raw = c ? (c.getAttribute("data-sort") !== null ? c.getAttribute("data-sort")
            : c.textContent) : "";
          var num = raw === "" ? NaN : Number(raw);
          return { r: r, raw: raw, num: num, i: i };
        });
        var numeric = keyed.every(function (k) { return k.raw === "" || !isNaN(k.num); });
        keyed.sort(function (a, b) {
          // empty cells always last, whichever the direction
          if (a.raw === "" && b.raw !== "") { return 1; }
          if (b.raw === "" && a.raw !== "") { return -1; }
          var c;
          if (numeric) { c = a.num - b.num; } else { c = a.raw.localeCompare(b.raw, undefined, { numeric: true }); }
          if (c === 0) { c = a.i - b.i; return c; }
          return asc ? c : -c;
        });
        keyed.forEach(function (k) { tbody.appendChild(k.r); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (ev) { if (ev.key === "Enter") { sort(); } });
    });
  }

  function initFilter() {
    var input = document.getElementById("feature-filter");
    var table = document.getElementById("feature-table");
    var count = document.getElementById("feature-count");
    if (!input || !table) { return; }
    var total = table.tBodies[0].rows.length;
    input.addEventListener("input", function () {
      var terms = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      var shown = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
        var text = r.textContent.toLowerCase();
        var ok = terms.every(function (t) { return text.indexOf(t) >= 0; });
        r.hidden = !ok;
        if (ok) { shown += 1; }
      });
      if (count) { count.textContent = shown === total ? total + " features" : shown + " of " + total + " features"; }
    });
  }

  function showFeatureTests(key, row) {
    var box = document.getElementById("feature-details");
    if (!box) { return; }
    var prev = document.querySelectorAll("#feature-table tr.selected");
    Array.prototype.forEach.call(prev, function (r) { r.classList.remove("selected"); });
    if (row) { row.classList.add("selected"); }
    var f = features[key] || {};
    box.textContent = "";
    box.appendChild(el("h4", null, (f.feature || key) + (f.cls ? " — " + f.cls : "")));
    if (f.summary) { box.appendChild(el("p", null, f.summary)); }
    var link = npLink(f.layer, f.feature_id);
    if (link) { box.appendChild(link); }
    var tcols = tests.columns || [];
    var rows = ((tests.by_feature || {})[key] || []).map(function (arr) {
      var o = {};
      tcols.forEach(function (c, i) { o[c] = arr[i]; });
      return o;
    });
    if (!rows.length) { box.appendChild(el("p", null, "No causal tests for this feature.")); return; }
    var cols = ["arm", "context", "condition", "patch", "method", "value", "scale", "metric", "baseline_value",
      "patched_value", "effect", "ci_low", "ci_high", "q", "significant", "vs_baseline", "null_n", "null_z", "null_p",
      "null_q", "beats_null", "n_patched", "n_baseline", "n_invalid_patched", "n_invalid_baseline",
      "invalid_bet_patched", "invalid_bet_baseline", "degenerate", "test"];
    cols = cols.filter(function (c) { return rows.some(function (r) { return c in r; }); });
    var t = el("table", { "class": "data" });
    var hr = el("tr");
    cols.forEach(function (c) { hr.appendChild(el("th", null, c)); });
    t.appendChild(hr);
    var alpha = typeof meta.alpha === "number" ? meta.alpha : 0.05;
    rows.forEach(function (r) {
      var tr = el("tr");
      // q in bold only where the test is significant (the baseline and, if any, its null band)
      var sig = "significant" in r ? r.significant === true : (typeof r.q === "number" && r.q <= alpha && !r.degenerate);
      cols.forEach(function (c) { tr.appendChild(el("td", c === "q" && sig ? { "class": "sig" } : null, fmt(r[c]))); });
      t.appendChild(tr);
    });
    var wrap = el("div", { "class": "table-wrap" });
    wrap.appendChild(t);
    box.appendChild(wrap);
  }

  function initFeatureRows() {
    var table = document.getElementById("feature-table");
    if (!table) { return; }
    table.tBodies[0].addEventListener("click", function (ev) {
      if (ev.target.closest("a")) { return; }
      var tr = ev.target.closest("tr");
      if (tr) { showFeatureTests(tr.getAttribute("data-key"), tr); }
    });
  }

  /* ---------------- pathway graph ---------------- */
  var state = { svg: null, nodeEls: {}, edgeEls: [] };

  function edgeSign(e) {
    var s = e.sign;
    if (typeof s === "string") { return (s.trim() === "-" || s.trim() === "−" || s === "neg" || s === "negative") ? -1 : 1; }
    if (typeof s === "number") { return s < 0 ? -1 : 1; }
    return (typeof e.d === "number" && e.d < 0) ? -1 : 1;
  }
  function mag(e) {
    if (typeof e.d === "number") { return Math.abs(e.d); }
    if (typeof e.weight === "number") { return Math.abs(e.weight); }
    return 0;
  }

  function edgeExtra(e) {
    var s = "";
    if (e.null_p !== undefined && e.null_p !== null) { s += ", null p " + fmt(e.null_p); }
    if (e.mechanism) { s += ", " + e.mechanism; }
    return s;
  }

  function featureOf(node) {
    var k = node.layer + ":" + node.feature;
    return features[k] || null;
  }

  function clearSelection() {
    if (!state.svg) { return; }
    state.svg.classList.remove("dim");
    state.svg.querySelectorAll(".hl").forEach(function (x) { x.classList.remove("hl"); });
    state.svg.querySelectorAll(".selected").forEach(function (x) { x.classList.remove("selected"); });
  }
  function highlight(nodeIds, edgeIdx) {
    clearSelection();
    state.svg.classList.add("dim");
    nodeIds.forEach(function (id) { var g = state.nodeEls[id]; if (g) { g.classList.add("hl"); } });
    edgeIdx.forEach(function (i) { var g = state.edgeEls[i]; if (g) { g.classList.add("hl"); } });
  }

  function showNode(node) {
    var box = document.getElementById("details");
    var id = String(node.id);
    var outs = [], ins = [];
    graph.edges.forEach(function (e, i) {
      if (String(e.source) === id) { outs.push(i); }
      if (String(e.target) === id) { ins.push(i); }
    });
    highlight([id].concat(outs.map(function (i) { return String(graph.edges[i].target); }),
      ins.map(function (i) { return String(graph.edges[i].source); })), outs.concat(ins));
    state.nodeEls[id].querySelector("circle").classList.add("selected");
    box.textContent = "";
    box.appendChild(el("h4", { "class": "node-title" }, "Feature " + id));
    var info = { layer: node.layer, feature: node.feature, "edges out": outs.length, "edges in": ins.length };
    var f = featureOf(node);
    if (f) {
      ["cls", "direction", "disc_d", "disc_q", "effect", "causal_q", "verdict", "null_p", "n_significant"].forEach(function (k) {
        if (f[k] !== undefined && f[k] !== null) { info[k === "cls" ? "causal class" : k] = f[k]; }
      });
    }
    Object.keys(node).forEach(function (k) { if (!(k in info) && k !== "id") { info[k] = node[k]; } });
    box.appendChild(kvTable(info));
    var link = npLink(node.layer, node.feature);
    if (link) { box.appendChild(link); }
    function list(title, idxs, end) {
      if (!idxs.length) { return; }
      box.appendChild(el("h4", null, title));
      var ul = el("ul");
      idxs.forEach(function (i) {
        var e = graph.edges[i];
        ul.appendChild(el("li", null, (edgeSign(e) > 0 ? "+ " : "− ") + e[end] + "  (d " + fmt(e.d) + ", q " + fmt(e.q) + edgeExtra(e) + ")"));
      });
      box.appendChild(ul);
    }
    list("Drives", outs, "target");
    list("Driven by", ins, "source");
  }

  function showEdge(i) {
    var e = graph.edges[i];
    var box = document.getElementById("details");
    highlight([String(e.source), String(e.target)], [i]);
    state.edgeEls[i].querySelector(".edge").classList.add("selected");
    box.textContent = "";
    box.appendChild(el("h4", { "class": "edge-title" }, e.source + " → " + e.target));
    var info = {};
    Object.keys(e).forEach(function (k) { if (k !== "source" && k !== "target") { info[k] = e[k]; } });
    box.appendChild(kvTable(info));
  }

  function drawGraph() {
    var host = document.getElementById("pathway-graph");
    if (!host) { return; }
    var nodes = graph.nodes || [], edges = graph.edges || [];
    if (!nodes.length) { return; }
    var layers = [];
    nodes.forEach(function (n) { var l = n.layer === null || n.layer === undefined ? -1 : n.layer; if (layers.indexOf(l) < 0) { layers.push(l); } });
    layers.sort(function (a, b) { return a - b; });
    var cols = {};
    layers.forEach(function (l) { cols[l] = []; });
    nodes.forEach(function (n) { cols[n.layer === null || n.layer === undefined ? -1 : n.layer].push(n); });
    var tallest = 0;
    layers.forEach(function (l) {
      cols[l].sort(function (a, b) { return (a.feature || 0) - (b.feature || 0); });
      tallest = Math.max(tallest, cols[l].length);
    });
    var colW = Math.max(150, Math.min(240, 1000 / Math.max(1, layers.length))), rowH = 56;
    var top = 44, left = 50;
    var W = left * 2 + colW * Math.max(0, layers.length - 1) + 90;
    var H = top + rowH * tallest + 20;
    var svg = svgEl("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, "class": "graph" });
    var defs = svgEl("defs");
    [["pos", "#2563eb"], ["neg", "#dc2626"]].forEach(function (p) {
      var m = svgEl("marker", { id: "arrow-" + p[0], viewBox: "0 0 10 10", refX: "9", refY: "5",
        markerWidth: "7", markerHeight: "7", markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" });
      var path = svgEl("path", { d: "M0,0 L10,5 L0,10 z", fill: p[1] });
      m.appendChild(path); defs.appendChild(m);
    });
    svg.appendChild(defs);
    var pos = {};
    layers.forEach(function (l, ci) {
      var x = left + ci * colW;
      var lab = svgEl("text", { x: x, y: 20, "class": "layer-label" });
      lab.textContent = l < 0 ? "?" : "L" + l;
      svg.appendChild(lab);
      svg.appendChild(svgEl("line", { x1: x, y1: 28, x2: x, y2: H - 8, "class": "layer-line" }));
      var n = cols[l].length, off = (tallest - n) * rowH / 2;
      cols[l].forEach(function (node, i) { pos[String(node.id)] = { x: x, y: top + off + i * rowH + rowH / 2 }; });
    });
    var dmax = 1e-9;
    edges.forEach(function (e) { dmax = Math.max(dmax, mag(e)); });
    var gE = svgEl("g", { "class": "edges" }), gN = svgEl("g", { "class": "nodes" });
    svg.appendChild(gE); svg.appendChild(gN);
    var pairCount = {};
    var R = 8;
    edges.forEach(function (e, i) {
      var a = pos[String(e.source)], b = pos[String(e.target)];
      var g = svgEl("g", { "class": "edge-g", "data-index": String(i) });
      state.edgeEls.push(g);
      gE.appendChild(g);
      var sgn = edgeSign(e) > 0 ? "pos" : "neg";
      var width = 1 + 5 * mag(e) / dmax;
      var d = "";
      if (a && b) {
        var key = e.source + "|" + e.target;
        var k = pairCount[key] = (pairCount[key] || 0) + 1;
        var dx = b.x - a.x, dy = b.y - a.y, len = Math.sqrt(dx * dx + dy * dy) || 1;
        var ux = dx / len, uy = dy / len;
        var sx = a.x + ux * R, sy = a.y + uy * R, tx = b.x - ux * (R + 2), ty = b.y - uy * (R + 2);
        // curve every edge a little, more when it skips layers, so that an edge L3 -> L13 does
        // not run through the L8 node between them and parallel edges stay apart
        var skip = Math.max(0, Math.round(Math.abs(b.x - a.x) / colW) - 1);
        var bend = (a.x === b.x ? 40 : 8) + skip * 26 + (k - 1) * 14;
        var mx = (sx + tx) / 2 - uy * bend, my = (sy + ty) / 2 + ux * bend;
        d = "M" + sx.toFixed(1) + "," + sy.toFixed(1) + " Q" + mx.toFixed(1) + "," + my.toFixed(1) + " " + tx.toFixed(1) + "," + ty.toFixed(1);
      }
      var p = svgEl("path", { d: d, "class": "edge " + sgn + (e.mechanism === "mediated" ? " mediated" : ""), "stroke-width": width.toFixed(2),
        "marker-end": "url(#arrow-" + sgn + ")", "data-source": String(e.source), "data-target": String(e.target) });
      var hit = svgEl("path", { d: d, "class": "edge-hit" });
      var title = svgEl("title");
      title.textContent = e.source + " → " + e.target + " (d " + fmt(e.d) + ", q " + fmt(e.q) + edgeExtra(e) + ")";
      g.appendChild(p); g.appendChild(hit); g.appendChild(title);
      g.addEventListener("click", function (ev) { ev.stopPropagation(); showEdge(i); });
    });
    nodes.forEach(function (n) {
      var id = String(n.id), p = pos[id];
      var g = svgEl("g", { "class": "node-g", tabindex: "0", "data-id": id });
      var f = featureOf(n);
      var c = svgEl("circle", { cx: p.x, cy: p.y, r: R, "class": "node" + (f && f.cls ? " causal" : ""), "data-id": id });
      var t = svgEl("text", { x: p.x + R + 4, y: p.y - R + 2, "class": "label" });
      t.textContent = id;
      var title = svgEl("title");
      title.textContent = id + (f && f.cls ? " (" + f.cls + ")" : "");
      g.appendChild(c); g.appendChild(t); g.appendChild(title);
      g.addEventListener("click", function (ev) { ev.stopPropagation(); showNode(n); });
      g.addEventListener("keydown", function (ev) { if (ev.key === "Enter") { showNode(n); } });
      state.nodeEls[id] = g;
      gN.appendChild(g);
    });
    svg.addEventListener("click", function () {
      clearSelection();
      document.getElementById("details").textContent = "Click a node or an edge to see its statistics.";
    });
    state.svg = svg;
    host.appendChild(svg);
  }

  /* ---------------- chains ---------------- */
  function initChains() {
    var rows = document.querySelectorAll("#chains-table tr.chain");
    Array.prototype.forEach.call(rows, function (tr) {
      function go() {
        var c = chains[Number(tr.getAttribute("data-chain"))];
        if (!c || !state.svg) { return; }
        var ids = Array.isArray(c.nodes) ? c.nodes.map(String) : String(c.chain).split(/\s*(?:->|→)\s*/);
        var eidx = [];
        for (var j = 0; j + 1 < ids.length; j++) {
          graph.edges.forEach(function (e, i) { if (String(e.source) === ids[j] && String(e.target) === ids[j + 1]) { eidx.push(i); } });
        }
        highlight(ids, eidx);
        var box = document.getElementById("details");
        box.textContent = "";
        box.appendChild(el("h4", null, "Chain"));
        box.appendChild(kvTable(c));
        document.getElementById("pathway-graph").scrollIntoView({ behavior: "smooth", block: "center" });
      }
      tr.addEventListener("click", go);
      tr.addEventListener("keydown", function (ev) { if (ev.key === "Enter") { go(); } });
    });
  }

  function init() {
    document.querySelectorAll("table.sortable").forEach(initTable);
    initFilter();
    initFeatureRows();
    drawGraph();
    initChains();
    document.documentElement.setAttribute("data-report-ready", "1");
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
})();
