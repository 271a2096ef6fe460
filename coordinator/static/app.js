/* Partyline coordinator UI: vanilla JS (fetch + EventSource), no framework, no build step.
 *
 * The pages are server-rendered shells; this script fills them from the JSON API
 * (/api/v1/...). The browser is authenticated by the session cookie set at /login, so every
 * fetch goes same-origin with credentials. Data is always inserted with textContent (never
 * innerHTML), so nothing a node or a job reports can inject markup.
 */
"use strict";

const FINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"]);
const RETRYABLE = new Set(["FAILED", "CANCELLED", "TIMED_OUT"]);

// --- helpers ----------------------------------------------------------------------------------
function $(sel, root) {
  return (root || document).querySelector(sel);
}

/** h("td", {class: "x", dataset: {party: "alice"}}, "text", childNode, ...) */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function show(el, on) {
  if (el) el.classList.toggle("hidden", !on);
}

function badge(status) {
  return h("span", { class: `badge s-${status}`, text: status || "?" });
}

/** API timestamps may come without an offset (SQLite): they are UTC. */
function parseTime(iso) {
  if (!iso) return null;
  const hasZone = /[zZ]$|[+-]\d\d:?\d\d$/.test(iso);
  const d = new Date(hasZone ? iso : `${iso}Z`);
  return isNaN(d) ? null : d;
}

function fmtTime(iso, withDate = true) {
  const d = parseTime(iso);
  if (!d) return "";
  return withDate
    ? d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" })
    : d.toLocaleTimeString(undefined, { hour12: false });
}

function fmtSeconds(s) {
  if (s === null || s === undefined || isNaN(s)) return "";
  return s < 10 ? `${Number(s).toFixed(2)} s` : `${Number(s).toFixed(1)} s`;
}

function fmtAge(s) {
  if (s === null || s === undefined || isNaN(s)) return "";
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** FastAPI errors: {"detail": "text"} or {"detail": [{loc, msg}, ...]} (422). */
function errorMessages(status, body, fallback) {
  const detail = body && body.detail;
  if (Array.isArray(detail)) {
    return detail.map((e) => {
      const loc = (e.loc || []).filter((x) => x !== "body").join(".");
      const msg = String(e.msg || "").replace(/^Value error, /, "");
      return loc ? `${loc}: ${msg}` : msg;
    });
  }
  if (typeof detail === "string" && detail) return [detail];
  return [fallback || `HTTP ${status}`];
}

async function api(path, options = {}) {
  const opts = { credentials: "same-origin", headers: { Accept: "application/json" }, ...options };
  if (opts.json !== undefined) {
    opts.body = JSON.stringify(opts.json);
    opts.headers = { ...opts.headers, "Content-Type": "application/json" };
    delete opts.json;
  }
  let resp;
  try {
    resp = await fetch(path, opts);
  } catch (exc) {
    throw new ApiError(0, `the coordinator did not answer (${exc.message})`, null);
  }
  if (resp.status === 401) {
    window.location.assign("/login");
    throw new ApiError(401, "not logged in", null);
  }
  let body = null;
  const text = await resp.text();
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = { detail: text.slice(0, 500) };
    }
  }
  if (!resp.ok) {
    const msgs = errorMessages(resp.status, body, `${resp.status} ${resp.statusText}`);
    throw new ApiError(resp.status, msgs.join("; "), body);
  }
  return body;
}

function showError(el, messages, title) {
  if (!el) return;
  el.replaceChildren();
  const list = Array.isArray(messages) ? messages : [messages];
  if (title) el.append(h("div", { class: "title", text: title }));
  if (list.length === 1 && !title) el.append(list[0]);
  else el.append(h("ul", {}, list.map((m) => h("li", { text: m }))));
  show(el, true);
}

function stamp(el) {
  if (el) el.textContent = `updated ${new Date().toLocaleTimeString(undefined, { hour12: false })}`;
}

// --- parties ----------------------------------------------------------------------------------
function yesNo(value, yes = "yes", no = "no") {
  if (value === null || value === undefined) return h("span", { class: "muted", text: "—" });
  return h("span", { class: `badge ${value ? "ok" : "bad"}`, text: value ? yes : no });
}

/** This party's own certificate: days to expiry (warn under 30, bad when expired). */
function certDays(p) {
  const days = p.cert_days_left;
  if (days === null || days === undefined) return null;
  const state = days < 0 ? "bad" : days < 30 ? "warn" : "ok";
  const text = days < 0 ? "certificate expired" : `certificate: ${days} days left`;
  return h("div", { class: `cert-days small ${state}`, dataset: { days: String(days) }, text });
}

/** The links this party's node checked to its peers' probes: party → peer, ok or what to do. */
function linkList(p) {
  const links = Array.isArray(p.links) ? p.links : [];
  if (!links.length) return h("span", { class: "muted small", text: "—" });
  return h(
    "ul",
    { class: "checks links" },
    links.map((l) => {
      const state = !l.ok ? "failed" : l.warn ? "warn" : "ok";
      const days =
        l.days_left === null || l.days_left === undefined
          ? ""
          : ` · ${l.peer_cn || l.peer}'s certificate: ${l.days_left} days`;
      return h(
        "li",
        { class: state, dataset: { peer: l.peer, outcome: l.outcome, ok: String(!!l.ok) } },
        h("span", { class: "mark", text: l.ok ? (l.warn ? "!" : "✓") : "✗" }),
        h("span", { class: "name", text: `${l.party} → ${l.peer}${days}` }),
        h("span", { class: "detail", text: l.message }),
      );
    }),
  );
}

function healthList(p) {
  const out = [];
  if (p.health && Array.isArray(p.health.checks)) {
    // link checks have their own column when the node reports them as links
    const linked = new Set((p.links || []).map((l) => `link ${l.peer}`));
    out.push(
      h(
        "ul",
        { class: "checks" },
        p.health.checks.filter((c) => !linked.has(c.name)).map((c) => {
          const state = !c.ok ? "failed" : c.warn ? "warn" : "ok";
          return h(
            "li",
            { class: state, dataset: { check: c.name, ok: String(!!c.ok) } },
            h("span", { class: "mark", text: c.ok ? (c.warn ? "!" : "✓") : "✗" }),
            h("span", { class: "name", text: `${c.name}:` }),
            h("span", { class: "detail", text: c.detail || (c.ok ? "ok" : "failed") }),
          );
        }),
      ),
    );
  }
  if (p.error) out.push(h("div", { class: "field-error", text: p.error }));
  if (!out.length) out.push(h("span", { class: "muted", text: "—" }));
  return out;
}

async function initParties() {
  const tbody = $("#parties-table tbody");
  const btn = $("#refresh-parties");
  const errBox = $("#parties-error");

  async function load() {
    btn.disabled = true;
    btn.textContent = "Asking the nodes…";
    try {
      const parties = await api("/api/v1/parties");
      show(errBox, false);
      tbody.replaceChildren(
        ...parties.map((p) =>
          h(
            "tr",
            { id: `party-row-${p.name}`, dataset: { party: p.name, testid: "party-row" } },
            h(
              "td",
              {},
              h("strong", { text: p.name }),
              p.description ? h("div", { class: "muted small", text: p.description }) : null,
              h("div", { class: "muted small", text: `slots: ${p.slots}` }),
              certDays(p),
            ),
            h(
              "td",
              { class: "small" },
              h("code", { text: p.broker }),
              h("div", { class: "muted", text: `fed ${p.fed_host} · spu ${p.spu_host}` }),
            ),
            h("td", { class: "reachable" }, yesNo(p.reachable, "reachable", "unreachable")),
            h("td", { class: "worker" }, yesNo(p.worker_alive, "alive", "no heartbeat")),
            h("td", { class: "links" }, linkList(p)),
            h("td", { class: "health" }, healthList(p)),
          ),
        ),
      );
      if (!parties.length) {
        tbody.replaceChildren(
          h("tr", {}, h("td", { colspan: 6, class: "empty", text: "The registry is empty." })),
        );
      }
      stamp($("#parties-updated"));
    } catch (exc) {
      showError(errBox, exc.message);
    } finally {
      btn.disabled = false;
      btn.textContent = "Refresh";
    }
  }

  btn.addEventListener("click", load);
  await load();
}

// --- new job: what every kind's form shares ---------------------------------------------------
/** POST a job of `kind`; on success go to its page, else show why (422: "field: message"). */
async function submitJob(kind, body, { errBox, submit, submitState }) {
  submit.disabled = true;
  submitState.textContent = "Sending the job to the coordinator…";
  try {
    const job = await api(`/api/v1/jobs/${encodeURIComponent(kind)}`, { method: "POST", json: body });
    submitState.textContent = `Job ${job.id} created.`;
    window.location.assign(`/jobs/${encodeURIComponent(job.id)}`);
  } catch (exc) {
    const msgs = exc.body ? errorMessages(exc.status, exc.body) : [exc.message];
    const title =
      exc.status === 422
        ? "The coordinator rejected the request"
        : exc.status === 503
          ? "A party is unreachable; nothing was sent"
          : "The job was not created";
    showError(errBox, msgs, title);
    submitState.textContent = "";
    submit.disabled = false;
  }
}

/** The kinds of job this coordinator launches (each with its request's JSON schema); a tab per
 * kind above the form when there is more than one. */
async function kindTabs(current) {
  const kinds = await api("/api/v1/jobs/kinds");
  const nav = $("#kind-tabs");
  if (nav && kinds.length > 1) {
    nav.replaceChildren(
      ...kinds.map((k) =>
        h("a", {
          href: k.name === "psi" ? "/new" : `/new/${encodeURIComponent(k.name)}`,
          class: k.name === current ? "active" : "",
          title: k.summary || k.name,
          dataset: { kind: k.name },
          text: k.name === "psi" ? "PSI" : k.name,
        }),
      ),
    );
    show(nav, true);
  }
  const here = kinds.find((k) => k.name === current);
  const learns = $("#kind-learns");
  if (learns && here && here.learns) {
    $("span", learns).textContent = here.learns;
    show(learns, true);
  }
  return kinds;
}

// --- new job of any kind: a form drawn from the kind's request schema ---------------------------
/** A schema node with its $ref followed and an optional (anyOf [X, null]) unwrapped to X. */
function schemaNode(root, node) {
  let n = node || {};
  if (n.$ref) {
    const { $ref, ...rest } = n;
    n = { ...((root.$defs || {})[$ref.split("/").pop()] || {}), ...rest };
  }
  if (Array.isArray(n.anyOf)) {
    const alts = n.anyOf.filter((a) => a.type !== "null");
    if (alts.length === 1) {
      const { anyOf, ...rest } = n;
      n = { ...schemaNode(root, alts[0]), ...rest, optional: true };
    }
  }
  return n;
}

/** One field of the form: {el, read()} — read() gives the value to send, or undefined to leave
 * the field out (the coordinator's default then applies). */
function schemaField(name, node, parties) {
  const id = `field-${name}`;
  const attrs = { id, name, dataset: { testid: id } };
  const optional = (raw) => (raw === "" ? undefined : raw);
  if (node["x-widget"] === "parties") {
    const boxes = parties.map((p) =>
      h("label", { class: "checkbox" }, h("input", { type: "checkbox", value: p.name, dataset: { party: p.name } }), p.reachable === false ? `${p.name} (unreachable)` : p.name),
    );
    const el = h("div", { ...attrs, class: "party-picks" }, boxes);
    return { el, read: () => [...el.querySelectorAll("input:checked")].map((b) => b.value) };
  }
  if (node["x-widget"] === "party") {
    const el = h(
      "select",
      attrs,
      h("option", { value: "", text: "— a party —" }),
      parties.map((p) => h("option", { value: p.name, text: p.reachable === false ? `${p.name} (unreachable)` : p.name })),
    );
    return { el, read: () => optional(el.value) };
  }
  if (node["x-widget"] === "ub-cache") return cacheField(attrs, optional);
  if (Array.isArray(node.enum)) {
    const el = h("select", attrs, node.enum.map((v) => h("option", { value: v, text: v, selected: v === node.default })));
    return { el, read: () => el.value };
  }
  if (node.type === "boolean") {
    const el = h("input", { ...attrs, type: "checkbox", checked: node.default === true });
    return { el, read: () => el.checked };
  }
  if (node.type === "integer" || node.type === "number") {
    const el = h("input", { ...attrs, type: "number", min: node.minimum, max: node.maximum, value: node.default, step: node.type === "integer" ? 1 : "any" });
    return { el, read: () => (el.value === "" ? undefined : Number(el.value)) };
  }
  if (node.type === "string" && node.format === "date-time") {
    const el = h("input", { ...attrs, type: "datetime-local" });
    return { el, read: () => (el.value ? new Date(el.value).toISOString() : undefined) };
  }
  if (node.type === "string") {
    const el = h("input", { ...attrs, type: "text", maxlength: node.maxLength, value: node.default });
    return { el, read: () => optional(el.value.trim()) };
  }
  if (node.type === "array" && (node.items || {}).type === "string") {
    const el = h("textarea", { ...attrs, rows: 3, placeholder: "one per line" });
    return { el, read: () => el.value.split("\n").map((x) => x.trim()).filter(Boolean) };
  }
  // anything else (an object, a list of objects): JSON, checked by the coordinator
  const el = h("textarea", { ...attrs, rows: 4, class: "mono" });
  if (node.default !== undefined) el.value = JSON.stringify(node.default, null, 2);
  return {
    el,
    read: () => {
      if (!el.value.trim()) return undefined;
      try {
        return JSON.parse(el.value);
      } catch {
        throw new Error(`${name}: not valid JSON`);
      }
    },
  };
}

/** The unbalanced PSI caches there are (GET /api/v1/caches), as a select and a table; choosing
 * one fills in its server and its client. */
function cacheField(attrs, optional) {
  const select = h("select", attrs, h("option", { value: "", text: "loading the caches…" }));
  const body = h("tbody");
  const table = h(
    "table",
    { id: "cache-list", class: "compact" },
    h("thead", {}, h("tr", {}, ["cache", "server", "table", "keys", "size", "age", "client"].map((t) => h("th", { text: t })))),
    body,
  );
  api("/api/v1/caches")
    .then((caches) => {
      select.replaceChildren(
        h("option", { value: "", text: caches.length ? "— a cache —" : "no cache yet: make one first (ub_psi_cache)" }),
        ...caches.map((c) => h("option", { value: c.cache, dataset: { server: c.server, client: c.client }, text: `${c.cache} (${c.server} → ${c.client})` })),
      );
      body.replaceChildren(
        ...caches.map((c) =>
          h(
            "tr",
            { dataset: { cache: c.cache } },
            [c.cache, c.server, c.table, c.rows ?? "—", fmtBytes((c.server_bytes || 0) + (c.client_bytes || 0)), fmtAge(c.age_s), c.client].map((v) => h("td", { text: String(v) })),
          ),
        ),
      );
    })
    .catch((exc) => select.replaceChildren(h("option", { value: "", text: `caches not loaded: ${exc.message}` })));
  select.addEventListener("change", () => {
    const chosen = select.selectedOptions[0];
    for (const f of ["server", "client"]) {
      const target = document.getElementById(`field-${f}`);
      if (target && chosen && chosen.dataset[f]) target.value = chosen.dataset[f];
    }
  });
  return { el: h("div", {}, select, table), read: () => optional(select.value) };
}

async function initNewJob() {
  const kind = document.body.dataset.kind;
  const errBox = $("#form-error");
  const submit = $("#submit-job");
  const submitState = $("#submit-state");
  let kinds, parties;
  try {
    [kinds, parties] = await Promise.all([kindTabs(kind), api("/api/v1/parties?health=false")]);
  } catch (exc) {
    showError(errBox, exc.message, "Could not load the form");
    return;
  }
  const declared = kinds.find((k) => k.name === kind);
  if (!declared) {
    $("#kind-fields").replaceChildren();
    showError(errBox, `there are: ${kinds.map((k) => k.name).join(", ")}`, `This coordinator has no job kind ${JSON.stringify(kind)}`);
    return;
  }
  const schema = declared.schema;
  $("#kind-summary").textContent = declared.summary || schema.description || "";
  const required = new Set(schema.required || []);
  const names = Object.keys(schema.properties || {});
  // the kind's own fields first, in their declared order; what every job has (deadline) last
  const own = names.filter((n) => !schemaNode(schema, schema.properties[n]).readOnly); // set by the coordinator
  const ordered = [...own.filter((n) => n !== "deadline"), ...own.filter((n) => n === "deadline")];
  const fields = ordered.map((name) => {
    const node = schemaNode(schema, schema.properties[name]);
    const field = schemaField(name, node, parties);
    const label = h("label", { for: `field-${name}` }, node.title || name, required.has(name) ? "" : h("span", { class: "muted", text: " (optional)" }));
    const hint = node.description ? h("div", { class: "hint", text: node.description }) : null;
    return { name, field, block: h("div", { class: "kind-field" }, label, field.el, hint) };
  });
  $("#kind-fields").replaceChildren(...fields.map((f) => f.block));
  submit.disabled = false;

  $("#kind-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    show(errBox, false);
    const body = {};
    const errs = [];
    for (const { name, field } of fields) {
      try {
        const v = field.read();
        if (v !== undefined) body[name] = v;
      } catch (exc) {
        errs.push(exc.message);
      }
    }
    if (errs.length) {
      showError(errBox, errs, "Please fix the form");
      return;
    }
    await submitJob(kind, body, { errBox, submit, submitState });
  });
}

// --- new PSI form -----------------------------------------------------------------------------
function defaultOutputName() {
  const d = new Date();
  const pad = (n) => String(n).padStart(2, "0");
  const ts = `${d.getFullYear()}${pad(d.getMonth() + 1)}${pad(d.getDate())}-${pad(d.getHours())}${pad(d.getMinutes())}${pad(d.getSeconds())}`;
  return `out/psi-${ts}.csv`;
}

const SIDES = ["a", "b", "c", "d", "e", "f", "g", "h"]; // party columns of the PSI form, in order
const FALLBACK_PROTOCOLS = [{ name: "RR22", parties: [2, 2], note: "fastest" }];

/** One party's column of the PSI form: party, dataset, key column(s), output name. */
function partyBlock(side, index, removable, onRemove) {
  const id = (f) => `${f}-${side}`;
  const field = (f, tag, attrs) => h(tag, { id: id(f), name: id(f), "data-testid": id(f), ...attrs });
  const note = (text) => h("span", { class: "muted", text });
  const remove = removable
    ? h("button", {
        type: "button",
        class: "link remove-party",
        id: id("remove"),
        "data-testid": id("remove"),
        title: "remove this party",
        onclick: onRemove,
        text: "✕ remove",
      })
    : null;
  return h(
    "fieldset",
    { class: "panel party-block", id: `party-block-${side}`, dataset: { side } },
    h("legend", { class: "muted small" }, `Party ${index + 1}`, remove),
    h("label", { for: id("party"), text: "Party" }),
    field("party", "select", { required: true }),
    h("div", { class: "field-error", id: `party-${side}-error` }),
    h("label", { for: id("dataset") }, "Dataset ", note("(CSV in the party's data root)")),
    field("dataset", "select", { required: true, disabled: true }),
    h("div", { class: "field-error", id: `dataset-${side}-error` }),
    h("label", { for: id("keys"), text: "Key column(s)" }),
    field("keys", "select", { multiple: true, disabled: true }),
    h("div", { class: "hint", text: "Ctrl/⌘-click to match on several columns (same order at every party)." }),
    h("label", { for: id("output") }, "Output name ", note("(written in this party's data root)")),
    field("output", "input", { type: "text", required: true }),
  );
}

async function initNewPsi() {
  const form = $("#psi-form");
  const errBox = $("#form-error");
  const submit = $("#submit-psi");
  const submitState = $("#submit-state");
  const sides = []; // the columns shown, in order
  const datasets = {}; // the chosen party's datasets, per side
  const loads = {}; // to ignore answers for a party no longer selected
  let parties = [];
  let protocols = FALLBACK_PROTOCOLS;
  const out = defaultOutputName();

  kindTabs("psi")
    .then((kinds) => {
      const psi = kinds.find((k) => k.name === "psi");
      if (psi && psi.facts && psi.facts.protocols) protocols = psi.facts.protocols;
      fillProtocols();
    })
    .catch((exc) => console.warn("no job kinds:", exc.message));

  function chosen(side) {
    return $(`#party-${side}`).value;
  }

  function fillReceiver() {
    const rec = $("#receiver");
    const prev = rec.value;
    const names = [...new Set(sides.map(chosen).filter(Boolean))];
    rec.replaceChildren(...names.map((n) => h("option", { value: n, text: n })));
    if (names.includes(prev)) rec.value = prev;
    rec.disabled = names.length === 0;
  }

  /** The protocols that run with this many parties, the default (first) selected. */
  function fillProtocols() {
    const sel = $("#protocol");
    const prev = sel.value;
    const n = sides.length;
    const fit = protocols.filter((p) => p.parties[0] <= n && n <= p.parties[1]);
    sel.replaceChildren(
      ...fit.map((p) => h("option", { value: p.name, text: p.note ? `${p.name} (${p.note})` : p.name })),
    );
    // the user's pick stays while it runs; otherwise the default for this count (first)
    if (sel.dataset.picked && fit.some((p) => p.name === prev)) sel.value = prev;
    const others = protocols.filter((p) => !fit.includes(p)).map((p) => {
      const [lo, hi] = p.parties;
      return `${p.name}: ${lo === hi ? lo : `${lo}–${hi}`} parties`;
    });
    $("#protocol-hint").textContent = others.length ? `Not for ${n} parties: ${others.join("; ")}.` : "";
    learnsSoon();
  }

  let learnsTicket = 0;
  let learnsTimer = null;
  function learnsSoon() {
    clearTimeout(learnsTimer);
    learnsTimer = setTimeout(showLearns, 150);
  }

  /** What each party learns in the PSI as filled in (the coordinator says it, per protocol
   * and party count), beside the protocol select. */
  async function showLearns() {
    const list = $("#psi-learns-list");
    const ticket = ++learnsTicket;
    const names = sides.map(chosen);
    if (names.some((n) => !n) || new Set(names).size !== names.length) {
      list.replaceChildren(h("li", { class: "muted", text: "choose every party to see what each learns" }));
      return;
    }
    try {
      const said = await api("/api/v1/jobs/psi/learns", { method: "POST", json: body() });
      if (ticket !== learnsTicket) return;
      list.replaceChildren(
        ...Object.entries(said).map(([party, what]) =>
          h("li", { dataset: { party } }, h("strong", { text: party }), `: ${what}`),
        ),
      );
    } catch (exc) {
      if (ticket !== learnsTicket) return;
      list.replaceChildren(h("li", { class: "muted", text: exc.message }));
    }
  }

  function fillKeys(side) {
    const sel = $(`#keys-${side}`);
    const ds = datasets[side].find((d) => d.name === $(`#dataset-${side}`).value);
    const cols = ds ? ds.columns : [];
    sel.replaceChildren(...cols.map((c, i) => h("option", { value: c, text: c, selected: i === 0 })));
    sel.disabled = cols.length === 0;
    sel.size = Math.min(Math.max(cols.length, 3), 8);
  }

  async function loadDatasets(side) {
    const party = chosen(side);
    const sel = $(`#dataset-${side}`);
    const err = $(`#dataset-${side}-error`);
    err.textContent = "";
    datasets[side] = [];
    const ticket = ++loads[side];
    if (!party) {
      sel.replaceChildren(h("option", { value: "", text: "choose a party first" }));
      sel.disabled = true;
      fillKeys(side);
      return;
    }
    sel.replaceChildren(h("option", { value: "", text: `asking ${party} for its datasets…` }));
    sel.disabled = true;
    fillKeys(side);
    try {
      const body = await api(`/api/v1/parties/${encodeURIComponent(party)}/datasets`);
      if (ticket !== loads[side]) return;
      datasets[side] = body.datasets || [];
      if (!datasets[side].length) {
        sel.replaceChildren(h("option", { value: "", text: `no CSV files in ${party}'s data root` }));
      } else {
        sel.replaceChildren(
          h("option", { value: "", text: `choose one of ${datasets[side].length} dataset(s)` }),
          ...datasets[side].map((d) =>
            h("option", {
              value: d.name,
              text: `${d.name} (${fmtBytes(d.size)}, ${d.columns.length} column${d.columns.length === 1 ? "" : "s"})`,
            }),
          ),
        );
        sel.disabled = false;
        if (datasets[side].length === 1) sel.value = datasets[side][0].name;
      }
    } catch (exc) {
      if (ticket !== loads[side]) return;
      sel.replaceChildren(h("option", { value: "", text: "datasets unavailable" }));
      err.textContent = exc.message;
    }
    fillKeys(side);
  }

  function markRepeats() {
    const seen = {};
    for (const side of sides) {
      const name = chosen(side);
      $(`#party-${side}-error`).textContent =
        name && seen[name] ? "choose different parties: this one is chosen twice" : "";
      if (name) seen[name] = true;
    }
  }

  function onPartyChange(side) {
    markRepeats();
    fillReceiver();
    learnsSoon();
    loadDatasets(side);
  }

  /** A party column, its party the first registered one not chosen yet. */
  function addSide() {
    const side = SIDES.find((s) => !sides.includes(s));
    if (!side) return;
    sides.push(side);
    datasets[side] = [];
    loads[side] = loads[side] || 0; // never reset: an answer for a removed column stays stale
    const block = partyBlock(side, sides.length - 1, sides.length > 2, () => removeSide(side));
    $("#party-blocks").append(block);
    const sel = $(`#party-${side}`);
    sel.replaceChildren(
      h("option", { value: "", text: "choose a party" }),
      ...parties.map((p) =>
        h("option", { value: p.name, text: p.reachable === false ? `${p.name} (unreachable)` : p.name }),
      ),
    );
    const taken = new Set(sides.map(chosen));
    const free = parties.find((p) => !taken.has(p.name));
    if (free) sel.value = free.name;
    $(`#output-${side}`).value = out;
    sel.addEventListener("change", () => onPartyChange(side));
    $(`#dataset-${side}`).addEventListener("change", () => fillKeys(side));
    sidesChanged();
    return loadDatasets(side);
  }

  function removeSide(side) {
    if (sides.length <= 2) return;
    sides.splice(sides.indexOf(side), 1);
    loads[side] += 1; // its datasets, if still coming, are for no column
    $(`#party-block-${side}`).remove();
    sidesChanged();
  }

  function sidesChanged() {
    sides.forEach((side, i) => {
      $("legend", $(`#party-block-${side}`)).firstChild.textContent = `Party ${i + 1}`;
    });
    $("#add-party").disabled = sides.length >= Math.min(SIDES.length, Math.max(parties.length, 2));
    $("#party-count").textContent = `${sides.length} parties`;
    markRepeats();
    fillReceiver();
    fillProtocols();
  }

  try {
    parties = await api("/api/v1/parties?health=false");
  } catch (exc) {
    showError(errBox, exc.message, "Could not load the parties");
    return;
  }
  $("#add-party").addEventListener("click", () => addSide());
  await Promise.all([addSide(), addSide()]);
  for (const id of ["#receiver", "#protocol", "#broadcast"]) $(id).addEventListener("change", learnsSoon);
  $("#protocol").addEventListener("change", (ev) => (ev.target.dataset.picked = "1"));

  function clientErrors() {
    const errs = [];
    const names = sides.map(chosen);
    if (names.some((n) => !n)) errs.push(`parties: choose a party in every column (${sides.length})`);
    const twice = names.filter((n, i) => n && names.indexOf(n) !== i);
    if (twice.length) errs.push(`parties: ${twice[0]} is chosen twice; a PSI needs different parties`);
    return errs;
  }

  function body() {
    const parties = {};
    for (const s of sides) {
      parties[chosen(s)] = {
        keys: [...$(`#keys-${s}`).selectedOptions].map((o) => o.value),
        input: $(`#dataset-${s}`).value,
        output: $(`#output-${s}`).value.trim(),
      };
    }
    const b = {
      parties,
      receiver: $("#receiver").value,
      protocol: $("#protocol").value,
      duplicates: $("#duplicates").value,
      broadcast_result: $("#broadcast").checked,
      overwrite: $("#overwrite").checked,
    };
    const deadline = $("#deadline").value;
    if (deadline) b.deadline = new Date(deadline).toISOString();
    return b;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    show(errBox, false);
    const errs = clientErrors();
    if (errs.length) {
      showError(errBox, errs, "Please fix the form");
      return;
    }
    await submitJob("psi", body(), { errBox, submit, submitState });
  });
}

// --- jobs list --------------------------------------------------------------------------------
async function initJobs() {
  const PAGE = 20;
  const params = new URLSearchParams(window.location.search);
  const state = {
    status: params.get("status") || "",
    offset: Math.max(0, parseInt(params.get("offset") || "0", 10) || 0),
    total: 0,
  };
  const filter = $("#status-filter");
  const tbody = $("#jobs-table tbody");
  const errBox = $("#jobs-error");
  const auto = $("#auto-refresh");
  filter.value = state.status;
  let timer = null;
  let busy = false;

  function remember() {
    const q = new URLSearchParams();
    if (state.status) q.set("status", state.status);
    if (state.offset) q.set("offset", String(state.offset));
    const s = q.toString();
    window.history.replaceState(null, "", s ? `/?${s}` : "/");
  }

  function row(j) {
    return h(
      "tr",
      { id: `job-row-${j.id}`, dataset: { job: j.id, testid: "job-row" } },
      h("td", {}, h("a", { href: `/jobs/${encodeURIComponent(j.id)}`, class: "mono", text: j.id })),
      h("td", {}, badge(j.status), j.attempt > 1 ? h("div", { class: "muted small", text: `attempt ${j.attempt}/${j.max_attempts}` }) : null),
      h(
        "td",
        {},
        j.parties.map((p) =>
          h(
            "span",
            { class: "party-status", title: p === j.receiver ? "receiver" : "" },
            p === j.receiver ? h("strong", { text: p }) : p,
            badge(j.party_status[p] || "PENDING"),
          ),
        ),
      ),
      h("td", { class: "small", text: (j.protocol || "").replace(/^PROTOCOL_/, "") }),
      h("td", { class: "small", text: fmtTime(j.created_at) }),
      h("td", { class: "small error-cell", text: j.error || "" }),
    );
  }

  async function load() {
    if (busy) return;
    busy = true;
    const q = new URLSearchParams({ offset: String(state.offset), limit: String(PAGE) });
    if (state.status) q.set("status", state.status);
    try {
      const page = await api(`/api/v1/jobs?${q}`);
      show(errBox, false);
      state.total = page.total;
      if (!page.items.length && state.offset > 0 && page.total > 0) {
        state.offset = Math.max(0, Math.floor((page.total - 1) / PAGE) * PAGE);
        busy = false;
        return load();
      }
      tbody.replaceChildren(
        ...(page.items.length
          ? page.items.map(row)
          : [
              h(
                "tr",
                {},
                h("td", {
                  colspan: 6,
                  class: "empty",
                  text: state.status ? `No ${state.status} jobs.` : "No jobs yet — launch one from New PSI.",
                }),
              ),
            ]),
      );
      const first = page.total ? state.offset + 1 : 0;
      const last = state.offset + page.items.length;
      $("#page-info").textContent = `${first}–${last} of ${page.total}`;
      $("#prev-page").disabled = state.offset === 0;
      $("#next-page").disabled = last >= page.total;
      stamp($("#jobs-updated"));
    } catch (exc) {
      showError(errBox, exc.message);
    } finally {
      busy = false;
    }
  }

  function schedule() {
    clearInterval(timer);
    timer = auto.checked ? setInterval(load, 3000) : null;
  }

  filter.addEventListener("change", () => {
    state.status = filter.value;
    state.offset = 0;
    remember();
    load();
  });
  $("#prev-page").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE);
    remember();
    load();
  });
  $("#next-page").addEventListener("click", () => {
    state.offset += PAGE;
    remember();
    load();
  });
  auto.addEventListener("change", schedule);
  await load();
  schedule();
}

// --- one job ----------------------------------------------------------------------------------
function initJob() {
  const jobId = document.body.dataset.jobId;
  const liveState = $("#live-state");
  let es = null;
  let pollTimer = null;
  let lateTimer = null;
  let current = null;

  function setLive(text, on) {
    liveState.textContent = text;
    liveState.classList.toggle("on", !!on);
  }

  function attempts(job) {
    const order = [];
    for (const t of job.tasks || []) if (!order.includes(t.execution_id)) order.push(t.execution_id);
    return order;
  }

  function psiFacts(job) {
    return [
      ["Protocol", (job.protocol || "").replace(/^PROTOCOL_/, "")],
      ["Receiver", job.receiver],
      ["Repeated keys", (job.request && job.request.duplicates) || "distinct"],
    ];
  }

  /** Another kind's request, field by field, as it was accepted (deadline shown below). */
  function requestFacts(request) {
    return Object.entries(request)
      .filter(([k]) => k !== "deadline")
      .map(([k, v]) => [k, Array.isArray(v) ? v.join(", ") : typeof v === "object" && v !== null ? JSON.stringify(v) : String(v)]);
  }

  function renderFacts(job) {
    const dl = $("#job-facts");
    const request = job.request || {};
    const facts = [["Kind", job.kind], ...(job.kind === "psi" ? psiFacts(job) : requestFacts(request))];
    facts.push(
      ["Attempt", `${job.attempt} of ${job.max_attempts}`],
      ["Execution id", job.execution_id || "—"],
      ["Created", fmtTime(job.created_at)],
      ["Dispatched", fmtTime(job.dispatched_at) || "—"],
      ["Finished", fmtTime(job.finished_at) || "—"],
    );
    if (job.deadline) facts.push(["Deadline", fmtTime(job.deadline)]);
    if (job.kind === "psi") {
      for (const [p, spec] of Object.entries(request.parties || {})) {
        facts.push([`${p} input`, `${spec.input} on [${(spec.keys || []).join(", ")}] → ${spec.output}`]);
      }
    }
    dl.replaceChildren(...facts.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v ?? "" })]));
  }

  function renderCards(job) {
    const wrap = $("#party-cards");
    const tasks = (job.tasks || []).filter((t) => t.execution_id === job.execution_id);
    wrap.replaceChildren(
      ...job.parties.map((p) => {
        const t = tasks.find((x) => x.party === p);
        const status = job.party_status[p] || (t && t.status) || "PENDING";
        let progress = t && t.progress !== null && t.progress !== undefined ? Number(t.progress) : 0;
        if (status === "SUCCESS") progress = 1;
        const pct = Math.round(Math.max(0, Math.min(1, progress)) * 100);
        const bar = h("div", { class: "progress", role: "progressbar", "aria-valuenow": pct, "aria-valuemin": 0, "aria-valuemax": 100 }, h("div", {}));
        bar.firstChild.style.width = `${pct}%`;
        if (status === "SUCCESS") bar.classList.add("done");
        if (status === "FAILURE" || status === "CANCELLED") bar.classList.add("failed");
        const err = t && t.error ? `${t.error.type ? `${t.error.type}: ` : ""}${t.error.message || JSON.stringify(t.error)}` : "";
        return h(
          "div",
          {
            class: `panel party-card${status === "FAILURE" ? " failed" : ""}`,
            id: `party-${p}`,
            dataset: { party: p, status, testid: "party-card" },
          },
          h("h3", {}, h("span", {}, p, p === job.receiver ? h("span", { class: "muted small", text: " · receiver" }) : null), badge(status)),
          h("div", { class: "small" }, h("span", { class: "muted", text: "stage " }), h("span", { class: "stage", text: (t && t.stage) || "—" })),
          bar,
          h("div", { class: "muted small", text: `${pct}%${t && t.started_at ? ` · started ${fmtTime(t.started_at, false)}` : ""}${t && t.finished_at ? ` · finished ${fmtTime(t.finished_at, false)}` : ""}` }),
          err ? h("div", { class: "field-error", text: err }) : null,
          t && t.error ? detailsFold(t.error.details) : null,
        );
      }),
    );
  }

  /** The trace behind an error, folded: one click away, never the headline. */
  function detailsFold(details) {
    if (!details) return null;
    return h(
      "details",
      { class: "error-details", dataset: { testid: "error-details" } },
      h("summary", { text: "details (trace and job log)" }),
      h("pre", { text: details }),
    );
  }

  function timelineRow(e, order) {
    const idx = order.indexOf(e.execution_id);
    const prog = e.data && e.data.progress !== null && e.data.progress !== undefined ? `${Math.round(e.data.progress * 100)}%` : "";
    const err = e.data && e.data.error ? e.data.error.message || "" : "";
    return h(
      "tr",
      { dataset: { party: e.party, status: e.status } },
      h("td", { class: "small mono", text: fmtTime(e.timestamp, false) }),
      h("td", { text: e.party }),
      h("td", { class: "small", text: idx >= 0 ? String(idx + 1) : "" }),
      h("td", {}, badge(e.status)),
      h("td", { class: "small" }, e.stage || "", err ? h("div", { class: "field-error", text: err }) : null),
      h("td", { class: "small", text: prog }),
    );
  }

  /** The detail carries the newest events; older ones are fetched a page at a time on demand
   * (into their own rows, which the live updates leave alone). */
  let earlierLoaded = 0;

  function renderTimelineMore(job) {
    const shown = (job.timeline || []).length + earlierLoaded;
    const hidden = Math.max(0, (job.timeline_total || 0) - shown);
    const more = $("#timeline-more");
    show(more, hidden > 0);
    $("#timeline-more-text").textContent = `${hidden} earlier event${hidden === 1 ? "" : "s"} not shown.`;
  }

  async function loadEarlier() {
    const job = current;
    if (!job) return;
    const shown = (job.timeline || []).length + earlierLoaded;
    const end = Math.max(0, (job.timeline_total || 0) - shown);
    const offset = Math.max(0, end - 200);
    const page = await api(`/api/v1/jobs/${encodeURIComponent(jobId)}/timeline?offset=${offset}&limit=${end - offset}`);
    const order = attempts(job);
    $("#timeline-earlier").prepend(...page.items.map((e) => timelineRow(e, order)));
    earlierLoaded += page.items.length;
    renderTimelineMore(job);
  }

  function renderTimeline(job) {
    const tbody = $("#timeline tbody.newest");
    const order = attempts(job);
    const events = job.timeline || [];
    renderTimelineMore(job);
    if (!events.length) {
      tbody.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "empty", text: "No events yet." })));
      return;
    }
    tbody.replaceChildren(...events.map((e) => timelineRow(e, order)));
  }

  function renderResult(job) {
    const box = $("#job-result");
    const res = job.result;
    if (job.status !== "SUCCEEDED" || !res) {
      show(box, false);
      return;
    }
    // the intersection size is PSI's headline; another kind's result shows its parties only
    const psiLike = res.receiver !== null && res.receiver !== undefined;
    show($("#result-headline"), psiLike);
    $("#intersection-count").textContent = res.intersection_count ?? "—";
    $("#result-receiver").textContent = res.receiver || job.receiver || "";
    const started = parseTime(job.dispatched_at);
    const finished = parseTime(job.finished_at);
    $("#result-duration").textContent = started && finished ? ` · ${fmtSeconds((finished - started) / 1000)} end to end` : "";
    // metrics are recorded just after the end: "…" while they may still come, "—" after
    const pending = !finished || Date.now() - finished < 40000 ? "…" : "—";
    const rows = Object.entries(res.parties || {}).map(([p, r]) => {
      const m = r.performance_metrics || {};
      return h(
        "tr",
        { dataset: { party: p } },
        h("td", { text: p }),
        h("td", { class: "mono small output-path", text: r.output_path || "— (not written here)" }),
        h("td", { class: "small", text: fmtSeconds(m.algorithm_s) || pending }),
        h("td", { class: "small", text: fmtSeconds(m.total_s) || pending }),
      );
    });
    $("#result-parties tbody").replaceChildren(...rows);
    show(box, true);
  }

  function renderError(job) {
    const box = $("#job-error");
    const failed = FINAL.has(job.status) && job.status !== "SUCCEEDED";
    const retrying = !FINAL.has(job.status) && job.error;
    if (!job.error || !(failed || retrying)) {
      show(box, false);
      return;
    }
    box.classList.toggle("error", !!failed);
    box.classList.toggle("info", !failed);
    box.querySelector(".title").firstChild.textContent = failed
      ? job.status === "TIMED_OUT"
        ? "Timed out"
        : job.status === "CANCELLED"
          ? "Cancelled"
          : "Failed"
      : job.waiting_for
        ? "Waiting"
        : "Retrying";
    $("#failed-party").textContent = job.failed_party || "";
    show($("#failed-party-wrap"), !!job.failed_party);
    $("#job-error-text").textContent = job.error;
    const culprit = (job.tasks || []).filter((t) => t.party === job.failed_party && t.error).pop();
    $("#job-error-details").replaceChildren(...[detailsFold(culprit && culprit.error.details)].filter(Boolean));
    show(box, true);
  }

  function render(job) {
    current = job;
    document.title = `Job ${job.id} · ${job.status} · Partyline coordinator`;
    const st = $("#job-status");
    st.textContent = job.status;
    st.className = `badge s-${job.status}`;
    st.dataset.status = job.status;
    show($("#load-error"), false);
    show($("#cancel-btn"), !FINAL.has(job.status));
    show($("#retry-btn"), RETRYABLE.has(job.status));
    renderError(job);
    renderResult(job);
    renderCards(job);
    renderFacts(job);
    renderTimeline(job);
    if (isDone(job)) {
      setLive(job.status.toLowerCase(), false);
      stopLive();
      pollLate(job);
    } else if (FINAL.has(job.status) && es) {
      // the stream ends at the final state; the result summary follows in a moment
      startPolling();
    }
  }

  /** Final, and for a success: the result is in (it may arrive just after the status). */
  function isDone(job) {
    return FINAL.has(job.status) && (job.status !== "SUCCEEDED" || !!job.result);
  }

  /** Performance metrics are recorded just after the job ends: look a few more times. */
  function pollLate(job) {
    const complete = (j) =>
      (j.tasks || []).filter((t) => t.execution_id === j.execution_id).every((t) => t.performance_metrics);
    if (lateTimer || complete(job)) return;
    let tries = 0;
    lateTimer = setInterval(async () => {
      tries += 1;
      try {
        const j = await api(`/api/v1/jobs/${encodeURIComponent(jobId)}`);
        if (!FINAL.has(j.status)) {
          clearInterval(lateTimer);
          lateTimer = null;
          render(j);
          startLive();
          return;
        }
        current = j;
        renderResult(j);
        renderCards(j);
        if (complete(j) || tries >= 15) {
          clearInterval(lateTimer);
          lateTimer = null;
        }
      } catch {
        /* keep what is shown */
      }
    }, 2000);
  }

  function stopLive() {
    if (es) {
      es.close();
      es = null;
    }
    clearInterval(pollTimer);
    pollTimer = null;
  }

  async function pollOnce() {
    try {
      const job = await api(`/api/v1/jobs/${encodeURIComponent(jobId)}`);
      render(job);
    } catch (exc) {
      if (exc.status === 404) {
        stopLive();
        showError($("#load-error"), exc.message);
        setLive("not found", false);
      } else {
        setLive(`polling (last error: ${exc.message})`, false);
      }
    }
  }

  function startPolling() {
    if (es) {
      es.close();
      es = null;
    }
    if (pollTimer) return;
    setLive("polling every 2 s", true);
    pollTimer = setInterval(pollOnce, 2000);
    pollOnce();
  }

  function startLive() {
    stopLive();
    current = null;
    if (!("EventSource" in window)) {
      startPolling();
      return;
    }
    setLive("connecting", false);
    es = new EventSource(`/api/v1/jobs/${encodeURIComponent(jobId)}/events`);
    es.addEventListener("open", () => setLive("live", true));
    es.addEventListener("job", (ev) => {
      setLive("live", true);
      try {
        render(JSON.parse(ev.data));
      } catch (exc) {
        console.error("bad job event", exc);
      }
    });
    es.addEventListener("error", () => {
      // The stream ends when the job is final (render() closes it first); any other end or a
      // failure to connect (404, network): fall back to polling, which also reports a 404.
      if (es && !(current && isDone(current))) startPolling();
    });
  }

  async function action(kind) {
    const btn = kind === "cancel" ? $("#cancel-btn") : $("#retry-btn");
    const stateEl = $("#action-state");
    if (kind === "cancel" && !window.confirm(`Cancel job ${jobId} on every party?`)) return;
    btn.disabled = true;
    stateEl.textContent = kind === "cancel" ? "Cancelling…" : "Retrying…";
    try {
      const job = await api(`/api/v1/jobs/${encodeURIComponent(jobId)}/${kind}`, { method: "POST" });
      stateEl.textContent = kind === "cancel" ? "Cancel sent to every party." : `Retry queued (attempt ${job.attempt}).`;
      if (lateTimer) {
        clearInterval(lateTimer);
        lateTimer = null;
      }
      startLive();
    } catch (exc) {
      stateEl.textContent = "";
      showError($("#load-error"), exc.message, kind === "cancel" ? "Cancel failed" : "Retry failed");
    } finally {
      btn.disabled = false;
    }
  }

  $("#cancel-btn").addEventListener("click", () => action("cancel"));
  $("#retry-btn").addEventListener("click", () => action("retry"));
  $("#timeline-more-btn").addEventListener("click", () => loadEarlier().catch((exc) => showError($("#load-error"), exc.message, "Could not load earlier events")));
  startLive();
}

// --- boot -------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  const init = { parties: initParties, new: initNewPsi, "new-kind": initNewJob, jobs: initJobs, job: initJob }[page];
  if (init) {
    Promise.resolve(init()).catch((exc) => console.error(exc));
  }
});
