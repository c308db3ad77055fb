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

    test("History keeps the last 50 messages, oldest first", async () => {
      const c = await client();
      const user = `hist-${Math.random()}`;
      for (let i = 0; i < 55; i++) await c.invoke("SendMessage", user, `h${i}`);
      const history = await c.invoke("History");
      assert.equal(history.length, 50);
      assert.deepEqual(
        history,
        Array.from({ length: 50 }, (_, i) => ({ user, message: `h${i + 5}` })),
      );
    });

    test("Count counts every call exactly once, however many run at once", async () => {
      const clients = [await client(), await client(), await client()];
      const start = await clients[0].invoke("Count");
      const values = (
        await Promise.all(clients.flatMap((c) => Array.from({ length: 20 }, () => c.invoke("Count"))))
      ).sort((x, y) => x - y);
      assert.deepEqual(values, Array.from({ length: 60 }, (_, i) => start + 1 + i));
    });

    test("GroupCount, GroupMembers and IsOnline see joins and leaves", async () => {
      const [a, b] = [await client(), await client()];
      const group = `p-${Math.random()}`;
      assert.equal(await a.invoke("GroupCount", group), 0);
      await a.invoke("JoinGroup", group);
      await b.invoke("JoinGroup", group);
      assert.equal(await a.invoke("GroupCount", group), 2);
      assert.deepEqual((await b.invoke("GroupMembers", group)).sort(), [a.connectionId, b.connectionId].sort());
      await b.invoke("LeaveGroup", group);
      assert.deepEqual(await a.invoke("GroupMembers", group), [a.connectionId]);
      await a.stop();
      // Gone once the node has handled the close (soon, not before stop() resolves).
      const deadline = Date.now() + 5_000;
      while ((await b.invoke("GroupCount", group)) !== 0 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      assert.equal(await b.invoke("GroupCount", group), 0);
      assert.equal(await b.invoke("IsOnline", "nobody"), false);
    });

    test("Remind sends the caller a Reminder once, after the delay; clients cannot deliver one", async () => {
      const c = await client();
      const got = [];
      c.on("Reminder", (text) => got.push([text, Date.now()]));
      const sent = Date.now();
      const id = await c.invoke("Remind", 300, "stand up");
      assert.equal(typeof id, "string");
      const deadline = Date.now() + 10_000;
      while (got.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      assert.equal(got.length, 1, "the reminder arrived");
      assert.equal(got[0][0], "stand up");
      assert.ok(got[0][1] - sent >= 300, `arrived ${got[0][1] - sent} ms after, before its time`);
      assert.ok(got[0][1] - sent <= 1_300, `arrived ${got[0][1] - sent} ms after`);
      await assert.rejects(c.invoke("DeliverReminder", c.connectionId, "forged"));
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(got.length, 1, "no second reminder");
    });

    test("Now reads the host's wall clock", async () => {
      const c = await client();
      const before = Date.now();
      const now = await c.invoke("Now");
      const after = Date.now();
      assert.ok(Number.isInteger(now), `${now}`);
      assert.ok(now >= before - 1000 && now <= after + 1000, `${now} is not within 1 s of [${before}, ${after}]`);
    });

    test("SetItem and GetItem keep values with the calling connection only", async () => {
      const [a, b] = [await client(), await client()];
      assert.equal(await a.invoke("GetItem", "nick"), null);
      await a.invoke("SetItem", "nick", { name: "ann", tags: ["x", 1] });
      assert.deepEqual(await a.invoke("GetItem", "nick"), { name: "ann", tags: ["x", 1] });
      assert.equal(await b.invoke("GetItem", "nick"), null);
      await a.invoke("SetItem", "nick", "replaced");
      assert.equal(await a.invoke("GetItem", "nick"), "replaced");
      await assert.rejects(
        a.invoke("SetItem", "big", "x".repeat(20_000)),
        (e) => e.message.includes("hub_limits.max_item_bytes_per_connection"),
      );
    });

    test("send (fire-and-forget) delivers without a completion", async () => {
      const [a, b] = [await client(), await client()];
      await a.send("SendMessage", "ff", "no reply");
      await b.waitFor(([u]) => u === "ff");
      await a.waitFor(([u]) => u === "ff");
    });
  });
}
