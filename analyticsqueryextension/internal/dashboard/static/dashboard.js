// The analytics_query extension's dashboard: reads POST /api/v2/query (same
// origin, paths relative to the page) and refreshes itself. What it shows is
// also kept in window.dashboardState, for tests and for the curious.
(function () {
  "use strict";

  const QUERY_URL = "api/v2/query";
  const DEFAULT_REFRESH_SECONDS = 5;
  const MAX_CHARTS = 12; // charts for the event types with the most events
  const TOP_USERS = 10;
  const PALETTE = ["#2563eb", "#db2777", "#16a34a", "#ea580c", "#7c3aed", "#0891b2",
    "#ca8a04", "#dc2626", "#4f46e5", "#059669", "#9333ea", "#64748b"];
  const DAY = 86400;
  const fmt = new Intl.NumberFormat("en-US");

  const $ = (id) => document.getElementById(id);
  const ui = {
    form: $("controls"), range: $("range"), from: $("from"), to: $("to"),
    custom: $("custom-range"), granularity: $("granularity"), status: $("status"),
    error: $("error"), rangeLabel: $("range-label"), totals: $("totals-body"),
    totalEvents: document.querySelector('[data-testid="total-events"]'),
    totalVisitors: document.querySelector('[data-testid="total-visitors"]'),
    users: $("users-body"), charts: $("charts"), chartsNote: $("charts-note"),
    refreshSeconds: $("refresh-seconds"),
    dau: document.querySelector('[data-testid="dau"]'),
    wau: document.querySelector('[data-testid="wau"]'),
    mau: document.querySelector('[data-testid="mau"]'),
  };

  // State shown on the page. Tests read it; series.events holds the data the
  // charts were given (read back from the uPlot instances).
  const state = {
    params: null,        // {range, from, to, granularity}
    dateRange: null,     // [first day, last day], ISO dates, UTC
    totals: {},          // event type -> {events, visitors}
    total: null,         // {events, visitors} over all event types
    series: null,        // {granularity, labels: [...], x: [unix s], events: {type: [...]}}
    topUsers: [],        // [{user, events}]
    activeUsers: null,   // {dau, wau, mau}
    error: null,         // message of the last failed refresh, null after a good one
    updatedAt: null,     // ISO time of the last good refresh
    refreshes: 0,        // good refreshes so far
  };
  window.dashboardState = state;

  const charts = new Map(); // event type -> {plot, figure, caption, x}
  let refreshSeconds = DEFAULT_REFRESH_SECONDS;
  let timer = 0;
  let generation = 0; // a refresh whose parameters changed meanwhile is dropped

  // ---------------------------------------------------------------- params

  function todayISO() { return new Date().toISOString().slice(0, 10); }
  function addDays(iso, n) { return new Date(Date.parse(iso + "T00:00:00Z") + n * DAY * 1000).toISOString().slice(0, 10); }
  const isDate = (s) => /^\d{4}-\d{2}-\d{2}$/.test(s || "");

  function readParams() {
    const q = new URLSearchParams(location.search);
    const range = ["day", "7d", "30d", "custom"].includes(q.get("range")) ? q.get("range") : "7d";
    const granularity = ["hour", "day", "week", "month"].includes(q.get("granularity")) ? q.get("granularity") : "day";
    ui.range.value = range;
    ui.granularity.value = granularity;
    ui.to.value = isDate(q.get("to")) ? q.get("to") : todayISO();
    ui.from.value = isDate(q.get("from")) ? q.get("from") : addDays(ui.to.value, -6);
    const r = Number(q.get("refresh"));
    if (Number.isFinite(r) && r >= 1) refreshSeconds = r;
    ui.refreshSeconds.textContent = String(refreshSeconds);
  }

  function currentParams() {
    return { range: ui.range.value, from: ui.from.value, to: ui.to.value, granularity: ui.granularity.value };
  }

  function writeURL(p) {
    const q = new URLSearchParams(location.search);
    q.set("range", p.range);
    q.set("granularity", p.granularity);
    if (p.range === "custom") { q.set("from", p.from); q.set("to", p.to); } else { q.delete("from"); q.delete("to"); }
    history.replaceState(null, "", "?" + q.toString());
  }

  function apiDateRange(p) { return p.range === "custom" ? [p.from, p.to] : p.range; }

  // The days a preset covers, for the chart's axis when the API does not say.
  function presetDays(range) {
    const today = todayISO();
    const back = { day: 0, "7d": 6, "30d": 29 }[range];
    return [addDays(today, -back), today];
  }

  // ---------------------------------------------------------------- API

  class APIError extends Error {}

  async function query(body) {
    let resp;
    try {
      resp = await fetch(QUERY_URL, {
        method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body), cache: "no-store",
      });
    } catch (err) {
      throw new APIError("cannot reach the query API (" + err.message + ")");
    }
    const text = await resp.text();
    let data = null;
    try { data = JSON.parse(text); } catch (_) { /* reported below */ }
    if (!resp.ok) {
      const reason = data && (data.error || data.message) ? (data.error || data.message) : text.trim().slice(0, 300);
      throw new APIError("query API answered " + resp.status + " " + resp.statusText + (reason ? ": " + reason : ""));
    }
    if (!data || !Array.isArray(data.results)) throw new APIError("query API answered something that is not a query result");
    return data;
  }

  // ---------------------------------------------------------------- time buckets

  // parseTime turns a time dimension value (ISO date, or RFC 3339 hour) into unix seconds.
  function parseTime(v) {
    const ms = isDate(v) ? Date.parse(v + "T00:00:00Z") : Date.parse(v);
    return Number.isNaN(ms) ? null : Math.floor(ms / 1000);
  }

  function label(t, granularity) {
    const iso = new Date(t * 1000).toISOString();
    return granularity === "hour" ? iso.slice(0, 13) + ":00:00Z" : iso.slice(0, 10);
  }

  // bucketStarts lists every bucket of the range, so that buckets without
  // events show as zero instead of being bridged by the line.
  function bucketStarts(first, last, granularity) {
    const start = parseTime(first), end = parseTime(last) + DAY; // end exclusive
    const out = [];
    if (start === null || Number.isNaN(end) || end <= start) return out;
    const limit = 5000;
    if (granularity === "hour" || granularity === "day") {
      const step = granularity === "hour" ? 3600 : DAY;
      const stop = granularity === "hour" ? Math.min(end, Math.floor(Date.now() / 3600000) * 3600 + 3600) : end;
      for (let t = start; t < stop && out.length < limit; t += step) out.push(t);
    } else if (granularity === "week") { // ISO weeks, starting on Monday
      const dow = (new Date(start * 1000).getUTCDay() + 6) % 7;
      for (let t = start - dow * DAY; t < end && out.length < limit; t += 7 * DAY) out.push(t);
    } else {
      const d = new Date(start * 1000);
      for (let y = d.getUTCFullYear(), m = d.getUTCMonth(); out.length < limit; m++) {
        const t = Date.UTC(y, m, 1) / 1000;
        if (t >= end) break;
        out.push(t);
      }
    }
    return out;
  }

  // resolvedDays reads the range the API resolved (query.date_range), else
  // computes it the same way (UTC days).
  function resolvedDays(resp, p) {
    const dr = resp && resp.query && resp.query.date_range;
    if (Array.isArray(dr) && dr.length === 2) {
      const a = Date.parse(isDate(dr[0]) ? dr[0] + "T00:00:00Z" : dr[0]);
      const b = Date.parse(isDate(dr[1]) ? dr[1] + "T00:00:00Z" : dr[1]);
      if (!Number.isNaN(a) && !Number.isNaN(b)) return [new Date(a).toISOString().slice(0, 10), new Date(b).toISOString().slice(0, 10)];
    }
    return p.range === "custom" ? [p.from, p.to] : presetDays(p.range);
  }

  // ---------------------------------------------------------------- refresh

  async function refresh() {
    clearTimeout(timer);
    const gen = ++generation;
    const p = currentParams();
    if (p.range === "custom" && (!isDate(p.from) || !isDate(p.to) || p.from > p.to)) {
      showError("choose a custom range whose start is not after its end");
      return;
    }
    const dateRange = apiDateRange(p);
    try {
      const totalsResp = await query({ metrics: ["events", "visitors"], date_range: dateRange, dimensions: ["event:name"], order_by: [["events", "desc"]], limit: 1000 });
      const types = totalsResp.results.map((r) => r.dimensions[0]);
      const charted = types.slice(0, MAX_CHARTS);
      const days = resolvedDays(totalsResp, p);
      const buckets = bucketStarts(days[0], days[1], p.granularity);
      const seriesReq = charted.length === 0 ? null : query({
        metrics: ["events"], date_range: dateRange, dimensions: ["time:" + p.granularity, "event:name"],
        filters: [["is", "event:name", charted]], limit: Math.max(1, (buckets.length + 1) * charted.length),
      });
      const [overall, series, users, dau, wau, mau] = await Promise.all([
        query({ metrics: ["events", "visitors"], date_range: dateRange }),
        seriesReq,
        query({ metrics: ["events"], date_range: dateRange, dimensions: ["event:user"], order_by: [["events", "desc"]], limit: TOP_USERS }),
        query({ metrics: ["visitors"], date_range: "day" }),
        query({ metrics: ["visitors"], date_range: "7d" }),
        query({ metrics: ["visitors"], date_range: "30d" }),
      ]);
      if (gen !== generation) return;

      state.params = p;
      state.dateRange = days;
      state.totals = {};
      for (const r of totalsResp.results) state.totals[r.dimensions[0]] = { events: r.metrics[0], visitors: r.metrics[1] };
      const o = overall.results[0];
      state.total = { events: o ? o.metrics[0] : 0, visitors: o ? o.metrics[1] : 0 };
      state.topUsers = users.results.map((r) => ({ user: r.dimensions[0], events: r.metrics[0] }));
      const first = (resp) => (resp.results[0] ? resp.results[0].metrics[0] : 0);
      state.activeUsers = { dau: first(dau), wau: first(wau), mau: first(mau) };

      renderTotals(types);
      renderUsers();
      renderActive();
      renderCharts(p.granularity, buckets, charted, series, types.length);
      ui.rangeLabel.textContent = days[0] === days[1] ? days[0] : days[0] + " – " + days[1];

      state.error = null;
      state.updatedAt = new Date().toISOString();
      state.refreshes++;
      ui.error.hidden = true;
      ui.error.textContent = "";
      ui.status.textContent = "Updated " + state.updatedAt.slice(11, 19) + " UTC";
    } catch (err) {
      if (gen !== generation) return;
      showError(err instanceof APIError ? err.message : "the dashboard failed: " + err.message);
    } finally {
      if (gen === generation) timer = setTimeout(tick, refreshSeconds * 1000);
    }
  }

  function tick() {
    if (document.hidden) { timer = setTimeout(tick, refreshSeconds * 1000); return; }
    refresh();
  }

  function showError(msg) {
    state.error = msg;
    ui.error.textContent = "Could not refresh: " + msg + (state.updatedAt ? ". Showing the numbers of " + state.updatedAt.slice(11, 19) + " UTC." : ".");
    ui.error.hidden = false;
    ui.status.textContent = "Retrying every " + refreshSeconds + " s";
  }

  // ---------------------------------------------------------------- render

  function cell(tag, text, attrs) {
    const el = document.createElement(tag);
    el.textContent = text;
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
    return el;
  }

  const colors = new Map(); // event type -> color, stable while the page is open
  function colorOf(type) {
    if (!colors.has(type)) colors.set(type, PALETTE[colors.size % PALETTE.length]);
    return colors.get(type);
  }

  function renderTotals(types) {
    const rows = types.map((type) => {
      const t = state.totals[type];
      const tr = document.createElement("tr");
      tr.setAttribute("data-testid", "total-row");
      tr.dataset.event = type;
      const th = cell("th", type, { scope: "row" });
      const sw = cell("span", "", { class: "swatch", "aria-hidden": "true" });
      sw.style.background = colorOf(type);
      th.prepend(sw);
      tr.append(th,
        cell("td", fmt.format(t.events), { class: "num", "data-testid": "total-value", "data-value": String(t.events) }),
        cell("td", fmt.format(t.visitors), { class: "num", "data-testid": "total-visitors-value", "data-value": String(t.visitors) }));
      return tr;
    });
    if (rows.length === 0) rows.push(emptyRow(3, "No events in this range."));
    ui.totals.replaceChildren(...rows);
    setNumber(ui.totalEvents, state.total.events);
    setNumber(ui.totalVisitors, state.total.visitors);
  }

  function renderUsers() {
    const rows = state.topUsers.map((u) => {
      const tr = document.createElement("tr");
      tr.setAttribute("data-testid", "top-user-row");
      tr.dataset.user = u.user;
      tr.append(cell("th", u.user, { scope: "row" }),
        cell("td", fmt.format(u.events), { class: "num", "data-value": String(u.events) }));
      return tr;
    });
    if (rows.length === 0) rows.push(emptyRow(2, "No identified users in this range."));
    ui.users.replaceChildren(...rows);
  }

  function renderActive() {
    setNumber(ui.dau, state.activeUsers.dau);
    setNumber(ui.wau, state.activeUsers.wau);
    setNumber(ui.mau, state.activeUsers.mau);
  }

  function setNumber(el, n) {
    el.textContent = fmt.format(n);
    el.dataset.value = String(n);
  }

  function emptyRow(span, text) {
    const tr = document.createElement("tr");
    tr.append(cell("td", text, { colspan: String(span), class: "empty" }));
    return tr;
  }

  function renderCharts(granularity, buckets, charted, series, typeCount) {
    // x: every bucket of the range, plus any the API returned that the
    // computed grid lacks (a different week start, say).
    const counts = new Map(charted.map((t) => [t, new Map()]));
    const xs = new Set(buckets);
    for (const r of series ? series.results : []) {
      const t = parseTime(r.dimensions[0]);
      const m = counts.get(r.dimensions[1]);
      if (t === null || !m) continue;
      xs.add(t);
      m.set(t, (m.get(t) || 0) + r.metrics[0]);
    }
    const x = Array.from(xs).sort((a, b) => a - b);

    for (const [type, c] of charts) {
      if (!counts.has(type)) { c.plot.destroy(); c.figure.remove(); charts.delete(type); }
    }
    const out = { granularity, labels: x.map((t) => label(t, granularity)), x, events: {} };
    charted.forEach((type) => {
      const y = x.map((t) => counts.get(type).get(t) || 0);
      const c = chartFor(type, granularity);
      if (c.x.length === x.length && c.x.every((v, j) => v === x[j])) c.plot.setData([x, y], true);
      else c.plot.setData([x, y]);
      c.x = x;
      const total = state.totals[type].events;
      c.caption.lastChild.textContent = fmt.format(total) + " events";
      c.figure.setAttribute("aria-label", type + ": " + fmt.format(total) + " events, per " + granularity + ", " + out.labels[0] + " to " + out.labels[out.labels.length - 1]);
      ui.charts.append(c.figure); // keeps the order of the totals
      out.events[type] = Array.from(c.plot.data[1]);
    });
    state.series = out;
    ui.chartsNote.textContent = charted.length === 0 ? "no events in this range"
      : typeCount > charted.length ? "the " + charted.length + " event types with the most events, of " + typeCount : "per " + granularity;
  }

  function chartFor(type, granularity) {
    let c = charts.get(type);
    if (c && c.granularity === granularity) return c;
    if (c) { c.plot.destroy(); c.figure.remove(); }
    const figure = document.createElement("figure");
    figure.setAttribute("data-testid", "chart");
    figure.dataset.event = type;
    figure.setAttribute("role", "img");
    const caption = document.createElement("figcaption");
    caption.append(document.createTextNode(type), cell("span", "", { class: "num" }));
    const holder = cell("div", "", { class: "plot" });
    figure.append(caption, holder);
    ui.charts.append(figure);
    const color = colorOf(type);
    const plot = new uPlot({
      width: Math.max(280, holder.clientWidth || 440),
      height: 180,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, Math.ceil(max * 1.1))] } },
      legend: { show: false },
      axes: [{ stroke: "#5b6473", grid: { stroke: "#eef0f3" } }, { stroke: "#5b6473", grid: { stroke: "#eef0f3" }, size: 56 }],
      series: [{}, { label: type, stroke: color, fill: color + "1f", width: 2, points: { size: 5 } }],
    }, [[], []], holder);
    c = { plot, figure, caption, holder, granularity, x: [] };
    charts.set(type, c);
    return c;
  }

  function resizeCharts() {
    for (const c of charts.values()) {
      const w = Math.max(280, c.holder.clientWidth);
      if (w !== c.plot.width) c.plot.setSize({ width: w, height: 180 });
    }
  }

  // ---------------------------------------------------------------- wiring

  function onChange() {
    ui.custom.hidden = ui.range.value !== "custom";
    writeURL(currentParams());
    refresh();
  }

  readParams();
  ui.custom.hidden = ui.range.value !== "custom";
  ui.form.addEventListener("change", onChange);
  ui.form.addEventListener("submit", (e) => { e.preventDefault(); onChange(); });
  window.addEventListener("resize", resizeCharts);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  refresh();
})();
