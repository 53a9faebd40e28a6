// The /ops page: reads the operator API every few seconds and draws it.
// Plain JavaScript, no libraries, no build step; charts are SVG drawn here.
"use strict";

const REFRESH_MS = 5000;
const TOKEN_KEY = "cb-token";
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

const view = { offset: 0, limit: 50, q: "", sort: "link", total: 0 };
let timer = null;

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

class AuthError extends Error {}

async function call(method, path, body) {
  const resp = await fetch("/v1/operator" + path, {
    method,
    headers: { "Authorization": "Bearer " + token(), "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const json = await resp.json().catch(() => ({}));
  const message = (json.error && json.error.message) || json.message || resp.statusText;
  if (resp.status === 401 || resp.status === 403) throw new AuthError(message || "the token was refused");
  if (!resp.ok) throw new Error(message);
  return json;
}

// ---- formatting -----------------------------------------------------------

function when(ms) {
  ms = Number(ms);
  return ms > 0 ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "–";
}

function ago(ms) {
  ms = Number(ms);
  if (!(ms > 0)) return "–";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 60) return s.toFixed(0) + " s ago";
  if (s < 3600) return (s / 60).toFixed(1) + " min ago";
  if (s < 86400) return (s / 3600).toFixed(1) + " h ago";
  return (s / 86400).toFixed(1) + " d ago";
}

function num(v) { return v === undefined || v === null ? "–" : Number(v).toLocaleString("en"); }

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function cell(row, text, cls) {
  const td = el("td", text, cls);
  row.append(td);
  return td;
}

// ---- charts ---------------------------------------------------------------

function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

/** Draws lines ({cls, values}) over times (ms) in an SVG of viewBox 480x180. */
function drawChart(svg, times, lines, unit) {
  const W = 480, H = 180, L = 44, R = 8, T = 8, B = 22;
  svg.replaceChildren();
  const pts = lines.flatMap((l) => l.values.filter((v) => v !== null && v !== undefined));
  if (times.length === 0) {
    svg.append(Object.assign(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }), { textContent: "no data yet" }));
    return;
  }
  const t1 = times[times.length - 1];
  const t0 = Math.min(times[0], t1 - 15 * 60 * 1000);
  let max = Math.max(0, ...pts);
  max = max > 0 ? niceCeil(max * 1.1) : 1;
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    svg.append(svgEl("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    const label = svgEl("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" });
    label.textContent = fmtAxis(v) + (i === 4 && unit ? " " + unit : "");
    svg.append(label);
  }
  svg.append(svgEl("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
  svg.append(svgEl("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
  for (const m of [15, 10, 5, 0]) {
    const t = t1 - m * 60000;
    if (t < t0) continue;
    const label = svgEl("text", { x: x(t), y: H - 6, "text-anchor": "middle" });
    label.textContent = m === 0 ? "now" : "-" + m + " min";
    svg.append(label);
  }
  for (const line of lines) {
    let d = "";
    let pen = false;
    line.values.forEach((v, i) => {
      if (v === null || v === undefined) { pen = false; return; }
      d += (pen ? " L" : " M") + x(times[i]).toFixed(1) + " " + y(v).toFixed(1);
      pen = true;
    });
    if (d) svg.append(svgEl("path", { d: d.trim(), class: "line " + line.cls, "data-series": line.cls }));
    // A lone point still shows.
    line.values.forEach((v, i) => {
      if (v !== null && v !== undefined) {
        svg.append(svgEl("circle", { cx: x(times[i]).toFixed(1), cy: y(v).toFixed(1), r: 1.6, class: "line " + line.cls }));
      }
    });
  }
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmtAxis(v) { return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2); }

// ---- deployment -----------------------------------------------------------

function renderOverview(o) {
  const r = o.redis || {};
  $("redis").textContent = r.up ? "up" : "down";
  $("redis").className = "big " + (r.up ? "up" : "down");
  $("redis-detail").textContent = r.up
    ? "PING " + (r.latency_ms === null ? "–" : r.latency_ms.toFixed(1) + " ms") + ", checked " + ago(r.checked_ms)
    : (r.error || "not checked yet") + (r.checked_ms ? ", checked " + ago(r.checked_ms) : "");

  const tbody = $("replicas");
  tbody.replaceChildren();
  for (const rep of o.replicas) {
    const row = el("tr");
    cell(row, rep.id + (rep.this_replica ? " (this page's replica)" : ""));
    cell(row, ago(rep.last_heartbeat_ms));
    cell(row, rep.partitions.length ? rep.partitions.join(", ") : "none");
    tbody.append(row);
  }
  $("unheld").textContent = !o.leases_known
    ? "Leases unknown: Redis did not answer."
    : o.unheld_partitions.length
      ? "Held by no replica: partition(s) " + o.unheld_partitions.join(", ")
      : "All " + o.partitions + " partitions are held.";
  $("unheld").className = !o.leases_known || o.unheld_partitions.length ? "err" : "muted";

  const s = o.series;
  const times = s.map((p) => p.at_ms);
  drawChart($("chart-propagation"), times, [
    { cls: "p50", values: s.map((p) => p.propagation_p50_seconds) },
    { cls: "p99", values: s.map((p) => p.propagation_p99_seconds) },
  ], "s");
  drawChart($("chart-budget"), times, [
    { cls: "rate", values: s.map((p) => p.ld_requests_per_second) },
    { cls: "budget", values: s.map((p) => p.budget_requests_per_second) },
  ], "/s");
  $("series-note").textContent = "Charts: kept in memory by replica " + o.replica +
    " (the one that answered this page), one point per " + o.sample_every_seconds +
    " s over the last 15 minutes; the last point is the window still running. Budget: " +
    o.budget.limit_requests_per_second + " requests/s configured, shared by " +
    o.budget.live_replicas + " live replica(s).";
}

// ---- links ----------------------------------------------------------------

function reconcileText(rc) {
  if (!rc) return "–";
  return "checked " + num(rc.checked) + ", missing " + num(rc.missing) + ", extra " + num(rc.extra) +
    ", repaired " + num(rc.repaired) + " (" + ago(rc.last_reconciled_ms) + ")";
}

// Sampled verification (flush.verify_share), shown beside the reconcile.
function verifiedText(v) {
  if (!v) return "";
  return "; sampled: checked " + num(v.checked) + ", mismatched " + num(v.mismatched) +
    ", repaired " + num(v.repaired) + " (" + ago(v.last_ms) + ")";
}

function actionButton(label, confirmLabel, fn) {
  const b = el("button", label);
  b.type = "button";
  let armed = null;
  b.addEventListener("click", async () => {
    if (confirmLabel && !armed) {
      b.textContent = confirmLabel;
      b.classList.add("confirm");
      armed = setTimeout(() => { b.textContent = label; b.classList.remove("confirm"); armed = null; }, 6000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    b.textContent = label;
    b.classList.remove("confirm");
    try {
      const out = await fn();
      $("detail").hidden = false;
      $("detail").textContent = JSON.stringify(out, null, 2);
      $("action-status").textContent = label + ": done";
      refresh();
    } catch (e) {
      $("action-status").textContent = label + ": " + e.message;
    }
  });
  return b;
}

function renderLinks(answer) {
  view.total = answer.total;
  const tbody = $("links");
  tbody.replaceChildren();
  for (const l of answer.links) {
    const m = l.meta || {};
    const row = el("tr");
    row.dataset.link = l.link;
    if (m.blocked) row.className = "blocked";
    cell(row, l.link + (l.lifecycle && l.lifecycle !== "active" ? " [" + l.lifecycle + "]" : (l.configured ? "" : " (not configured)")), "link");
    cell(row, m.segment_key || "–");
    cell(row, num(l.tracked_members), "num");
    cell(row, num(l.dirty), "num");
    cell(row, l.dirty_since_ms ? ago(l.dirty_since_ms) : "–");
    cell(row, m.last_flush_ms && m.last_flush_ms !== "0" ? when(m.last_flush_ms) : "–");
    cell(row, m.blocked ? "blocked: " + m.blocked : (m.last_error || "–"), m.blocked || m.last_error ? "err reason" : "reason");
    cell(row, num(l.dead_letters), "num dead");
    cell(row, reconcileText(l.reconcile) + verifiedText(l.verified));
    const actions = el("td");
    const id = encodeURIComponent(l.link);
    actions.append(
      actionButton("dead letters", null, () => call("GET", `/links/${id}/dead-letters?count=1000`)),
      actionButton("redrive", "confirm redrive", () => call("POST", `/links/${id}/redrive`)),
      actionButton("resync", "confirm resync", () => call("POST", `/links/${id}/resync`)),
      actionButton("audit", null, () => call("GET", `/links/${id}/audit?limit=100`)),
    );
    row.append(actions);
    tbody.append(row);
  }
  const last = Math.min(view.offset + answer.links.length, view.total);
  $("links-count").textContent = "(" + num(view.total) + ")";
  $("page").textContent = view.total ? (view.offset + 1) + "–" + last + " of " + num(view.total) : "no links";
  $("prev").disabled = view.offset === 0;
  $("next").disabled = last >= view.total;
}

function linksQuery() {
  const p = new URLSearchParams({ sort: view.sort, offset: String(view.offset), limit: String(view.limit) });
  if (view.q) p.set("q", view.q);
  return "/links?" + p.toString();
}

// ---- refresh loop ---------------------------------------------------------

async function refresh() {
  clearTimeout(timer);
  try {
    const [overview, links] = await Promise.all([call("GET", "/overview"), call("GET", linksQuery())]);
    $("signin").hidden = true;
    $("dashboard").hidden = false;
    $("signout").hidden = false;
    renderOverview(overview);
    renderLinks(links);
    $("refresh").textContent = "updated " + new Date().toLocaleTimeString("en-GB") + ", every " + REFRESH_MS / 1000 + " s";
    timer = setTimeout(refresh, REFRESH_MS);
  } catch (e) {
    if (e instanceof AuthError) {
      sessionStorage.removeItem(TOKEN_KEY);
      $("dashboard").hidden = true;
      $("signin").hidden = false;
      $("signout").hidden = true;
      $("auth-error").textContent = "Token refused: " + e.message;
      $("refresh").textContent = "";
      return;
    }
    $("refresh").textContent = "refresh failed (" + e.message + "), retrying";
    timer = setTimeout(refresh, REFRESH_MS);
  }
}

function start() {
  $("signin").addEventListener("submit", (ev) => {
    ev.preventDefault();
    $("auth-error").textContent = "";
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    $("token").value = "";
    refresh();
  });
  $("signout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(timer);
    $("dashboard").hidden = true;
    $("signin").hidden = false;
    $("signout").hidden = true;
  });
  let typing = null;
  $("search").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { view.q = $("search").value.trim(); view.offset = 0; refresh(); }, 250);
  });
  $("sort").addEventListener("change", () => { view.sort = $("sort").value; view.offset = 0; refresh(); });
  $("limit").addEventListener("change", () => { view.limit = Number($("limit").value); view.offset = 0; refresh(); });
  $("prev").addEventListener("click", () => { view.offset = Math.max(0, view.offset - view.limit); refresh(); });
  $("next").addEventListener("click", () => { view.offset += view.limit; refresh(); });
  if (token()) refresh();
}

start();
