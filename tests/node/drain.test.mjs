// Graceful drain (#18) with official clients: two nodes on the machine's
// Redis behind the round-robin proxy (health-checking /readyz, as a load
// balancer would), 200 WebSocket clients with automatic reconnect, half of
// them with stateful reconnect, under traffic: a broadcast every 25 ms from
// node B, and two stateful clients of node A broadcasting every 50 ms. Node A
// gets SIGTERM. It turns /readyz to 503 at once, keeps serving for its 1 s
// window, then moves its clients and exits: a plain client reconnects to B
// as a new connection; a stateful one is handed over to B — same connection
// id, every message exactly once and in order, what it sent included.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, connect, waitReady, within, signalR } from "./harness.mjs";
import { startProxy } from "./proxy.mjs";

const redis = process.env.HUBHOST_TEST_REDIS ?? "redis://127.0.0.1:6379";
const KEY = "drain-operator-key-0123456789";
const CLIENTS = 200;
const WINDOW_MS = 1000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("a node drained under traffic: stateful clients are handed over losing nothing, the others reconnect", async () => {
  const prefix = `node-drain-${process.pid}-${Date.now()}`;
  const common = ["--redis", redis, "--cluster-prefix", prefix, "--admin-key", KEY];
  const a = await startServer({ args: [...common, "--drain-window-ms", String(WINDOW_MS)] });
  const b = await startServer({ args: common });
  await Promise.all([waitReady(a.url), waitReady(b.url)]);
  const proxy = await startProxy([a.url, b.url], { checkReady: true });
  const clients = [];
  const tickers = [];
  try {
    const retry = { nextRetryDelayInMilliseconds: (ctx) => (ctx.elapsedMilliseconds < 20_000 ? 100 : null) };
    for (let i = 0; i < CLIENTS; i++) {
      // A negotiate and an upgrade each take a turn of the round robin: one
      // more request every other client puts negotiations on both nodes.
      if (i % 2) await fetch(`${proxy.url}/readyz`);
      const stateful = i % 4 < 2;
      const c = await connect(
        `${proxy.url}/demo/chat`,
        (builder) => (stateful ? builder.withStatefulReconnect() : builder).withAutomaticReconnect(retry),
        { transport: signalR.HttpTransportType.WebSockets },
      );
      Object.assign(c, { stateful, firstId: c.connectionId, reconnected: 0, closedForGood: false });
      c.onreconnected(() => c.reconnected++);
      c.onclose(() => (c.closedForGood = true));
      clients.push(c);
    }
    const owner = new Map(proxy.log.filter((e) => e.kind === "negotiate").map((e) => [e.token, e.node]));
    const tokens = proxy.log.filter((e) => e.kind === "negotiate").map((e) => e.token);
    clients.forEach((c, i) => (c.node = owner.get(tokens[i])));
    const onA = (stateful) => clients.filter((c) => c.node === 0 && c.stateful === stateful);
    assert.ok(onA(true).length >= 40 && onA(false).length >= 40, "both kinds on node A");

    // Traffic: a ticker on B, and two stateful clients of A. What each
    // sender got through (its send resolved) is what every client must have.
    const senders = [await connect(`${b.url}/demo/chat`), ...onA(true).slice(0, 2)];
    clients.push(senders[0]);
    senders.forEach((s, i) => {
      s.name = i === 0 ? "ticker" : `sender-${i}`;
      s.sent = [];
      let n = 0;
      const tick = () => {
        const text = `${s.name}:${n++}`;
        s.send("SendMessage", s.name, text).then(() => s.sent.push(text), () => {});
      };
      tickers.push(setInterval(tick, i === 0 ? 25 : 50));
    });
    await within(
      (async () => {
        while (clients.some((c) => c.received.length < 10)) await sleep(20);
      })(),
      10_000,
      "traffic at every client",
    );

    const started = Date.now();
    const stopped = a.stop(); // SIGTERM
    await within(
      (async () => {
        while ((await fetch(`${a.url}/readyz`)).status !== 503) await sleep(5);
      })(),
      1000,
      "/readyz answering 503",
    );
    const { code } = await within(stopped, 20_000, "node A's exit");
    const took = Date.now() - started;
    assert.equal(code, 0);
    assert.ok(took >= WINDOW_MS, `exited after ${took} ms, inside its window`);
    assert.ok(took < WINDOW_MS + 4000, `the drain took ${took} ms`);
    await within(
      (async () => {
        while (clients.some((c) => c.state !== "Connected" || (!c.stateful && c.node === 0 && !c.reconnected)))
          await sleep(50);
      })(),
      20_000,
      "every client connected again",
    );
    await sleep(500);
    tickers.forEach(clearInterval);
    const lastOf = senders.map((s) => s.sent.at(-1));
    await within(
      (async () => {
        while (clients.some((c) => lastOf.some((last) => !c.received.some(([, t]) => t === last)))) await sleep(20);
      })(),
      10_000,
      "the last message of every sender at every client",
    );
    await sleep(300); // nothing more arrives: no duplicates

    // A stateful client lost nothing and saw nothing twice: from the first
    // message of a sender it got, every one that sender got through, once,
    // in order. Same connection id; never closed.
    const report = { handedOver: 0, lost: [] };
    for (const c of clients.filter((c) => c.stateful)) {
      for (const s of senders) {
        const got = c.received.filter(([user]) => user === s.name).map(([, t]) => t);
        const from = s.sent.indexOf(got[0]);
        const expected = s.sent.slice(Math.max(from, 0));
        const unique = new Set(got);
        assert.equal(unique.size, got.length, `${c.connectionId} from ${s.name}: a message twice`);
        const missing = expected.filter((t) => !unique.has(t));
        if (missing.length) report.lost.push(`${c.node === 0 ? "A" : "B"} ${s.name}: ${missing.length}`);
        const order = got.filter((t) => expected.includes(t));
        assert.deepEqual(order, expected.filter((t) => unique.has(t)), `${s.name} in order`);
      }
      assert.equal(c.connectionId, c.firstId, "a stateful client keeps its connection id");
      assert.equal(c.closedForGood, false);
      if (c.node === 0) report.handedOver++;
    }
    assert.deepEqual(report.lost, [], "stateful clients lost messages");
    // A plain client of A reconnected to B: a new connection.
    for (const c of onA(false)) {
      assert.notEqual(c.connectionId, c.firstId);
      assert.equal(c.closedForGood, false);
    }
    const activity = await (
      await fetch(`${b.url}/admin/v1/tenants/demo/activity`, { headers: { Authorization: `Bearer ${KEY}` } })
    ).json();
    assert.equal(activity.hubs.find((h) => h.hub === "chat")?.connections, CLIENTS + 1, JSON.stringify(activity));
    const counts = senders.map((s) => `${s.name} ${s.sent.length}`).join(", ");
    console.log(
      `drain: ${report.handedOver} stateful clients handed over from A to B losing none, ${onA(false).length} plain ` +
        `clients reconnected; node A exited ${took} ms after SIGTERM (window ${WINDOW_MS} ms); sent: ${counts}`,
    );
  } finally {
    tickers.forEach(clearInterval);
    await Promise.allSettled(clients.map((c) => c.stop()));
    await proxy.close();
    await a.stop();
    await b.stop();
  }
});
