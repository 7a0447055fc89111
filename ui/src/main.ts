// Sluice UI: sign in (when the API uses UAA), pick an org, a space and an app
// by name (with a search box) and a time range, see the app's rollups as
// charts with event markers and its logs, updated live over the SSE stream —
// or the space's or the org's charts (SPEC §11's group rollups).

import "./style.css";
import { api, ApiError, setUnauthorizedHandler, token, type App, type AppEvent, type Info, type Point } from "./api";
import { APP_SPECS, Charts, GROUP_SPECS } from "./charts";
import { fmtDuration, toLocalInput } from "./format";
import { el, LogViewer } from "./logs";
import { LiveStream, type LiveState, type SseMessage } from "./sse";

const RANGES: Record<string, number> = { "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400 };
const STEPS_MIN = [1, 5, 15, 60, 360, 1440];
const MAX_POINTS = 300;

/** The coarsest-needed step: the first of STEPS_MIN that keeps a range under MAX_POINTS buckets. */
export function stepFor(rangeSec: number): number {
  for (const m of STEPS_MIN) if (rangeSec / (m * 60) <= MAX_POINTS) return m * 60;
  return STEPS_MIN[STEPS_MIN.length - 1] * 60;
}

type Range = { kind: string; from: number; to: number };
type View = "app" | "space" | "org";

const state = {
  info: null as Info | null,
  apps: [] as App[],
  app: null as string | null,
  /** The org and space pickers' choices; "" is "all". */
  org: "",
  space: "",
  search: "",
  view: "app" as View,
  groupLoad: null as AbortController | null,
  range: { kind: "1h", from: 0, to: 0 } as Range,
  step: 60,
  points: new Map<number, Point>(),
  events: new Map<string, AppEvent>(),
  liveRollups: 0,
  stream: null as LiveStream | null,
  load: null as AbortController | null,
  refetch: new Map<number, number>(), // bucket start -> pending timer
};

const ui = {
  login: el<HTMLElement>("login"),
  loginForm: el<HTMLFormElement>("login-form"),
  loginUser: el<HTMLInputElement>("login-username"),
  loginPass: el<HTMLInputElement>("login-password"),
  loginError: el<HTMLParagraphElement>("login-error"),
  loginSubmit: el<HTMLButtonElement>("login-submit"),
  dashboard: el<HTMLElement>("dashboard"),
  controls: el<HTMLElement>("controls"),
  appPicker: el<HTMLSelectElement>("app-picker"),
  orgPicker: el<HTMLSelectElement>("org-picker"),
  spacePicker: el<HTMLSelectElement>("space-picker"),
  appSearch: el<HTMLInputElement>("app-search"),
  viewPicker: el<HTMLSelectElement>("view-picker"),
  appCharts: el<HTMLDivElement>("app-charts"),
  groupCharts: el<HTMLDivElement>("group-charts"),
  logsCard: el<HTMLDivElement>("logs-card"),
  scopeTitle: el<HTMLHeadingElement>("scope-title"),
  rangePicker: el<HTMLSelectElement>("range-picker"),
  customRange: el<HTMLFormElement>("custom-range"),
  customFrom: el<HTMLInputElement>("custom-from"),
  customTo: el<HTMLInputElement>("custom-to"),
  step: el<HTMLSpanElement>("step-label"),
  live: el<HTMLSpanElement>("live"),
  liveText: el<HTMLSpanElement>("live-text"),
  signOut: el<HTMLButtonElement>("sign-out"),
  banner: el<HTMLDivElement>("banner"),
  noApps: el<HTMLParagraphElement>("no-apps"),
};

const charts = new Charts(APP_SPECS);
const groupCharts = new Charts(GROUP_SPECS);
const logs = new LogViewer(
  () => (state.app ? { app: state.app, from: state.range.from, to: state.range.to } : null),
  (e) => showError(e),
);

// ---------- banner ----------

function showError(e: unknown): void {
  if (e instanceof ApiError && e.status === 401) return; // handled by the sign-in flow
  const msg =
    e instanceof ApiError && e.status === 403
      ? `You may not see this ${state.view}.`
      : e instanceof Error
        ? e.message
        : String(e);
  ui.banner.textContent = msg;
  ui.banner.hidden = false;
}
const clearError = () => (ui.banner.hidden = true);

// ---------- sign-in ----------

function showLogin(message = ""): void {
  stopStream();
  logs.clear();
  ui.dashboard.hidden = true;
  ui.controls.hidden = true;
  ui.login.hidden = false;
  ui.loginError.textContent = message;
  ui.loginError.hidden = message === "";
  ui.loginUser.focus();
}

setUnauthorizedHandler(() => {
  token.clear();
  if (state.info?.auth === "uaa") showLogin("Your session has ended. Please sign in again.");
  else showError(new Error("The API refused the request (401)."));
});

ui.loginForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  ui.loginSubmit.disabled = true;
  ui.loginError.hidden = true;
  try {
    const res = await api.login(ui.loginUser.value, ui.loginPass.value);
    token.set(res.access_token);
    ui.loginPass.value = "";
    await showDashboard();
  } catch (e) {
    ui.loginError.textContent =
      e instanceof ApiError && e.status === 401 ? "Wrong username or password." : `Sign-in failed: ${(e as Error).message}`;
    ui.loginError.hidden = false;
  } finally {
    ui.loginSubmit.disabled = false;
  }
});

ui.signOut.addEventListener("click", () => {
  token.clear();
  showLogin();
});

// ---------- dashboard ----------

async function showDashboard(): Promise<void> {
  ui.login.hidden = true;
  ui.dashboard.hidden = false;
  ui.controls.hidden = false;
  ui.signOut.hidden = state.info?.auth !== "uaa";
  clearError();
  try {
    state.apps = (await api.apps()).apps;
  } catch (e) {
    showError(e);
    return;
  }
  ui.noApps.hidden = state.apps.length > 0;
  const wanted = new URLSearchParams(location.hash.slice(1)).get("app");
  const shown = fillPickers();
  const pick = shown.find((a) => a.id === wanted) ?? shown[0];
  if (pick) {
    ui.appPicker.value = pick.id;
    await selectApp(pick.id);
  } else {
    applyView();
  }
}

// ---------- org → space → app pickers ----------

const option = (value: string, label: string, title = value): HTMLOptionElement => {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = label;
  o.title = title;
  return o;
};

const byName = (a: [string, string], b: [string, string]) => a[1].localeCompare(b[1]) || a[0].localeCompare(b[0]);

/** The org and space pickers from the apps the directory places, and the app picker from the
 *  apps in the chosen org and space whose name or id contains the search text. Returns the
 *  apps shown. */
function fillPickers(): App[] {
  const orgs = new Map<string, string>();
  for (const a of state.apps) if (a.org_id) orgs.set(a.org_id, a.org_name || a.org_id);
  if (state.org && !orgs.has(state.org)) state.org = "";
  ui.orgPicker.replaceChildren(
    option("", "All orgs", ""),
    ...[...orgs].sort(byName).map(([id, name]) => option(id, name, id)),
  );
  ui.orgPicker.value = state.org;

  const spaces = new Map<string, string>();
  for (const a of state.apps) {
    if (a.space_id && (!state.org || a.org_id === state.org)) spaces.set(a.space_id, a.space_name || a.space_id);
  }
  if (state.space && !spaces.has(state.space)) state.space = "";
  ui.spacePicker.replaceChildren(
    option("", "All spaces", ""),
    ...[...spaces].sort(byName).map(([id, name]) => option(id, name, id)),
  );
  ui.spacePicker.value = state.space;

  const needle = state.search.trim().toLowerCase();
  const shown = state.apps
    .filter((a) => !state.org || a.org_id === state.org)
    .filter((a) => !state.space || a.space_id === state.space)
    .filter((a) => !needle || (a.name ?? "").toLowerCase().includes(needle) || a.id.includes(needle))
    .sort((a, b) => (a.name ?? a.id).localeCompare(b.name ?? b.id) || a.id.localeCompare(b.id));
  ui.appPicker.replaceChildren(
    ...shown.map((a) => {
      const place = [a.space_name, a.org_name].filter(Boolean).join(" · ");
      return option(a.id, a.name ?? a.id, place ? `${a.id} (${place})` : a.id);
    }),
  );
  if (state.app && shown.some((a) => a.id === state.app)) ui.appPicker.value = state.app;
  ui.appPicker.dataset.shown = String(shown.length);
  return shown;
}

/** After the pickers changed: keep the app if it is still shown, else take the first one. */
async function afterPick(): Promise<void> {
  const shown = fillPickers();
  saveHash();
  const keep = shown.find((a) => a.id === state.app);
  if (keep) {
    applyView();
  } else if (shown[0]) {
    ui.appPicker.value = shown[0].id;
    await selectApp(shown[0].id);
  } else {
    applyView();
  }
}

ui.orgPicker.addEventListener("change", () => {
  state.org = ui.orgPicker.value;
  state.space = "";
  void afterPick();
});

ui.spacePicker.addEventListener("change", () => {
  state.space = ui.spacePicker.value;
  // A space belongs to one org: show where it is.
  const app = state.apps.find((a) => a.space_id === state.space);
  if (state.space && app?.org_id) state.org = app.org_id;
  void afterPick();
});

ui.appSearch.addEventListener("input", () => {
  state.search = ui.appSearch.value;
  void afterPick();
});

ui.viewPicker.addEventListener("change", () => {
  state.view = ui.viewPicker.value as View;
  saveHash();
  applyView();
});

ui.appPicker.addEventListener("change", () => void selectApp(ui.appPicker.value));

async function selectApp(id: string): Promise<void> {
  state.app = id;
  saveHash();
  stopStream();
  state.liveRollups = 0;
  updateLive("off");
  if (state.view !== "app") {
    applyView();
    return;
  }
  showScope();
  await loadAll();
  if (state.app === id) startStream();
}

// ---------- what the charts show: the app, its space or its org ----------

/** The space (org) the charts show: the picker's, else the current app's. */
function groupOf(view: "space" | "org"): { id: string; name: string } | null {
  const app = state.apps.find((a) => a.id === state.app);
  if (view === "space") {
    const id = state.space || app?.space_id;
    const named = state.apps.find((a) => a.space_id === id);
    return id ? { id, name: named?.space_name || id } : null;
  }
  const id = state.org || app?.org_id;
  const named = state.apps.find((a) => a.org_id === id);
  return id ? { id, name: named?.org_name || id } : null;
}

function showScope(): void {
  const app = state.apps.find((a) => a.id === state.app);
  if (state.view === "app") {
    const place = app ? [app.space_name, app.org_name].filter(Boolean).join(" · ") : "";
    ui.scopeTitle.textContent = app ? `App ${app.name ?? app.id}${place ? ` — ${place}` : ""}` : "";
    return;
  }
  const group = groupOf(state.view);
  ui.scopeTitle.textContent = group
    ? `${state.view === "space" ? "Space" : "Org"} ${group.name} — all its apps`
    : `Pick a ${state.view}: this app's ${state.view} is not known yet.`;
}

function applyView(): void {
  const app = state.view === "app";
  ui.viewPicker.value = state.view;
  ui.appCharts.hidden = !app;
  ui.logsCard.hidden = !app;
  ui.groupCharts.hidden = app;
  showScope();
  if (app) {
    if (state.app && !state.stream) void selectApp(state.app);
    return;
  }
  stopStream();
  updateLive("off");
  void loadGroup();
}

/** (Re)queries the shown space's or org's series. */
async function loadGroup(): Promise<void> {
  if (state.view === "app") return;
  const group = groupOf(state.view);
  state.groupLoad?.abort();
  if (!group) {
    groupCharts.set({ from: state.range.from, to: state.range.to, step: state.step, points: [], events: [] });
    return;
  }
  const ctl = new AbortController();
  state.groupLoad = ctl;
  refreshRange();
  const { from, to } = state.range;
  try {
    const m = await api.groupMetrics(state.view, group.id, from, to, state.step, ctl.signal);
    if (ctl.signal.aborted) return;
    clearError();
    groupCharts.set({ from, to, step: state.step, points: m.points, events: [] });
  } catch (e) {
    if (!ctl.signal.aborted) showError(e);
  }
}

/** Recomputes a relative range's end (now) and its step. */
function refreshRange(): void {
  const dur = RANGES[state.range.kind];
  if (dur !== undefined) {
    state.range.to = Math.floor(Date.now() / 1000) + 1;
    state.range.from = state.range.to - dur;
  }
  state.step = stepFor(state.range.to - state.range.from);
  ui.step.textContent = `step ${fmtDuration(state.step)}`;
}

async function loadAll(): Promise<void> {
  const id = state.app;
  if (!id) return;
  refreshRange();
  void logs.reload();
  await loadSeries();
}

/** (Re)queries metrics and events for the current app and range. */
async function loadSeries(): Promise<void> {
  const id = state.app;
  if (!id) return;
  state.load?.abort();
  const ctl = new AbortController();
  state.load = ctl;
  const { from, to } = state.range;
  try {
    const [m, ev] = await Promise.all([
      api.metrics(id, from, to, state.step, ctl.signal),
      api.events(id, from, to, ctl.signal),
    ]);
    if (ctl.signal.aborted) return;
    state.points = new Map(m.points.map((p) => [p.time, p]));
    state.events = new Map(ev.events.map((e) => [eventKey(e), e]));
    clearError();
    render();
  } catch (e) {
    if (!ctl.signal.aborted) showError(e);
  }
}

const eventKey = (e: AppEvent) => `${e.time_ns}/${e.event}`;

function render(): void {
  const { from, to } = state.range;
  const points = [...state.points.values()].filter((p) => p.time >= from - state.step && p.time < to);
  points.sort((a, b) => a.time - b.time);
  charts.set({ from, to, step: state.step, points, events: [...state.events.values()] });
}

// ---------- time range ----------

ui.rangePicker.addEventListener("change", () => {
  const kind = ui.rangePicker.value;
  if (kind === "custom") {
    ui.customFrom.value = toLocalInput(state.range.from);
    ui.customTo.value = toLocalInput(state.range.to);
    ui.customRange.hidden = false;
    return;
  }
  ui.customRange.hidden = true;
  state.range = { kind, from: 0, to: 0 };
  saveHash();
  void reloadForRange();
});

ui.customRange.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const from = Math.floor(new Date(ui.customFrom.value).getTime() / 1000);
  const to = Math.floor(new Date(ui.customTo.value).getTime() / 1000);
  if (!Number.isFinite(from) || !Number.isFinite(to) || from >= to) {
    showError(new Error("Custom range: “from” must be before “to”."));
    return;
  }
  state.range = { kind: "custom", from, to };
  saveHash();
  void reloadForRange();
});

async function reloadForRange(): Promise<void> {
  for (const t of state.refetch.values()) window.clearTimeout(t);
  state.refetch.clear();
  if (state.view !== "app") {
    await loadGroup();
    return;
  }
  await loadAll();
}

// A relative range slides with the clock even when no data arrives; a space's or an org's
// charts have no live stream: they are queried again.
window.setInterval(() => {
  if (RANGES[state.range.kind] === undefined) return;
  if (state.view !== "app") {
    void loadGroup();
    return;
  }
  if (!state.app) return;
  refreshRange();
  render();
}, 15_000);

function saveHash(): void {
  const p = new URLSearchParams();
  if (state.app) p.set("app", state.app);
  if (state.org) p.set("org", state.org);
  if (state.space) p.set("space", state.space);
  if (state.view !== "app") p.set("view", state.view);
  p.set("range", state.range.kind);
  if (state.range.kind === "custom") {
    p.set("from", String(state.range.from));
    p.set("to", String(state.range.to));
  }
  history.replaceState(null, "", `#${p}`);
}

function loadHash(): void {
  const p = new URLSearchParams(location.hash.slice(1));
  state.org = p.get("org") ?? "";
  state.space = p.get("space") ?? "";
  const view = p.get("view");
  state.view = view === "space" || view === "org" ? view : "app";
  ui.viewPicker.value = state.view;
  const kind = p.get("range") ?? "1h";
  const from = Number(p.get("from"));
  const to = Number(p.get("to"));
  if (kind === "custom" && from > 0 && to > from) {
    state.range = { kind, from, to };
    ui.customFrom.value = toLocalInput(from);
    ui.customTo.value = toLocalInput(to);
    ui.customRange.hidden = false;
  } else if (RANGES[kind] !== undefined) {
    state.range = { kind, from: 0, to: 0 };
  }
  ui.rangePicker.value = state.range.kind;
}

// ---------- live stream ----------

function stopStream(): void {
  state.stream?.stop();
  state.stream = null;
  state.load?.abort();
  for (const t of state.refetch.values()) window.clearTimeout(t);
  state.refetch.clear();
}

function startStream(): void {
  const id = state.app;
  if (!id) return;
  state.stream?.stop();
  state.stream = new LiveStream(api.streamUrl(id), {
    onState: (s, detail) => updateLive(s, detail),
    onMessage: (m) => onLive(id, m),
  });
}

function onLive(id: string, m: SseMessage): void {
  if (id !== state.app) return;
  try {
    if (m.event === "rollup") {
      if (applyRollup(JSON.parse(m.data) as Point)) {
        state.liveRollups++;
        updateLive("live");
      }
    } else if (m.event === "app_event") {
      const e = JSON.parse(m.data) as AppEvent;
      state.events.set(eventKey(e), e);
      render();
    } else if (m.event === "reset") {
      // The server could not replay what we missed: start over from the stores.
      void loadSeries();
    }
  } catch (e) {
    console.warn("bad stream message", m, e);
  }
}

/**
 * Puts a live rollup into the series. A rollup as wide as the step replaces
 * (or adds) its bucket; a narrower one (minute rollups while showing 5m
 * buckets) means its bucket changed, so that one bucket is re-queried.
 * Returns whether the rollup falls into what is shown.
 */
function applyRollup(p: Point): boolean {
  const window_ = p.window ?? 60;
  if (window_ > state.step || state.step % window_ !== 0) return false;
  if (RANGES[state.range.kind] !== undefined) refreshRange();
  const { from, to } = state.range;
  if (p.time + window_ <= from || p.time >= to) return false;
  if (window_ === state.step) {
    state.points.set(p.time, p);
    for (const t of state.points.keys()) if (t < from - state.step) state.points.delete(t);
    render();
  } else {
    scheduleRefetch(Math.floor(p.time / state.step) * state.step);
  }
  return true;
}

function scheduleRefetch(bucket: number): void {
  if (state.refetch.has(bucket)) return;
  const id = state.app;
  const step = state.step;
  state.refetch.set(
    bucket,
    window.setTimeout(async () => {
      state.refetch.delete(bucket);
      if (!id || id !== state.app || step !== state.step) return;
      try {
        const m = await api.metrics(id, bucket, bucket + step, step);
        if (id !== state.app || step !== state.step) return;
        const p = m.points.find((x) => x.time === bucket);
        if (p) state.points.set(bucket, p);
        render();
      } catch (e) {
        showError(e);
      }
    }, 1000),
  );
}

function updateLive(s: LiveState, detail?: string): void {
  ui.live.dataset.state = s;
  ui.live.dataset.liveRollups = String(state.liveRollups);
  const n = state.liveRollups;
  ui.liveText.textContent =
    s === "live"
      ? `live${n ? ` · ${n} update${n === 1 ? "" : "s"}` : ""}`
      : s === "connecting"
        ? "connecting…"
        : s === "retrying"
          ? "reconnecting…"
          : "offline";
  ui.live.title = detail ?? "";
}

// ---------- boot ----------

async function boot(): Promise<void> {
  loadHash();
  try {
    state.info = await api.info();
  } catch (e) {
    showError(new Error(`Cannot reach the Sluice API: ${(e as Error).message}`));
    return;
  }
  if (state.info.auth === "uaa" && !token.get()) showLogin();
  else await showDashboard();
}

void boot();
