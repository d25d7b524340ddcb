// The VCRecovery dashboard (docs/dashboard.md): reads GET /v1/status and
// /v1/services, follows GET /v1/events/stream (server-sent events from the
// journal), and calls the API's POST endpoints for the operator's actions.
// Plain DOM, no library; every name from the server goes in as text, never HTML.
"use strict";

const EVENTS_SHOWN = 200;
const REFRESH_MS = 2000;
const ARM_MS = 4000;
const PHASE_COLORS = {
  detected: "#c53030", fenced: "#dd6b20", container_ready: "#d69e2e", data_copied: "#805ad5",
  data_attached: "#6b46c1", port_open: "#38a169", address_taken: "#b7791f", dns_updated: "#3182ce",
  client_confirmed: "#2c5282",
};

let status = { hosts: [] };
let services = [];
let refreshTimer = null;
let refreshGen = 0;

function el(tag, attrs, ...children) {
  const e = tag === "svg" || tag === "rect" || tag === "text" || tag === "g"
    ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") e.setAttribute("class", v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function badge(state) {
  return el("span", { class: "badge", "data-state": state ?? "unknown" }, state ?? "unknown");
}

function pct(x) {
  return `${Number(x).toFixed(1)}%`;
}

function clock(ms) {
  return ms ? new Date(ms).toISOString().slice(11, 23) : "";
}

async function getJSON(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

// --- operator's actions: JSON POSTs, each asked twice -------------------------

function actionButton(label, path, body) {
  const b = el("button", { type: "button", "data-action": path }, label);
  b.addEventListener("click", () => {
    if (!b.dataset.armed) {
      b.dataset.armed = "1";
      b.textContent = `confirm ${label}`;
      setTimeout(() => { delete b.dataset.armed; b.textContent = label; }, ARM_MS);
      return;
    }
    delete b.dataset.armed;
    b.textContent = label;
    b.disabled = true;
    post(path, body()).finally(() => { b.disabled = false; });
  });
  return b;
}

async function post(path, body) {
  const li = el("li", { "data-ok": "pending" }, `${clock(Date.now())} POST ${path} ...`);
  document.getElementById("actions").prepend(li);
  try {
    const r = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body ?? {}),
    });
    const answer = await r.json().catch(() => ({}));
    li.dataset.ok = String(r.ok);
    li.textContent = `${clock(Date.now())} POST ${path}: ${r.status} ` +
      (answer.error ?? answer.result ?? answer.state ?? "");
  } catch (e) {
    li.dataset.ok = "false";
    li.textContent = `${clock(Date.now())} POST ${path}: ${e.message}`;
  }
  scheduleRefresh(0);
}

// --- services -------------------------------------------------------------------

function renderServices() {
  const tbody = document.querySelector("#services tbody");
  tbody.replaceChildren(...services.map((s) => {
    const p = s.primary ?? {}, sb = s.standby ?? {};
    const enc = encodeURIComponent(s.name);
    return el("tr", { "data-service": s.name, "data-state": s.state },
      el("td", {}, el("strong", {}, s.name), el("div", { class: "meta" }, s.dns_name)),
      el("td", {}, badge(s.state), s.recovery?.phase
        ? el("div", { class: "meta", "data-phase": s.recovery.phase }, s.recovery.phase) : null,
      s.recovery?.error ? el("div", { class: "meta" }, s.recovery.error) : null),
      el("td", { "data-served-by": s.served_by }, `${s.served_by} ${s.address ?? ""}:${s.port ?? ""}`),
      el("td", {}, s.mode ?? sb.mode),
      el("td", {}, `${p.vm ?? ""} on ${p.host ?? ""}`, el("div", { class: "meta" }, p.address)),
      el("td", {}, `${sb.container ?? sb.vm ?? ""} on ${sb.host ?? ""}`,
        el("div", { class: "meta" }, `${sb.address ?? ""} ${sb.container_state ?? ""}`)),
      el("td", {}, s.check?.type, s.check?.latency_ms != null
        ? el("div", { class: "meta" }, `${s.check.latency_ms} ms`) : null,
      s.check?.last_error ? el("div", { class: "meta" }, s.check.last_error) : null),
      el("td", {},
        actionButton("failover", `/v1/services/${enc}/failover`, () => ({})),
        actionButton("failback", `/v1/services/${enc}/failback`, () => ({})),
        s.state === "failed" ? actionButton("reset", `/v1/services/${enc}/reset`, () => ({})) : null));
  }));
}

// --- topology: hosts, their VMs, standby VMs and their containers -------------------

function servedAt(pred) {
  return services.filter(pred).map((s) => el("span", { class: "serves", "data-serves": s.name },
    ` serves ${s.name}`));
}

function containerBox(standbyHost, c, targets) {
  return el("div", { class: "ct", "data-container": c.name, "data-state": c.state },
    c.name, " ", badge(c.state), " ", el("span", { class: "meta" }, c.address ?? ""),
    servedAt((s) => s.served_by === "standby" && s.standby?.host === standbyHost &&
      s.standby?.container === c.name),
    c.state === "running" && targets.length
      ? el("div", {}, ...targets.map((t) => actionButton(`migrate to ${t}`,
        `/v1/hosts/${encodeURIComponent(standbyHost)}/containers`,
        () => ({ name: c.name, action: "migrate", to: t }))))
      : null);
}

function standbyBody(h) {
  const targets = status.hosts.filter((o) => o.role === "standby" && o.name !== h.name &&
    o.state === "connected").map((o) => o.name);
  const load = h.vm_load;
  return [
    el("div", { class: "meta" }, `standby agent ${h.name} `, badge(h.state),
      load?.cpu_pct != null ? ` cpu ${pct(load.cpu_pct)}` : "",
      load?.mem_total_kb ? ` mem ${Math.round((load.mem_used_kb ?? 0) / 1024)}/` +
        `${Math.round(load.mem_total_kb / 1024)} MB` : ""),
    ...(h.containers ?? []).map((c) => containerBox(h.name, c, targets)),
  ];
}

function renderTopology() {
  const standbys = new Map(status.hosts.filter((h) => h.role === "standby").map((h) => [h.name, h]));
  const placed = new Set();
  const boxes = status.hosts.filter((h) => h.role !== "standby").map((h) =>
    el("div", { class: "host", "data-host": h.name, "data-state": h.state },
      el("h3", {}, `host ${h.name} `, badge(h.state),
        h.state === "connected" ? actionButton("warm restart",
          `/v1/hosts/${encodeURIComponent(h.name)}/warm-restart`, () => ({})) : null),
      ...(h.vms ?? []).map((v) => {
        // A standby VM's agent is named after its VM (the lab's convention).
        const sb = standbys.get(v.name);
        if (sb) placed.add(v.name);
        return el("div", { class: sb ? "vm standby" : "vm", "data-vm": v.name, "data-state": v.state },
          el("h4", {}, sb ? `standby VM ${v.name} ` : `VM ${v.name} `, badge(v.state)),
          el("div", { class: "meta" }, `${v.address ?? ""} pid ${v.pid ?? "-"} ` +
            (v.cpu_pct != null ? `cpu ${pct(v.cpu_pct)}` : "")),
          servedAt((s) => s.served_by === "primary" && s.primary?.vm === v.name),
          v.state === "running" ? actionButton("warm restart",
            `/v1/vms/${encodeURIComponent(v.name)}/warm-restart`, () => ({})) : null,
          sb ? standbyBody(sb) : null);
      })));
  for (const [name, h] of standbys) {
    if (!placed.has(name))
      boxes.push(el("div", { class: "host", "data-host": name, "data-state": h.state },
        el("h3", {}, `standby VM ${name} `), standbyBody(h)));
  }
  document.getElementById("topology").replaceChildren(...boxes);
}

// --- recoveries: each phase's time from the one before, as bars ---------------------

function renderRecoveries() {
  const charts = services.filter((s) => s.recovery?.timeline?.length).map((s) => {
    const tl = s.recovery.timeline;
    const total = Math.max(1, tl[tl.length - 1].elapsed_ms ?? 0);
    const rowH = 18, labelW = 130, width = 600, barW = width - labelW - 70;
    const svg = el("svg", { viewBox: `0 0 ${width} ${tl.length * rowH + 4}`,
      "data-service": s.name, role: "img" });
    let prev = 0;
    tl.forEach((p, i) => {
      const at = p.elapsed_ms ?? 0, took = Math.max(0, at - prev);
      const x = labelW + (prev / total) * barW, w = Math.max(2, (took / total) * barW);
      svg.append(el("g", { "data-phase": p.phase, "data-ms": took },
        el("text", { x: 0, y: i * rowH + 13 }, p.phase),
        el("rect", { x, y: i * rowH + 3, width: w, height: rowH - 6,
          fill: PHASE_COLORS[p.phase] ?? "#718096" }),
        el("text", { x: x + w + 4, y: i * rowH + 13 }, `${took} ms`)));
      prev = at;
    });
    return el("div", { class: "chart", "data-service": s.name, "data-state": s.state },
      el("div", {}, el("strong", {}, s.name), " ", badge(s.state), " ",
        el("span", { class: "meta" }, `${s.recovery.cause ?? ""}: ${total} ms in all`)), svg);
  });
  document.getElementById("recoveries").replaceChildren(
    ...(charts.length ? charts : [el("p", { class: "hint" }, "no recovery yet")]));
}

// --- events ----------------------------------------------------------------------------

function eventSummary(e) {
  const d = e.detail ?? {};
  const parts = [d.service, d.phase, d.state, d.cause, d.action, d.error, d.reason]
    .filter((x) => x !== undefined && x !== null && x !== "");
  if (d.elapsed_ms !== undefined) parts.push(`+${d.elapsed_ms} ms`);
  return parts.join(" ");
}

function addEvent(e) {
  const list = document.getElementById("events");
  list.prepend(el("li", { "data-id": e.id, "data-kind": e.kind },
    `${clock(e.ts_ms)} `, el("span", { class: "kind" }, e.kind), " ",
    [e.host, e.vm].filter(Boolean).join("/"), " ", eventSummary(e)));
  while (list.children.length > EVENTS_SHOWN) list.lastElementChild.remove();
}

// A recovery's phases as they are journaled: a warm recovery can go from detected to
// client_confirmed in a tenth of a second, faster than the page reads /v1/services,
// so the row and the bars follow the events themselves; the next read confirms them.
function applyRecoveryEvent(e) {
  const d = e.detail ?? {};
  const s = services.find((x) => x.name === d.service);
  if (!s || !d.phase || d.phase === "cleared") return false;
  const entry = { phase: d.phase, ts_ms: e.ts_ms, elapsed_ms: d.elapsed_ms };
  if (d.phase === "detected" || !s.recovery)
    s.recovery = { phase: d.phase, cause: s.recovery?.cause, timeline: [] };
  s.recovery.phase = d.phase;
  if (d.phase === "failed") {
    s.state = "failed";
    s.recovery.error = d.error ?? null;
    return true;
  }
  s.state = d.phase === "client_confirmed" ? "recovered" : "recovering";
  if (d.phase !== "retry") s.recovery.timeline = [...(s.recovery.timeline ?? []), entry];
  return true;
}

function followEvents() {
  const live = document.getElementById("live");
  const source = new EventSource("/v1/events/stream");
  source.onopen = () => { live.dataset.live = "live"; live.textContent = "live"; };
  source.onerror = () => { live.dataset.live = "down"; live.textContent = "reconnecting"; };
  source.onmessage = (m) => {
    const e = JSON.parse(m.data);
    addEvent(e);
    if (e.kind === "recovery" && applyRecoveryEvent(e)) {
      refreshGen++; // an answer read before this event is older than what it shows
      renderServices();
      renderRecoveries();
    }
    scheduleRefresh(100);
  };
}

// --- refresh -------------------------------------------------------------------------

// Re-rendering replaces the buttons: not while one is armed for its second click.
async function refresh() {
  refreshTimer = null;
  if (document.querySelector("button[data-armed]")) {
    scheduleRefresh(500);
    return;
  }
  const gen = ++refreshGen;
  try {
    const [st, sv] = await Promise.all([getJSON("/v1/status"), getJSON("/v1/services")]);
    if (gen !== refreshGen) return; // a later refresh has begun: its answer is newer
    status = st;
    services = sv.services ?? [];
    document.getElementById("server").textContent =
      `server ${st.server_version} · ${clock(st.now_ms)} UTC`;
    renderServices();
    renderTopology();
    renderRecoveries();
  } catch (e) {
    document.getElementById("server").textContent = `cannot read the API: ${e.message}`;
  }
}

function scheduleRefresh(ms) {
  if (refreshTimer !== null) return;
  refreshTimer = setTimeout(refresh, ms);
}

// --- signing in (docs/dashboard.md) ---------------------------------------------------
// The API takes a token; the page sends it once (POST /v1/login) and the server answers
// with a session cookie (HttpOnly, SameSite=Strict) that every later request and the
// event stream carry.  The token itself is not kept by the page.

function begin(who) {
  document.getElementById("signin").hidden = true;
  const me = document.getElementById("who");
  me.replaceChildren(who.auth ? `${who.name} (${who.role})` : "no authentication",
    who.auth ? el("button", { type: "button", id: "signout", onclick: signOut }, "sign out") : null);
  setInterval(() => scheduleRefresh(0), REFRESH_MS);
  refresh();
  followEvents();
}

async function signIn(ev) {
  ev.preventDefault();
  const input = document.getElementById("token");
  const msg = document.getElementById("signin-error");
  try {
    const r = await fetch("/v1/login", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ token: input.value.trim() }),
    });
    const answer = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(answer.error ?? `HTTP ${r.status}`);
    input.value = "";
    begin({ auth: true, name: answer.name, role: answer.role });
  } catch (e) {
    msg.textContent = `sign-in failed: ${e.message}`;
  }
}

async function signOut() {
  await fetch("/v1/logout", { method: "POST" }).catch(() => null);
  location.reload();
}

async function start() {
  document.getElementById("signin").addEventListener("submit", signIn);
  try {
    const who = await getJSON("/v1/whoami");
    if (who.auth && !who.name) {
      document.getElementById("signin").hidden = false;
      return;
    }
    begin(who);
  } catch (e) {
    document.getElementById("server").textContent = `cannot read the API: ${e.message}`;
  }
}

start();
