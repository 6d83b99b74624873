// Drives the dashboard of a running Switchyard in headless Chromium:
// the page loads and shows its pools; under steady traffic (~50 req/s to
// PROXY_URL) the requests/s readout stays a plausible rate even when two
// refreshes run at once; an instance drained through the admin API shows as
// draining without a reload (the live feed refreshes the page), and the
// feed says which pool and instance; nothing the page asks for is a 404.
//
// Usage: node check.mjs ADMIN_URL POOL SCREENSHOT_PATH PROXY_URL
// Env: CHROMIUM (default /usr/bin/chromium).
// Prints one JSON line with what it saw; exits non-zero on any failure.
import { chromium } from "playwright-core";

const [adminUrl, pool, screenshot, proxyUrl] = process.argv.slice(2);
const bound = 60_000; // generous: the machine is small and shared
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // As root, without a sandbox; no background traffic (the network is closed).
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
// Steady traffic through the proxy, ~50 requests/s.
const traffic = setInterval(() => { fetch(proxyUrl).catch(() => {}); }, 20);
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("response", (r) => { if (r.status() === 404) errors.push(`404: ${r.url()}`); });
  await page.goto(`${adminUrl}/dashboard`);
  await page.locator(`h3[data-pool="${pool}"]`).waitFor({ timeout: bound });
  const rows = page.locator("tr[data-instance]");
  const instances = await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.instance));
  if (instances.length === 0) throw new Error("no instance rows");
  await page.locator("#live", { hasText: "live" }).waitFor({ timeout: bound });
  // A rate readout, then twice two refreshes at once: the readout stays a
  // rate of the traffic (not 0, not thousands, not Infinity).
  await page.waitForFunction(() => Number(document.getElementById("rate").textContent) > 0, null, { timeout: bound });
  const rates = [];
  for (let i = 0; i < 2; i++) {
    await page.evaluate(() => Promise.all([refresh(), refresh()]));
    rates.push(await page.locator("#rate").textContent());
    await page.waitForTimeout(1600);
  }
  for (const rate of rates) {
    const value = Number(rate);
    if (!(value >= 2 && value <= 1000)) throw new Error(`implausible requests/s readout ${rate} (all: ${rates})`);
  }
  const target = instances[0];
  const state = page.locator(`tr[data-instance="${target}"] [data-state]`);
  const before = await state.textContent();
  const response = await fetch(`${adminUrl}/v1/pools/${pool}/instances/${target}/drain`, { method: "POST" });
  if (!response.ok) throw new Error(`drain: ${response.status} ${await response.text()}`);
  await page.locator(`tr[data-instance="${target}"] [data-state]`, { hasText: "draining" }).waitFor({ timeout: bound });
  const feed = page.locator("#events li[data-kind=config_changed]", { hasText: "draining" }).first();
  await feed.waitFor({ timeout: bound });
  const said = await feed.textContent();
  if (!said.includes(`pool ${pool}`) || !said.includes(target)) throw new Error(`the feed says: ${said}`);
  await page.screenshot({ path: screenshot, fullPage: true });
  if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  console.log(JSON.stringify({ pool, instances, drained: target, before, after: await state.textContent(), rates, said }));
} finally {
  clearInterval(traffic);
  await browser.close();
}
