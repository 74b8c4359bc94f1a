// The Users panel of an instance's page (issue 27): the instance's users with their role and state, a
// form to create one with a role from the service's catalog, and delete and rotate buttons. A password is
// shown once, after a creation or a rotation succeeded: it is read then from `…/users/{name}/credentials`
// and held only in this tab's memory (never sessionStorage) until dismissed, the page is left or the user
// signs out. Loaded before app.js, whose helpers (h, api, projectPath, instancePage) it calls at run time.
"use strict";

const users = {
  roles: new Map(), // service → the roles its catalog offers users
  revealed: null, // { instance, name, username, password, host, port }: shown once, then forgotten
  draft: { name: "", role: "" }, // the form, kept across the page's re-renders
  busy: new Map(), // `${instance}/${name}` → what runs for that user ("creating", "deleting", "rotating")
  confirming: null, // `${instance}/${name}` whose delete button asks to be clicked again
  message: null, // { instance, text, error }
};

const USER_STATES = { applied: "applied", pending: "in progress", error: "failed" };

// The roles a user of `service` may have, read once per service from the catalog.
async function userRoles(service) {
  if (!users.roles.has(service)) {
    const offering = await api(`/v1/catalog/${encodeURIComponent(service)}`);
    users.roles.set(service, offering.user_roles || []);
  }
  return users.roles.get(service);
}

// Forgets a shown password once the page showing it is left.
function forgetSecrets(hash) {
  if (users.revealed && hash !== `#/instances/${users.revealed.instance}`) users.revealed = null;
}

function idempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `ui-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

// A write: 202 and its operation, with the stream sequence to read it back at.
async function send(method, path, body) {
  const headers = { Authorization: `Bearer ${session.token}`, Accept: "application/json",
    "Idempotency-Key": idempotencyKey() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!response.ok) {
    let problem = null;
    try { problem = await response.json(); } catch (_) { /* not a problem document */ }
    const error = new ApiError(response.status, problem);
    // The field and the rule it broke, as the API names them.
    for (const f of (problem && problem.errors) || []) error.message += ` [${f.field}: ${f.rule}]`;
    throw error;
  }
  return { operation: await response.json(), sequence: Number(response.headers.get("Cp-Stream-Sequence")) || null };
}

// Follows an operation until it ends (at most 10 minutes); throws with its reason when it failed.
async function finished({ operation, sequence }) {
  const deadline = Date.now() + 10 * 60 * 1000;
  let op = operation;
  while (op.state !== "succeeded") {
    if (op.state === "failed") {
      const e = op.error || {};
      const detail = e.detail || e.code || "no reason given";
      throw new Error(`${op.type} failed: ${detail}${e.reason && !detail.includes(e.reason) ? ` (${e.reason})` : ""}`);
    }
    if (Date.now() > deadline) throw new Error(`${op.type} still ${op.state} after 10 minutes`);
    await new Promise((r) => setTimeout(r, 1000));
    op = await api(projectPath(`/operations/${op.id}`), { minSequence: sequence });
  }
  return op;
}

function rerender(instance) {
  if (location.hash === `#/instances/${instance}`) instancePage(instance);
}

// Runs one change of a user: marks it busy, waits for its operation, and on success shows the password
// the cluster now holds when `reveal` is set.
async function userAction(instance, name, what, request, reveal) {
  const key = `${instance}/${name}`;
  users.busy.set(key, what);
  users.confirming = null;
  users.message = { instance, text: `${what} ${name}…` };
  rerender(instance);
  try {
    await finished(await request());
    if (reveal) {
      const c = await api(projectPath(`/instances/${instance}/users/${encodeURIComponent(name)}/credentials`));
      users.revealed = { instance, name, username: c.username, password: c.password, host: c.host, port: c.port };
    }
    users.message = { instance, text: `${name}: ${what} done.` };
    return true;
  } catch (e) {
    users.message = { instance, text: `${name}: ${e.message}`, error: true };
    return false;
  } finally {
    users.busy.delete(key);
    rerender(instance);
  }
}

function createUser(instance, form) {
  const name = form.elements.name.value.trim();
  const role = form.elements.role.value;
  const path = projectPath(`/instances/${instance}/users`);
  userAction(instance, name, "creating", () => send("POST", path, { name, role }), true).then((ok) => {
    if (ok) users.draft = { name: "", role };
  });
}

function deleteUser(instance, name) {
  const path = projectPath(`/instances/${instance}/users/${encodeURIComponent(name)}`);
  if (users.revealed && users.revealed.instance === instance && users.revealed.name === name) users.revealed = null;
  userAction(instance, name, "deleting", () => send("DELETE", path), false);
}

function rotateUser(instance, name) {
  const path = projectPath(`/instances/${instance}/users/${encodeURIComponent(name)}/password/rotate`);
  userAction(instance, name, "rotating", () => send("POST", path), true);
}

// The panel. `list` is `…/users`' answer or `{ error }`; `roles` the catalog's roles for the service.
function usersPanel(instance, list, roles) {
  const id = instance.id;
  const typing = document.activeElement && document.activeElement.dataset.testid === "user-name";
  const rows = (list.users || []).map((u) => {
    const key = `${id}/${u.name}`;
    const busy = users.busy.get(key);
    const deleteButton = users.confirming === key
      ? h("button", { class: "danger", "data-testid": "user-delete-confirm", onclick: () => deleteUser(id, u.name) }, "Really delete")
      : h("button", { "data-testid": "user-delete", disabled: !!busy,
        onclick: () => { users.confirming = key; rerender(id); } }, "Delete");
    return h("tr", { "data-user": u.name, "data-state": u.state },
      h("td", {}, u.name), h("td", {}, u.role),
      h("td", {}, h("span", { class: `badge user-${u.state}`, "data-testid": "user-state" }, USER_STATES[u.state] || u.state),
        busy ? h("span", { class: "muted" }, ` ${busy}…`) : null),
      h("td", { class: "muted", "data-testid": "user-reason" }, u.reason || ""),
      h("td", { class: "actions" },
        h("button", { "data-testid": "user-rotate", disabled: !!busy || u.state === "pending",
          title: "a new password, shown once", onclick: () => rotateUser(id, u.name) }, "Rotate password"),
        deleteButton));
  });
  const nameInput = h("input", { name: "name", required: true, maxlength: 63, pattern: "[a-z]([a-z0-9_]*[a-z0-9])?",
    placeholder: "reporting", value: users.draft.name, autocomplete: "off", "data-testid": "user-name",
    title: "1–63 lowercase letters, digits or _, starting with a letter",
    oninput: (e) => { users.draft.name = e.target.value; } });
  if (typing) queueMicrotask(() => nameInput.focus());
  const role = users.draft.role && roles.includes(users.draft.role) ? users.draft.role : roles[0];
  const form = h("form", { class: "toolbar", "data-testid": "user-form",
    onsubmit: (e) => { e.preventDefault(); createUser(id, e.target); } },
    h("label", {}, "Name ", nameInput),
    h("label", {}, "Role ", h("select", { name: "role", "data-testid": "user-role",
      onchange: (e) => { users.draft.role = e.target.value; } },
      roles.map((r) => h("option", { value: r, selected: r === role }, r)))),
    h("button", { type: "submit", "data-testid": "user-create", disabled: !roles.length }, "Create user"));
  const shown = users.revealed && users.revealed.instance === id ? users.revealed : null;
  const secret = shown && h("div", { class: "secret", "data-testid": "user-secret", "data-user": shown.name },
    h("p", {}, h("strong", {}, `Password of ${shown.username}`), " — shown once: save it now. ",
      "It is not kept by this page; read it again with the credentials API or rotate it."),
    h("code", { "data-testid": "user-password" }, shown.password),
    h("p", { class: "muted" }, `connect to ${shown.host}:${shown.port}`),
    h("button", { "data-testid": "user-secret-dismiss", onclick: () => { users.revealed = null; rerender(id); } }, "I have saved it"));
  const message = users.message && users.message.instance === id
    ? h("p", { class: users.message.error ? "error" : "muted", "data-testid": "user-message" }, users.message.text) : null;
  const table = list.error
    ? h("p", { class: "error" }, `Users: ${list.error.message}`)
    : rows.length
      ? h("table", { "data-testid": "users" },
        h("thead", {}, h("tr", {}, ["Name", "Role", "State", "Reason", ""].map((c) => h("th", {}, c)))), h("tbody", {}, rows))
      : h("p", { class: "muted", "data-testid": "users" }, "No users: applications connect as the instance's own user.");
  return h("section", { class: "card", "data-testid": "users-panel" },
    h("h2", {}, `Users (${(list.users || []).length})`), secret, table, form, message);
}
