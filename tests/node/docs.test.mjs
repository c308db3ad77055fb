// The server API chapter's curl examples, run as written: each ```sh block
// of docs/src/server-api.md runs in bash against a node (HUBHOST, KEY and
// CONNECTION set as the chapter says), and its output must match the comment
// under it (`…` stands for anything). An official client, signed in as ann,
// is the connection they name; it must get what they send and the close.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { startServer, connect, jwt, jwtConfig } from "./harness.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const KEY = "docs-operator-key-0123456789";
const SECRET = "docs-secret-0123456789abcdef0123456789";


/** The ```sh blocks of `file`: each command and the output its comment shows. */
function examples(file) {
  const text = readFileSync(path.join(root, file), "utf8");
  return [...text.matchAll(/```sh\n([\s\S]*?)```/g)].map(([, block]) => {
    const lines = block.trimEnd().split("\n");
    return {
      command: lines.filter((l) => !l.startsWith("# ")).join("\n"),
      expected: lines.filter((l) => l.startsWith("# ")).map((l) => l.slice(2)).join("\n"),
    };
  });
}

const matches = (output, expected) => {
  const pattern = expected.split("…").map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join(".*");
  return new RegExp(`^${pattern}$`, "s").test(output);
};

test("the server API chapter's curl examples run as written", async () => {
  const config = jwtConfig(KEY, SECRET);
  const server = await startServer({ args: ["--config", config] });
  const ann = await connect(`${server.url}/demo/chat`, (b) => b, { accessTokenFactory: () => jwt("ann", SECRET) });
  const closed = new Promise((resolve) => ann.onclose(resolve));
  try {
    const env = { ...process.env, HUBHOST: server.url, KEY, CONNECTION: ann.connectionId };
    const blocks = examples("docs/src/server-api.md");
    assert.ok(blocks.length >= 5, `only ${blocks.length} examples found`);
    for (const { command, expected } of blocks) {
      const { stdout } = await promisify(execFile)("bash", ["-euo", "pipefail", "-c", command], { env });
      assert.ok(matches(stdout.trim(), expected), `${command}\nprinted ${stdout}\nnot ${expected}`);
    }
    const texts = ann.received.map(([, message]) => message);
    assert.ok(texts.includes("hello ann") && texts.includes("just you"), JSON.stringify(texts));
    const error = await closed;
    assert.match(String(error), /Signed out elsewhere\./);
  } finally {
    await ann.stop();
    await server.stop();
  }
});
