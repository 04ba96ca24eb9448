// The live console: polls the JSON routes (no build step, no framework).
"use strict";
const $ = (id) => document.getElementById(id);
const fmt = (v, d = 0) => (v === null || v === undefined ? "-" : Number(v).toFixed(d));
let lastDefects = "";

async function getJSON(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

function lineState(h) {
  const cam = h.camera;
  $("s-camera").textContent = cam.stalled ? "STALLED" : `${cam.live ? "live" : "recording"}, ${cam.frames} frames, ${cam.dropped} dropped`;
  $("s-camera").className = cam.stalled ? "bad" : "ok";
  const g = h.gate;
  if (!g) { $("s-gate").textContent = "none"; $("s-gate").className = ""; }
  else {
    const bad = g.link_down || !g.connected;
    $("s-gate").textContent = bad ? "LINK DOWN" : g.held ? "held: " + g.hold_reasons.join(", ") : `ok, ${g.in_flight} in flight`;
    $("s-gate").className = bad ? "bad" : g.held ? "warn" : "ok";
  }
  const l = h.log;
  $("s-log").textContent = l ? `${l.counters.rows} rows, queue ${l.queue}` : "none";
  $("s-model").textContent = h.model ? `${h.model.name} (${h.model.backend})` : "-";
}

async function pollState() {
  try {
    const s = await getJSON("/api/state");
    for (const k of ["ok", "defect", "no_verdict"]) $("n-" + k).textContent = s.counts[k];
    $("n-parts").textContent = s.parts;
    $("yield").textContent = s.yield_pct === null ? "-" : fmt(s.yield_pct, 1) + " %";
    $("fps").textContent = fmt(s.fps, 1);
    $("latency").textContent = `${fmt(s.latency_ms.p50, 1)} / ${fmt(s.latency_ms.p99, 1)} ms`;
    $("threshold").textContent = fmt(s.threshold, 3);
    $("model").textContent = s.model;
    $("running").textContent = s.running ? "inspecting" : "line stopped";
    $("running").className = "badge " + (s.running ? "run" : "end");
    lineState(s.health);
  } catch (e) {
    $("running").textContent = "console unreachable";
    $("running").className = "badge down";
  }
}

function drawHistogram(h) {
  const c = $("hist"), ctx = c.getContext("2d");
  const W = c.width, H = c.height, pad = 20, n = h.ok.length;
  ctx.clearRect(0, 0, W, H);
  const top = Math.max(1, ...h.ok, ...h.defect);
  const bw = (W - 2 * pad) / n;
  for (let i = 0; i < n; i++) {
    const x = pad + i * bw;
    const ho = (h.ok[i] / top) * (H - 2 * pad), hd = (h.defect[i] / top) * (H - 2 * pad);
    ctx.fillStyle = "rgba(76,175,80,0.75)"; ctx.fillRect(x + 1, H - pad - ho, bw / 2 - 1, ho);
    ctx.fillStyle = "rgba(239,83,80,0.75)"; ctx.fillRect(x + bw / 2, H - pad - hd, bw / 2 - 1, hd);
  }
  ctx.strokeStyle = "#888"; ctx.beginPath(); ctx.moveTo(pad, H - pad); ctx.lineTo(W - pad, H - pad); ctx.stroke();
  ctx.fillStyle = "#aaa"; ctx.font = "11px sans-serif";
  ctx.fillText("0", pad - 3, H - 5); ctx.fillText("1", W - pad - 3, H - 5); ctx.fillText(`${h.n} parts`, W - 90, 12);
  if (h.threshold !== null) {
    const x = pad + h.threshold * (W - 2 * pad);
    ctx.strokeStyle = "#ffb300"; ctx.lineWidth = 2; ctx.beginPath(); ctx.moveTo(x, 4); ctx.lineTo(x, H - pad); ctx.stroke();
    ctx.lineWidth = 1; ctx.fillStyle = "#ffb300"; ctx.fillText(h.threshold.toFixed(3), x + 3, 14);
  }
}

async function pollScores() {
  try { drawHistogram(await getJSON("/api/scores")); } catch (e) { /* next poll */ }
}

function card(d) {
  const div = document.createElement("div");
  div.className = "card";
  div.dataset.id = d.id;
  if (d.has_crop) {
    const a = document.createElement("a");
    a.href = `/api/defects/${d.id}/crop.jpg`; a.target = "_blank";
    const img = document.createElement("img");
    img.src = `/api/defects/${d.id}/thumb.jpg`; img.alt = `part ${d.id}`;
    a.appendChild(img); div.appendChild(a);
  }
  if (d.has_map) {
    const m = document.createElement("img");
    m.src = `/api/defects/${d.id}/map.jpg`; m.alt = `anomaly map of part ${d.id}`;
    div.appendChild(m);
  }
  const p = document.createElement("div");
  const when = new Date(d.time * 1000).toLocaleTimeString();
  p.textContent = `#${d.id} ${d.verdict} ${d.score === null ? "" : d.score.toFixed(3)} ${when}`;
  div.appendChild(p);
  if (d.reason) { const r = document.createElement("div"); r.className = "warn"; r.textContent = d.reason; div.appendChild(r); }
  return div;
}

async function pollDefects() {
  try {
    const { defects } = await getJSON("/api/defects");
    const key = defects.map((d) => d.id).join(",");
    if (key === lastDefects) return;
    lastDefects = key;
    $("gallery").replaceChildren(...defects.map(card));
  } catch (e) { /* next poll */ }
}

async function pollHistory() {
  try {
    const { changes } = await getJSON("/api/threshold/history");
    const rows = changes.map((c) => {
      const tr = document.createElement("tr");
      const cells = [new Date(c.time * 1000).toLocaleString(), c.who, c.address, fmt(c.old, 3), fmt(c.new, 3), c.reason];
      for (const v of cells) { const td = document.createElement("td"); td.textContent = v; tr.appendChild(td); }
      return tr;
    });
    $("history").tBodies[0].replaceChildren(...rows);
  } catch (e) { /* next poll */ }
}

$("t-token").value = sessionStorage.getItem("inspector-token") || "";
$("change").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const token = $("t-token").value;
  sessionStorage.setItem("inspector-token", token);
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const body = JSON.stringify({ threshold: Number($("t-new").value), who: $("t-who").value, reason: $("t-reason").value });
  const out = $("t-result");
  out.className = ""; out.textContent = "applying...";
  try {
    const r = await fetch("/api/threshold", { method: "POST", headers, body });
    const j = await r.json();
    if (!r.ok) { out.className = "error"; out.textContent = j.error || r.statusText; return; }
    out.textContent = `applied: ${j.old.toFixed(3)} -> ${j.new.toFixed(3)} (audit #${j.id})`;
    pollHistory(); pollScores(); pollState();
  } catch (e) { out.className = "error"; out.textContent = String(e); }
});

// a dropped stream (console restarted, network) reconnects
$("stream").addEventListener("error", () => setTimeout(() => { $("stream").src = "/stream.mjpg?" + Date.now(); }, 2000));

pollState(); pollScores(); pollDefects(); pollHistory();
setInterval(pollState, 500);
setInterval(pollScores, 2000);
setInterval(pollDefects, 1500);
setInterval(pollHistory, 5000);
