// The dashboard at /admin/ in a real browser (Debian's Chromium, driven by
// playwright-core): sign in with an operator key, deploy a hub from a file,
// see it active, deploy again, roll back, activate, watch the connection
// count follow an official client, see a hub's trap among the errors; then
// a tenant's own key, which sees its tenant only. The last screenshot is the
// README's (SCREENSHOT=path writes it there; by default under target/).
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer, connect, guest } from "./harness.mjs";

const OPERATOR = "operator-key-0123456789";
const TENANT_KEY = "acme-admin-key-0123456789";
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const screenshot = process.env.SCREENSHOT ?? path.join(root, "target", "dashboard.png");

async function admin(server, method, route, body, type = "application/json") {
  const response = await fetch(`${server.url}/admin/v1${route}`, {
    method,
    headers: { Authorization: `Bearer ${OPERATOR}`, ...(body ? { "Content-Type": type } : {}) },
    body,
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${route}: ${response.status} ${text}`);
  return JSON.parse(text);
}

/** Sign in on a fresh page; `tenant` names the tenant of a tenant key. */
async function signIn(browser, server, key, tenant = "") {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const problems = [];
  page.on("pageerror", (error) => problems.push(error.message));
  // A tenant key's sign-in asks the operator route first: its 403 is expected.
  const expected = /Failed to load resource: .* 403/;
  page.on("console", (m) => m.type() === "error" && !expected.test(m.text()) && problems.push(m.text()));
  await page.goto(`${server.url}/admin/`);
  await page.fill("#key", key);
  await page.fill("#tenant", tenant);
  await page.click("#login button[type=submit]");
  return { page, problems };
}

const row = (page, hub) => page.locator(`#hubs tbody tr[data-hub="${hub}"]`);

test("the dashboard deploys, activates, rolls back and shows live counts and errors", async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: the README's test command installs it`);
  const server = await startServer({ hubs: [], args: ["--admin-key", OPERATOR] });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  const clients = [];
  try {
    const { page, problems } = await signIn(browser, server, OPERATOR, "demo");
    await page.locator("#who", { hasText: "operator" }).waitFor();
    const csp = (await page.request.get(`${server.url}/admin/`)).headers()["content-security-policy"];
    assert.match(csp, /script-src 'self'/);

    // Deploy v1 (the chat hub) from a file, then v2 (the greeter).
    await page.fill("#deploy-hub", "live");
    await page.setInputFiles("#deploy-file", guest("chat"));
    await page.click("#deploy button[type=submit]");
    await row(page, "live").locator(".active-version", { hasText: "v1" }).waitFor();
    await page.setInputFiles("#deploy-file", guest("greeter"));
    await page.click("#deploy button[type=submit]");
    await row(page, "live").locator(".active-version", { hasText: "v2" }).waitFor();
    await row(page, "live").locator(".served", { hasText: "store v2" }).waitFor();

    // Roll back to v1, then activate v2 again from its button.
    await row(page, "live").getByRole("button", { name: "Roll back" }).click();
    await row(page, "live").locator(".active-version", { hasText: "v1" }).waitFor();
    assert.equal((await admin(server, "GET", "/tenants/demo/hubs/live")).active, 1);
    await row(page, "live").getByRole("button", { name: "activate v2" }).click();
    await row(page, "live").locator(".active-version", { hasText: "v2" }).waitFor();
    await row(page, "live").getByRole("button", { name: "Roll back" }).click();
    await row(page, "live").locator(".active-version", { hasText: "v1" }).waitFor();

    // Live connection counts: official clients come, and one goes.
    await row(page, "live").locator(".connections", { hasText: "0" }).waitFor();
    for (let i = 0; i < 3; i++) clients.push(await connect(`${server.url}/demo/live`));
    await row(page, "live").locator(".connections", { hasText: "3" }).waitFor();
    await clients.pop().stop();
    await row(page, "live").locator(".connections", { hasText: "2" }).waitFor();
    for (let i = 0; i < 40; i++) await clients[0].invoke("Echo", i);

    // A hub that traps: its error is listed with the call that failed.
    const faulty = readFileSync(guest("faulty"));
    await admin(server, "POST", "/tenants/demo/hubs/faulty/versions?activate=true", faulty, "application/wasm");
    const victim = await connect(`${server.url}/demo/faulty`);
    clients.push(victim);
    await assert.rejects(victim.invoke("Panic"));
    await page.locator("#errors tbody tr", { hasText: "Panic" }).waitFor();
    await page.locator("#errors tbody td.error", { hasText: "trapped" }).first().waitFor();
    await page.waitForFunction(() => {
      const rate = document.querySelector('#hubs tbody tr[data-hub="live"] .calls');
      return rate && rate.textContent !== "-";
    });
    assert.deepEqual(problems, []);
    mkdirSync(path.dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true });

    // A tenant's own key: its tenant, not another's.
    await admin(server, "PUT", "/tenants/acme", JSON.stringify({ admin_keys: [TENANT_KEY] }));
    const wrong = await signIn(browser, server, TENANT_KEY, "demo");
    await wrong.page.locator("#status", { hasText: "not one of that tenant's" }).waitFor();
    const own = await signIn(browser, server, TENANT_KEY, "acme");
    await own.page.locator("#who", { hasText: "tenant acme" }).waitFor();
    assert.equal(await own.page.locator("#tenant-pick").isHidden(), true);
    await own.page.fill("#deploy-hub", "mine");
    await own.page.setInputFiles("#deploy-file", guest("greeter"));
    await own.page.click("#deploy button[type=submit]");
    await row(own.page, "mine").locator(".active-version", { hasText: "v1" }).waitFor();
    assert.equal(await row(own.page, "live").count(), 0);
    const bad = await signIn(browser, server, "not-a-key-0123456789", "");
    await bad.page.locator("#status", { hasText: "not accepted" }).waitFor();
    assert.deepEqual(own.problems, []);
  } finally {
    await Promise.all(clients.map((c) => c.stop()));
    await browser.close();
    await server.stop();
  }
});
