// Graceful drain (#18, part) with official clients: two nodes on the
// machine's Redis behind the round-robin proxy, 200 WebSocket clients with
// automatic reconnect, a broadcast every 20 ms; node A gets SIGTERM. It turns
// /readyz to 503 at once, keeps serving for its 1 s window, moves its clients
// in batches and exits; every client ends up on node B — reconnected, never
// closed — and a broadcast reaches all 200 again.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, connect, waitReady, within } from "./harness.mjs";
import { startProxy } from "./proxy.mjs";

const redis = process.env.HUBHOST_TEST_REDIS ?? "redis://127.0.0.1:6379";
const KEY = "drain-operator-key-0123456789";
const CLIENTS = 200;
const WINDOW_MS = 1000;

test("a node drained under traffic moves all its official clients to the other node", async () => {
  const prefix = `node-drain-${process.pid}-${Date.now()}`;
  const common = ["--redis", redis, "--cluster-prefix", prefix, "--admin-key", KEY];
  const a = await startServer({ args: [...common, "--drain-window-ms", String(WINDOW_MS)] });
  const b = await startServer({ args: common });
  await Promise.all([waitReady(a.url), waitReady(b.url)]);
  const proxy = await startProxy([a.url, b.url], { checkReady: true });
  const clients = [];
  let ticker;
  try {
    // Reconnect quickly: the proxy (health-checking /readyz, as a load
    // balancer would) sends the retries to node B.
    const retry = { nextRetryDelayInMilliseconds: (ctx) => (ctx.elapsedMilliseconds < 20_000 ? 100 : null) };
    for (let i = 0; i < CLIENTS; i++) {
      const c = await connect(`${proxy.url}/demo/chat`, (builder) => builder.withAutomaticReconnect(retry), {
        transport: 1, // WebSockets
        skipNegotiation: false,
      });
      Object.assign(c, { reconnecting: 0, reconnected: 0, closedForGood: false });
      c.onreconnecting(() => c.reconnecting++);
      c.onreconnected(() => c.reconnected++);
      c.onclose(() => (c.closedForGood = true));
      clients.push(c);
    }
    // Traffic from a sender connected to B directly.
    const sender = await connect(`${b.url}/demo/chat`);
    clients.push(sender);
    let sent = 0;
    ticker = setInterval(() => sender.invoke("SendMessage", "ticker", `t${sent++}`).catch(() => {}), 20);

    const started = Date.now();
    const stopped = a.stop(); // SIGTERM
    // Out of rotation at once: as soon as the signal is handled (a request
    // sent with the signal may still beat it there).
    await within(
      (async () => {
        while ((await fetch(`${a.url}/readyz`)).status !== 503) await new Promise((r) => setTimeout(r, 5));
      })(),
      1000,
      "/readyz answering 503",
    );
    const { code } = await within(stopped, 20_000, "node A's exit");
    const took = Date.now() - started;
    assert.equal(code, 0);
    assert.ok(took >= WINDOW_MS, `exited after ${took} ms, inside its window`);
    assert.ok(took < WINDOW_MS + 4000, `the drain took ${took} ms`);

    // Everyone is back, on B, none closed for good.
    await within(
      (async () => {
        while (clients.some((c) => c.state !== "Connected")) await new Promise((r) => setTimeout(r, 50));
      })(),
      20_000,
      "every client connected again",
    );
    clearInterval(ticker);
    const moved = clients.filter((c) => c.reconnected > 0).length;
    assert.ok(moved > 0, "some clients were on node A");
    assert.deepEqual(
      clients.filter((c) => c.closedForGood || c.reconnecting !== c.reconnected).map((c) => c.connectionId),
      [],
    );
    const activity = await (
      await fetch(`${b.url}/admin/v1/tenants/demo/activity`, { headers: { Authorization: `Bearer ${KEY}` } })
    ).json();
    assert.equal(activity.hubs.find((h) => h.hub === "chat")?.connections, CLIENTS + 1, JSON.stringify(activity));
    await sender.invoke("SendMessage", "after", "the drain");
    await Promise.all(clients.map((c) => c.waitFor(([u, m]) => u === "after" && m === "the drain", "the last broadcast")));
    console.log(`drain: ${moved} of ${CLIENTS} clients moved from node A to node B; node A exited ${took} ms after SIGTERM`);
  } finally {
    clearInterval(ticker);
    await Promise.allSettled(clients.map((c) => c.stop()));
    await proxy.close();
    await a.stop();
    await b.stop();
  }
});
