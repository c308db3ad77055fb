// A rolling restart (#18), measured: three nodes on the machine's Redis
// behind the health-checking round-robin proxy; 100 official clients with
// automatic reconnect, half of them with stateful reconnect; a stateful
// client broadcasting every 25 ms. Each node in turn gets SIGTERM, drains
// (500 ms window), exits, and starts again on its port (a new node id). A
// stateful client may move twice: the second time its token names a node
// that is gone, and the node it reaches asks the nodes holding its connections. Stateful clients
// lose nothing and keep their connection ids; what plain clients lose while
// they start over is counted and printed (docs' benchmark chapter).
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, connect, waitReady, within, signalR } from "./harness.mjs";
import { startProxy } from "./proxy.mjs";

const redis = process.env.HUBHOST_TEST_REDIS ?? "redis://127.0.0.1:6379";
const CLIENTS = 100;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("a rolling restart of 3 nodes under traffic: stateful clients lose nothing", async () => {
  const prefix = `node-rolling-${process.pid}-${Date.now()}`;
  const args = ["--redis", redis, "--cluster-prefix", prefix, "--drain-window-ms", "500"];
  const nodes = [];
  for (let i = 0; i < 3; i++) nodes.push(await startServer({ args }));
  await Promise.all(nodes.map((n) => waitReady(n.url)));
  const proxy = await startProxy(nodes.map((n) => n.url), { checkReady: true });
  const clients = [];
  let ticker;
  try {
    const retry = { nextRetryDelayInMilliseconds: (ctx) => (ctx.elapsedMilliseconds < 30_000 ? 100 : null) };
    for (let i = 0; i < CLIENTS; i++) {
      const stateful = i % 2 === 0;
      const c = await connect(
        `${proxy.url}/demo/chat`,
        (b) => (stateful ? b.withStatefulReconnect() : b).withAutomaticReconnect(retry),
        { transport: signalR.HttpTransportType.WebSockets },
      );
      Object.assign(c, { stateful, firstId: c.connectionId, closedForGood: false });
      c.onclose(() => (c.closedForGood = true));
      clients.push(c);
    }
    const sender = clients[0];
    const sent = [];
    let n = 0;
    ticker = setInterval(() => {
      const text = `t${n++}`;
      sender.send("SendMessage", "ticker", text).then(() => sent.push(text), () => {});
    }, 25);
    await within(
      (async () => {
        while (clients.some((c) => !c.received.length)) await sleep(20);
      })(),
      10_000,
      "traffic at every client",
    );

    const drains = [];
    for (let i = 0; i < nodes.length; i++) {
      const started = Date.now();
      const { code } = await within(nodes[i].stop(), 20_000, `node ${i}'s exit`);
      assert.equal(code, 0);
      drains.push(Date.now() - started);
      nodes[i] = await startServer({ listen: `127.0.0.1:${nodes[i].port}`, args });
      await waitReady(nodes[i].url);
      await within(
        (async () => {
          while (clients.some((c) => c.state !== "Connected")) await sleep(50);
        })(),
        30_000,
        "every client connected again",
      );
      await sleep(300); // the proxy's health check sees the new node
    }
    await sleep(300);
    clearInterval(ticker);
    const last = sent.at(-1);
    await within(
      (async () => {
        while (clients.some((c) => !c.received.some(([, t]) => t === last))) await sleep(20);
      })(),
      10_000,
      "the last message at every client",
    );
    await sleep(300);
    const lost = (c) => {
      const got = c.received.filter(([u]) => u === "ticker").map(([, t]) => t);
      const unique = new Set(got);
      const from = sent.indexOf(got[0]);
      return {
        missing: sent.slice(Math.max(from, 0)).filter((t) => !unique.has(t)).length,
        twice: got.length - unique.size,
      };
    };
    const stateful = clients.filter((c) => c.stateful);
    const plain = clients.filter((c) => !c.stateful);
    for (const c of stateful) {
      assert.deepEqual(lost(c), { missing: 0, twice: 0 }, `stateful client ${c.firstId}`);
      assert.equal(c.connectionId, c.firstId, "a stateful client keeps its connection id");
    }
    assert.ok(clients.every((c) => !c.closedForGood), "never closed for good");
    const plainLost = plain.map((c) => lost(c).missing);
    const restarted = plain.filter((c) => c.connectionId !== c.firstId).length;
    console.log(
      `rolling restart of 3 nodes (drains took ${drains.join(", ")} ms), ${sent.length} broadcasts at one every 25 ms: ` +
        `${stateful.length} stateful clients lost 0 and kept their ids; ${restarted} of ${plain.length} plain clients started over, ` +
        `losing ${plainLost.reduce((a, b) => a + b, 0)} messages in all (at most ${Math.max(...plainLost)} each)`,
    );
  } finally {
    clearInterval(ticker);
    await Promise.allSettled(clients.map((c) => c.stop()));
    await proxy.close();
    await Promise.all(nodes.map((n) => n.stop()));
  }
});
