// blackbox dashboard: polls /api/overview and /api/logs, draws the charts
// as SVG, and sends the selling policy form to PUT /api/policy. No
// libraries, nothing loaded from elsewhere.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const $ = (sel) => document.querySelector(sel);
let formLoaded = false;
let formDirty = false;
let lastPolicy = null;
let logSeq = 0;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c ?? ""));
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function sats(n) {
  if (n === undefined || n === null) return "–";
  return Math.round(n).toLocaleString("en-US") + " sat";
}

function short(id, n = 12) {
  if (!id) return "–";
  return id.length > n + 2 ? id.slice(0, n) + "…" : id;
}

function ago(t) {
  if (!t) return "–";
  const d = (Date.now() - new Date(t).getTime()) / 1000;
  if (d < 0) return "in " + dur(-d);
  if (d < 5) return "just now";
  return dur(d) + " ago";
}

function dur(s) {
  if (s < 60) return Math.round(s) + " s";
  if (s < 3600) return Math.round(s / 60) + " min";
  if (s < 86400) return (s / 3600).toFixed(1).replace(/\.0$/, "") + " h";
  return (s / 86400).toFixed(1).replace(/\.0$/, "") + " d";
}

function cores(milli) {
  return (milli / 1000).toFixed(milli % 1000 === 0 ? 0 : 2).replace(/\.?0+$/, (m) => (m.startsWith(".") ? "" : m));
}

function bytes(n) {
  if (!n) return "0";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (n >= 10 || i === 0 ? Math.round(n) : n.toFixed(1)) + " " + u[i];
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function kv(table, pairs) {
  table.replaceChildren(...pairs.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v))));
}

async function getJSON(url) {
  const r = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || r.status + " " + r.statusText);
  return body;
}

// ---- charts ----

// series lays the history's buckets (the store keeps only those with
// something in them) on the period's time axis: one slot per bucket_seconds
// from since to now, empty slots zero.
function series(e) {
  if (!e || !e.bucket_seconds) return [];
  const step = e.bucket_seconds * 1000;
  const t0 = Math.floor(new Date(e.since).getTime() / step) * step;
  const n = Math.min(2000, Math.max(1, Math.ceil((new Date(e.now).getTime() - t0) / step)));
  const out = [];
  for (let i = 0; i < n; i++) out.push({ start: new Date(t0 + i * step).toISOString() });
  for (const b of e.buckets || []) {
    const i = Math.floor((new Date(b.start).getTime() - t0) / step);
    if (i >= 0 && i < n) Object.assign(out[i], b, { start: out[i].start });
  }
  return out;
}

// axes draws the frame, horizontal grid lines with labels, and time labels
// under the x axis; it returns the plot's geometry.
function axes(s, buckets, maxY, fmtY) {
  const W = 600, H = 220, L = 52, R = 10, T = 10, B = 26;
  const g = { x0: L, x1: W - R, y0: H - B, y1: T };
  g.w = g.x1 - g.x0; g.h = g.y0 - g.y1;
  g.y = (v) => g.y0 - (maxY > 0 ? (v / maxY) * g.h : 0);
  for (let i = 0; i <= 4; i++) {
    const v = (maxY * i) / 4, y = g.y(v);
    s.append(svg("line", { x1: g.x0, x2: g.x1, y1: y, y2: y, class: "grid" }));
    s.append(svg("text", { x: g.x0 - 6, y: y + 4, "text-anchor": "end" }, fmtY(v)));
  }
  const n = buckets.length;
  const step = Math.max(1, Math.ceil(n / 6));
  for (let i = 0; i < n; i += step) {
    const t = new Date(buckets[i].start);
    const label = n > 48 && (buckets[n - 1] && (new Date(buckets[n - 1].start) - new Date(buckets[0].start)) > 2 * 86400e3)
      ? t.toLocaleDateString([], { month: "short", day: "numeric" })
      : t.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    s.append(svg("text", { x: g.x0 + (i + 0.5) * (g.w / n), y: g.y0 + 16, "text-anchor": "middle" }, label));
  }
  return g;
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// holdingsDetail says what closing the open channels would leave, what no
// close can pay, and what is closing and settled.
function holdingsDetail(h) {
  if (!h) return "";
  let s = " and leaves " + sats(h.after_close_sat);
  if (h.unclaimable_sat > 0) s += "; " + sats(h.unclaimable_sat) + " no close can pay yet (dust)";
  if (h.closing_sat > 0) s += "; closing: " + sats(h.closing_sat);
  if (h.settled_sat > 0) s += "; settled: " + sats(h.settled_sat) + " after " + sats(h.settled_fees_sat) + " in fees";
  return s;
}

function drawEarnings(e) {
  const s = $("#chart-earnings");
  s.replaceChildren();
  const buckets = series(e);
  if (buckets.length === 0) {
    s.append(svg("text", { x: 300, y: 110, "text-anchor": "middle", class: "empty" }, "no history yet"));
    return;
  }
  const maxY = niceMax(Math.max(...buckets.map((b) => b.earned_sat || 0)));
  const g = axes(s, buckets, maxY, (v) => (maxY < 5 ? String(Math.round(v * 100) / 100) : Math.round(v).toLocaleString("en-US")));
  const bw = g.w / buckets.length;
  buckets.forEach((b, i) => {
    const v = b.earned_sat || 0;
    if (v <= 0) return;
    const y = g.y(v);
    const bar = svg("rect", { x: g.x0 + i * bw + bw * 0.1, y, width: Math.max(1, bw * 0.8), height: Math.max(1, g.y0 - y), class: "bar" });
    bar.append(svg("title", {}, new Date(b.start).toLocaleString() + ": " + sats(v)));
    s.append(bar);
  });
}

function drawUtil(e) {
  const s = $("#chart-util");
  s.replaceChildren();
  const buckets = series(e);
  if (buckets.length === 0) {
    s.append(svg("text", { x: 300, y: 110, "text-anchor": "middle", class: "empty" }, "no history yet"));
    return;
  }
  const tot = (b) => (b.sold_millicpu || 0) + (b.spare_millicpu || 0) + (b.reserved_millicpu || 0);
  const maxY = niceMax(Math.max(...buckets.map(tot)) / 1000) * 1000;
  const g = axes(s, buckets, maxY, (v) => cores(Math.round(v)));
  const bw = g.w / buckets.length;
  buckets.forEach((b, i) => {
    let base = 0;
    for (const [k, cls] of [["sold_millicpu", "sold"], ["spare_millicpu", "spare"], ["reserved_millicpu", "reserved"]]) {
      const v = b[k] || 0;
      if (v <= 0) continue;
      const yTop = g.y(base + v), yBot = g.y(base);
      s.append(svg("rect", { x: g.x0 + i * bw, y: yTop, width: Math.max(1, bw + 0.5), height: Math.max(0.5, yBot - yTop), class: cls }));
      base += v;
    }
  });
  const legend = [["sold", "sold"], ["spare", "spare"], ["reserved", "reserved"]];
  legend.forEach(([cls, name], i) => {
    s.append(svg("rect", { x: g.x1 - 200 + i * 68, y: 2, width: 10, height: 10, class: cls }));
    s.append(svg("text", { x: g.x1 - 186 + i * 68, y: 11 }, name));
  });
}

// ---- page ----

function totals(id, t) {
  $("#" + id).textContent = t ? sats(t.net_sat) : "–";
  if (!t) { $("#" + id + "-detail").textContent = ""; return; }
  const parts = [];
  if (t.fees_sat) parts.push("fees " + sats(t.fees_sat));
  if (t.jobs) parts.push(t.jobs + (t.jobs === 1 ? " job" : " jobs"));
  if (t.busy) parts.push(Math.round(t.busy * 100) + "% busy");
  $("#" + id + "-detail").textContent = parts.join(", ");
}

function render(o) {
  const st = o.status;
  const errs = Object.entries(o.errors || {});
  const eBox = $("#errors");
  eBox.hidden = errs.length === 0;
  eBox.textContent = errs.map(([k, v]) => k + ": " + v).join(" · ");
  if (st) {
    $("#node-line").textContent = `${short(st.peer_id, 16)} · ${st.version} · up ${dur(st.uptime_seconds)} · ` +
      (st.selling ? "selling" : "not selling") + " · " + (st.peers || []).length + " peers";
    $("#node-line").title = st.peer_id;
  }

  // earnings
  const e = o.earnings;
  totals("earned-today", e && e.today);
  totals("earned-week", e && e.week);
  totals("earned-month", e && e.month);
  const chSum = (o.channels || []).filter((c) => c.role === "seller" && c.state !== "closed").reduce((a, c) => a + c.paid_sat, 0);
  const feeSum = (o.channels || []).filter((c) => c.role === "seller" && c.state !== "closed").reduce((a, c) => a + c.close_fee_sat, 0);
  $("#in-channels").textContent = sats(e && e.in_channels_sat ? e.in_channels_sat : chSum);
  $("#in-channels-detail").textContent = "closing costs " + sats(e && e.close_fee_sat ? e.close_fee_sat : feeSum) + holdingsDetail(e && e.holdings);
  if (e && e.market_median_per_hour_sat > 0) {
    $("#at-median").textContent = sats(e.at_median_sat);
    $("#at-median-detail").textContent = `median ${e.market_median_per_hour_sat.toFixed(1)} sat/h vs yours ${e.own_per_hour_sat.toFixed(1)} sat/h, same hours`;
  } else {
    $("#at-median").textContent = "–";
    $("#at-median-detail").textContent = "no market prices seen yet";
  }
  drawEarnings(e);
  drawUtil(e);
  fill($("#no-work"), ((e && e.no_work) || []).map((r) => el("li", {}, r.detail + (r.fix ? " — " + r.fix : ""))));

  // selling and reachability
  const of = o.offer;
  if (st) {
    kv($("#selling"), [
      ["Selling", st.selling ? "yes" : "no: " + (st.not_selling || []).join("; ")],
      ["On offer", of ? `${cores(of.resources.cpu_millis || 0)} cores, ${bytes(of.resources.memory_bytes || 0)} memory, ${bytes(of.resources.disk_bytes || 0)} disk` : "nothing"],
      ["Why", st.reason],
      ["Price", of ? `${of.prices.msat_per_core_hour / 1000} sat/core-h, start fee ${of.prices.start_fee_msat / 1000} sat` : "–"],
      ["Offer", of ? `seq ${of.seq}, valid until ${new Date(of.expiry).toLocaleTimeString()}` : "–"],
      ["Held by contracts", `${cores(st.held.cpu_millis || 0)} cores`],
    ]);
    const checks = (o.health && o.health.checks) || [];
    const reach = checks.find((c) => c.name === "reachability");
    kv($("#reach"), [
      ["Reachable", reach ? el("span", { class: "check-" + reach.status }, reach.detail + (reach.fix ? " — " + reach.fix : "")) : "not checked"],
      ["Peers connected", String((st.peers || []).length)],
      ["Addresses", el("div", { class: "mono" }, ...(st.addrs || []).flatMap((a) => [a, el("br")]))],
      ["Buying", st.buying ? "yes" : "no: " + st.not_buying],
    ]);
  }

  // can it earn
  const h = o.health;
  $("#can-earn").textContent = !h ? "–" : h.can_earn ? "yes" : "no";
  $("#can-earn").className = !h ? "" : h.can_earn ? "check-ok" : "check-fail";
  fill($("#health tbody"), ((h && h.checks) || []).map((c) =>
    el("tr", {}, el("td", {}, c.name), el("td", { class: "check-" + c.status }, c.status), el("td", {}, c.detail), el("td", {}, c.fix || ""))));

  // contracts and refusals
  fill($("#contracts tbody"), (o.contracts || []).map((c) =>
    el("tr", { "data-id": c.id },
      el("td", { class: "mono", title: c.id }, short(c.id)),
      el("td", {}, c.role),
      el("td", { class: "mono", title: c.peer }, short(c.peer)),
      el("td", { class: "state-" + c.state }, c.state),
      el("td", { class: "num paid" }, sats(c.paid_sat)),
      el("td", {}, c.millicpu ? `${cores(c.millicpu)} cores, ${bytes(c.memory_bytes)}` : "–"),
      el("td", {}, ago(c.started)),
      el("td", {}, ago(c.ended)),
      el("td", {}, c.why || ""))));
  if (!o.contracts || o.contracts.length === 0) fill($("#contracts tbody"), [el("tr", {}, el("td", { colspan: 9, class: "muted" }, "no contracts yet"))]);
  const inPeriod = (e && e.period && e.period.refusals) || {};
  const sinceStart = o.rejections || {};
  const reasons = [...new Set([...Object.keys(inPeriod), ...Object.keys(sinceStart)])]
    .sort((a, b) => (inPeriod[b] || 0) - (inPeriod[a] || 0) || (sinceStart[b] || 0) - (sinceStart[a] || 0));
  fill($("#refusals tbody"), reasons.length
    ? reasons.map((k) => el("tr", {}, el("td", {}, k), el("td", { class: "num" }, inPeriod[k] || 0), el("td", { class: "num" }, sinceStart[k] || 0)))
    : [el("tr", {}, el("td", { colspan: 3, class: "muted" }, "none"))]);

  // wallet and channels
  kv($("#wallet"), o.wallet
    ? [["Spendable", sats(o.wallet.spendable_sat)], ["Total", sats(o.wallet.total_sat)]]
    : [["Wallet", (o.errors && o.errors.wallet) || (o.off && o.off.wallet) || "not open"]]);
  fill($("#channels tbody"), (o.channels || []).map((c) =>
    el("tr", { "data-id": c.id },
      el("td", { class: "mono", title: c.id }, short(c.id)), el("td", { class: "mono", title: c.peer }, short(c.peer)),
      el("td", {}, c.role), el("td", {}, c.state), el("td", { class: "num" }, sats(c.capacity_sat)),
      el("td", { class: "num" }, sats(c.paid_sat)), el("td", { class: "num" }, sats(c.close_fee_sat)),
      el("td", { class: "num" }, c.role === "seller" ? sats(c.after_close_sat) : "–"))));

  // reputation
  const own = o.own_reputation;
  kv($("#own-rep"), own
    ? [["This node", `${(own.mean * 100).toFixed(0)} (${(own.low * 100).toFixed(0)}–${(own.high * 100).toFixed(0)}), evidence ${own.evidence.toFixed(1)}`], ["As seen", own.why || "from peers' attestations this node holds"]]
    : [["This node", "no evidence yet"]]);
  fill($("#peers tbody"), (o.peers || []).slice(0, 50).map((p) =>
    el("tr", {}, el("td", { class: "mono", title: p.peer }, short(p.peer)), el("td", { class: "num" }, (p.mean * 100).toFixed(0) + (p.blocked ? " blocked" : "")),
      el("td", { class: "num" }, `${(p.low * 100).toFixed(0)}–${(p.high * 100).toFixed(0)}`), el("td", { class: "num" }, p.evidence.toFixed(1)),
      el("td", {}, p.why || ""))));

  // policy
  if (o.config) {
    $("#config-file").textContent = o.config.config_file || "the config file";
    lastPolicy = o.config.policy;
    // Never under the operator's hands: not while editing or typing.
    const typing = document.activeElement && document.activeElement.closest && document.activeElement.closest("#policy");
    if (!formLoaded || (!formDirty && !typing)) { loadForm(lastPolicy); formLoaded = true; }
    showOverridden(o.config.overridden);
  }
}

function showOverridden(keys) {
  const p = $("#policy-overridden");
  p.hidden = !keys || keys.length === 0;
  p.textContent = p.hidden ? "" : "Set by environment variables too (they win again at the next start): " + keys.join(", ");
}

function loadForm(p) {
  const f = $("#policy");
  for (const input of f.querySelectorAll("input[name]")) {
    const path = input.name.split(".");
    let v = p;
    for (const k of path) v = v == null ? undefined : v[k];
    input.value = v ?? "";
  }
  formDirty = false;
}

function readForm() {
  const p = { pricing: {}, reserve: {}, max: {} };
  for (const input of $("#policy").querySelectorAll("input[name]")) {
    const path = input.name.split(".");
    let v = input.value.trim();
    if (input.type === "number") v = v === "" ? 0 : Number(v);
    if (path.length === 2) p[path[0]][path[1]] = v; else p[path[0]] = v;
  }
  return p;
}

function clearErrors() {
  for (const s of document.querySelectorAll(".field-error")) s.textContent = "";
  for (const i of document.querySelectorAll("#policy input.invalid")) i.classList.remove("invalid");
}

async function savePolicy(ev) {
  ev.preventDefault();
  clearErrors();
  const res = $("#policy-result");
  res.className = ""; res.textContent = "applying…";
  const body = readForm();
  for (const input of $("#policy").querySelectorAll("input[type=number]")) {
    // An emptied price is a mistake, not "free": say so rather than send 0.
    if (input.value.trim() === "" || !Number.isFinite(Number(input.value))) {
      fieldError(input.name, "a number is needed (0 to charge nothing)");
    }
  }
  if (document.querySelector("#policy input.invalid")) { res.className = "bad"; res.textContent = "fix the marked fields"; return; }
  try {
    const r = await fetch("api/policy", { method: "PUT", credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" }, body: JSON.stringify(body) });
    const out = await r.json().catch(() => ({}));
    if (!r.ok) {
      let shown = false;
      for (const [k, msg] of Object.entries(out.fields || {})) {
        if (fieldError(k.replace(/^meter\./, ""), msg)) shown = true;
      }
      res.className = "bad";
      res.textContent = shown ? "not applied: fix the marked fields" : "not applied: " + (out.error || r.statusText);
      return;
    }
    lastPolicy = out.policy;
    loadForm(out.policy);
    showOverridden(out.overridden);
    res.className = "ok";
    res.textContent = "applied at " + new Date().toLocaleTimeString() + " and saved to " + (out.config_file || "the config file");
    refresh();
  } catch (err) {
    res.className = "bad"; res.textContent = "not applied: " + err.message;
  }
}

function fieldError(name, msg) {
  const span = document.querySelector(`[data-error-for="${CSS.escape(name)}"]`);
  const input = document.querySelector(`#policy input[name="${CSS.escape(name)}"]`);
  if (!span) return false;
  span.textContent = msg;
  if (input) input.classList.add("invalid");
  return true;
}

async function refresh() {
  try {
    render(await getJSON("api/overview?since=" + encodeURIComponent($("#since").value)));
  } catch (err) {
    const eBox = $("#errors");
    eBox.hidden = false;
    eBox.textContent = "dashboard: " + err.message;
  }
}

async function tail() {
  try {
    const lines = await getJSON("api/logs?after=" + logSeq);
    if (lines.length === 0) return;
    const pre = $("#log");
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    for (const l of lines) {
      const lvl = (l.text.match(/level=(\w+)/) || [])[1] || "";
      pre.append(el("span", { class: lvl }, l.text + "\n"));
      logSeq = l.seq;
    }
    while (pre.childNodes.length > 500) pre.firstChild.remove();
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  } catch (err) {
    // the overview shows the error
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#policy").addEventListener("submit", savePolicy);
  $("#policy").addEventListener("input", () => { formDirty = true; });
  $("#policy-reset").addEventListener("click", () => { clearErrors(); if (lastPolicy) loadForm(lastPolicy); $("#policy-result").textContent = ""; });
  $("#since").addEventListener("change", refresh);
  refresh();
  tail();
  setInterval(refresh, 5000);
  setInterval(tail, 2000);
});
