// The hubhost dashboard: a static page over the admin API (/admin/v1). The
// key lives in this tab's sessionStorage only. Everything a tenant or a hub
// wrote (names, error texts) is put in the page as text, never as HTML.
"use strict";

const POLL_MS = 2000;
const POINTS = 90; // three minutes of samples
const COLORS = ["#2f6fde", "#d9480f", "#2b8a3e", "#7048e8", "#c2255c", "#0b7285", "#e67700"];

const $ = (id) => document.getElementById(id);
const session = {
  key: sessionStorage.getItem("hubhost.key"),
  tenant: sessionStorage.getItem("hubhost.tenant"),
  operator: sessionStorage.getItem("hubhost.operator") === "1",
};
// Per hub: { connections: [..], calls: [..], last: {at, invocations} }
let series = new Map();
let timer = null;

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body, contentType = "application/json") {
  const headers = { Authorization: `Bearer ${session.key}` };
  if (body !== undefined) headers["Content-Type"] = contentType;
  const response = await fetch(`/admin/v1${path}`, { method, headers, body });
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON: the status says enough.
  }
  if (!response.ok) throw new ApiError(response.status, json?.error ?? `${response.status} ${response.statusText}`);
  return json;
}

const tenantPath = () => `/tenants/${encodeURIComponent(session.tenant)}`;

function say(text, bad = false) {
  $("status").textContent = text;
  $("status").className = bad ? "bad" : "";
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function button(label, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", async () => {
    b.disabled = true;
    try {
      await action();
      await refresh();
    } catch (error) {
      say(error.message, true);
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

function served(info) {
  const from = info.served;
  if (!from) return "not served";
  const world = info.served_world ? ` (world ${info.served_world})` : "";
  if (from.from === "store") return `store v${from.version}${world}`;
  return `${from.from} ${from.path}${world}`;
}

function hubPath(hub) {
  return `${tenantPath()}/hubs/${encodeURIComponent(hub)}`;
}

function renderHubs(list, activity) {
  const tbody = $("hubs").tBodies[0];
  tbody.replaceChildren();
  const byHub = new Map(activity.hubs.map((h) => [h.hub, h]));
  for (const info of list.hubs) {
    const row = tbody.insertRow();
    row.dataset.hub = info.hub;
    cell(row, info.hub);
    cell(row, info.active == null ? "-" : `v${info.active}`, "active-version");
    const versions = row.insertCell();
    versions.className = "versions";
    for (const v of info.versions) {
      if (v.version === info.active) continue;
      versions.append(
        button(`activate v${v.version}`, async () => {
          const done = await api("POST", `${hubPath(info.hub)}/activate`, JSON.stringify({ version: v.version }));
          say(`${info.hub}: v${done.active} is active.`);
        }),
        " ",
      );
    }
    cell(row, served(info), "served");
    const seen = byHub.get(info.hub);
    const rates = series.get(info.hub)?.calls ?? [];
    cell(row, seen ? String(seen.connections) : "-", "connections");
    cell(row, rates.length ? rates[rates.length - 1].toFixed(1) : "-", "calls");
    const actions = row.insertCell();
    if (info.history.length > 1) {
      actions.append(
        button("Roll back", async () => {
          const done = await api("POST", `${hubPath(info.hub)}/rollback`);
          say(`${info.hub}: rolled back to v${done.active}.`);
        }),
      );
    }
  }
}

function renderErrors(failures) {
  const tbody = $("errors").tBodies[0];
  tbody.replaceChildren();
  for (const failure of failures.errors) {
    const row = tbody.insertRow();
    cell(row, new Date(failure.at_ms).toLocaleTimeString());
    cell(row, failure.hub);
    cell(row, failure.call);
    cell(row, failure.error, "error");
  }
  if (!failures.errors.length) cell(tbody.insertRow(), "None.").colSpan = 4;
}

function record(activity) {
  const seen = new Set();
  for (const hub of activity.hubs) {
    seen.add(hub.hub);
    const s = series.get(hub.hub) ?? { connections: [], calls: [], last: null };
    s.connections.push(hub.connections);
    if (s.last) {
      const seconds = Math.max((activity.at_ms - s.last.at) / 1000, 0.001);
      // A restarted node counts from 0 again: no negative rate.
      s.calls.push(Math.max(hub.invocations - s.last.invocations, 0) / seconds);
    }
    s.last = { at: activity.at_ms, invocations: hub.invocations };
    for (const points of [s.connections, s.calls]) points.splice(0, Math.max(points.length - POINTS, 0));
    series.set(hub.hub, s);
  }
  for (const hub of [...series.keys()]) if (!seen.has(hub)) series.delete(hub);
}

function draw(canvas, pick) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  const pad = { left: 44, right: 8, top: 8, bottom: 18 };
  ctx.clearRect(0, 0, width, height);
  const lines = [...series.entries()].map(([hub, s], i) => ({ hub, points: pick(s), color: COLORS[i % COLORS.length] }));
  const top = Math.max(1, ...lines.flatMap((l) => l.points));
  const x = (i) => pad.left + (i / (POINTS - 1)) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - (v / top) * (height - pad.top - pad.bottom);
  ctx.strokeStyle = "#e3e7ee";
  ctx.fillStyle = "#5a6474";
  ctx.font = "11px system-ui, sans-serif";
  for (const v of [0, top / 2, top]) {
    ctx.beginPath();
    ctx.moveTo(pad.left, y(v));
    ctx.lineTo(width - pad.right, y(v));
    ctx.stroke();
    ctx.fillText(Number.isInteger(v) ? String(v) : v.toFixed(1), 4, y(v) + 4);
  }
  for (const line of lines) {
    const offset = POINTS - line.points.length;
    ctx.strokeStyle = line.color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    line.points.forEach((v, i) => (i ? ctx.lineTo(x(offset + i), y(v)) : ctx.moveTo(x(offset + i), y(v))));
    ctx.stroke();
  }
  const legend = $("legend");
  legend.replaceChildren(
    ...lines.map((l) => {
      const span = document.createElement("span");
      span.style.color = l.color;
      span.textContent = `■ ${l.hub}`;
      return span;
    }),
  );
}

async function refresh() {
  const [list, activity, failures] = await Promise.all([
    api("GET", `${tenantPath()}/hubs`),
    api("GET", `${tenantPath()}/activity`),
    api("GET", `${tenantPath()}/errors`),
  ]);
  record(activity);
  renderHubs(list, activity);
  renderErrors(failures);
  draw($("chart-connections"), (s) => s.connections);
  draw($("chart-calls"), (s) => s.calls);
}

async function poll() {
  try {
    await refresh();
  } catch (error) {
    say(error.message, true);
    if (error.status === 401) return signOut("The key is no longer accepted.");
  }
  timer = setTimeout(poll, POLL_MS);
}

function show(signedIn) {
  $("login").hidden = signedIn;
  $("board").hidden = !signedIn;
  $("sign-out").hidden = !signedIn;
  $("tenant-pick").hidden = !(signedIn && session.operator);
  $("who").textContent = signedIn
    ? session.operator
      ? "operator"
      : `tenant ${session.tenant}`
    : "";
}

async function pickTenants() {
  // Defined tenants; a tenant that only has hubs (`--hub demo/chat=…`) is
  // reached by naming it at sign-in.
  const names = (await api("GET", "/tenants")).tenants.map((t) => t.tenant);
  if (session.tenant && !names.includes(session.tenant)) names.unshift(session.tenant);
  session.tenant ??= names[0] ?? null;
  const select = $("tenant-select");
  select.replaceChildren(
    ...names.map((name) => {
      const option = document.createElement("option");
      option.value = option.textContent = name;
      return option;
    }),
  );
  select.value = session.tenant ?? "";
}

async function start() {
  show(true);
  if (session.operator) await pickTenants();
  if (!session.tenant) return say("No tenants yet.", true);
  series = new Map();
  clearTimeout(timer);
  await poll();
}

async function signIn(event) {
  event.preventDefault();
  session.key = $("key").value.trim();
  session.tenant = $("tenant").value.trim() || null;
  try {
    await api("GET", "/tenants");
    session.operator = true;
  } catch (error) {
    if (error.status !== 403) return say(error.status === 401 ? "The key was not accepted." : error.message, true);
    if (!session.tenant) return say("A tenant key: name its tenant too.", true);
    session.operator = false;
    try {
      await api("GET", tenantPath());
    } catch (inner) {
      return say(inner.status === 403 ? "This key is not one of that tenant's." : inner.message, true);
    }
  }
  sessionStorage.setItem("hubhost.key", session.key);
  sessionStorage.setItem("hubhost.operator", session.operator ? "1" : "0");
  $("key").value = "";
  say("");
  await start();
  if (session.tenant) sessionStorage.setItem("hubhost.tenant", session.tenant);
}

function signOut(text = "") {
  clearTimeout(timer);
  sessionStorage.clear();
  Object.assign(session, { key: null, tenant: null, operator: false });
  series = new Map();
  show(false);
  say(text, Boolean(text));
}

async function deploy(event) {
  event.preventDefault();
  const hub = $("deploy-hub").value.trim();
  const file = $("deploy-file").files[0];
  if (!file) return;
  const activate = $("deploy-activate").checked;
  say(`Deploying ${hub}…`);
  try {
    const done = await api("POST", `${hubPath(hub)}/versions?activate=${activate}`, file, "application/wasm");
    say(`${hub}: v${done.version} stored${done.active ? " and active" : ""}.`);
    await refresh();
  } catch (error) {
    say(`${hub}: ${error.message}`, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", signIn);
  $("deploy").addEventListener("submit", deploy);
  $("sign-out").addEventListener("click", () => signOut());
  $("tenant-select").addEventListener("change", async (event) => {
    session.tenant = event.target.value;
    sessionStorage.setItem("hubhost.tenant", session.tenant);
    series = new Map();
    await refresh().catch((error) => say(error.message, true));
  });
  if (session.key) start().catch((error) => signOut(error.message));
  else show(false);
});
