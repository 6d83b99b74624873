// Drives the dashboard of a running `switchyard demo` in headless Chromium,
// with steady traffic (~100 req/s to PROXY_URL), and checks through the DOM:
// - the charts of traffic and latency get points (from the page's scrapes);
// - the canary's share of requests shown is within a few points of the 20%
//   the demo's canary-split plugin sends it;
// - an instance this script adds (a server of its own) and then stops turns
//   unhealthy on its timeline;
// - drain from the page (confirmed in the dialog) drains the instance, and
//   the API agrees; the events feed says so;
// - the requests/s readout stays plausible when two refreshes run at once;
// - a banner, not a frozen page, when the admin API is unreachable;
// - each route is listed with what serves it and its filters;
// - no page error, nothing the page asks for is a 404; it reads at
//   1280×800 (no card cut at its edge) and in a narrow window
//   (screenshots of both).
//
// Usage: node check.mjs ADMIN_URL POOL SCREENSHOT_DIR PROXY_URL
// Env: CHROMIUM (default /usr/bin/chromium).
// Prints one JSON line with what it saw; exits non-zero on any failure.
import http from "node:http";
import { chromium } from "playwright-core";

const [adminUrl, pool, shots, proxyUrl] = process.argv.slice(2);
const bound = 60_000; // generous: the machine is small and shared
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // As root, without a sandbox; no background traffic (the network is closed).
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const traffic = setInterval(() => { fetch(proxyUrl).catch(() => {}); }, 10);
// An instance of this script's own, to stop later.
const sockets = new Set();
const extra = http.createServer((_, res) => res.end("extra"));
extra.on("connection", (s) => { sockets.add(s); s.on("close", () => sockets.delete(s)); });
await new Promise((ok) => extra.listen(0, "127.0.0.1", ok));
const extraHost = `127.0.0.1:${extra.address().port}`;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("response", (r) => { if (r.status() === 404) errors.push(`404: ${r.url()}`); });
  page.on("dialog", (d) => d.accept());
  await page.goto(`${adminUrl}/dashboard`);
  await page.locator(`h3[data-pool="${pool}"]`).waitFor({ timeout: bound });
  const rows = page.locator("tr[data-instance]");
  const instances = await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.instance));
  if (instances.length === 0) throw new Error("no instance rows");
  await page.locator("#live", { hasText: "live" }).waitFor({ timeout: bound });
  // The config store and its revision (the demo keeps a state file).
  await page.waitForFunction(() => /^file r\d+$/.test(document.getElementById("store").textContent), null, { timeout: bound });

  // Each route, what serves it and its filters (the demo's one route:
  // pool demo, no filters).
  const routeRow = await page.locator('tr[data-route="0"]').textContent({ timeout: bound });

  // Charts with points.
  await page.waitForFunction(() => [...document.querySelectorAll("[data-chart]")].some((c) => Number(c.dataset.points) >= 3), null, { timeout: bound });
  const chartPoints = await page.locator("[data-chart]").evaluateAll((cs) => Object.fromEntries(cs.map((c) => [c.dataset.chart, Number(c.dataset.points)])));

  // The canary's share, once the 10 s window is full.
  const canary = page.locator('tr[data-labels="track=canary"] [data-share]');
  await canary.waitFor({ timeout: bound });
  await page.waitForTimeout(11_000);
  const canaryShare = Number((await canary.textContent()).replace("%", ""));
  if (!(Math.abs(canaryShare - 20) <= 6)) throw new Error(`the canary's share shown is ${canaryShare}%, not ~20%`);

  // The requests/s readout, twice with two refreshes at once.
  const rates = [];
  for (let i = 0; i < 2; i++) {
    await page.evaluate(() => Promise.all([refresh(), refresh()]));
    rates.push(await page.locator("#rate").textContent());
    await page.waitForTimeout(1600);
  }
  for (const rate of rates) {
    const value = Number(rate);
    if (!(value >= 2 && value <= 5000)) throw new Error(`implausible requests/s readout ${rate} (all: ${rates})`);
  }

  // An instance that stops turns unhealthy on its timeline.
  const added = await fetch(`${adminUrl}/v1/pools/${pool}/instances`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ url: `http://${extraHost}` }),
  });
  if (!added.ok) throw new Error(`adding ${extraHost}: ${added.status} ${await added.text()}`);
  await page.locator(`tr[data-instance="${extraHost}"] [data-state]`, { hasText: "fit" }).waitFor({ timeout: bound });
  extra.close();
  for (const s of sockets) s.destroy();
  await page.locator(`[data-timeline="${pool}/${extraHost}"] span[data-phase="unhealthy"]`).first().waitFor({ timeout: bound });
  const killedState = await page.locator(`tr[data-instance="${extraHost}"] [data-state]`).textContent();

  // Drain from the page (the confirmation is accepted); the API agrees.
  const target = instances[0];
  const state = page.locator(`tr[data-instance="${target}"] [data-state]`);
  const before = await state.textContent();
  await page.locator(`button[data-action="drain"][data-host="${target}"]`).click();
  await page.locator(`tr[data-instance="${target}"] [data-state]`, { hasText: "draining" }).waitFor({ timeout: bound });
  const config = await (await fetch(`${adminUrl}/v1/pools/${pool}`)).json();
  const drainedInApi = config.instances.some((i) => i.url.endsWith(target) && i.drain === true);
  if (!drainedInApi) throw new Error(`the API does not say ${target} drains: ${JSON.stringify(config.instances)}`);
  const feed = page.locator("#events li[data-kind=config_changed]", { hasText: "draining" }).first();
  await feed.waitFor({ timeout: bound });
  const said = await feed.textContent();
  if (!said.includes(`pool ${pool}`) || !said.includes(target)) throw new Error(`the feed says: ${said}`);
  // A filtered request log.
  await page.fill("#filter", "200");
  await page.locator("tr[data-request]").first().waitFor({ timeout: bound });
  await page.fill("#filter", "");
  await page.evaluate(() => { for (const e of document.querySelectorAll("section")) e.scrollLeft = 0; window.scrollTo(0, 0); });
  // At 1280 px every card shows all of its columns (none cut at the edge).
  const cut = await page.evaluate(() => [...document.querySelectorAll("section")]
    .filter((e) => e.scrollWidth - e.clientWidth > 1)
    .map((e) => `${e.querySelector("h2").textContent} (${e.scrollWidth - e.clientWidth}px)`));
  if (cut.length) throw new Error(`cards wider than their place at 1280 px: ${cut.join(", ")}`);
  await page.screenshot({ path: `${shots}/dashboard.png`, fullPage: true });

  // A narrow window: one column, nothing wider than the window.
  await page.setViewportSize({ width: 420, height: 900 });
  await page.waitForTimeout(500);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 2) throw new Error(`the narrow page is ${overflow}px wider than its window`);
  await page.screenshot({ path: `${shots}/dashboard-narrow.png`, fullPage: true });

  // The admin API unreachable: a banner; reachable again: gone.
  await page.route("**/v1/status", (route) => route.abort());
  await page.locator("#banner.shown").waitFor({ timeout: bound });
  const bannerText = await page.locator("#banner").textContent();
  await page.unroute("**/v1/status");
  await page.locator("#banner:not(.shown)").waitFor({ state: "attached", timeout: bound });

  if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  console.log(JSON.stringify({
    pool, instances, drained: target, before, after: await state.textContent(), rates, said,
    chartPoints, canaryShare, killed: extraHost, killedState, drainedInApi, bannerText, routeRow,
  }));
} finally {
  clearInterval(traffic);
  extra.close();
  await browser.close();
}
