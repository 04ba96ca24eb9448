// inspector review: a gallery of logged parts, keyboard-driven marks. No build step, no framework.
"use strict";
const $ = (s) => document.querySelector(s);
const state = { rows: [], focus: 0, sel: new Set(), cursors: [null], page: 0, next: null, info: null,
  token: sessionStorage.getItem("review-token") || "" };

function status(text, err) { const s = $("#status"); s.textContent = text; s.className = err ? "err" : ""; }

function filterParams() {
  const p = new URLSearchParams();
  for (const el of $("#filters").elements) {
    if (!el.name || !el.value) continue;
    let v = el.value;
    if (el.type === "datetime-local") v = String(new Date(v).getTime() / 1000);
    p.set(el.name, v);
  }
  return p;
}

async function api(path, opts) {
  const r = await fetch(path, opts);
  let body = null;
  try { body = await r.json(); } catch (e) { body = { error: r.statusText }; }
  if (!r.ok) { const e = new Error(body.error || r.statusText); e.status = r.status; throw e; }
  return body;
}

function fmtTime(t) { return t == null ? "-" : new Date(t * 1000).toLocaleString(); }
function fmtScore(s) { return s == null ? "-" : s.toFixed(3); }

async function load(page) {
  const p = filterParams();
  const cursor = state.cursors[page];
  if (cursor) p.set("after", cursor);
  p.set("limit", "60");
  const t0 = performance.now();
  try {
    const res = await api("/api/parts?" + p.toString());
    state.page = page; state.rows = res.rows; state.next = res.next; state.cursors[page + 1] = res.next;
    state.focus = Math.min(state.focus, Math.max(0, state.rows.length - 1));
    render();
    document.body.dataset.loadedMs = String(Math.round(performance.now() - t0));
    status(`${res.rows.length} parts shown`);
  } catch (e) { status(e.message, true); }
  const c = filterParams();
  api("/api/count?" + c.toString()).then((r) => { $("#count").textContent = r.count === 1 ? "1 part matches" : `${r.count} parts match`; })
    .catch((e) => status(e.message, true));
}

function tile(r, i) {
  const d = document.createElement("div");
  d.className = "tile" + (i === state.focus ? " focus" : "") + (state.sel.has(r.id) ? " sel" : "");
  d.dataset.id = r.id; d.dataset.index = i;
  if (r.has_image) {
    const img = document.createElement("img");
    img.className = "thumb"; img.loading = "lazy"; img.alt = `part ${r.part_id}`; img.src = `/img/${r.id}/crop`;
    d.appendChild(img);
  } else {
    const n = document.createElement("div"); n.className = "none"; n.textContent = "no crop kept"; d.appendChild(n);
  }
  if (r.mark) { const m = document.createElement("span"); m.className = "mark " + r.mark; m.textContent = r.mark.replace("_", " "); d.appendChild(m); }
  const meta = document.createElement("div"); meta.className = "meta";
  const v = document.createElement("span"); v.className = "v-" + r.verdict; v.textContent = r.verdict;
  const s = document.createElement("span"); s.textContent = fmtScore(r.score);
  meta.append(v, s); d.appendChild(meta);
  d.addEventListener("click", (ev) => {
    if (ev.shiftKey || ev.ctrlKey || ev.metaKey) toggleSel(r.id);
    state.focus = i; render();
  });
  return d;
}

function render() {
  const g = $("#gallery"); g.replaceChildren(...state.rows.map(tile));
  $("#pageinfo").textContent = `· page ${state.page + 1}`;
  $("#prev").disabled = state.page === 0; $("#next").disabled = !state.next;
  $("#selinfo").textContent = state.sel.size ? `${state.sel.size} selected` : "";
  for (const b of ["#bulk-defect", "#bulk-ok", "#bulk-clear"]) $(b).disabled = state.sel.size === 0;
  const el = g.children[state.focus]; if (el) el.scrollIntoView({ block: "nearest" });
  showDetail();
}

async function showDetail() {
  const r = state.rows[state.focus]; const box = $("#detail");
  if (!r) { box.replaceChildren(document.createTextNode("no parts match these filters")); return; }
  let d;
  try { d = await api(`/api/parts/${r.id}`); } catch (e) { status(e.message, true); return; }
  if (state.rows[state.focus] !== r) return; // moved on meanwhile
  const imgs = document.createElement("div"); imgs.className = "imgs";
  if (d.has_image) { const i = new Image(); i.src = `/img/${d.id}/crop`; i.alt = "crop"; i.id = "full"; imgs.appendChild(i); }
  else imgs.appendChild(document.createTextNode(d.image_note || "no crop kept for this part"));
  if (d.has_map) { const m = new Image(); m.src = `/img/${d.id}/map`; m.alt = "anomaly map"; m.id = "map"; imgs.appendChild(m); }
  const t = document.createElement("table");
  const rows = [["part", `${d.part_id} (run ${d.run}, row ${d.id})`], ["time", fmtTime(d.time)], ["frame", d.frame],
    ["verdict", d.verdict], ["score", fmtScore(d.score)], ["class", d.class], ["reason", d.reason],
    ["latency", d.latency_ms == null ? "-" : `${d.latency_ms.toFixed(1)} ms capture to verdict`],
    ["inference", d.infer_ms == null ? "-" : `${d.infer_ms.toFixed(1)} ms`]];
  for (const [k, v] of Object.entries(d.timings || {})) rows.push([k.replace(/_ms$/, ""), `${v} ms`]);
  rows.push(["gate", d.gate_status ? `${d.gate_status}${d.gate_reason ? " (" + d.gate_reason + ")" : ""}` : "-"]);
  rows.push(["model", d.model_hash || "-"]);
  rows.push(["review", d.mark ? `${d.mark} by ${d.who} at ${fmtTime(d.at)}` : "not reviewed"]);
  for (const [k, v] of rows) {
    const tr = t.insertRow(); tr.insertCell().textContent = k; tr.insertCell().textContent = v == null ? "-" : String(v);
  }
  box.replaceChildren(imgs, t);
}

function toggleSel(id) { if (state.sel.has(id)) state.sel.delete(id); else state.sel.add(id); }

async function mark(ids, m) {
  const headers = { "Content-Type": "application/json" };
  if (state.token) headers["X-Review-Token"] = state.token;
  const who = $("#who").value.trim();
  localStorage.setItem("review-who", who);
  try {
    const res = await api("/api/marks", { method: "POST", headers, body: JSON.stringify({ ids, mark: m, who: who || null }) });
    for (const r of state.rows) if (String(r.id) in res.marked) { r.mark = res.marked[String(r.id)]; r.who = res.who; }
    status(`${ids.length} part(s): ${m === "clear" ? "mark cleared" : Object.values(res.marked)[0] || m}`);
    return true;
  } catch (e) {
    if (e.status === 401) {
      const t = prompt("This review page needs its token to store marks:");
      if (t) { state.token = t; sessionStorage.setItem("review-token", t); return mark(ids, m); }
    }
    status(e.message, true); return false;
  }
}

async function markFocused(m) {
  if (state.sel.size) { await markSelection(m); return; }
  const r = state.rows[state.focus]; if (!r) return;
  if (await mark([r.id], m)) advance(); else render();
}

async function markSelection(m) {
  const ids = [...state.sel]; if (!ids.length) return;
  if (await mark(ids, m)) state.sel.clear();
  render();
}

function advance() {
  if (state.focus < state.rows.length - 1) { state.focus += 1; render(); }
  else if (state.next) { state.focus = 0; load(state.page + 1); }
  else render();
}

function columns() {
  const g = $("#gallery"); const t = g.children[0];
  if (!t) return 1;
  return Math.max(1, Math.round(g.clientWidth / (t.offsetWidth + 8)));
}

document.addEventListener("keydown", (ev) => {
  if (ev.target.closest && ev.target.closest("input, select, textarea")) return;
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const k = ev.key;
  const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(), ArrowUp: -columns() };
  if (k in moves) {
    state.focus = Math.max(0, Math.min(state.rows.length - 1, state.focus + moves[k])); render();
  } else if (k === "d") markFocused("defect");
  else if (k === "f" || k === "o") markFocused("ok");
  else if (k === "m") markFocused("missed");
  else if (k === "u") markFocused("clear");
  else if (k === "s" || k === " ") advance();
  else if (k === "x") { const r = state.rows[state.focus]; if (r) { toggleSel(r.id); render(); } }
  else if (k === "a") { for (const r of state.rows) state.sel.add(r.id); render(); }
  else if (k === "Escape") { state.sel.clear(); render(); }
  else if (k === "n" || k === "PageDown") { if (state.next) { state.focus = 0; load(state.page + 1); } }
  else if (k === "p" || k === "PageUp") { if (state.page > 0) { state.focus = 0; load(state.page - 1); } }
  else return;
  ev.preventDefault();
});

$("#filters").addEventListener("submit", (ev) => {
  ev.preventDefault(); state.cursors = [null]; state.focus = 0; state.sel.clear(); load(0);
  document.activeElement.blur();
});
$("#next").addEventListener("click", (ev) => { ev.currentTarget.blur(); if (state.next) { state.focus = 0; load(state.page + 1); } });
$("#prev").addEventListener("click", (ev) => { ev.currentTarget.blur(); if (state.page > 0) { state.focus = 0; load(state.page - 1); } });
for (const [id, m] of [["#bulk-defect", "defect"], ["#bulk-ok", "ok"], ["#bulk-clear", "clear"]]) {
  $(id).addEventListener("click", (ev) => { ev.currentTarget.blur(); markSelection(m); }); // keys go to the gallery
}

(async function start() {
  try {
    state.info = await api("/api/info");
    $("#db").textContent = state.info.db + (state.info.writable ? "" : " (read-only: marks are not stored)");
    $("#who").value = localStorage.getItem("review-who") || state.info.who;
    const dl = $("#reasons");
    for (const r of state.info.reasons) { const o = document.createElement("option"); o.value = r; dl.appendChild(o); }
    if (!state.info.writable) status(state.info.read_only_reason, true);
  } catch (e) { status(e.message, true); }
  await load(0);
  document.body.dataset.readyMs = String(Math.round(performance.now()));  // since navigation began
  document.body.dataset.ready = "1";
})();
