// posguard's live page: reads the deployment (status, events, series) and draws it. Read-only.
// Events are followed with a long poll from the last seq seen (kept for this tab, so a reload
// resumes there and misses nothing); each batch of events refreshes the status at once.
"use strict";

// The token is kept for this tab only and taken out of the address bar (and so of the history):
// a reload comes back through the server's 403 page, which hands it back (server.py).
const TOKEN_KEY = "posguard.token";
const TOKEN = (() => {
  const given = new URLSearchParams(location.search).get("token");
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, given);
    history.replaceState(null, "", location.pathname);
  }
  return given || sessionStorage.getItem(TOKEN_KEY) || "";
})();
const PAGE_ROWS = 50;
const KEPT_EVENTS = 300;
const SEEN_KEY = "posguard.lastSeq";
const MOVING = new Set(["RECOVERING", "ENTERING", "CONFIRMING_ENTRY", "PROTECTING", "MOVING_STOP", "SETTING_EXIT",
  "REDUCING", "ADDING", "VERIFYING", "FLATTENING"]);

const state = { status: null, fetchedAt: 0, page: 0, filter: "", events: [], lastSeq: null,
  statusBusy: false, statusAgain: false, seriesBusy: false, seriesAgain: false, missed: "", failures: 0 };

const $ = (id) => document.getElementById(id);

async function get(path) {
  const response = await fetch(path, { headers: { Authorization: "Bearer " + TOKEN }, cache: "no-store" });
  if (!response.ok) {
    const error = new Error(path + ": HTTP " + response.status);
    error.status = response.status;
    error.body = await response.text();
    throw error;
  }
  return response.json();
}

function text(el, value) { if (el.textContent !== value) el.textContent = value; }
function num(v) { return v === null || v === undefined ? "" : String(+(+v).toPrecision(10)); }

// -- status ------------------------------------------------------------------------------------

async function refreshStatus() {
  if (state.statusBusy) { state.statusAgain = true; return; }
  state.statusBusy = true;
  try {
    do {
      state.statusAgain = false;
      const status = await get("api/status");
      state.status = status;
      state.fetchedAt = performance.now();
      state.failures = 0;
      render();
    } while (state.statusAgain);
  } catch (error) {
    unreachable(error);
  } finally {
    state.statusBusy = false;
  }
}

function rows() {
  const p = state.status.positions;
  return p.rows.map((row) => Object.fromEntries(p.columns.map((name, i) => [name, row[i]])));
}

function nakedNow(p) {
  if (p.naked_since === null) return p.naked_now;
  return p.naked_now + (performance.now() - state.fetchedAt) / 1000;   // its clock runs between fetches
}

function attention(p) {
  if (p.naked_since !== null || p.state === "STUCK") return 0;
  if (MOVING.has(p.state)) return 1;
  return p.state === "IDLE" ? 3 : 2;
}

function render() {
  const s = state.status;
  if (!s) return;
  const phase = $("phase");
  phase.dataset.phase = s.phase;
  text(phase, s.phase.replace("_", " "));
  text($("phase-detail"), s.phase === "ready" ? "" : (s.phase_detail || ""));
  text($("venue"), "venue " + (s.venue || "?"));
  const streams = Object.entries(s.streams || {}).map(([name, st]) => name + ": " + st.state +
    (st.reconnects ? " (" + st.reconnects + " reconnects)" : ""));
  text($("streams"), streams.length ? "stream " + streams.join(", ") : "no stream");
  text($("restarts"), "restarts " + s.restarts);
  text($("heard"), "supervisor heard " + s.supervisor_heard_s_ago.toFixed(1) + " s ago");
  renderBanners(s);
  renderTable();
  text($("updated"), "updated " + new Date().toLocaleTimeString());
}

function renderBanners(s) {
  const banners = [];
  if (s.safe_mode) banners.push(["", "SAFE MODE: " + s.safe_reason + " -- new entries refused; stops and closes keep working"]);
  if (s.journal_error) banners.push(["", "JOURNAL CANNOT WRITE: " + s.journal_error + " -- closes still go out"]);
  if (s.venue_status) banners.push(["", "VENUE: " + s.venue_status]);
  if (s.stopping) banners.push(["warn", s.stopping.toUpperCase()]);
  for (const [name, st] of Object.entries(s.streams || {})) {
    if (st.state !== "up") banners.push(["warn", "STREAM " + name + " " + st.state + ": " + st.reason + " -- REST polling meanwhile"]);
  }
  const box = $("banners");
  const shape = JSON.stringify(banners);
  if (box.dataset.shape !== shape) {                          // rebuilt only when they change
    box.replaceChildren(...banners.map(([cls, t]) => {
      const div = document.createElement("div");
      div.className = cls;
      div.textContent = t;
      return div;
    }));
    box.dataset.shape = shape;
  }
}

function renderTable() {
  const all = rows();
  const f = state.filter.trim().toUpperCase();
  const shown = all.filter((p) => !f || p.symbol.includes(f) || p.state.includes(f));
  shown.sort((a, b) => attention(a) - attention(b) || (a.symbol < b.symbol ? -1 : 1));
  const pages = Math.max(1, Math.ceil(shown.length / PAGE_ROWS));
  state.page = Math.min(state.page, pages - 1);
  const slice = shown.slice(state.page * PAGE_ROWS, (state.page + 1) * PAGE_ROWS);
  const counts = {};
  for (const p of all) counts[p.state] = (counts[p.state] || 0) + 1;
  const naked = all.filter((p) => p.naked_since !== null).length;
  text($("counts"), all.length + " symbols: " + Object.entries(counts).sort().map(([k, n]) => n + " " + k).join(", ") +
    (naked ? "; " + naked + " NAKED" : ""));
  text($("page-info"), "page " + (state.page + 1) + " of " + pages);
  const body = $("positions").tBodies[0];
  while (body.rows.length > slice.length) body.deleteRow(-1);
  while (body.rows.length < slice.length) {
    const tr = body.insertRow();
    for (let i = 0; i < 10; i++) tr.insertCell();
    tr.cells[1].className = "state";
    tr.cells[9].className = "event";
  }
  slice.forEach((p, i) => {
    const tr = body.rows[i];
    tr.dataset.symbol = p.symbol;
    tr.dataset.state = p.state;
    tr.className = attention(p) === 0 ? "alarm" : MOVING.has(p.state) ? "moving" : "";
    const qty = p.filled_qty || p.requested_qty;
    const cells = [p.symbol, p.state, p.side || "", qty ? num(qty) : "", num(p.entry_price), num(p.stop_price),
      num(p.take_profit), p.trail_pct ? num(p.trail_pct) + "%" : "", nakedNow(p) ? nakedNow(p).toFixed(1) : "",
      p.last_event || ""];
    cells.forEach((v, c) => text(tr.cells[c], v));
    tr.cells[9].title = p.last_event || "";
  });
}

// -- events ------------------------------------------------------------------------------------

function describe(e) {
  const skip = new Set(["schema", "seq", "at", "kind", "symbol"]);
  if (e.kind === "transition") return e.from + " -> " + e.to + " (" + e.trigger + ") " + (e.detail || "");
  return Object.entries(e).filter(([k]) => !skip.has(k)).map(([k, v]) => k + "=" + JSON.stringify(v)).join(" ");
}

function addEvents(events) {
  const list = $("events");
  const frag = document.createDocumentFragment();
  for (const e of events) {
    const li = document.createElement("li");
    li.dataset.seq = e.seq;
    li.dataset.kind = e.kind;
    li.dataset.shown = Date.now();                            // when it reached the page (bench/dashboard.py)
    const seq = document.createElement("span");
    seq.className = "seq";
    seq.textContent = e.seq;
    li.append(seq, new Date(e.at * 1000).toLocaleTimeString() + " " + e.kind + " " + (e.symbol || "-") + " " + describe(e));
    frag.prepend(li);
  }
  list.prepend(frag);
  while (list.children.length > KEPT_EVENTS) list.lastChild.remove();
  text($("event-info"), "(last " + state.lastSeq + ")" + (state.missed ? " " + state.missed : ""));
}

async function followEvents() {
  for (;;) {
    try {
      const answer = await get("api/events?since=" + state.lastSeq + "&wait=20");
      state.failures = 0;
      if (answer.events.length) {
        state.lastSeq = answer.last;
        sessionStorage.setItem(SEEN_KEY, String(state.lastSeq));
        addEvents(answer.events);
        refreshStatus();                                       // what the events changed, now
        if (answer.events.some((e) => e.kind === "transition" && (e.to === "PROTECTED" || e.to === "IDLE"))) refreshSeries();
      }
    } catch (error) {
      if (error.status === 410) {                              // pruned: resume from the oldest held, say so
        const gone = JSON.parse(error.body);
        state.lastSeq = gone.oldest > 0 ? gone.oldest - 1 : gone.latest;
        sessionStorage.setItem(SEEN_KEY, String(state.lastSeq));
        state.missed = "(events up to " + state.lastSeq + " are no longer held)";
        continue;
      }
      unreachable(error);
      await new Promise((done) => setTimeout(done, Math.min(5000, 250 * 2 ** state.failures)));
    }
  }
}

function unreachable(error) {
  state.failures += 1;
  const phase = $("phase");
  phase.dataset.phase = "unreachable";
  text(phase, error.status === 403 ? "forbidden" : "unreachable");
  text($("phase-detail"), error.status === 403 ? "no valid token: open the URL `posguard dashboard` prints"
    : "the deployment does not answer (" + error.message + "); retrying");
}

// -- series ------------------------------------------------------------------------------------

async function refreshSeries() {                            // one at a time: a burst asks once more
  if (state.seriesBusy) { state.seriesAgain = true; return; }
  state.seriesBusy = true;
  try {
    do {
      state.seriesAgain = false;
      draw(await get("api/series"));
    } while (state.seriesAgain);
  } catch (error) {
    unreachable(error);
  } finally {
    state.seriesBusy = false;
  }
}

function axes(ctx, w, h, maxY, label) {
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = "#2b3036";
  ctx.fillStyle = "#7d8590";
  ctx.font = "10px monospace";
  for (let i = 0; i <= 4; i++) {
    const y = h - 16 - (h - 26) * i / 4;
    ctx.beginPath(); ctx.moveTo(34, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText((maxY * i / 4).toPrecision(3).replace(/\.?0+$/, ""), 0, y + 3);
  }
  ctx.fillText(label, 40, 10);
}

function draw(series) {
  const entries = series.entries;                           // [at, symbol, latency_s, naked_s]
  text($("series-info"), entries.length + " entries protected since " +
    (series.since ? new Date(series.since * 1000).toLocaleTimeString() : "start"));
  const t0 = entries.length ? entries[0][0] : 0;
  const span = Math.max(1, (entries.length ? entries[entries.length - 1][0] : 0) - t0);
  const x = (at, w) => 36 + (w - 40) * (at - t0) / span;
  for (const [id, pick, color] of [["latency", (e) => e[2] * 1000, "#2ea043"], ["naked", (e) => e[3], "#f85149"]]) {
    const canvas = $(id);
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height;
    const values = entries.map(pick);
    let maxY = Math.max(1e-9, ...values);
    let total = 0;
    const cumulative = id === "naked" ? values.map((v) => (total += v)) : [];
    if (id === "naked") maxY = Math.max(maxY, total, 0.001);
    axes(ctx, w, h, maxY, id === "latency" ? "ms" : "s (dots: per entry; line: in all)");
    const y = (v) => h - 16 - (h - 26) * v / maxY;
    ctx.fillStyle = color;
    entries.forEach((e, i) => { ctx.fillRect(x(e[0], w) - 1.5, y(values[i]) - 1.5, 3, 3); });
    if (cumulative.length) {
      ctx.strokeStyle = "#d29922";
      ctx.beginPath();
      entries.forEach((e, i) => { const px = x(e[0], w), py = y(cumulative[i]); i ? ctx.lineTo(px, py) : ctx.moveTo(px, py); });
      ctx.stroke();
    }
  }
}

// -- start -------------------------------------------------------------------------------------

$("filter").addEventListener("input", (e) => { state.filter = e.target.value; state.page = 0; renderTable(); });
$("prev").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); renderTable(); });
$("next").addEventListener("click", () => { state.page += 1; renderTable(); });

async function start() {
  await refreshStatus();
  if (!state.status) { setTimeout(start, 1000); return; }
  const seen = sessionStorage.getItem(SEEN_KEY);
  state.lastSeq = seen !== null && +seen <= state.status.last_event ? +seen : Math.max(0, state.status.last_event - 200);
  followEvents();
  refreshSeries();
  setInterval(() => { if (state.status) renderTable(); }, 1000);          // naked clocks run
  setInterval(refreshStatus, 5000);                                       // heartbeat, streams
  setInterval(refreshSeries, 15000);
  document.body.dataset.ready = "1";
}
start();
