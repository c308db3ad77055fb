// Every transport × hub protocol combination the official client allows,
// against one hubhost process: WebSockets, Server-Sent Events and long
// polling, each with JSON and MessagePack (except SSE × MessagePack, which
// the client refuses), plus skipNegotiation over WebSockets. Each one runs the
// chat scenarios on its own, then all of them together on the same hub.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import { startServer, connect, signalR, within, recordingLogger } from "./harness.mjs";

const { WebSockets, ServerSentEvents, LongPolling } = signalR.HttpTransportType;
const TRANSPORT_CLASS = {
  [WebSockets]: "WebSocketTransport",
  [ServerSentEvents]: "ServerSentEventsTransport",
  [LongPolling]: "LongPollingTransport",
};

const COMBOS = [
  { name: "WebSockets×JSON", transport: WebSockets, msgpack: false },
  { name: "WebSockets×MessagePack", transport: WebSockets, msgpack: true },
  { name: "ServerSentEvents×JSON", transport: ServerSentEvents, msgpack: false },
  { name: "LongPolling×JSON", transport: LongPolling, msgpack: false },
  { name: "LongPolling×MessagePack", transport: LongPolling, msgpack: true },
  { name: "WebSockets(skipNegotiation)×JSON", transport: WebSockets, msgpack: false, skipNegotiation: true },
  { name: "WebSockets(skipNegotiation)×MessagePack", transport: WebSockets, msgpack: true, skipNegotiation: true },
];

// [label, value]: Echo must return each value unchanged, in either protocol.
const ECHO_VALUES = [
  ["ascii string", "hello"],
  ["empty string", ""],
  ["unicode string", "ünïcødé ✓ 日本語 Ελληνικά"],
  ["emoji string", "🎉 👩‍👩‍👧 🇯🇵"],
  ["control characters", "tab\tLF\nCRLF\r\nRS\u001eend"],
  ["a framed message as text", '{"type":7}\u001e'],
  ["zero", 0],
  ["int", 42],
  ["negative int", -7],
  ["int32 min", -(2 ** 31)],
  ["uint32 max", 2 ** 32 - 1],
  ["negative 2^40", -(2 ** 40)],
  ["max safe integer", Number.MAX_SAFE_INTEGER],
  ["float 1.5", 1.5],
  ["float -0.25", -0.25],
  ["float 0.1", 0.1],
  ["float pi", Math.PI],
  ["float 1e300", 1e300],
  ["null", null],
  ["true", true],
  ["false", false],
  ["empty array", []],
  ["empty object", {}],
  ["nested objects and arrays", { user: { name: "ada", tags: ["x", "y"], scores: [1, 2.5, -3] }, list: [[1, [2, [3, []]]], {}, null, "", false] }],
  ["unicode keys", { "ключ": "значение", "🔑": ["🎉"], "": 0 }],
  ["array of 1000 ints", Array.from({ length: 1000 }, (_, i) => (i % 2 ? -i : i))],
  ["~20 KB string", "ü🎉x".repeat(3000)],
];

let server;
let hubUrl;
const clients = new Map(); // combo name → connected HubConnection
const connectFailures = new Map(); // combo name → why it did not connect

before(async () => {
  server = await startServer();
  hubUrl = `${server.url}/demo/chat`;
});

after(async () => {
  await Promise.allSettled([...clients.values()].map((c) => c.stop()));
  const exit = await server.stop();
  assert.equal(exit.code, 0, "hubhost exits cleanly on SIGTERM");
});

/** The client's own HTTP requests (negotiate, polls, POSTs, DELETE) with their outcome. */
class RecordingHttpClient extends signalR.HttpClient {
  constructor(logger) {
    super();
    this.inner = new signalR.DefaultHttpClient(logger);
    this.requests = [];
  }
  async send(request) {
    const entry = { method: request.method, url: request.url };
    this.requests.push(entry);
    try {
      const response = await this.inner.send(request);
      entry.status = response.statusCode;
      return response;
    } catch (e) {
      entry.status = e.statusCode ?? `${e.name}: ${e.message}`;
      throw e;
    }
  }
  getCookieString(url) {
    return this.inner.getCookieString(url);
  }
}

/** Connect one combination; the connection gets .name, .combo, .logger, .http, .closeEvents, .closed. */
async function connectCombo(combo) {
  const logger = recordingLogger(combo.name);
  const http = new RecordingHttpClient(logger);
  const options = { transport: combo.transport, httpClient: http };
  if (combo.skipNegotiation) options.skipNegotiation = true;
  const c = await connect(
    hubUrl,
    (b) => {
      b.configureLogging(logger);
      return combo.msgpack ? b.withHubProtocol(new MessagePackHubProtocol()) : b;
    },
    options,
  );
  c.name = combo.name;
  c.combo = combo;
  c.logger = logger;
  c.http = http;
  c.closeEvents = [];
  c.closed = new Promise((resolve) =>
    c.onclose((error) => {
      c.closeEvents.push(error);
      resolve(error);
    }),
  );
  return c;
}

/** Every combination's client, failing (with the reasons) if any did not connect. */
function allClients() {
  const missing = COMBOS.filter((combo) => !clients.has(combo.name)).map(
    (combo) => `${combo.name}: ${connectFailures.get(combo.name) ?? "not attempted"}`,
  );
  assert.deepEqual(missing, [], "every combination is connected");
  return COMBOS.map((combo) => clients.get(combo.name));
}

function clientOf(combo) {
  const c = clients.get(combo.name);
  assert.ok(c, `${combo.name} is not connected: ${connectFailures.get(combo.name)}`);
  return c;
}

/**
 * Markers from each of `senders` to everyone; once every client has every
 * marker, it has everything those senders sent before.
 */
async function settle(senders, everyone) {
  const markers = [];
  for (const sender of senders) {
    const marker = `marker-${sender.name}-${Math.random()}`;
    await sender.invoke("SendMessage", "marker", marker);
    markers.push(marker);
  }
  await Promise.all(
    everyone.flatMap((c) =>
      markers.map((marker) => c.waitFor(([u, m]) => u === "marker" && m === marker, `${marker} at ${c.name}`)),
    ),
  );
}

/** The names of the clients that got [user, text], in COMBOS order; fails on duplicates. */
function recipientsOf(everyone, user, text) {
  const got = [];
  for (const c of everyone) {
    const count = c.received.filter(([u, m]) => u === user && m === text).length;
    assert.ok(count <= 1, `${c.name} got "${text}" from ${user} ${count} times`);
    if (count === 1) got.push(c.name);
  }
  return got;
}

test("negotiate advertises the three transports with the spec's transfer formats", async () => {
  const response = await fetch(`${hubUrl}/negotiate?negotiateVersion=1`, { method: "POST" });
  assert.equal(response.status, 200);
  const body = await response.json();
  const transports = [...body.availableTransports].sort((a, b) => a.transport.localeCompare(b.transport));
  assert.deepEqual(transports, [
    { transport: "LongPolling", transferFormats: ["Text", "Binary"] },
    { transport: "ServerSentEvents", transferFormats: ["Text"] },
    { transport: "WebSockets", transferFormats: ["Text", "Binary"] },
  ]);
});

test("ServerSentEvents×MessagePack: the client refuses to start (SSE carries text only)", async () => {
  const logger = recordingLogger("ServerSentEvents×MessagePack");
  const connection = new signalR.HubConnectionBuilder()
    .withUrl(hubUrl, { transport: ServerSentEvents })
    .withHubProtocol(new MessagePackHubProtocol())
    .configureLogging({ log: (level, message) => level >= signalR.LogLevel.Warning && logger.entries.push(message) })
    .build();
  await assert.rejects(connection.start(), (e) => {
    assert.match(e.message, /'ServerSentEvents' does not support Binary/, `start() rejected for another reason: ${e.message}`);
    return true;
  });
  assert.equal(connection.state, signalR.HubConnectionState.Disconnected);
});

for (const combo of COMBOS) {
  describe(combo.name, () => {
    test(`${combo.name}: connects`, async () => {
      try {
        const c = await connectCombo(combo);
        clients.set(combo.name, c);
      } catch (e) {
        connectFailures.set(combo.name, e.message);
        throw new Error(`${combo.name}: start() failed: ${e.message}`);
      }
      const c = clients.get(combo.name);
      assert.equal(c.state, signalR.HubConnectionState.Connected, `${combo.name}: state`);
      assert.equal(c.connection.transport?.constructor?.name, TRANSPORT_CLASS[combo.transport], `${combo.name}: transport in use`);
      if (combo.skipNegotiation) {
        assert.equal(c.connectionId, null, `${combo.name}: no connectionId without negotiate`);
      } else {
        assert.match(c.connectionId ?? "", /^[A-Za-z0-9_-]{22}$/, `${combo.name}: connectionId`);
      }
    });

    test(`${combo.name}: Echo round-trips every value`, async () => {
      const c = clientOf(combo);
      for (const [label, value] of ECHO_VALUES) {
        let result;
        try {
          result = await c.invoke("Echo", value);
        } catch (e) {
          assert.fail(`${combo.name}: Echo(${label}) rejected: ${e.message}`);
        }
        assert.deepEqual(result, value, `${combo.name}: Echo(${label})`);
      }
    });

    test(`${combo.name}: 50 concurrent invocations each get their own result`, async () => {
      const c = clientOf(combo);
      const values = Array.from({ length: 50 }, (_, i) => ({ i, text: `v${i}-✓`, list: [i, i - 25, i / 2] }));
      const results = await Promise.all(values.map((v) => c.invoke("Echo", v)));
      assert.deepEqual(results, values, `${combo.name}: concurrent Echo results`);
    });

    if (combo.msgpack) {
      test(`${combo.name}: Echo of a Uint8Array returns its base64 (the hub sees JSON)`, async () => {
        const c = clientOf(combo);
        const bytes = new Uint8Array([0, 1, 2, 0x1e, 0x7f, 0x80, 254, 255]);
        assert.equal(await c.invoke("Echo", bytes), Buffer.from(bytes).toString("base64"), `${combo.name}: Echo(bytes)`);
        const empty = new Uint8Array(0);
        assert.equal(await c.invoke("Echo", empty), "", `${combo.name}: Echo(empty bytes)`);
      });
    }

    test(`${combo.name}: WhoAmI returns this connection's id`, async () => {
      const c = clientOf(combo);
      const me = await c.invoke("WhoAmI");
      if (combo.skipNegotiation) {
        assert.equal(typeof me.connectionId, "string", `${combo.name}: WhoAmI().connectionId`);
        assert.notEqual(me.connectionId, "", `${combo.name}: WhoAmI().connectionId`);
        assert.deepEqual(me, { connectionId: me.connectionId, userId: null }, `${combo.name}: WhoAmI()`);
      } else {
        assert.deepEqual(me, { connectionId: c.connectionId, userId: null }, `${combo.name}: WhoAmI()`);
      }
    });

    test(`${combo.name}: Fail rejects with the hub's text and the connection stays usable`, async () => {
      const c = clientOf(combo);
      await assert.rejects(c.invoke("Fail", "boom"), (e) => {
        assert.ok(e.message.includes("boom"), `${combo.name}: Fail error message is "${e.message}"`);
        return true;
      });
      assert.equal(await c.invoke("Echo", "still here"), "still here", `${combo.name}: Echo after Fail`);
      assert.equal(c.state, signalR.HubConnectionState.Connected, `${combo.name}: state after Fail`);
    });
  });
}

describe("all combinations at once on the same hub", () => {
  test("connection ids are distinct", async () => {
    const all = allClients();
    const ids = await Promise.all(all.map(async (c) => (await c.invoke("WhoAmI")).connectionId));
    assert.equal(new Set(ids).size, ids.length, `distinct ids: ${JSON.stringify(Object.fromEntries(all.map((c, i) => [c.name, ids[i]])))}`);
  });

  test("SendMessage from each client reaches every client exactly once", async () => {
    const all = allClients();
    for (const sender of all) await sender.invoke("SendMessage", sender.name, `hello from ${sender.name}`);
    await settle(all, all);
    const problems = [];
    for (const sender of all) {
      const got = recipientsOf(all, sender.name, `hello from ${sender.name}`);
      const missing = all.map((c) => c.name).filter((n) => !got.includes(n));
      if (missing.length) problems.push(`${sender.name}'s message missed ${missing.join(", ")}`);
    }
    assert.deepEqual(problems, []);
  });

  test("SendToGroup reaches exactly the members; LeaveGroup stops it", async () => {
    const all = allClients();
    const byName = (n) => all.find((c) => c.name === n);
    const group = `mixed-${Math.random()}`;
    const members = ["WebSockets×JSON", "ServerSentEvents×JSON", "LongPolling×MessagePack", "WebSockets(skipNegotiation)×MessagePack"];
    for (const name of members) await byName(name).invoke("JoinGroup", group);

    // From a non-member (long polling, JSON).
    const outsider = byName("LongPolling×JSON");
    await outsider.invoke("SendToGroup", group, outsider.name, "to the group from outside");
    await settle([outsider], all);
    assert.deepEqual(recipientsOf(all, outsider.name, "to the group from outside"), members, "from a non-member");

    // From a member (SSE): it gets its own message too.
    const insider = byName("ServerSentEvents×JSON");
    await insider.invoke("SendToGroup", group, insider.name, "to the group from inside");
    await settle([insider], all);
    assert.deepEqual(recipientsOf(all, insider.name, "to the group from inside"), members, "from a member");

    // The long-polling MessagePack member leaves; a WebSockets MessagePack non-member sends.
    await byName("LongPolling×MessagePack").invoke("LeaveGroup", group);
    const sender = byName("WebSockets×MessagePack");
    await sender.invoke("SendToGroup", group, sender.name, "after one left");
    await settle([sender], all);
    assert.deepEqual(
      recipientsOf(all, sender.name, "after one left"),
      members.filter((n) => n !== "LongPolling×MessagePack"),
      "after LongPolling×MessagePack left",
    );

    // Everyone else leaves too: the group is empty.
    for (const name of members) await byName(name).invoke("LeaveGroup", group);
    await outsider.invoke("SendToGroup", group, outsider.name, "to an empty group");
    await settle([outsider], all);
    assert.deepEqual(recipientsOf(all, outsider.name, "to an empty group"), [], "after everyone left");
  });

  test("SendToOthers from each client reaches all but the sender", async () => {
    const all = allClients();
    for (const sender of all) await sender.invoke("SendToOthers", sender.name, `others of ${sender.name}`);
    await settle(all, all);
    for (const sender of all) {
      assert.deepEqual(
        recipientsOf(all, sender.name, `others of ${sender.name}`),
        all.map((c) => c.name).filter((n) => n !== sender.name),
        `SendToOthers from ${sender.name}`,
      );
    }
  });

  test("no client logged an error or lost its connection", () => {
    const all = allClients();
    const problems = [];
    for (const c of all) {
      if (c.closeEvents.length) problems.push(`${c.name} closed: ${c.closeEvents.map(String).join("; ")}`);
      if (c.state !== signalR.HubConnectionState.Connected) problems.push(`${c.name} is ${c.state}`);
      const errors = c.logger.entries.filter((e) => e.startsWith("Error") || e.startsWith("Critical"));
      if (errors.length) problems.push(`${c.name} logged: ${errors.join(" | ")}`);
      // Requests still in flight (a pending long poll) have no status yet.
      const failed = c.http.requests.filter((r) =>
        r.status === undefined ? false : typeof r.status !== "number" ? !/AbortError/.test(r.status) : r.status >= 400,
      );
      if (failed.length) problems.push(`${c.name} HTTP: ${JSON.stringify(failed)}`);
    }
    assert.deepEqual(problems, []);
  });

  test("stop() on every client: onclose fires without an error", async () => {
    const all = allClients();
    await Promise.all(
      all.map(async (c) => {
        await within(c.stop(), 10_000, `${c.name}: stop()`);
        const error = await within(c.closed, 10_000, `${c.name}: onclose`);
        assert.equal(error, undefined, `${c.name}: onclose error ${error}`);
        assert.equal(c.state, signalR.HubConnectionState.Disconnected, `${c.name}: state after stop()`);
        assert.equal(c.closeEvents.length, 1, `${c.name}: onclose fired ${c.closeEvents.length} times`);
      }),
    );
    // Long polling ends with one DELETE: 202, or 404 when the Close message
    // stop() sent first already ended the connection (ASP.NET Core answers
    // the same; the client ignores it).
    for (const c of all.filter((c) => c.combo.transport === LongPolling)) {
      const deletes = c.http.requests.filter((r) => r.method === "DELETE");
      assert.equal(deletes.length, 1, `${c.name}: one DELETE on stop(): ${JSON.stringify(deletes)}`);
      assert.ok([202, 404].includes(deletes[0].status), `${c.name}: DELETE on stop(): ${JSON.stringify(deletes)}`);
    }
    for (const c of all) clients.delete(c.name);
  });
});
