// The server API (#19) with official clients on two nodes over the machine's
// Redis: a backend's message to each kind of target, posted to one node,
// reaches exactly the clients it names, on both nodes, once; groups are
// changed through the node that does not hold the connection.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, connect, jwt, jwtConfig, waitReady } from "./harness.mjs";

const redis = process.env.HUBHOST_TEST_REDIS ?? "redis://127.0.0.1:6379";
const KEY = "serverapi-operator-key-0123456789";
const SECRET = "serverapi-secret-0123456789abcdef0123";


async function api(node, method, route, body) {
  const response = await fetch(`${node.url}/api/v1/tenants/demo/hubs/chat${route}`, {
    method,
    headers: { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${route}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

test("a backend's message to every kind of target reaches exactly its official clients once", async () => {
  const config = jwtConfig(KEY, SECRET);
  const prefix = `node-serverapi-${process.pid}-${Date.now()}`;
  const nodes = [];
  const clients = [];
  try {
    for (let i = 0; i < 2; i++) {
      const node = await startServer({ args: ["--config", config, "--redis", redis, "--cluster-prefix", prefix] });
      await waitReady(node.url);
      nodes.push(node);
    }
    // c0 ann and c1 bob on node 0; c2 ann and c3 cy on node 1.
    for (const [i, user] of ["ann", "bob", "ann", "cy"].entries()) {
      const c = await connect(`${nodes[i < 2 ? 0 : 1].url}/demo/chat`, (b) => b, { accessTokenFactory: () => jwt(user, SECRET) });
      c.name = `c${i}`;
      clients.push(c);
    }
    const [c0, c1, c2, c3] = clients;
    // Groups through node 0, whichever node holds the connection.
    for (const [group, c] of [["room", c1], ["room", c2], ["other", c3]]) {
      await api(nodes[0], "PUT", `/groups/${group}/connections/${c.connectionId}`);
    }
    const targets = [
      [{ all: true }, ["c0", "c1", "c2", "c3"]],
      [{ allExcept: [c0.connectionId] }, ["c1", "c2", "c3"]],
      [{ connection: c3.connectionId }, ["c3"]],
      [{ connections: [c0.connectionId, c3.connectionId] }, ["c0", "c3"]],
      [{ group: "room" }, ["c1", "c2"]],
      [{ groups: ["room", "other"] }, ["c1", "c2", "c3"]],
      [{ user: "ann" }, ["c0", "c2"]],
      [{ users: ["bob", "cy"] }, ["c1", "c3"]],
    ];
    const batch = targets.map(([target], i) => ({ target, method: "ReceiveMessage", arguments: ["api", `m${i}`] }));
    assert.deepEqual(await api(nodes[0], "POST", "/messages", batch), { accepted: targets.length });
    // A last message from the same node: delivery is in order per sending
    // node, so once every client has it, the batch has arrived everywhere.
    await api(nodes[0], "POST", "/messages", { target: { all: true }, method: "ReceiveMessage", arguments: ["api", "end"] });
    await Promise.all(clients.map((c) => c.waitFor(([u, m]) => u === "api" && m === "end", `end at ${c.name}`)));
    for (const [i, [target, expected]] of targets.entries()) {
      const got = [];
      for (const c of clients) {
        const count = c.received.filter(([u, m]) => u === "api" && m === `m${i}`).length;
        assert.ok(count <= 1, `${c.name} got ${JSON.stringify(target)} ${count} times`);
        if (count) got.push(c.name);
      }
      assert.deepEqual(got, expected, JSON.stringify(target));
    }
    // Who is there, asked of either node.
    const room = await api(nodes[1], "GET", "/groups/room");
    assert.equal(room.count, 2);
    assert.deepEqual(room.connections.sort(), [c1.connectionId, c2.connectionId].sort());
    assert.equal((await api(nodes[0], "GET", "/users/ann")).count, 2);
  } finally {
    await Promise.allSettled(clients.map((c) => c.stop()));
    for (const node of nodes) await node.stop();
  }
});
