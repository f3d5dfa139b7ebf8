// The nutups dashboard: live values over Server-Sent Events (never polled), charts from
// the history API, the event log with filters, and controls behind an upsd.users login.
"use strict";

const FLAG_WORDS = {
  OL: "on line power", OB: "on battery", LB: "low battery", HB: "high battery",
  RB: "replace battery", CHRG: "charging", DISCHRG: "discharging", BYPASS: "on bypass",
  CAL: "calibrating", OFF: "off", OVER: "overloaded", TRIM: "trimming voltage",
  BOOST: "boosting voltage", FSD: "forced shutdown", ALARM: "alarm", WAIT: "waiting for data",
};
const CHARTS = [
  { v: "battery.charge", label: "Charge", unit: "%", min: 0, max: 100 },
  { v: "battery.voltage", label: "Battery voltage", unit: "V" },
  { v: "battery.runtime", label: "Runtime", unit: "min", scale: 1 / 60 },
  { v: "mains", label: "Mains", unit: "", min: 0, max: 1, step: true },
];
const SVGNS = "http://www.w3.org/2000/svg";

const ups = new Map();     // name -> {el, vars, range, series: {var: [[t, v]]}}
let csrf = null;
const seenEvents = new Set();

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (csrf && options.method === "POST") headers["X-CSRF-Token"] = csrf;
  const resp = await fetch(path, {
    method: options.method || "GET", headers, credentials: "same-origin",
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  return { status: resp.status, data };
}

// --- formatting -------------------------------------------------------------------

function duration(seconds) {
  const s = Number(seconds);
  if (!isFinite(s)) return String(seconds);
  if (s < 60) return `${Math.round(s)} s`;
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${String(m % 60).padStart(2, "0")} min`;
  return `${Math.round(h / 24)} days`;
}

function statusWords(status) {
  return (status || "").split(/\s+/).filter(Boolean).map((f) => FLAG_WORDS[f] || f).join(" · ");
}

function timeText(ts) {
  const d = new Date(ts * 1000);
  return d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
                                 second: "2-digit" });
}

// --- a UPS panel ------------------------------------------------------------------

function panel(name, desc, remote) {
  if (ups.has(name)) return ups.get(name);
  const el = $("#ups-template").content.firstElementChild.cloneNode(true);
  el.dataset.ups = name;
  $(".ups-name", el).textContent = name;
  $(".ups-desc", el).textContent = desc || "";
  if (remote) {  // a UPS of another NUT server (monitor: in nutups.yaml)
    el.dataset.remote = remote;
    $(".stale", el).textContent = `No answer with fresh data from ${remote}.`;
  }
  const entry = { el, vars: {}, range: 3600, series: {}, info: null };
  ups.set(name, entry);
  $("#upses").append(el);
  const charts = $(".charts", el);
  for (const c of CHARTS) {
    const fig = document.createElement("figure");
    fig.className = "chart";
    fig.dataset.chart = c.v;
    fig.innerHTML = `<figcaption>${c.label} <span class="last"></span></figcaption>`;
    const svg = document.createElementNS(SVGNS, "svg");
    svg.setAttribute("viewBox", "0 0 300 90");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", `${c.label} over time`);
    fig.append(svg);
    charts.append(fig);
  }
  $$(".ranges button", el).forEach((b) => b.addEventListener("click", () => {
    $$(".ranges button", el).forEach((o) => o.classList.toggle("on", o === b));
    entry.range = Number(b.dataset.range);
    loadHistory(name);
  }));
  $(".rw", el).addEventListener("submit", (ev) => ev.preventDefault());
  return entry;
}

function show(name, vars, full) {
  const entry = ups.get(name);
  if (!entry) return;
  if (full) entry.vars = {};
  for (const [k, v] of Object.entries(vars)) {
    if (v === null) delete entry.vars[k]; else entry.vars[k] = v;
  }
  const el = entry.el;
  for (const node of $$("[data-var]", el)) {
    const value = entry.vars[node.dataset.var];
    node.dataset.value = value === undefined ? "" : value;
    node.textContent = value === undefined ? "–" : node.dataset.format === "duration" ? duration(value) : value;
  }
  for (const tile of $$("[data-needs]", el)) tile.hidden = entry.vars[tile.dataset.needs] === undefined;
  const status = entry.vars["ups.status"] || "";
  const flags = status.split(/\s+/);
  $(".status-words", el).textContent = statusWords(status);
  const badge = $(".badge", el);
  // no status (a stale UPS shows no values): no colour either, never a reassuring green
  badge.className = "badge " + (!status ? "none" : flags.includes("OB") ? "bad"
    : flags.includes("ALARM") ? "warn" : "good");
  const mains = flags.includes("OL") ? "present" : flags.includes("OB") ? "lost" : "–";
  const mainsEl = $(".mains-words", el);
  mainsEl.textContent = mains;
  mainsEl.className = "value mains-words " + (mains === "lost" ? "bad-text" : "");
  $(".battery-health .replace", el).hidden = !flags.includes("RB");
  if ("experimental.battery.capacity.outages" in vars) batteryHistory(name);
  const charge = Number(entry.vars["battery.charge"]);
  const fill = $(".charge .fill", el);
  fill.style.width = isFinite(charge) ? `${Math.max(0, Math.min(100, charge))}%` : "0";
  fill.className = "fill " + (charge < 20 ? "bad" : charge < 40 ? "warn" : "good");
  outlets(name);
  allVariables(name);
  // live points for the charts (the history store keeps its own samples)
  const now = Date.now() / 1000;
  for (const c of CHARTS) {
    const raw = current(entry, c.v);
    const changed = c.v === "mains" ? "ups.status" in vars : c.v in vars;
    const series = entry.series[c.v];
    if (raw === null || !series || (!changed && series.length)) continue;
    entry.series[c.v].push([now, raw]);
  }
  drawCharts(name);
}

function current(entry, v) {
  const flags = (entry.vars["ups.status"] || "").split(/\s+/);
  if (v === "mains") return flags.includes("OL") ? 1 : flags.includes("OB") ? 0 : null;
  const value = Number(entry.vars[v]);
  return entry.vars[v] !== undefined && isFinite(value) ? value : null;
}

function outlets(name) {
  const entry = ups.get(name);
  const list = $(".outlets", entry.el);
  const ids = Object.keys(entry.vars).map((k) => k.match(/^outlet\.(\d+)\.status$/)).filter(Boolean)
    .map((m) => m[1]);
  const beeper = entry.vars["ups.beeper.status"];
  $(".outputs", entry.el).hidden = !ids.length && beeper === undefined && !Object.keys(entry.lines || {}).length;
  const wanted = ids.map((i) => `outlet.${i}`).concat(beeper !== undefined ? ["beeper"] : []);
  if (list.dataset.items !== wanted.join(",")) {
    list.dataset.items = wanted.join(",");
    list.replaceChildren();
    for (const i of ids) {
      const li = document.createElement("li");
      li.innerHTML = `<span class="name" data-var="outlet.${i}.desc"></span>
        <span class="state" data-var="outlet.${i}.status"></span>
        <span class="buttons"><button type="button" data-cmd="outlet.${i}.load.on">on</button>
        <button type="button" data-cmd="outlet.${i}.load.off">off</button></span>`;
      list.append(li);
    }
    if (beeper !== undefined) {
      const li = document.createElement("li");
      li.innerHTML = `<span class="name">Buzzer</span><span class="state" data-var="ups.beeper.status"></span>
        <span class="buttons"><button type="button" data-cmd="beeper.enable">enable</button>
        <button type="button" data-cmd="beeper.mute">mute</button>
        <button type="button" data-cmd="beeper.disable">disable</button></span>`;
      list.append(li);
    }
    $$("button[data-cmd]", list).forEach((b) => b.addEventListener("click", () => command(name, b.dataset.cmd)));
  }
  for (const node of $$("[data-var]", list)) {
    const value = entry.vars[node.dataset.var];
    node.textContent = value === undefined ? "–" : value;
    node.dataset.value = value === undefined ? "" : value;
    node.classList.toggle("on", value === "on" || value === "enabled");
  }
}

// The Pi's own lines (LEDs, relay, buzzer) and the pattern each plays; not NUT variables,
// so they carry data-output="<line name>" instead of data-var.
const LINE_WORDS = { led: "LED", relay: "Relay line", buzzer: "Buzzer line" };
const LED_COLOURS = new Set(["red", "green", "yellow", "blue", "orange", "white", "amber", "purple"]);

function lines(name, outputs) {
  const entry = ups.get(name);
  if (!entry) return;
  entry.lines = outputs || {};
  const list = $(".lines", entry.el);
  const names = Object.keys(entry.lines);
  if (list.dataset.items !== names.join(",")) {
    list.dataset.items = names.join(",");
    list.replaceChildren();
    for (const line of names) {
      const li = document.createElement("li");
      const dot = document.createElement("span");
      dot.className = "led";
      const colour = line.toLowerCase();
      if (LED_COLOURS.has(colour)) dot.dataset.colour = colour;
      const label = document.createElement("span");
      label.className = "name";
      label.textContent = entry.lines[line].kind === "led" ? `LED ${line}` : LINE_WORDS[entry.lines[line].kind];
      const state = document.createElement("span");
      state.className = "state";
      state.dataset.output = line;
      li.append(dot, label, state);
      list.append(li);
    }
  }
  for (const li of list.children) {
    const state = $("[data-output]", li);
    const pattern = entry.lines[state.dataset.output].pattern;
    state.textContent = pattern.replace("_", " ");
    state.dataset.value = pattern;
    $(".led", li).dataset.pattern = pattern;
  }
  outlets(name);
}

function allVariables(name) {
  const entry = ups.get(name);
  const body = $(".vars tbody", entry.el);
  const names = Object.keys(entry.vars).sort();
  if (body.dataset.names !== names.join(",")) {
    body.dataset.names = names.join(",");
    body.replaceChildren(...names.map((n) => {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.textContent = n;
      const td = document.createElement("td");
      td.dataset.var = n;
      tr.append(th, td);
      return tr;
    }));
  }
  for (const td of $$("td[data-var]", body)) {
    td.textContent = entry.vars[td.dataset.var];
    td.dataset.value = entry.vars[td.dataset.var];
  }
}

async function details(name) {
  const { status, data } = await api(`/api/v1/ups/${encodeURIComponent(name)}`);
  if (status !== 200) return;
  const entry = ups.get(name);
  entry.info = data;
  $(".ups-desc", entry.el).textContent = data.desc || "";  // a remote UPS's desc comes with its server's answer
  const form = $(".rw", entry.el);
  form.replaceChildren();
  for (const [v, spec] of Object.entries(data.rw)) {
    const row = document.createElement("label");
    row.className = "rw-row";
    const [lo, hi] = (spec.ranges && spec.ranges[0]) || [null, null];
    row.innerHTML = `<span class="name"></span><input name="value" inputmode="decimal">
      <button type="button">Set</button>`;
    $(".name", row).textContent = v;
    const input = $("input", row);
    input.value = data.variables[v] ?? "";
    if (lo !== null) { input.type = "number"; input.min = lo; input.max = hi; }
    $("button", row).addEventListener("click", () => setVar(name, v, input.value));
    form.append(row);
  }
  const cmds = $(".commands", entry.el);
  cmds.replaceChildren(...data.commands.map((c) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = c;
    b.dataset.cmd = c;
    b.addEventListener("click", () => command(name, c));
    return b;
  }));
}

// --- battery health: the capacity learned after each outage --------------------------------

async function batteryHistory(name) {
  const entry = ups.get(name);
  if (!entry || entry.vars["battery.capacity.nominal"] === undefined) return;
  const { status, data } = await api(`/api/v1/ups/${encodeURIComponent(name)}/battery`);
  if (status !== 200) return;
  const svg = $(".capacity-history svg", entry.el);
  const nominal = Number(entry.vars["battery.capacity.nominal"]);
  const pts = data.history.map(([t, , learned]) => [t, learned]);
  svg.replaceChildren();
  svg.dataset.points = String(pts.length);
  const top = Math.max(nominal * 1.2, ...pts.map(([, v]) => v * 1.05));
  const y = (v) => 80 - (v / top) * 80;
  const ns = "http://www.w3.org/2000/svg";
  const ref = document.createElementNS(ns, "line");
  for (const [k, v] of Object.entries({ x1: 0, x2: 300, y1: y(nominal), y2: y(nominal), class: "nominal" })) {
    ref.setAttribute(k, v);
  }
  svg.append(ref);
  if (!pts.length) return;
  const t0 = pts[0][0], t1 = pts[pts.length - 1][0];
  const x = (t) => (t1 > t0 ? ((t - t0) / (t1 - t0)) * 300 : 150);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", pts.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "));
  line.setAttribute("class", "learned");
  svg.append(line);
}

// --- charts (SVG, drawn here) ----------------------------------------------------------

async function loadHistory(name) {
  const entry = ups.get(name);
  const since = Date.now() / 1000 - entry.range;
  const step = entry.range > 3600 ? Math.round(entry.range / 300) : 0;
  await Promise.all(CHARTS.map(async (c) => {
    const q = `var=${encodeURIComponent(c.v)}&since=${since}` + (step ? `&step=${step}` : "");
    const { status, data } = await api(`/api/v1/history/${encodeURIComponent(name)}?${q}`);
    entry.series[c.v] = status === 200 ? data : [];
    const now = current(entry, c.v);  // nothing recorded yet: start the line at the live value
    if (!entry.series[c.v].length && now !== null) entry.series[c.v].push([Date.now() / 1000, now]);
  }));
  drawCharts(name);
}

function drawCharts(name) {
  const entry = ups.get(name);
  const now = Date.now() / 1000;
  const t0 = now - entry.range;
  for (const c of CHARTS) {
    const fig = $(`figure[data-chart="${c.v}"]`, entry.el);
    const svg = $("svg", fig);
    const pts = (entry.series[c.v] || []).filter(([t]) => t >= t0);
    entry.series[c.v] = pts;
    svg.replaceChildren();
    const scale = c.scale || 1;
    const values = pts.map(([, v]) => v * scale);
    let lo = c.min ?? Math.min(...values);
    let hi = c.max ?? Math.max(...values);
    if (!isFinite(lo) || !isFinite(hi)) { lo = 0; hi = 1; }
    if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
    const x = (t) => ((t - t0) / entry.range) * 300;
    const y = (v) => 85 - ((v - lo) / (hi - lo)) * 80;
    for (const g of [0.25, 0.5, 0.75]) {
      const line = document.createElementNS(SVGNS, "line");
      line.setAttribute("x1", 0); line.setAttribute("x2", 300);
      line.setAttribute("y1", 5 + g * 80); line.setAttribute("y2", 5 + g * 80);
      line.setAttribute("class", "grid");
      svg.append(line);
    }
    if (pts.length) {
      let d = "";
      pts.forEach(([t, v], i) => {
        const px = x(t).toFixed(1), py = y(v * scale).toFixed(1);
        if (i === 0) d = `M${px},${py}`;
        else d += c.step ? `H${px}V${py}` : `L${px},${py}`;
      });
      d += `H${x(now).toFixed(1)}`;
      const area = document.createElementNS(SVGNS, "path");
      area.setAttribute("d", `${d}V85H${x(pts[0][0]).toFixed(1)}Z`);
      area.setAttribute("class", "area");
      const path = document.createElementNS(SVGNS, "path");
      path.setAttribute("d", d);
      path.setAttribute("class", "line");
      path.setAttribute("vector-effect", "non-scaling-stroke");
      const [lt, lv] = pts[pts.length - 1];
      const dot = document.createElementNS(SVGNS, "circle");  // the latest reading, seen even alone
      dot.setAttribute("cx", x(lt).toFixed(1));
      dot.setAttribute("cy", y(lv * scale).toFixed(1));
      dot.setAttribute("r", "2.5");
      dot.setAttribute("class", "dot");
      svg.append(area, path, dot);
    }
    const last = pts.length ? pts[pts.length - 1][1] * scale : null;
    $(".last", fig).textContent = last === null ? "no data yet"
      : c.v === "mains" ? (last ? "present" : "lost")
      : `${Number(last.toFixed(2))} ${c.unit}` + (c.max === undefined ? ` (${Number(lo.toFixed(2))}–${Number(hi.toFixed(2))})` : "");
  }
}

// --- events --------------------------------------------------------------------------

function filters() {
  const type = $("#filter-type").value;
  const since = $("#filter-since").value;
  const until = $("#filter-until").value;
  return {
    type,
    since: since ? Date.now() / 1000 - Number(since) : null,
    until: until ? new Date(until).getTime() / 1000 : null,
  };
}

function eventRow(e) {
  const tr = document.createElement("tr");
  tr.dataset.eventType = e.type;
  tr.dataset.seq = e.seq;
  const value = e.value === null || e.value === undefined ? "" : ` (${e.value}${e.unit || ""})`;
  for (const [cls, text] of [["time", timeText(e.timestamp ?? Date.parse(e.time) / 1000)], ["ups", e.ups],
                             ["type", e.type], ["message", e.message + value]]) {
    const td = document.createElement("td");
    td.className = cls;
    td.textContent = text;
    tr.append(td);
  }
  return tr;
}

async function loadEvents() {
  const f = filters();
  const q = new URLSearchParams({ limit: "200" });
  if (f.type) q.set("type", f.type);
  if (f.since !== null) q.set("since", String(f.since));
  if (f.until !== null) q.set("until", String(f.until));
  const { status, data } = await api(`/api/v1/events?${q}`);
  if (status !== 200) return;
  $("#event-rows").replaceChildren(...data.map(eventRow));
  seenEvents.clear();
  data.forEach((e) => seenEvents.add(e.seq));
  $("#no-events").hidden = data.length > 0;
  $("#events").dataset.loaded = "yes";
}

function liveEvent(e) {
  if (e.dashboard_notify) notify(e);
  if (seenEvents.has(e.seq)) return;
  const f = filters();
  const ts = Date.parse(e.time) / 1000;
  if ((f.type && e.type !== f.type) || (f.until !== null && ts > f.until)) return;
  seenEvents.add(e.seq);
  $("#event-rows").prepend(eventRow(e));
  $("#no-events").hidden = true;
}

function notify(e) {
  const div = document.createElement("div");
  div.className = "notice";
  div.dataset.eventType = e.type;
  div.setAttribute("role", "alert");
  div.innerHTML = `<strong></strong> <span></span> <button type="button" aria-label="dismiss">×</button>`;
  $("strong", div).textContent = `${e.ups}: ${e.type}`;
  $("span", div).textContent = e.message;
  $("button", div).addEventListener("click", () => div.remove());
  $("#notices").prepend(div);
  if (window.Notification && Notification.permission === "granted") {
    new Notification(`${e.ups}: ${e.type}`, { body: e.message });
  }
}

// --- login and controls -----------------------------------------------------------------

function loggedIn(user) {
  $("#who").textContent = user ? `logged in as ${user}` : "";
  $("#login-button").textContent = user ? "Log out" : "Log in";
  document.body.dataset.user = user || "";
}

async function control(name, path, body) {
  const entry = ups.get(name);
  const out = $(".control-result", entry.el);
  const { status, data } = await api(path, { method: "POST", body });
  if (status === 401) {
    csrf = null;
    loggedIn(null);
    out.textContent = "Log in first.";
    $("#login-dialog").showModal();
    return;
  }
  out.textContent = status === 200 ? (data && data.warning ? `Done, but ${data.warning}.` : "Done.")
    : `Refused: ${(data && data.error) || status}`;
  out.className = "control-result " + (status === 200 ? "" : "error");
}

function command(name, cmd) {
  return control(name, `/api/v1/ups/${encodeURIComponent(name)}/command/${encodeURIComponent(cmd)}`, undefined);
}

function setVar(name, v, value) {
  return control(name, `/api/v1/ups/${encodeURIComponent(name)}/var/${encodeURIComponent(v)}`, { value });
}

function setupLogin() {
  const dialog = $("#login-dialog");
  $("#login-button").addEventListener("click", async () => {
    if (csrf) {
      await api("/api/v1/logout", { method: "POST" });
      csrf = null;
      loggedIn(null);
    } else {
      $("#login-error").textContent = "";
      dialog.showModal();
    }
  });
  $("#login-cancel").addEventListener("click", () => dialog.close());
  $("#login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = new FormData(ev.target);
    const { status, data } = await api("/api/v1/login", {
      method: "POST", body: { username: form.get("username"), password: form.get("password") },
    });
    if (status === 200) {
      csrf = data.csrf;
      loggedIn(data.user);
      dialog.close();
      ev.target.reset();
    } else {
      $("#login-error").textContent = (data && data.error) || `error ${status}`;
    }
  });
}

// --- the live feed ------------------------------------------------------------------------

function connect() {
  const feed = new EventSource("/api/v1/live");
  const mark = $("#feed");
  feed.addEventListener("hello", () => {
    mark.textContent = "live";
    mark.className = "feed live";
    loadEvents();
    for (const name of ups.keys()) details(name);
  });
  feed.addEventListener("state", (m) => {
    const d = JSON.parse(m.data);
    const entry = panel(d.ups, null);
    const fresh = !entry.loaded;
    entry.loaded = true;
    $(".stale", entry.el).hidden = d.connected && !d.stale;
    entry.el.classList.toggle("is-stale", !d.connected || d.stale);
    show(d.ups, d.vars, d.full);
    if (fresh) { details(d.ups); loadHistory(d.ups); }
  });
  feed.addEventListener("event", (m) => liveEvent(JSON.parse(m.data)));
  feed.addEventListener("outputs", (m) => {
    const d = JSON.parse(m.data);
    panel(d.ups, null);
    lines(d.ups, d.outputs);
  });
  feed.onerror = () => { mark.textContent = "reconnecting…"; mark.className = "feed"; };
}

// The page arrives with its first paint (the session, the UPSes and their variables), so the tiles
// show values before the live feed connects, and a visitor who is not logged in meets no 401.
function firstPaint() {
  const el = $("#first-paint");
  return el ? JSON.parse(el.textContent) : null;
}

async function start() {
  setupLogin();
  const first = firstPaint() || {
    session: null, ups: [],
    types: (await api("/api/v1/events/types")).data || [],
  };
  if (first.session) { csrf = first.session.csrf; loggedIn(first.session.user); }
  for (const t of first.types) {
    const o = document.createElement("option");
    o.value = o.textContent = t;
    $("#filter-type").append(o);
  }
  for (const u of first.ups) {
    const entry = panel(u.name, u.desc, u.remote);
    $(".stale", entry.el).hidden = u.connected && !u.stale;
    entry.el.classList.toggle("is-stale", !u.connected || u.stale);
    show(u.name, u.vars, true);
  }
  $("#event-filters").addEventListener("change", loadEvents);
  connect();
  // the charts' time axis moves on by itself; no data is fetched for it
  setInterval(() => { for (const name of ups.keys()) drawCharts(name); }, 30000);
}

start();
