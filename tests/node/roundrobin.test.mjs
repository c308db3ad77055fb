// Two hubhost nodes on the machine's Redis behind a round-robin proxy with no
// affinity at all: every HTTP request and every WebSocket upgrade goes to the
// next node in turn. A connection's requests therefore land on both nodes, and
// the node that did not negotiate it must forward them to the one that did.
// Official clients on every transport × protocol still get every message
// exactly once and never drop.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import { startServer, connect, signalR, waitReady, within, recordingLogger } from "./harness.mjs";
import { startProxy } from "./proxy.mjs";

const redis = process.env.HUBHOST_TEST_REDIS ?? "redis://127.0.0.1:6379";
const prefix = `node-roundrobin-${process.pid}-${Date.now()}`;
const { WebSockets, ServerSentEvents, LongPolling } = signalR.HttpTransportType;

const BROADCASTS = 30;
const GROUP_MESSAGES = 10;
const GROUP = "rr-group";

// Connected in this order: the WebSocket and SSE clients first, while no other
// client makes HTTP requests, so their negotiate and their upgrade / event
// stream are consecutive requests and always land on different nodes.
const SETUPS = [
  { name: "WebSockets×JSON", transport: WebSockets, msgpack: false, member: true },
  { name: "WebSockets×MessagePack", transport: WebSockets, msgpack: true, member: true },
  { name: "ServerSentEvents×JSON", transport: ServerSentEvents, msgpack: false, member: true },
  { name: "LongPolling×JSON", transport: LongPolling, msgpack: false, member: true },
  { name: "LongPolling×MessagePack", transport: LongPolling, msgpack: true, member: true },
  // Not in the group: group messages must not reach it through either node.
  { name: "LongPolling×JSON(outsider)", transport: LongPolling, msgpack: false, member: false },
];

const nodes = [];
let proxy;
const clients = [];

async function connectThroughProxy(setup) {
  const logger = recordingLogger(setup.name);
  const c = await connect(
    `${proxy.url}/demo/chat`,
    (b) => {
      b.configureLogging(logger).withAutomaticReconnect();
      return setup.msgpack ? b.withHubProtocol(new MessagePackHubProtocol()) : b;
    },
    { transport: setup.transport },
  );
  Object.assign(c, { name: setup.name, setup, logger, closeEvents: [], reconnectingEvents: [], reconnectedEvents: [] });
  c.closed = new Promise((resolve) =>
    c.onclose((error) => {
      c.closeEvents.push(error);
      resolve(error);
    }),
  );
  c.onreconnecting((error) => c.reconnectingEvents.push(error));
  c.onreconnected((id) => c.reconnectedEvents.push(id));
  return c;
}

/** Resolves once `cond()` holds, re-checked on every ReceiveMessage at `c`; rejects with `describe()` after `ms`. */
function until(c, cond, describe, ms = 30_000) {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (!cond()) return;
      c.off("ReceiveMessage", check);
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      c.off("ReceiveMessage", check);
      reject(new Error(`${c.name}: timed out: ${describe()}`));
    }, ms);
    c.on("ReceiveMessage", check);
    check();
  });
}

/** The messages `c` must get from each sender in the exchange, in the order sent (everyone sends to the group). */
function expectedFrom(c) {
  const broadcasts = Array.from({ length: BROADCASTS }, (_, k) => `b${k}`);
  const group = c.setup.member ? Array.from({ length: GROUP_MESSAGES }, (_, k) => `g${k}`) : [];
  return { broadcasts, group };
}

/** What `c` got from `sender`, split into broadcasts and group messages, in arrival order. */
function gotFrom(c, sender) {
  const texts = c.received.filter(([u]) => u === sender.name).map(([, m]) => m);
  return { broadcasts: texts.filter((m) => m.startsWith("b")), group: texts.filter((m) => m.startsWith("g")) };
}

function missingAt(c) {
  const missing = [];
  for (const sender of clients) {
    const want = expectedFrom(c);
    const got = gotFrom(c, sender);
    for (const m of [...want.broadcasts, ...want.group]) {
      if (!got.broadcasts.includes(m) && !got.group.includes(m)) missing.push(`${sender.name}:${m}`);
    }
  }
  return missing;
}

/** Proxy log entries by connection id (token), each with the node that negotiated that connection. */
function requestsById() {
  const negotiatedOn = new Map(proxy.log.filter((e) => e.kind === "negotiate" && e.token).map((e) => [e.token, e.node]));
  const byId = new Map();
  for (const e of proxy.log) {
    if (!e.id) continue;
    if (!byId.has(e.id)) byId.set(e.id, { negotiatedOn: negotiatedOn.get(e.id), requests: [] });
    byId.get(e.id).requests.push(e);
  }
  return byId;
}

const failedRequests = () =>
  proxy.log.filter((e) => typeof e.status !== "number" ? e.status !== null : e.status >= 400);

before(async () => {
  for (let i = 0; i < 2; i++) {
    const node = await startServer({ args: ["--redis", redis, "--cluster-prefix", prefix] });
    await waitReady(node.url);
    nodes.push(node);
  }
  proxy = await startProxy(nodes.map((n) => n.url));
});

after(async () => {
  await Promise.allSettled(clients.map((c) => c.stop()));
  await proxy?.close();
  for (const node of nodes) assert.equal((await node.stop()).code, 0, "hubhost exits cleanly on SIGTERM");
});

test("every transport × protocol connects through the round-robin proxy", async (t) => {
  for (const setup of SETUPS) {
    try {
      clients.push(await connectThroughProxy(setup));
    } catch (e) {
      const log = proxy.log.map((r) => `${r.method} ${r.path}${r.id ? "?id=" + r.id : ""} → node ${r.node}: ${r.status}`);
      throw new Error(`${setup.name}: start() through the proxy failed: ${e.message}\nproxy log:\n${log.join("\n")}`);
    }
  }
  const problems = failedRequests();
  assert.deepEqual(problems, [], "no request failed while connecting");

  // The WebSocket upgrades and the SSE stream came right after their negotiate,
  // so each landed on the other node and had to be forwarded.
  const byId = requestsById();
  for (const kind of ["upgrade", "sse"]) {
    const streams = proxy.log.filter((e) => e.kind === kind);
    assert.ok(streams.length > 0, `the proxy saw ${kind} requests`);
    for (const e of streams) {
      const negotiatedOn = byId.get(e.id)?.negotiatedOn;
      assert.notEqual(negotiatedOn, undefined, `${kind} for id ${e.id} matches a negotiate`);
      assert.notEqual(e.node, negotiatedOn, `${kind} for id ${e.id} landed on the node that negotiated it: no forwarding exercised`);
    }
  }
  t.diagnostic(`requests per node after connecting: ${JSON.stringify(proxy.counts())}`);
});

test(`each client sends ${BROADCASTS} broadcasts and ${GROUP_MESSAGES} group messages; all arrive exactly once`, { timeout: 180_000 }, async (t) => {
  assert.equal(clients.length, SETUPS.length, "every client connected");
  const idsBefore = clients.map((c) => c.connectionId);
  for (const c of clients) if (c.setup.member) await c.invoke("JoinGroup", GROUP);

  await Promise.all(
    clients.map(async (c) => {
      for (let k = 0; k < BROADCASTS; k++) {
        await c.invoke("SendMessage", c.name, `b${k}`);
        if (k % 3 === 2) await c.invoke("SendToGroup", GROUP, c.name, `g${(k - 2) / 3}`);
      }
    }),
  );

  // Everything expected arrives...
  await Promise.all(
    clients.map((c) => until(c, () => missingAt(c).length === 0, () => `missing ${missingAt(c).join(", ")}`)),
  );
  // ...and nothing more: markers from every sender come after its messages.
  const markers = [];
  for (const c of clients) {
    const marker = `marker-${c.name}-${Math.random()}`;
    await c.invoke("SendMessage", "marker", marker);
    markers.push(marker);
  }
  await Promise.all(
    clients.flatMap((c) => markers.map((m) => c.waitFor(([u, text]) => u === "marker" && text === m, `${m} at ${c.name}`))),
  );

  const problems = [];
  for (const c of clients) {
    for (const sender of clients) {
      const want = expectedFrom(c);
      const got = gotFrom(c, sender);
      if (JSON.stringify(got.broadcasts) !== JSON.stringify(want.broadcasts)) {
        problems.push(`${c.name} got broadcasts from ${sender.name}: ${got.broadcasts.join(",")}`);
      }
      if (JSON.stringify(got.group) !== JSON.stringify(want.group)) {
        problems.push(`${c.name} got group messages from ${sender.name}: [${got.group.join(",")}], expected [${want.group.join(",")}]`);
      }
    }
  }
  assert.deepEqual(problems, [], "every client got every message exactly once, in each sender's order");

  // No connection dropped, reconnected or logged an error on the way.
  for (const [i, c] of clients.entries()) {
    assert.deepEqual(c.closeEvents, [], `${c.name}: onclose fired`);
    assert.deepEqual(c.reconnectingEvents.map(String), [], `${c.name}: onreconnecting fired`);
    assert.equal(c.state, signalR.HubConnectionState.Connected, `${c.name}: state`);
    assert.equal(c.connectionId, idsBefore[i], `${c.name}: connectionId changed`);
    const errors = c.logger.entries.filter((e) => e.startsWith("Error") || e.startsWith("Critical"));
    assert.deepEqual(errors, [], `${c.name}: client errors`);
  }
  assert.deepEqual(failedRequests(), [], "no request through the proxy failed");

  // Long-polling connections' requests went to both nodes, so forwarding was needed.
  const byId = requestsById();
  const polling = [...byId.entries()].filter(([, v]) => v.requests.some((e) => e.kind === "poll"));
  assert.equal(polling.length, SETUPS.filter((s) => s.transport === LongPolling).length, "one polling id per long-polling client");
  const lpNodes = new Set(polling.flatMap(([, v]) => v.requests.map((e) => e.node)));
  assert.deepEqual([...lpNodes].sort(), [0, 1], "both nodes received requests for long-polling connections");
  const forwarded = polling.flatMap(([, v]) => v.requests.filter((e) => e.node !== v.negotiatedOn));
  assert.ok(forwarded.length > 0, "some long-polling requests landed on the node that did not negotiate the connection");
  t.diagnostic(`requests per node: ${JSON.stringify(proxy.counts())}`);
  t.diagnostic(
    `long-polling requests on the non-negotiating node: ${forwarded.length} of ${polling.reduce((n, [, v]) => n + v.requests.length, 0)}`,
  );
});

// stop() sends the Close message (POST), then DELETE. The Close may end the
// connection first, and its last poll (204) removes it: the DELETE then gets
// 404, which is what ASP.NET Core answers too and the client ignores. Either
// way exactly one DELETE, answered 202 or 404, never an error.
const DELETE_STATUSES = [202, 404];

test("a long-polling client's stop() through the proxy resolves; onclose has no error; DELETE gets 202 or 404", async () => {
  const c = clients.find((x) => x.name === "LongPolling×JSON");
  assert.ok(c, "LongPolling×JSON connected");
  const deletesBefore = proxy.log.filter((e) => e.kind === "delete").length;
  await within(c.stop(), 15_000, `${c.name}: stop()`);
  const error = await within(c.closed, 5_000, `${c.name}: onclose`);
  assert.equal(error, undefined, `${c.name}: onclose error ${error}`);
  assert.equal(c.state, signalR.HubConnectionState.Disconnected);
  const deletes = proxy.log.filter((e) => e.kind === "delete").slice(deletesBefore);
  assert.equal(deletes.length, 1, `one DELETE: ${JSON.stringify(deletes)}`);
  assert.ok(
    DELETE_STATUSES.includes(deletes[0].status),
    `the DELETE, whichever node it reached, is accepted or finds the connection already ended: ${JSON.stringify(deletes)}`,
  );
  clients.splice(clients.indexOf(c), 1);

  // The others are unaffected.
  for (const other of clients) assert.equal(await other.invoke("Echo", other.name), other.name, `${other.name} still works`);
});

test("every other client stops cleanly through the proxy", async () => {
  await Promise.all(
    clients.map(async (c) => {
      await within(c.stop(), 15_000, `${c.name}: stop()`);
      const error = await within(c.closed, 5_000, `${c.name}: onclose`);
      assert.equal(error, undefined, `${c.name}: onclose error ${error}`);
      assert.deepEqual(c.reconnectingEvents.map(String), [], `${c.name}: onreconnecting fired`);
    }),
  );
  const deletes = proxy.log.filter((e) => e.kind === "delete");
  const longPolling = SETUPS.filter((s) => s.transport === LongPolling).length;
  assert.equal(deletes.length, longPolling, `one DELETE per long-polling client: ${JSON.stringify(deletes)}`);
  assert.ok(
    deletes.every((e) => DELETE_STATUSES.includes(e.status)),
    `every long-polling client's DELETE accepted or finding its connection ended: ${JSON.stringify(deletes)}`,
  );
  clients.length = 0;
});
