// Drives the dashboard of a running Switchyard in headless Chromium:
// the page loads and shows its pools; an instance drained through the admin
// API shows as draining without a reload (the live feed refreshes the page).
//
// Usage: node check.mjs ADMIN_URL POOL SCREENSHOT_PATH
// Env: CHROMIUM (default /usr/bin/chromium).
// Prints one JSON line with what it saw; exits non-zero on any failure.
import { chromium } from "playwright-core";

const [adminUrl, pool, screenshot] = process.argv.slice(2);
const bound = 60_000; // generous: the machine is small and shared
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // As root, without a sandbox; no background traffic (the network is closed).
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${adminUrl}/dashboard`);
  await page.locator(`h3[data-pool="${pool}"]`).waitFor({ timeout: bound });
  const rows = page.locator("tr[data-instance]");
  const instances = await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.instance));
  if (instances.length === 0) throw new Error("no instance rows");
  await page.locator("#live", { hasText: "live" }).waitFor({ timeout: bound });
  const target = instances[0];
  const state = page.locator(`tr[data-instance="${target}"] [data-state]`);
  const before = await state.textContent();
  const response = await fetch(`${adminUrl}/v1/pools/${pool}/instances/${target}/drain`, { method: "POST" });
  if (!response.ok) throw new Error(`drain: ${response.status} ${await response.text()}`);
  await page.locator(`tr[data-instance="${target}"] [data-state]`, { hasText: "draining" }).waitFor({ timeout: bound });
  await page.locator("#events li[data-kind=config_changed]").first().waitFor({ timeout: bound });
  await page.screenshot({ path: screenshot, fullPage: true });
  if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  console.log(JSON.stringify({ pool, instances, drained: target, before, after: await state.textContent() }));
} finally {
  await browser.close();
}
