// End-to-end check of the Sluice web UI in a real browser (Debian's Chromium
// driven by playwright-core; no browser download).
//
//   node tests/browser/ui.mjs --url http://127.0.0.1:PORT --user developer \
//     --password developer --screenshot OUT.png [--timeout-ms 90000]
//
// Signs in (when the API asks for it), picks the first app, waits for the
// CPU and requests charts to draw points, searches the logs for a word read
// off a shown row, and waits for a rollup to arrive over the live stream.
// Then the org → space → app pickers: picks an org and a space by name (the
// app list narrows to them), finds an app with the search box, and shows the
// space's and the org's charts (SPEC §11's group rollups).
// Exits 0 when all of that happened, 1 otherwise (naming the failed step);
// a full-page screenshot is saved either way when the page got that far.

import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const { values: opt } = parseArgs({
  options: {
    url: { type: "string" },
    user: { type: "string", default: "developer" },
    password: { type: "string", default: "developer" },
    screenshot: { type: "string", default: "ui.png" },
    "timeout-ms": { type: "string", default: "90000" },
  },
});
if (!opt.url) {
  console.error("usage: node ui.mjs --url http://127.0.0.1:PORT [--user U --password P] [--screenshot OUT.png]");
  process.exit(2);
}
const LIVE_TIMEOUT = Number(opt["timeout-ms"]);
if (!Number.isFinite(LIVE_TIMEOUT) || LIVE_TIMEOUT <= 0) {
  console.error(`--timeout-ms must be a positive number, got '${opt["timeout-ms"]}'`);
  process.exit(2);
}
const STEP_TIMEOUT = 30_000;

const started = Date.now();
const log = (msg) => console.log(`[ui ${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);

let step = "launch chromium";
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "sluice-ui-"));
let context;
let page;
const browserErrors = [];
let failed = false;

try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1440, height: 1000 },
  });
  context.setDefaultTimeout(STEP_TIMEOUT);
  page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (e) => browserErrors.push(`page error: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && browserErrors.push(`console: ${m.text()}`));
  const byId = (id) => page.getByTestId(id);

  step = `open ${opt.url}`;
  await page.goto(opt.url, { waitUntil: "domcontentloaded" });

  step = "wait for the sign-in form or the app picker";
  const username = byId("login-username");
  const picker = byId("app-picker");
  await username.or(picker).filter({ visible: true }).first().waitFor({ state: "visible" });
  if (await username.isVisible()) {
    step = `sign in as ${opt.user}`;
    await username.fill(opt.user);
    await byId("login-password").fill(opt.password);
    await byId("login-submit").click();
    const loginError = byId("login-error");
    await picker.or(loginError).filter({ visible: true }).first().waitFor({ state: "visible" });
    if (await loginError.isVisible()) throw new Error(`the page says: ${await loginError.textContent()}`);
    log(`signed in as ${opt.user}`);
  } else {
    log("API runs without auth; no sign-in");
  }

  step = "pick the first app";
  const firstOption = picker.locator("option").first();
  await firstOption.waitFor({ state: "attached" });
  const appId = await firstOption.getAttribute("value");
  const appLabel = (await firstOption.textContent())?.trim();
  await picker.selectOption(appId);
  if ((await picker.inputValue()) !== appId) throw new Error(`app picker shows ${await picker.inputValue()}, not ${appId}`);
  log(`picked app ${appLabel} (${appId})`);

  step = "wait for the CPU and requests charts to draw points";
  await page.waitForFunction(
    () =>
      ["chart-cpu", "chart-requests"].every(
        (id) => Number(document.querySelector(`[data-testid="${id}"]`)?.getAttribute("data-points")) > 0,
      ),
    null,
    { timeout: STEP_TIMEOUT },
  );
  const points = await page.$$eval("[data-testid^='chart-']", (els) =>
    els.map((e) => `${e.dataset.testid}=${e.dataset.points}`).join(" "),
  );
  log(`charts drew points: ${points}`);

  step = "read a search word off a shown log row";
  const rows = byId("log-row");
  await rows.first().waitFor({ state: "visible" });
  const firstMessage = (await rows.first().locator(".msg").textContent()) ?? "";
  const term = pickWord(firstMessage);
  if (!term) throw new Error(`no usable word in the first log row's message: ${JSON.stringify(firstMessage)}`);
  log(`searching logs for '${term}' (from: ${JSON.stringify(firstMessage.slice(0, 80))})`);

  step = `search the logs for '${term}'`;
  await byId("log-search").fill(term);
  await byId("log-search").press("Enter");
  await page.waitForFunction(
    (t) => {
      const list = document.querySelector('[data-testid="log-list"]');
      return list?.getAttribute("data-state") === "ready" && list.getAttribute("data-query") === t;
    },
    term,
    { timeout: STEP_TIMEOUT },
  );
  const shown = await rows.locator(".msg").allTextContents();
  if (shown.length === 0) throw new Error(`no log rows shown for '${term}', though a row contained it`);
  const missing = shown.filter((m) => !m.toLowerCase().includes(term.toLowerCase()));
  if (missing.length > 0) throw new Error(`${missing.length} of ${shown.length} rows lack '${term}', e.g. ${JSON.stringify(missing[0])}`);
  const marks = await rows.locator("mark").allTextContents();
  if (marks.length === 0) throw new Error(`no <mark> highlight in the ${shown.length} rows matching '${term}'`);
  const badMark = marks.find((m) => m.toLowerCase() !== term.toLowerCase());
  if (badMark !== undefined) throw new Error(`a <mark> highlights '${badMark}', not '${term}'`);
  log(`${shown.length} rows all contain '${term}', ${marks.length} highlights`);

  step = "wait for a rollup to arrive over the live stream";
  const live = byId("live-indicator");
  const before = Number(await live.getAttribute("data-live-rollups"));
  await page.waitForFunction(
    (n) => Number(document.querySelector('[data-testid="live-indicator"]')?.getAttribute("data-live-rollups")) > n,
    before,
    { timeout: LIVE_TIMEOUT },
  );
  log(`live rollups applied: ${before} -> ${await live.getAttribute("data-live-rollups")}`);

  step = "pick an org by name";
  const orgPicker = byId("org-picker");
  const spacePicker = byId("space-picker");
  const orgs = (await orgPicker.locator("option").evaluateAll((os) => os.map((o) => ({ value: o.value, label: o.textContent }))))
    .filter((o) => o.value !== "");
  if (orgs.length === 0) throw new Error("the org picker lists no org: no app's org is known");
  await orgPicker.selectOption({ label: orgs[0].label });
  log(`picked org ${orgs[0].label}`);

  step = "pick a space of that org by name";
  const spaces = (await spacePicker.locator("option").evaluateAll((os) => os.map((o) => ({ value: o.value, label: o.textContent }))))
    .filter((o) => o.value !== "");
  if (spaces.length === 0) throw new Error(`org ${orgs[0].label} lists no space`);
  await spacePicker.selectOption({ label: spaces[0].label });
  const places = await picker.locator("option").evaluateAll((os) => os.map((o) => o.title));
  if (places.length === 0) throw new Error(`space ${spaces[0].label} lists no app`);
  const elsewhere = places.filter((t) => !t.includes(`(${spaces[0].label} · ${orgs[0].label})`));
  if (elsewhere.length > 0) throw new Error(`the app list shows apps outside ${spaces[0].label}: ${elsewhere.join(", ")}`);
  log(`picked space ${spaces[0].label}: ${places.length} apps`);

  step = "find an app with the search box";
  const names = await picker.locator("option").allTextContents();
  const wanted = names[names.length - 1].trim();
  await byId("app-search").fill(wanted);
  await page.waitForFunction(
    (w) => {
      const options = [...document.querySelectorAll('[data-testid="app-picker"] option')];
      return options.length > 0 && options.every((o) => o.textContent.toLowerCase().includes(w.toLowerCase()));
    },
    wanted,
    { timeout: STEP_TIMEOUT },
  );
  if ((await picker.locator("option:checked").textContent())?.trim() !== wanted) {
    throw new Error(`the search for '${wanted}' did not select it: ${await picker.locator("option:checked").textContent()}`);
  }
  log(`searched for '${wanted}'`);

  for (const view of ["space", "org"]) {
    step = `show the ${view}'s charts`;
    await byId("view-picker").selectOption(view);
    await page.waitForFunction(
      () =>
        ["chart-group-cpu", "chart-group-requests", "chart-group-apps"].every(
          (id) => Number(document.querySelector(`[data-testid="${id}"]`)?.getAttribute("data-points")) > 0,
        ),
      null,
      { timeout: LIVE_TIMEOUT },
    );
    const title = await byId("scope-title").textContent();
    const name = view === "space" ? spaces[0].label : orgs[0].label;
    if (!title?.includes(name)) throw new Error(`the ${view} view is titled '${title}', not naming ${name}`);
    if (await byId("log-list").isVisible()) throw new Error(`the ${view} view still shows the app's logs`);
    log(`${title}: group charts drew points`);
  }
} catch (e) {
  failed = true;
  console.error(`FAILED at step "${step}": ${e instanceof Error ? e.message.split("\n")[0] : e}`);
  for (const b of browserErrors) console.error(`  ${b}`);
} finally {
  if (page) {
    try {
      await page.screenshot({ path: opt.screenshot, fullPage: true });
      log(`screenshot saved to ${opt.screenshot}`);
    } catch (e) {
      console.error(`could not save the screenshot: ${e instanceof Error ? e.message : e}`);
    }
  }
  await context?.close().catch(() => {});
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
if (!failed) log("PASS");
process.exit(failed ? 1 : 0);

/** A word of the message that is worth searching for: letters only, at least 3 of them, preferring longer ones. */
function pickWord(message) {
  const words = message.split(/\s+/).filter((w) => /^[A-Za-z]{3,}$/.test(w));
  words.sort((a, b) => b.length - a.length);
  return words[0] ?? message.split(/\s+/).find((w) => w.length > 0);
}
