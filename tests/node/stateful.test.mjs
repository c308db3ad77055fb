// Stateful reconnect (#18) with the official client's withStatefulReconnect():
// two nodes on the machine's Redis behind the round-robin proxy, which cuts
// every WebSocket every 500 ms while 3 clients broadcast and send to their
// group. Each cut client reconnects with the same token, through whichever
// node the proxy picks (the other node passes it on to the owner), and
// resumes: every message arrives exactly once and in order per sender, the
// connection id never changes, and no connection closes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, connect, waitReady, within, signalR } from "./harness.mjs";
import { startProxy } from "./proxy.mjs";

const redis = process.env.HUBHOST_TEST_REDIS ?? "redis://127.0.0.1:6379";
const CLIENTS = 3;
const MESSAGES = 120;

test("cut every 500 ms: every message once and in order, same connection, through either node", async () => {
  const prefix = `node-stateful-${process.pid}-${Date.now()}`;
  const common = ["--redis", redis, "--cluster-prefix", prefix];
  const nodes = [await startServer({ args: common }), await startServer({ args: common })];
  await Promise.all(nodes.map((n) => waitReady(n.url)));
  const proxy = await startProxy(nodes.map((n) => n.url));
  const clients = [];
  let cutter;
  try {
    for (let i = 0; i < CLIENTS; i++) {
      const c = await connect(`${proxy.url}/demo/chat`, (b) => b.withStatefulReconnect(), {
        transport: signalR.HttpTransportType.WebSockets,
      });
      c.name = `sender-${i}`;
      c.closed = false;
      c.onclose(() => (c.closed = true));
      c.firstId = c.connectionId;
      await c.invoke("JoinGroup", "g");
      clients.push(c);
    }
    let cuts = 0;
    cutter = setInterval(() => (cuts += proxy.cutWebSockets() > 0 ? 1 : 0), 700);
    // Each sender: a broadcast and a group message every 25 ms.
    await Promise.all(
      clients.map(async (c) => {
        for (let n = 0; n < MESSAGES; n++) {
          await c.send("SendMessage", c.name, `all-${n}`);
          await c.send("SendToGroup", "g", c.name, `group-${n}`);
          await new Promise((r) => setTimeout(r, 25));
        }
      }),
    );
    clearInterval(cutter);

    const expected = CLIENTS * MESSAGES * 2;
    await within(
      (async () => {
        while (clients.some((c) => c.received.length < expected)) await new Promise((r) => setTimeout(r, 50));
      })(),
      20_000,
      `every message at every client (${clients.map((c) => c.received.length)} of ${expected})`,
    );
    await new Promise((r) => setTimeout(r, 300)); // nothing more arrives: no duplicates
    for (const c of clients) {
      assert.equal(c.received.length, expected, `${c.name}: exactly once`);
      for (const sender of clients) {
        for (const kind of ["all", "group"]) {
          const got = c.received.filter(([user, text]) => user === sender.name && text.startsWith(`${kind}-`));
          assert.deepEqual(
            got.map(([, text]) => text),
            Array.from({ length: MESSAGES }, (_, n) => `${kind}-${n}`),
            `${c.name} from ${sender.name}, ${kind}: in order`,
          );
        }
      }
      assert.equal(c.connectionId, c.firstId, "same connection id");
      assert.equal(c.state, "Connected");
      assert.equal(c.closed, false, "never closed");
    }
    assert.ok(cuts >= 3, `only ${cuts} cuts happened while sending`);
    // Every client came back, some through the node that does not own it.
    const owner = new Map(proxy.log.filter((e) => e.kind === "negotiate").map((e) => [e.token, e.node]));
    const upgrades = proxy.log.filter((e) => e.kind === "upgrade" && owner.has(e.id));
    for (const [token] of owner) {
      assert.ok(upgrades.filter((e) => e.id === token).length >= 2, "each client reconnected");
    }
    assert.ok(upgrades.some((e) => e.node !== owner.get(e.id) && e.status === 101), "a reconnect through the other node");
    console.log(`${cuts} cuts, ${upgrades.length} WebSocket upgrades for ${CLIENTS} connections, ${expected} messages each`);
  } finally {
    clearInterval(cutter);
    await Promise.all(clients.map((c) => c.stop().catch(() => {})));
    await proxy.close();
    await Promise.all(nodes.map((n) => n.stop()));
  }
});

// What a crash costs (measured, not hidden): a node killed with SIGKILL takes
// its connections' state with it. Its stateful clients cannot resume (the
// other node answers 404 for a connection it never had), so the official
// client falls back to automatic reconnect: a new connection on the other
// node, without the messages sent meanwhile. Connections of the surviving
// node resume and lose nothing (unless their one stateful retry meets the
// dead node before the load balancer stops sending to it: then they start
// over too).
test("a node killed with SIGKILL: its clients start over on the other node; what they lose is counted", async () => {
  const prefix = `node-stateful-kill-${process.pid}-${Date.now()}`;
  const common = ["--redis", redis, "--cluster-prefix", prefix];
  const nodes = [await startServer({ args: common }), await startServer({ args: common })];
  await Promise.all(nodes.map((n) => waitReady(n.url)));
  const proxy = await startProxy(nodes.map((n) => n.url), { checkReady: true });
  const clients = [];
  let ticker;
  try {
    const retry = { nextRetryDelayInMilliseconds: (ctx) => (ctx.elapsedMilliseconds < 20_000 ? 100 : null) };
    for (let i = 0; i < 20; i++) {
      // A negotiate and an upgrade each take a turn of the round robin: one
      // more request every other client puts negotiations on both nodes.
      if (i % 2) await fetch(`${proxy.url}/readyz`);
      const c = await connect(`${proxy.url}/demo/chat`, (b) => b.withStatefulReconnect().withAutomaticReconnect(retry), {
        transport: signalR.HttpTransportType.WebSockets,
      });
      c.firstId = c.connectionId;
      c.closed = false;
      c.onclose(() => (c.closed = true));
      clients.push(c);
    }
    const owner = new Map(proxy.log.filter((e) => e.kind === "negotiate").map((e) => [e.token, e.node]));
    const tokens = proxy.log.filter((e) => e.kind === "negotiate").map((e) => e.token);
    clients.forEach((c, i) => (c.node = owner.get(tokens[i])));
    const sender = await connect(`${nodes[1].url}/demo/chat`);
    let sent = 0;
    ticker = setInterval(() => sender.send("SendMessage", "ticker", `t${sent++}`).catch(() => {}), 20);
    await within(
      (async () => {
        while (clients.some((c) => !c.received.length)) await new Promise((r) => setTimeout(r, 20));
      })(),
      10_000,
      "traffic at every client",
    );

    await nodes[0].kill();
    const onA = clients.filter((c) => c.node === 0);
    assert.ok(onA.length > 0 && onA.length < clients.length, "clients on both nodes");
    await within(
      (async () => {
        while (clients.some((c) => c.state !== "Connected" || (c.node === 0 && c.connectionId === c.firstId)))
          await new Promise((r) => setTimeout(r, 50));
      })(),
      20_000,
      "every client of the killed node connected again",
    );
    await new Promise((r) => setTimeout(r, 500));
    clearInterval(ticker);
    const last = sent - 1;
    await within(
      (async () => {
        while (clients.some((c) => !c.received.some(([, t]) => t === `t${last}`))) await new Promise((r) => setTimeout(r, 20));
      })(),
      10_000,
      "the last message at every client",
    );
    const lost = (c) => {
      const got = new Set(c.received.map(([, t]) => t));
      const first = Number(c.received[0][1].slice(1));
      let missing = 0;
      for (let n = first; n <= last; n++) if (!got.has(`t${n}`)) missing++;
      return missing;
    };
    // A client whose connection lived on (its node survived; it resumed)
    // lost nothing. One that started over (its node died, or its one
    // stateful retry met the dead node before the load balancer's health
    // check dropped it) has a new id and lost what was sent meanwhile.
    const resumed = clients.filter((c) => c.connectionId === c.firstId);
    const restarted = clients.filter((c) => c.connectionId !== c.firstId);
    for (const c of resumed) assert.equal(lost(c), 0, "a connection that lived on lost nothing");
    assert.ok(onA.every((c) => restarted.includes(c)), "the killed node's connections are gone");
    assert.ok(clients.every((c) => !c.closed), "never closed for good");
    console.log(
      `SIGKILL of one node of two (a message every 20 ms, ${sent} in all): ${onA.length} of ${clients.length} connections lived on it; ` +
        `${restarted.length} clients started over, losing ${restarted.map(lost).join(", ")} messages; ${resumed.length} resumed, losing none`,
    );
  } finally {
    clearInterval(ticker);
    await Promise.all(clients.map((c) => c.stop().catch(() => {})));
    await proxy.close();
    await Promise.all(nodes.map((n) => n.stop()));
  }
});
