// Three hubhost processes on the machine's Redis, official clients spread
// over them: every chat method reaches exactly the right clients, once.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, connect, waitReady } from "./harness.mjs";

const redis = process.env.HUBHOST_TEST_REDIS ?? "redis://127.0.0.1:6379";
const prefix = `node-cluster-${process.pid}-${Date.now()}`;
const nodes = [];
const clients = [];

before(async () => {
  for (let i = 0; i < 3; i++) {
    const node = await startServer({ args: ["--redis", redis, "--cluster-prefix", prefix] });
    await waitReady(node.url);
    nodes.push(node);
  }
  // Two clients per node: c0, c1 on node 0; c2, c3 on node 1; c4, c5 on node 2.
  for (let i = 0; i < 6; i++) {
    const c = await connect(`${nodes[Math.floor(i / 2)].url}/demo/chat`);
    c.name = `c${i}`;
    clients.push(c);
  }
});

after(async () => {
  await Promise.allSettled(clients.map((c) => c.stop()));
  for (const node of nodes) assert.equal((await node.stop()).code, 0);
});

/** The clients (by name) that got `[user, text]`, failing on duplicates; waits for a marker first. */
async function recipients(sender, user, text) {
  const marker = `marker-${Math.random()}`;
  await sender.invoke("SendMessage", "marker", marker);
  await Promise.all(clients.map((c) => c.waitFor(([u, m]) => u === "marker" && m === marker, `${marker} at ${c.name}`)));
  const got = [];
  for (const c of clients) {
    const count = c.received.filter(([u, m]) => u === user && m === text).length;
    assert.ok(count <= 1, `${c.name} got "${text}" ${count} times`);
    if (count === 1) got.push(c.name);
  }
  return got;
}

test("SendMessage reaches all six clients on three nodes exactly once", async () => {
  await clients[0].invoke("SendMessage", "c0", "hello cluster");
  assert.deepEqual(await recipients(clients[0], "c0", "hello cluster"), ["c0", "c1", "c2", "c3", "c4", "c5"]);
});

test("groups span nodes; leaving stops delivery", async () => {
  for (const i of [1, 3, 5]) await clients[i].invoke("JoinGroup", "odd");
  await clients[2].invoke("SendToGroup", "odd", "c2", "to odd");
  assert.deepEqual(await recipients(clients[2], "c2", "to odd"), ["c1", "c3", "c5"]);
  await clients[3].invoke("LeaveGroup", "odd");
  await clients[4].invoke("SendToGroup", "odd", "c4", "to odd again");
  assert.deepEqual(await recipients(clients[4], "c4", "to odd again"), ["c1", "c5"]);
});

test("SendToOthers reaches everyone on every node but the caller", async () => {
  await clients[3].invoke("SendToOthers", "c3", "not to c3");
  assert.deepEqual(await recipients(clients[3], "c3", "not to c3"), ["c0", "c1", "c2", "c4", "c5"]);
});

test("SendToUser reaches no one for a user without connections", async () => {
  await clients[5].invoke("SendToUser", "nobody", "c5", "to nobody");
  assert.deepEqual(await recipients(clients[5], "c5", "to nobody"), []);
});

test("every node answers Echo, WhoAmI and Fail", async () => {
  for (const c of clients) {
    assert.deepEqual(await c.invoke("Echo", { from: c.name }), { from: c.name });
    assert.equal((await c.invoke("WhoAmI")).connectionId, c.connectionId);
    await assert.rejects(c.invoke("Fail", `no ${c.name}`), (e) => e.message === `no ${c.name}`);
  }
});
