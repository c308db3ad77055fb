// The chat hub — in Rust, Python and JavaScript — through the official
// @microsoft/signalr client against a real hubhost process.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, connect, signalR } from "./harness.mjs";

// The same hub in three languages: examples/chat, chat-python, chat-js.
const HUBS = ["chat", "chat-python", "chat-js"];
let server;
let hubUrl;
const open = [];

before(async () => {
  server = await startServer({ hubs: HUBS });
});

after(async () => {
  await Promise.allSettled(open.map((c) => c.stop()));
  const exit = await server.stop();
  assert.equal(exit.code, 0, "hubhost exits cleanly on SIGTERM");
});

async function client(configure, options) {
  const c = await connect(hubUrl, configure, options);
  open.push(c);
  return c;
}

/** A marker from `sender` to everyone: once `c` has it, it has all that `sender` sent before. */
async function settle(sender, clients) {
  const marker = `marker-${Math.random()}`;
  await sender.invoke("SendMessage", "marker", marker);
  await Promise.all(clients.map((c) => c.waitFor(([u, m]) => u === "marker" && m === marker, marker)));
}

const chatOnly = (c) => c.received.filter(([u]) => u !== "marker");

for (const hub of HUBS) {
  describe(`${hub} hub`, () => {
    before(() => {
      hubUrl = `${server.url}/demo/${hub}`;
    });

    test("negotiate + WebSockets: Echo round-trips any JSON", async () => {
      const c = await client();
      assert.equal(c.state, signalR.HubConnectionState.Connected);
      assert.match(c.connectionId, /^[A-Za-z0-9_-]{22}$/);
      for (const value of ["text", "", "ünïcødé ✓", 0, -1.5, 1e300, true, false, null, [1, [2, [3]]], { a: { b: [null, "x"] } }]) {
        assert.deepEqual(await c.invoke("Echo", value), value);
      }
      assert.deepEqual(await c.invoke("WhoAmI"), { connectionId: c.connectionId, userId: null });
    });

    test("skipNegotiation + WebSockets works", async () => {
      const c = await client((b) => b, { skipNegotiation: true, transport: signalR.HttpTransportType.WebSockets });
      assert.equal(await c.invoke("echo", 42), 42);
      const me = await c.invoke("WhoAmI");
      assert.match(me.connectionId, /^[A-Za-z0-9_-]{22}$/);
    });

    test("SendMessage reaches every connected client exactly once", async () => {
      const clients = [await client(), await client(), await client()];
      await clients[1].invoke("SendMessage", "alice", "hello all");
      await settle(clients[1], clients);
      for (const c of clients) {
        assert.deepEqual(chatOnly(c).filter(([u]) => u === "alice"), [["alice", "hello all"]]);
      }
    });

    test("groups: only members receive, and leaving stops delivery", async () => {
      const [a, b, outsider] = [await client(), await client(), await client()];
      await a.invoke("JoinGroup", "room");
      await b.invoke("JoinGroup", "room");
      await outsider.invoke("SendToGroup", "room", "out", "knock knock");
      await settle(outsider, [a, b, outsider]);
      assert.deepEqual(chatOnly(a), [["out", "knock knock"]]);
      assert.deepEqual(chatOnly(b), [["out", "knock knock"]]);
      assert.deepEqual(chatOnly(outsider), []);

      await b.invoke("LeaveGroup", "room");
      await a.invoke("SendToGroup", "room", "a", "still here?");
      await settle(a, [a, b]);
      assert.deepEqual(chatOnly(a).at(-1), ["a", "still here?"]);
      assert.equal(chatOnly(b).length, 1, "a client that left gets nothing more");
    });

    test("SendToOthers reaches everyone but the caller", async () => {
      const [a, b, c] = [await client(), await client(), await client()];
      await a.invoke("SendToOthers", "a", "not for me");
      await settle(a, [a, b, c]);
      assert.deepEqual(chatOnly(a).filter(([u]) => u === "a"), []);
      assert.deepEqual(chatOnly(b).filter(([u]) => u === "a"), [["a", "not for me"]]);
      assert.deepEqual(chatOnly(c).filter(([u]) => u === "a"), [["a", "not for me"]]);
    });

    test("SendToUser reaches no one for a user without connections", async () => {
      const a = await client();
      await a.invoke("SendToUser", "nobody", "a", "hello?");
      await settle(a, [a]);
      assert.deepEqual(chatOnly(a).filter(([u]) => u === "a"), []);
    });

    test("Fail rejects the promise with the hub's text; unknown methods are named", async () => {
      const c = await client();
      await assert.rejects(c.invoke("Fail", "it broke"), (e) => e.message === "it broke");
      await assert.rejects(c.invoke("NoSuchMethod"), (e) => e.message === "Unknown hub method 'NoSuchMethod'");
      await assert.rejects(c.invoke("Echo"), /Failed to invoke 'Echo' due to an error on the server/);
      assert.equal(await c.invoke("Echo", "still connected"), "still connected");
    });

    test("send (fire-and-forget) delivers without a completion", async () => {
      const [a, b] = [await client(), await client()];
      await a.send("SendMessage", "ff", "no reply");
      await b.waitFor(([u]) => u === "ff");
      await a.waitFor(([u]) => u === "ff");
    });
  });
}
