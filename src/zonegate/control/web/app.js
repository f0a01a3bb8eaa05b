// zonegate control dashboard: plain JS, no build step.
//
// Reads GET /v1/state and, beside it, /v1/history, then long-polls /v1/state?since=V
// to follow every new version. Each answer is drawn as it arrives: the version, zones,
// split maps and pools never wait for the history, which is fetched page by page
// (only the entries newer than those shown) and drawn when it comes; GET /v1/zones every 2 s for what the runtimes report (LB health,
// request rate, the version each LB runs, the VIP owner). Every write first asks the API for a dry run (?dry_run=true),
// shows the predicted shares in a confirmation dialog, then writes with the reason
// the operator typed. The token is kept in sessionStorage (this tab only).
"use strict";

const TOKEN_KEY = "zonegate.token";
const POLL_TIMEOUT = 25; // seconds the server holds a long-poll
const REPORTS_EVERY = 2000; // ms between reads of /v1/zones
const PALETTE = ["#2f6fdb", "#e07b13", "#1f9d55", "#b83280", "#6b46c1", "#c53030", "#0f766e"];

const ui = {
  state: null,
  history: [],
  historyLoad: null, // the history fetch in flight: {again, generation}
  historyError: "",
  generation: 0, // bumped when the token changes: older fetches are dropped
  pollAbort: null,
  pending: null, // the write the dialog is confirming
  reports: null, // GET /v1/zones: {polled, zones: {zone: {lb, vip_owner, split_brain, vrrp}}}
};

const $ = (id) => document.getElementById(id);

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "onclick") node.addEventListener("click", value);
    else if (key === "style") node.setAttribute("style", value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
  }
}

async function api(method, path, { body, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    cache: "no-store",
  });
  if (resp.status === 304) return { status: 304, data: null };
  let data = null;
  const text = await resp.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!resp.ok) {
    let detail = data && data.detail !== undefined ? data.detail : resp.statusText;
    if (typeof detail !== "string") detail = JSON.stringify(detail);
    throw new ApiError(resp.status, detail);
  }
  return { status: resp.status, data };
}

function showMessage(text, kind = "error") {
  const box = $("message");
  if (!text) {
    box.hidden = true;
    return;
  }
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = false;
}

function setLive(text, ok) {
  const live = $("live");
  live.textContent = text;
  live.classList.toggle("ok", Boolean(ok));
}

function zoneColor(zone) {
  const zones = Object.keys((ui.state && ui.state.zones) || {}).sort();
  const index = zones.indexOf(zone);
  return PALETTE[(index < 0 ? zones.length : index) % PALETTE.length];
}

function pct(x) {
  return `${(x * 100).toFixed(1)}%`;
}

function fmtTime(unix) {
  return new Date(unix * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

// --- rendering ------------------------------------------------------------------

function render() {
  const state = ui.state;
  if (!state) return;
  $("version").textContent = String(state.version);
  renderZones(state);
  renderSplits(state);
  renderPools(state);
  renderHistory();
}

function adminBadge(state, testid) {
  return el("span", { class: `badge ${state}`, "data-testid": testid, text: state });
}

function adminButtons(kind, path, current, label, testPrefix) {
  const group = el("div", { class: "buttons", role: "group", "aria-label": `${label} admin` });
  for (const action of ["enable", "drain", "disable"]) {
    const target = { enable: "enabled", drain: "drain", disable: "disabled" }[action];
    group.append(
      el("button", {
        type: "button",
        "data-testid": `${testPrefix}-${action}`,
        "aria-label": `${action} ${kind} ${label}`,
        disabled: current === target,
        text: action,
        onclick: () =>
          confirmWrite({
            title: `${action[0].toUpperCase()}${action.slice(1)} ${kind} ${label}`,
            method: "POST",
            path: `${path}/${action}`,
          }),
      }),
    );
  }
  return group;
}

function renderZones(state) {
  const box = $("zones");
  box.replaceChildren();
  for (const [zone, admin] of Object.entries(state.zones)) {
    const cutIn = Object.entries(state.split)
      .filter(([, map]) => map.zones[zone] && map.zones[zone].upper > map.zones[zone].lower)
      .map(([domain]) => domain);
    box.append(
      el(
        "article",
        { class: "card zone", "data-testid": `zone-${zone}`, style: `--zone-color: ${zoneColor(zone)}` },
        el("h3", {}, el("span", { class: "swatch", "aria-hidden": "true" }), zone),
        el("p", {}, "admin: ", adminBadge(admin, `zone-state-${zone}`)),
        zoneHealth(zone, state.version),
        el("p", { class: "small" },
          cutIn.length ? `serves: ${cutIn.join(", ")}` : "serves no split range"),
        adminButtons("zone", `/v1/zones/${encodeURIComponent(zone)}`, admin, zone, `zone-${zone}`),
      ),
    );
  }
}

function zoneHealth(zone, version) {
  const p = (cls, text) => el("p", { class: `small ${cls}`, "data-testid": `zone-health-${zone}`, text });
  const report = ui.reports && ui.reports.zones[zone];
  if (!report) return p("muted", "health: not reported yet");
  const parts = [];
  const lb = report.lb;
  let cls = "";
  if (!lb) {
    parts.push("LB: no lb_admin to poll");
    cls = "muted";
  } else if (!lb.reachable) {
    parts.push(`LB unreachable (${lb.error})`);
    cls = "bad";
  } else {
    parts.push(`LB up: ${lb.healthy}/${lb.total} backends available`);
    if (lb.rate !== null) parts.push(`${lb.rate.toFixed(1)} req/s`);
    if (lb.version !== null) parts.push(lb.version === version ? `runs v${lb.version}` : `runs v${lb.version} (behind)`);
    if (lb.healthy === 0) cls = "bad";
  }
  if (report.split_brain) {
    parts.push("VIP: split brain, several masters");
    cls = "bad";
  } else if (report.vip_owner) {
    parts.push(`VIP owner: ${report.vip_owner}`);
  } else if (report.vrrp.length) {
    parts.push("VIP owner: none");
    cls = "bad";
  }
  return p(cls, parts.join(" · "));
}

function backendHealth(pool, backend) {
  if (!ui.reports) return "not reported";
  for (const report of Object.values(ui.reports.zones)) {
    const word = report.lb && report.lb.backends && report.lb.backends[pool] && report.lb.backends[pool][backend];
    if (word) return word;
  }
  return "not reported";
}

function renderSplits(state) {
  const box = $("splits");
  box.replaceChildren();
  for (const [domain, map] of Object.entries(state.split)) {
    const ranges = Object.entries(map.zones).sort((a, b) => a[1].lower - b[1].lower || a[1].upper - b[1].upper);
    const bar = el("div", {
      class: "bar",
      role: "img",
      "data-testid": `split-${domain}`,
      "aria-label": `${domain}: ` + ranges.map(([z, r]) => `${z} ${pct((r.upper - r.lower) / map.sharding)}`).join(", "),
    });
    for (const [zone, r] of ranges) {
      const share = (r.upper - r.lower) / map.sharding;
      bar.append(
        el(
          "div",
          {
            class: "segment" + (share === 0 ? " empty" : ""),
            "data-testid": `seg-${domain}-${zone}`,
            "data-share": share.toFixed(4),
            title: `${zone} [${r.lower},${r.upper}) → ${r.domain}`,
            style: `width: ${share * 100}%; --zone-color: ${zoneColor(zone)}`,
          },
          el("span", { text: `${zone} ${pct(share)}` }),
        ),
      );
    }
    const legend = el("ul", { class: "legend small" });
    for (const [zone, r] of ranges) {
      legend.append(
        el("li", { style: `--zone-color: ${zoneColor(zone)}` },
          el("span", { class: "swatch", "aria-hidden": "true" }),
          `${zone} [${r.lower},${r.upper}) ${pct((r.upper - r.lower) / map.sharding)} → ${r.domain}`),
      );
    }
    const buttons = el("div", { class: "buttons", role: "group", "aria-label": `${domain} actions` });
    for (const [zone, r] of ranges) {
      buttons.append(
        el("button", {
          type: "button",
          class: "danger",
          "data-testid": `cutover-${domain}-${zone}`,
          "aria-label": `Cut over ${domain} to ${zone}`,
          text: `Cut over to ${zone}`,
          disabled: r.upper - r.lower === map.sharding, // it already has everything
          onclick: () =>
            confirmWrite({
              title: `Cut over ${domain} to ${zone}`,
              method: "POST",
              path: `/v1/cutover/${encodeURIComponent(domain)}`,
              body: { to: zone },
            }),
        }),
      );
    }
    buttons.append(
      el("button", {
        type: "button",
        "data-testid": `restore-${domain}`,
        "aria-label": `Restore ${domain}`,
        text: state.saved_split && state.saved_split[domain] ? "Restore (undo cut-over)" : "Restore file split",
        onclick: () =>
          confirmWrite({
            title: `Restore ${domain}`,
            method: "POST",
            path: `/v1/restore/${encodeURIComponent(domain)}`,
          }),
      }),
    );
    const cutOver = state.saved_split && state.saved_split[domain];
    box.append(
      el(
        "article",
        { class: "split", "data-testid": `domain-${domain}` },
        el("h3", {}, domain, " ",
          el("span", { class: "muted small", text: `sharding ${map.sharding}` }),
          cutOver ? el("span", { class: "badge drain", text: "cut over" }) : null),
        bar,
        legend,
        buttons,
      ),
    );
  }
}

function renderPools(state) {
  const box = $("pools");
  box.replaceChildren();
  const pools = new Map();
  for (const [key, admin] of Object.entries(state.backends)) {
    const slash = key.indexOf("/");
    const pool = key.slice(0, slash);
    const backend = key.slice(slash + 1);
    if (!pools.has(pool)) pools.set(pool, []);
    pools.get(pool).push([backend, admin]);
  }
  for (const [pool, backends] of pools) {
    const rows = el("tbody");
    for (const [backend, admin] of backends) {
      const path = `/v1/pools/${encodeURIComponent(pool)}/backends/${encodeURIComponent(backend)}`;
      rows.append(
        el("tr", { "data-testid": `backend-${pool}-${backend}` },
          el("th", { scope: "row", text: backend }),
          el("td", {}, adminBadge(admin, `backend-state-${pool}-${backend}`)),
          el("td", { class: "small", "data-testid": `backend-health-${pool}-${backend}`, text: backendHealth(pool, backend) }),
          el("td", {}, adminButtons("backend", path, admin, `${pool}/${backend}`, `backend-${pool}-${backend}`)),
        ),
      );
    }
    box.append(
      el("article", { class: "card pool", "data-testid": `pool-${pool}` },
        el("h3", { text: pool }),
        el("table", {},
          el("thead", {}, el("tr", {},
            el("th", { scope: "col", text: "backend" }),
            el("th", { scope: "col", text: "admin" }),
            el("th", { scope: "col", text: "health" }),
            el("th", { scope: "col", text: "actions" }))),
          rows),
      ),
    );
  }
  if (!pools.size) box.append(el("p", { class: "muted", text: "no backends" }));
}

function renderHistory() {
  const box = $("history");
  box.replaceChildren();
  const latest = ui.state ? ui.state.version : 0;
  if (ui.historyError) {
    box.append(el("li", { class: "note error", "data-testid": "history-error", text: ui.historyError }));
  } else if (!ui.history.length) {
    box.append(el("li", { class: "note muted", "data-testid": "history-loading", text: "loading the history…" }));
  }
  for (const entry of [...ui.history].reverse()) {
    const kind = entry.change ? entry.change.kind : "initial";
    box.append(
      el("li", { class: "entry", "data-testid": `history-${entry.version}`, value: String(entry.version) },
        el("div", { class: "entry-head" },
          el("strong", { text: `v${entry.version}` }),
          el("span", { class: "muted", text: fmtTime(entry.at) }),
          el("span", { text: entry.who }),
          el("span", { class: "badge kind", text: kind }),
          entry.why ? el("em", { text: `(${entry.why})` }) : null,
          entry.version !== latest
            ? el("button", {
                type: "button",
                "data-testid": `rollback-${entry.version}`,
                "aria-label": `Roll back to version ${entry.version}`,
                text: `Roll back to v${entry.version}`,
                onclick: () =>
                  confirmWrite({
                    title: `Roll back to version ${entry.version}`,
                    method: "POST",
                    path: "/v1/rollback",
                    body: { to_version: entry.version },
                  }),
              })
            : el("span", { class: "badge enabled", text: "current" }),
        ),
        el("pre", { class: "diff", text: entry.diff.length ? entry.diff.join("\n") : "(no diff)" }),
      ),
    );
  }
}

function sharesTable(dry) {
  const table = el("table", { class: "shares" });
  table.append(
    el("thead", {}, el("tr", {},
      el("th", { scope: "col", text: "domain" }),
      el("th", { scope: "col", text: "zone" }),
      el("th", { scope: "col", text: "before" }),
      el("th", { scope: "col", text: "after" }))),
  );
  const body = el("tbody");
  for (const [domain, after] of Object.entries(dry.after)) {
    const before = dry.before[domain] || {};
    for (const zone of Object.keys({ ...before, ...after })) {
      const b = before[zone] || 0;
      const a = after[zone] || 0;
      body.append(
        el("tr", { class: Math.abs(a - b) > 1e-9 ? "changed" : "" },
          el("td", { text: domain }),
          el("td", {}, el("span", { class: "swatch", style: `--zone-color: ${zoneColor(zone)}`, "aria-hidden": "true" }), zone),
          el("td", { text: pct(b) }),
          el("td", { "data-testid": `after-${domain}-${zone}`, text: pct(a) })),
      );
    }
  }
  table.append(body);
  const rates = Object.entries(dry.rates || {});
  const basis = rates.length
    ? `weighted by the request rates the LBs report now: ${rates.map(([z, r]) => `${z} ${r.toFixed(1)} req/s`).join(", ")}`
    : "from range widths (no LB reports request rates)";
  return el("div", {}, table, el("p", { class: "muted small", "data-testid": "shares-basis", text: basis }));
}

// --- writes ---------------------------------------------------------------------

function withQuery(path, params) {
  const q = new URLSearchParams(params).toString();
  return `${path}${path.includes("?") ? "&" : "?"}${q}`;
}

async function confirmWrite(write) {
  showMessage("");
  let dry;
  try {
    dry = (await api(write.method, withQuery(write.path, { dry_run: "true" }), { body: write.body })).data;
  } catch (err) {
    showMessage(`${write.title}: ${err.message}`);
    return;
  }
  ui.pending = write;
  $("confirm-title").textContent = write.title;
  $("confirm-base").textContent = `dry run against version ${dry.version}: nothing written yet`;
  $("confirm-diff").textContent = dry.diff.join("\n") || "(no change)";
  $("confirm-shares").replaceChildren(sharesTable(dry));
  $("confirm-reason").value = "";
  $("confirm-error").hidden = true;
  $("confirm").showModal();
  $("confirm-reason").focus();
}

async function applyPending(event) {
  event.preventDefault();
  const write = ui.pending;
  const reason = $("confirm-reason").value.trim();
  if (!write) return;
  if (!reason) {
    $("confirm-error").textContent = "a reason is required";
    $("confirm-error").hidden = false;
    return;
  }
  $("confirm-ok").disabled = true;
  try {
    const result = (await api(write.method, withQuery(write.path, { reason }), { body: write.body })).data;
    ui.pending = null;
    $("confirm").close();
    showMessage(`${write.title}: version ${result.version} written`, "ok");
    showState((await api("GET", "/v1/state")).data);
  } catch (err) {
    $("confirm-error").textContent = err.message;
    $("confirm-error").hidden = false;
  } finally {
    $("confirm-ok").disabled = false;
  }
}

// --- reading and following --------------------------------------------------------

function showState(state) {
  // Draw a state the moment it arrives; the history catches up on its own.
  const newer = !ui.state || state.version !== ui.state.version;
  ui.state = state;
  render();
  setLive("live", true);
  if (newer) loadHistory();
}

function loadHistory() {
  // One fetch at a time; a version that arrives meanwhile asks for one more pass.
  if (ui.historyLoad && ui.historyLoad.generation === ui.generation) {
    ui.historyLoad.again = true;
    return;
  }
  const load = { again: true, generation: ui.generation };
  ui.historyLoad = load;
  (async () => {
    try {
      while (load.again && load.generation === ui.generation) {
        load.again = false;
        await fetchHistory(load);
      }
    } catch (err) {
      if (load.generation === ui.generation) {
        ui.historyError = `cannot load the history: ${err.message}`;
        renderHistory();
      }
    } finally {
      if (ui.historyLoad === load) ui.historyLoad = null;
    }
  })();
}

async function fetchHistory(load) {
  // the entries newer than those shown, page by page (the API caps `limit`)
  for (;;) {
    const since = ui.history.length ? ui.history[ui.history.length - 1].version : 0;
    const page = (await api("GET", `/v1/history?since=${since}&limit=500`)).data;
    if (load.generation !== ui.generation) return; // the token changed meanwhile
    ui.history.push(...page);
    ui.historyError = "";
    renderHistory();
    if (page.length < 500) return;
  }
}

async function follow() {
  if (ui.pollAbort) ui.pollAbort.abort();
  const abort = new AbortController();
  ui.pollAbort = abort;
  while (!abort.signal.aborted) {
    try {
      if (!ui.state) {
        loadHistory(); // beside the state, not after it
        showState((await api("GET", "/v1/state", { signal: abort.signal })).data);
        showMessage("");
        continue;
      }
      const since = ui.state.version;
      const resp = await api("GET", `/v1/state?since=${since}&timeout=${POLL_TIMEOUT}`, { signal: abort.signal });
      setLive("live", true);
      if (resp.status === 200 && resp.data.version > ui.state.version) showState(resp.data);
    } catch (err) {
      if (abort.signal.aborted) return;
      setLive("disconnected", false);
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
        showMessage(`${err.message} — enter a token above`);
        return; // wait for a token
      }
      showMessage(`cannot read the control plane: ${err.message}; retrying`);
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
}

async function followReports() {
  for (;;) {
    try {
      const { data } = await api("GET", "/v1/zones");
      ui.reports = data.polled ? data : null;
      if (ui.state) {
        renderZones(ui.state);
        renderPools(ui.state);
      }
    } catch (err) {
      // the state long-poll reports connection problems; keep the last reports
    }
    await new Promise((resolve) => setTimeout(resolve, REPORTS_EVERY));
  }
}

function init() {
  $("token-input").value = token();
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
    showMessage("");
    ui.state = null;
    ui.history = [];
    ui.historyError = "";
    ui.generation += 1;
    follow();
  });
  $("confirm-form").addEventListener("submit", applyPending);
  $("confirm-cancel").addEventListener("click", () => {
    ui.pending = null;
    $("confirm").close();
  });
  follow();
  followReports();
}

document.addEventListener("DOMContentLoaded", init);
