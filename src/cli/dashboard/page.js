// relink dashboard. Everything shown is set with textContent (never innerHTML), so names,
// messages and Events from the cluster cannot inject markup. The state comes from a long poll
// of /api/state, which answers when the watches saw a change.
"use strict";

const TOKEN = document.querySelector('meta[name="relink-token"]').content;
const $ = (id) => document.getElementById(id);
const rows = new Map(); // id -> { tr, details, el: {...}, data, open }
const ICONS = { facebook: "f", instagram: "IG", google: "G", microsoft: "MS", linkedin: "in",
  x: "X", slack: "S", tiktok: "TT", oauth2: "O2" };
const STATE_WORDS = { Ready: "Ready", Expiring: "Expiring", Degraded: "Degraded",
  Broken: "Broken", Suspended: "Suspended", Unknown: "Unknown" };
let last = null; // the last snapshot

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

function api(path, options) {
  const o = options || {};
  o.headers = Object.assign({ "X-Relink-Token": TOKEN }, o.headers || {});
  o.cache = "no-store";
  o.credentials = "same-origin";
  return fetch(path, o);
}

// "3m ago", "in 2d", from an RFC 3339 time; the browser runs on the same computer.
function human(seconds) {
  const s = Math.abs(Math.round(seconds));
  if (s < 120) return s + "s";
  const m = Math.floor(s / 60);
  if (m < 120) return m + "m";
  const h = Math.floor(m / 60);
  if (h < 48) return h + "h";
  return Math.floor(h / 24) + "d";
}
function relative(iso) {
  if (!iso) return "–";
  const d = (Date.parse(iso) - Date.now()) / 1000;
  return d > 0 ? "in " + human(d) : human(d) + " ago";
}
function setTime(node, iso, never) {
  node.dataset.time = iso || "";
  node.textContent = iso ? relative(iso) : never;
  node.title = iso || "";
}

function newRow(c) {
  const tr = el("tr", "conn");
  tr.dataset.id = c.id;
  const cell = (cls, label) => { const td = el("td", cls); td.dataset.label = label; tr.append(td); return td; };
  const status = cell("c-status", "Status");
  const mark = el("span", "mark");
  const dot = el("span", "dot");
  dot.setAttribute("aria-hidden", "true");
  const state = el("span", "state");
  mark.append(dot, state);
  const reason = el("div", "reason");
  const message = el("div", "message");
  const scopes = el("div", "scopes");
  const hint = el("div", "hint");
  status.append(mark, reason, message, scopes, hint);
  const channel = cell("c-channel", "Channel");
  const name = el("span", "name");
  const ns = el("span", "small");
  channel.append(name, ns);
  const provider = cell("c-provider", "Provider");
  const icon = el("span", "icon");
  icon.setAttribute("aria-hidden", "true");
  const plabel = el("span", "plabel");
  const pref = el("span", "small");
  provider.append(icon, plabel, pref);
  const account = cell("c-account", "Account");
  const aname = el("span", "aname");
  const aid = el("span", "small");
  account.append(aname, aid);
  const expiry = cell("c-expiry", "Expires");
  const lastcheck = cell("c-lastcheck", "Last check");
  const actions = cell("actions c-actions", "Actions");
  const reconnect = el("a", "btn reconnect", "Reconnect");
  reconnect.target = "_blank";
  reconnect.rel = "noopener noreferrer";
  const check = el("button", "check", "Check now");
  check.type = "button";
  const more = el("button", "more", "Details");
  more.type = "button";
  more.setAttribute("aria-expanded", "false");
  const why = el("span", "why");
  const note = el("div", "note");
  note.setAttribute("role", "status");
  actions.append(reconnect, check, more, why, note);

  const details = el("tr", "details");
  details.hidden = true;
  const dtd = el("td");
  dtd.colSpan = 7;
  details.append(dtd);
  const detailsId = "details-" + Math.random().toString(36).slice(2);
  dtd.id = detailsId;
  more.setAttribute("aria-controls", detailsId);

  const row = { tr, details, data: c, open: false, requested: null,
    el: { state, reason, message, scopes, hint, name, ns, icon, plabel, pref, aname, aid,
      expiry, lastcheck, reconnect, check, more, why, note, dtd } };
  check.addEventListener("click", () => requestCheck(row));
  more.addEventListener("click", () => {
    row.open = !row.open;
    details.hidden = !row.open;
    more.setAttribute("aria-expanded", String(row.open));
    more.textContent = row.open ? "Hide details" : "Details";
    if (row.open) renderDetails(row, true);
  });
  return row;
}

function updateRow(row, c) {
  const prev = row.data;
  row.data = c;
  const e = row.el;
  row.tr.className = "conn mark-" + c.mark;
  row.tr.dataset.state = c.state;
  e.state.textContent = STATE_WORDS[c.state] || c.state;
  e.reason.textContent = c.reasonText;
  e.reason.title = c.reason;
  e.message.textContent = c.message;
  e.scopes.textContent = c.missingScopes.length ? "Missing permissions: " + c.missingScopes.join(", ") : "";
  e.hint.textContent = c.hint;
  e.name.textContent = c.name;
  e.ns.textContent = c.namespace;
  e.icon.textContent = ICONS[c.providerType] || c.providerLabel.slice(0, 2);
  e.icon.className = "icon prov-" + (c.providerType || "other");
  e.plabel.textContent = c.providerLabel;
  e.pref.textContent = c.providerRef;
  e.aname.textContent = c.accountName || "–";
  e.aid.textContent = c.accountId ? "ID " + c.accountId : "";
  setTime(e.expiry, c.expiresAt, "no expiry");
  setTime(e.lastcheck, c.lastCheck, "not yet");
  if (c.reconnect) {
    e.reconnect.href = c.reconnect;
    e.reconnect.hidden = false;
    e.reconnect.setAttribute("aria-label", "Reconnect " + c.name + " (opens the provider's login page)");
  } else {
    e.reconnect.removeAttribute("href");
    e.reconnect.hidden = true;
  }
  e.check.setAttribute("aria-label", "Check " + c.name + " now");
  const busy = row.requested !== null;
  e.check.disabled = !c.check.allowed || busy;
  e.why.textContent = c.check.allowed ? "" : c.check.why || "";
  if (!c.check.allowed) e.check.title = c.check.why || "";
  if (busy && (c.lastCheck !== row.requested.lastCheck || (!c.checkPending && prev && prev.checkPending))) {
    row.requested = null;
    e.check.disabled = !c.check.allowed;
    e.check.textContent = "Check now";
    e.note.className = "note";
    e.note.textContent = "Checked: see LAST CHECK.";
  }
  if (row.open && (!prev || prev.lastCheck !== c.lastCheck || prev.reason !== c.reason)) renderDetails(row, true);
  else if (row.open) renderDetails(row, false);
}

async function requestCheck(row) {
  const c = row.data;
  const e = row.el;
  row.requested = { lastCheck: c.lastCheck };
  e.check.disabled = true;
  e.check.textContent = "Checking…";
  e.note.className = "note";
  e.note.textContent = "Check requested; waiting for relink.";
  try {
    const r = await api("/api/check", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ namespace: c.namespace, name: c.name }),
    });
    if (!r.ok) {
      let msg = "HTTP " + r.status;
      try { msg = (await r.json()).error || msg; } catch (_) { /* not JSON */ }
      throw new Error(msg);
    }
    // Not handled within a minute: say so instead of spinning forever.
    const mine = row.requested;
    setTimeout(() => {
      if (row.requested !== mine) return;
      row.requested = null;
      e.check.textContent = "Check now";
      e.check.disabled = !row.data.check.allowed;
      e.note.className = "note error";
      e.note.textContent = "relink has not checked it within a minute: is the operator running and watching this namespace?";
    }, 60000);
  } catch (err) {
    row.requested = null;
    e.check.textContent = "Check now";
    e.check.disabled = !row.data.check.allowed;
    e.note.className = "note error";
    e.note.textContent = "Could not request a check: " + err.message;
  }
}

// The details row: times, then the Events (fetched when opened or when the row changed).
function renderDetails(row, refetch) {
  const c = row.data;
  const td = row.el.dtd;
  let facts = td.querySelector("dl.facts");
  if (!facts) {
    facts = el("dl", "facts");
    const evTitle = el("strong", null, "Recent Events");
    const list = el("ul", "events");
    td.append(facts, evTitle, list);
  }
  facts.replaceChildren();
  const fact = (k, v, title) => { const dd = el("dd", null, v); if (title) dd.title = title; facts.append(el("dt", null, k), dd); };
  fact("Next check", relative(c.nextCheck), c.nextCheck);
  fact("Last valid", relative(c.lastValid), c.lastValid);
  fact("Last refresh", c.lastRefresh ? relative(c.lastRefresh) : "never", c.lastRefresh);
  fact("Last re-authorization", row.reauth ? relative(row.reauth.time) + " — " + row.reauth.note : "none in the recent Events", row.reauth && row.reauth.time);
  if (refetch) loadEvents(row);
}

async function loadEvents(row) {
  const c = row.data;
  const list = row.el.dtd.querySelector("ul.events");
  try {
    const q = "?namespace=" + encodeURIComponent(c.namespace) + "&name=" + encodeURIComponent(c.name);
    const r = await api("/api/events" + q);
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || "HTTP " + r.status);
    list.replaceChildren();
    if (!body.events.length) list.append(el("li", "muted", "No Events (Kubernetes keeps them about an hour)."));
    row.reauth = null;
    for (const ev of body.events) {
      if (!row.reauth && ev.reason === "Reauthorized") row.reauth = ev;
      const li = el("li", "ev-" + ev.type);
      li.append(el("span", "ev-reason", ev.reason), el("span", "muted", relative(ev.time) + (ev.count > 1 ? " (×" + ev.count + ")" : "") + " "), el("span", null, ev.note));
      list.append(li);
    }
    renderDetails(row, false);
  } catch (err) {
    list.replaceChildren(el("li", "error", "Cannot list Events: " + err.message));
  }
}

function matches(c) {
  const status = $("f-status").value;
  const provider = $("f-provider").value;
  const q = $("f-search").value.trim().toLowerCase();
  if (status && c.mark !== status) return false;
  if (provider && c.providerLabel !== provider) return false;
  if (!q) return true;
  return [c.name, c.namespace, c.accountName, c.accountId, c.providerLabel, c.providerRef, c.reason, c.reasonText, c.state, c.message]
    .some((s) => s && s.toLowerCase().includes(q));
}

function applyFilters() {
  for (const b of document.querySelectorAll("button.count")) {
    b.setAttribute("aria-pressed", String(b.dataset.filter === $("f-status").value));
  }
  if (!last) return;
  let shown = 0;
  for (const c of last.connections) {
    const row = rows.get(c.id);
    const ok = matches(c);
    row.tr.hidden = !ok;
    row.details.hidden = !ok || !row.open;
    if (ok) shown += 1;
  }
  $("shown").textContent = last.connections.length ? "(" + shown + " of " + last.connections.length + " shown)" : "";
  const empty = $("empty");
  empty.hidden = shown > 0 || !last.api.synced;
  empty.textContent = last.connections.length
    ? "No connection matches the filters."
    : "No ChannelConnections in " + last.scope + (last.selector ? " matching " + last.selector : "") + ".";
}

function renderProviders(list) {
  const sel = $("f-provider");
  const want = [...new Set(list.map((c) => c.providerLabel))].sort();
  const have = [...sel.options].slice(1).map((o) => o.value);
  if (want.join("\n") === have.join("\n")) return;
  const keep = sel.value;
  sel.replaceChildren(el("option", null, "All"));
  sel.options[0].value = "";
  for (const p of want) { const o = el("option", null, p); o.value = p; sel.append(o); }
  sel.value = want.includes(keep) ? keep : "";
}

function renderGroups(s) {
  const box = $("groups");
  box.replaceChildren();
  $("groups-error").hidden = !s.groupsError;
  $("groups-error").textContent = s.groupsError ? "Cannot watch ChannelGroups: " + s.groupsError : "";
  $("groups-empty").hidden = s.groups.length > 0 || !!s.groupsError;
  for (const g of s.groups) {
    const card = el("article", "group mark-" + g.mark);
    card.dataset.id = g.id;
    const h = el("h3");
    const dot = el("span", "dot");
    dot.setAttribute("aria-hidden", "true");
    h.append(dot, el("span", "name", g.name));
    card.append(h, el("span", "small", g.namespace), el("p", "gstate", g.health + " · " + g.ready + " ready"));
    const ul = el("ul");
    for (const m of g.members) {
      const li = el("li", "mark-" + m.mark);
      const d = el("span", "dot");
      d.setAttribute("aria-hidden", "true");
      li.append(d, el("span", null, m.name + " "), el("span", "muted", m.reason));
      ul.append(li);
    }
    card.append(ul);
    box.append(card);
  }
}

function render(s) {
  last = s;
  $("scope").textContent = s.scope + (s.selector ? " · connections matching " + s.selector : "");
  $("count-ready").textContent = s.counts.ready;
  $("count-expiring").textContent = s.counts.expiring;
  $("count-broken").textContent = s.counts.broken;
  $("count-other").textContent = s.counts.other;
  document.title = (s.counts.broken ? "(" + s.counts.broken + " broken) " : "") + "relink dashboard";
  const tbody = $("rows");
  const seen = new Set();
  let at = 0;
  for (const c of s.connections) {
    seen.add(c.id);
    let row = rows.get(c.id);
    if (!row) { row = newRow(c); rows.set(c.id, row); }
    updateRow(row, c);
    // Move only rows out of place, so focus stays on the button a person is using.
    if (tbody.children[at] !== row.tr) tbody.insertBefore(row.tr, tbody.children[at] || null);
    if (tbody.children[at + 1] !== row.details) tbody.insertBefore(row.details, tbody.children[at + 1] || null);
    at += 2;
  }
  for (const [id, row] of rows) {
    if (!seen.has(id)) { row.tr.remove(); row.details.remove(); rows.delete(id); }
  }
  renderProviders(s.connections);
  renderGroups(s);
  applyFilters();
  setLive(s.api.error ? "lost" : s.api.synced ? "ok" : "wait",
    s.api.error ? s.api.error + " — showing what was last seen; retrying."
      : s.api.synced ? "Live" : "Loading…");
}

function setLive(kind, text) {
  const live = $("live");
  live.className = "live live-" + kind;
  live.textContent = text;
}

async function poll() {
  for (;;) {
    try {
      const q = last ? "?after=" + last.version : "";
      const r = await api("/api/state" + q);
      if (!r.ok) throw new Error("HTTP " + r.status + ": " + (await r.text()));
      render(await r.json());
    } catch (err) {
      setLive("lost", "Lost the dashboard (is relink dashboard still running?): " + err.message + " — retrying.");
      await new Promise((done) => setTimeout(done, 2000));
    }
  }
}

function tick() {
  for (const node of document.querySelectorAll("[data-time]")) {
    if (node.dataset.time) node.textContent = relative(node.dataset.time);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("filters").addEventListener("submit", (ev) => ev.preventDefault());
  for (const id of ["f-status", "f-provider"]) $(id).addEventListener("change", applyFilters);
  $("f-search").addEventListener("input", applyFilters);
  for (const b of document.querySelectorAll("button.count")) {
    b.addEventListener("click", () => {
      const f = $("f-status");
      f.value = f.value === b.dataset.filter ? "" : b.dataset.filter;
      applyFilters();
    });
  }
  setInterval(tick, 5000);
  poll();
});
