// Loads PAGE_URL in headless Chromium and waits for the page to write its
// outcome into its title (a JSON object of what each cross-origin fetch
// got: "STATUS BODY", or "blocked" when the browser refused it); prints
// that JSON. The page is the test's (tests/all/filters.rs).
//
// Usage: node cors.mjs PAGE_URL
// Env: CHROMIUM (default /usr/bin/chromium).
import { chromium } from "playwright-core";

const [pageUrl] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage();
  await page.goto(pageUrl);
  await page.waitForFunction(() => document.title.startsWith("{"), null, { timeout: 60_000 });
  console.log(await page.title());
} finally {
  await browser.close();
}
