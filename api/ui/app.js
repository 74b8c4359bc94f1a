// The dashboard: static, served by the API, calling the public API and its event feed with the token
// the user signs in with. No framework and no CDN, so it works offline and has nothing to update.
"use strict";

const STATES = ["healthy", "reconciling", "error"];
const session = {
  token: sessionStorage.getItem("cp.token"),
  project: sessionStorage.getItem("cp.project"),
};
// What the page shows, kept current by the feed.
const model = { instances: new Map(), lastEventId: null, feed: null, filter: "", state: "" };

// --- DOM helpers -------------------------------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}
const badge = (state) => h("span", { class: `badge ${state}`, "data-testid": "state" }, state);
const when = (t) => (t ? new Date(t).toLocaleString() : "–");
const main = () => document.getElementById("main");

// --- API ---------------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? `${status}: ${problem.detail}` : `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, { minSequence } = {}) {
  const headers = { Authorization: `Bearer ${session.token}`, Accept: "application/json" };
  // Read-your-writes for the feed: a read that shows at least the event that prompted it.
  if (minSequence) headers["Cp-Min-Sequence"] = String(minSequence);
  const response = await fetch(path, { headers });
  if (!response.ok) {
    let problem = null;
    try { problem = await response.json(); } catch (_) { /* not a problem document */ }
    throw new ApiError(response.status, problem);
  }
  return response.json();
}
const projectPath = (rest = "") => `/v1/projects/${encodeURIComponent(session.project)}${rest}`;

async function loadInstances() {
  const items = [];
  let token = null;
  do {
    const page = await api(projectPath(`/instances?limit=500${token ? `&page_token=${encodeURIComponent(token)}` : ""}`));
    items.push(...page.items);
    token = page.next_page_token;
  } while (token);
  model.instances = new Map(items.map((i) => [i.id, i]));
}

// --- Live feed: Server-Sent Events read with fetch, so the token goes in a header, not the URL -------
function setLive(on) {
  const el = document.getElementById("live");
  el.textContent = on ? "live" : "offline";
  el.className = `live ${on ? "on" : "off"}`;
}

async function follow() {
  const controller = new AbortController();
  model.feed = controller;
  let delay = 500;
  while (!controller.signal.aborted) {
    try {
      const headers = { Authorization: `Bearer ${session.token}`, Accept: "text/event-stream" };
      if (model.lastEventId) headers["Last-Event-ID"] = model.lastEventId;
      const response = await fetch(projectPath("/events"), { headers, signal: controller.signal });
      if (!response.ok) throw new ApiError(response.status, null);
      setLive(true);
      delay = 500;
      // Whatever changed before the feed (re)connected without a resume point is read once.
      if (!model.lastEventId) loadInstances().then(route).catch(() => {});
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = { data: "" };
          for (const line of block.split("\n")) {
            const colon = line.indexOf(":");
            if (colon <= 0) continue;
            const field = line.slice(0, colon);
            const text = line.slice(colon + 1).replace(/^ /, "");
            if (field === "data") event.data += text;
            else event[field] = text;
          }
          if (event.data) onEvent(event);
        }
      }
    } catch (e) {
      if (controller.signal.aborted) return;
    }
    setLive(false);
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

// Refreshes of one instance, coalesced: a burst of events costs one read.
const pending = new Map();
function onEvent(event) {
  model.lastEventId = event.id;
  let cloudEvent;
  try { cloudEvent = JSON.parse(event.data); } catch (_) { return; }
  const id = cloudEvent.subject;
  const sequence = Number(event.id);
  if (pending.has(id)) { pending.set(id, Math.max(pending.get(id), sequence)); return; }
  pending.set(id, sequence);
  setTimeout(async () => {
    const minSequence = pending.get(id);
    pending.delete(id);
    try {
      model.instances.set(id, await api(projectPath(`/instances/${id}`), { minSequence }));
    } catch (e) {
      if (e.status === 404) model.instances.delete(id); else return;
    }
    refresh(id);
  }, 100);
}

// --- Views -------------------------------------------------------------------------------------------
function route() {
  const hash = location.hash || "#/";
  forgetSecrets(hash);
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.getAttribute("href") === hash);
  if (hash.startsWith("#/instances/")) return instancePage(hash.slice("#/instances/".length));
  if (hash === "#/fleet") return fleetPage();
  return listPage();
}

// Re-renders what depends on instance `id` without losing the user's place.
function refresh(id) {
  const hash = location.hash || "#/";
  if (hash === "#/" || hash === "#/fleet") route();
  else if (hash === `#/instances/${id}`) instancePage(id);
}

function listPage() {
  const filtered = [...model.instances.values()]
    .filter((i) => !model.filter || i.name.includes(model.filter))
    .filter((i) => !model.state || i.status.state === model.state)
    .sort((a, b) => a.name.localeCompare(b.name));
  const filter = h("input", { placeholder: "Filter by name", value: model.filter, "data-testid": "filter",
    oninput: (e) => { model.filter = e.target.value; listPage(); document.querySelector("[data-testid=filter]").focus(); } });
  const select = h("select", { "data-testid": "state-filter", onchange: (e) => { model.state = e.target.value; listPage(); } },
    h("option", { value: "" }, "all states"),
    STATES.map((s) => h("option", { value: s, selected: model.state === s }, s)));
  const rows = filtered.map((i) => h("tr", { "data-instance": i.name, "data-state": i.status.state },
    h("td", {}, h("a", { href: `#/instances/${i.id}` }, i.name)),
    h("td", {}, i.service), h("td", {}, i.version), h("td", {}, i.plan), h("td", {}, i.cluster),
    h("td", {}, badge(i.status.state)),
    h("td", { class: "muted" }, i.status.reason || "")));
  main().replaceChildren(h("section", { class: "card" },
    h("h1", {}, `Instances of ${session.project}`),
    h("div", { class: "toolbar" }, filter, select, h("span", { class: "count" }, `${filtered.length} of ${model.instances.size}`)),
    h("table", { "data-testid": "instances" },
      h("thead", {}, h("tr", {}, ["Name", "Service", "Version", "Plan", "Cluster", "State", "Reason"].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No instances."))))));
}

function fleetPage() {
  const counts = new Map();
  for (const i of model.instances.values()) {
    const row = counts.get(i.cluster) || { healthy: 0, reconciling: 0, error: 0 };
    row[i.status.state] += 1;
    counts.set(i.cluster, row);
  }
  const clusters = [...counts.keys()].sort();
  const max = Math.max(1, ...[...counts.values()].map((r) => r.healthy + r.reconciling + r.error));
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const rowHeight = 34, left = 110, width = 640;
  svg.setAttribute("viewBox", `0 0 ${left + width + 60} ${Math.max(1, clusters.length) * rowHeight + 10}`);
  svg.setAttribute("data-testid", "fleet-chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "instances per state per cluster");
  const colors = { healthy: "var(--healthy)", reconciling: "var(--reconciling)", error: "var(--error)" };
  clusters.forEach((cluster, n) => {
    const y = n * rowHeight + 6;
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", 0); label.setAttribute("y", y + 18); label.textContent = cluster;
    svg.append(label);
    let x = left;
    for (const state of STATES) {
      const count = counts.get(cluster)[state];
      if (!count) continue;
      const bar = document.createElementNS(ns, "rect");
      const w = (count / max) * width;
      bar.setAttribute("x", x); bar.setAttribute("y", y); bar.setAttribute("width", w); bar.setAttribute("height", 24);
      bar.setAttribute("fill", colors[state]);
      bar.setAttribute("data-cluster", cluster); bar.setAttribute("data-state", state); bar.setAttribute("data-count", count);
      const title = document.createElementNS(ns, "title");
      title.textContent = `${cluster}: ${count} ${state}`;
      bar.append(title);
      svg.append(bar);
      x += w;
    }
    const total = document.createElementNS(ns, "text");
    const row = counts.get(cluster);
    total.setAttribute("x", x + 6); total.setAttribute("y", y + 18);
    total.textContent = String(row.healthy + row.reconciling + row.error);
    svg.append(total);
  });
  main().replaceChildren(h("section", { class: "card" },
    h("h1", {}, "Fleet: instances per state per cluster"),
    clusters.length ? svg : h("p", { class: "muted" }, "No instances."),
    h("div", { class: "legend" }, STATES.map((s) => h("span", {}, h("i", { style: `background:${colors[s]}` }), s)))));
}

async function instancePage(id) {
  let instance, backups, history, userList, roles;
  try {
    [instance, backups, history, userList] = await Promise.all([
      api(projectPath(`/instances/${id}`)),
      api(projectPath(`/instances/${id}/backups`)).catch(() => ({ items: [] })),
      api(projectPath(`/instances/${id}/history?limit=500`)),
      api(projectPath(`/instances/${id}/users`)).catch((error) => ({ error })),
    ]);
    roles = await userRoles(instance.service).catch(() => []);
  } catch (e) {
    main().replaceChildren(h("section", { class: "card error" }, `Instance ${id}: ${e.message}`));
    return;
  }
  if (location.hash !== `#/instances/${id}`) return;
  model.instances.set(id, instance);
  const s = instance.status;
  const dl = (pairs) => h("dl", {}, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  const aspects = Object.entries(s.aspects).map(([a, health]) => h("tr", {}, h("td", {}, a), h("td", {}, badge(health))));
  const conditions = s.conditions.map((c) => h("tr", {},
    h("td", {}, c.type), h("td", {}, c.status), h("td", {}, c.reason), h("td", { class: "muted" }, c.message)));
  const config = Object.entries(instance.config).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, JSON.stringify(v))));
  const acl = instance.acl.map((e) => h("tr", {}, h("td", {}, e.cidr), h("td", { class: "muted" }, e.description)));
  const backupRows = backups.items.map((b) => h("tr", {},
    h("td", {}, b.id.slice(0, 8)), h("td", {}, b.state), h("td", {}, b.trigger), h("td", {}, when(b.requested_at)),
    h("td", {}, b.size_bytes ?? "–")));
  const timeline = history.items.map((e) => h("li", { class: e.backup_id ? `${e.source} backup` : e.source, "data-testid": "history-entry" },
    h("div", {}, h("strong", {}, e.type), " ", h("span", { class: "muted" }, e.source === "desired" ? `by ${e.actor}` : e.actor)),
    h("div", { class: "when" }, `#${e.sequence} · ${when(e.time)}${e.operation ? ` · ${e.operation}` : ""}`)));
  const table = (headers, rows, empty) => rows.length
    ? h("table", {}, h("thead", {}, h("tr", {}, headers.map((c) => h("th", {}, c)))), h("tbody", {}, rows))
    : h("p", { class: "muted" }, empty);
  main().replaceChildren(
    h("section", { class: "card", "data-testid": "instance", "data-state": s.state },
      h("h1", {}, instance.name, " ", badge(s.state)),
      dl([["id", instance.id], ["service", `${instance.service} ${instance.version}`], ["plan", instance.plan],
        ["cluster", instance.cluster], ["lifecycle", instance.lifecycle], ["reason", s.reason || "–"],
        ["connection", instance.connection ? `${instance.connection.host}:${instance.connection.port}`
          : instance.acl.length ? "no endpoint reported yet" : "no endpoint (empty ACL)"],
        ["updated", when(instance.updated_at)]])),
    h("div", { class: "grid" },
      h("section", { class: "card" }, h("h2", {}, "Aspects"), table(["Aspect", "Health"], aspects, "None.")),
      h("section", { class: "card" }, h("h2", {}, "Configuration"), table(["Key", "Value"], config, "Service defaults.")),
      h("section", { class: "card" }, h("h2", {}, "Network ACL"), table(["CIDR", "Description"], acl, "Nobody outside the instance."))),
    usersPanel(instance, userList, roles),
    h("section", { class: "card" }, h("h2", {}, "Conditions"), table(["Type", "Status", "Reason", "Message"], conditions, "None yet.")),
    h("section", { class: "card" }, h("h2", {}, "Backups"), table(["Id", "State", "Trigger", "Requested", "Bytes"], backupRows, "No backups.")),
    h("section", { class: "card" }, h("h2", {}, `History (${history.items.length} events)`),
      h("ol", { class: "timeline", "data-testid": "history" }, timeline)));
}

// --- Sign-in and start -------------------------------------------------------------------------------
function signIn() {
  document.getElementById("nav").hidden = true;
  document.getElementById("sign-out").hidden = true;
  const form = document.getElementById("sign-in").content.firstElementChild.cloneNode(true);
  form.project.value = session.project || "";
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    session.token = form.token.value.trim();
    session.project = form.project.value.trim();
    try {
      await loadInstances();
    } catch (err) {
      form.querySelector(".error").textContent = err.status === 401 ? "That token is not valid." : err.message;
      return;
    }
    sessionStorage.setItem("cp.token", session.token);
    sessionStorage.setItem("cp.project", session.project);
    start();
  });
  main().replaceChildren(form);
}

function start() {
  document.getElementById("nav").hidden = false;
  document.getElementById("who").textContent = session.project;
  const out = document.getElementById("sign-out");
  out.hidden = false;
  out.onclick = () => {
    sessionStorage.clear();
    users.revealed = null;
    if (model.feed) model.feed.abort();
    session.token = null;
    setLive(false);
    signIn();
  };
  window.addEventListener("hashchange", route);
  follow();
  route();
}

(async () => {
  if (!session.token || !session.project) return signIn();
  try {
    await loadInstances();
    start();
  } catch (_) {
    signIn();
  }
})();
