// The example ChatHub in JavaScript, built with componentize-js.
//
// Same public methods as the Rust example (examples/chat): the chat tests run
// against both. The WIT world wit/0.2.0/hub.wit is the reference for what a hub
// can import and must export.

import { send as sendTo, invoke as invokeClient } from "hubhost:hub/clients@0.2.0";
import { add, remove } from "hubhost:hub/groups@0.2.0";
import { increment, listPush, listRange } from "hubhost:hub/kv@0.2.0";
// Aliased: kv has a get and a set of its own.
import { get as itemGet, set as itemSet } from "hubhost:hub/items@0.2.0";
import { groupCount, groupMembers, isOnline } from "hubhost:hub/presence@0.2.0";
import { get as configGet } from "hubhost:hub/config@0.2.0";
import { schedule } from "hubhost:hub/timers@0.2.0";
// Aliased: fetch is a JavaScript global.
import { fetch as httpFetch } from "hubhost:hub/http@0.2.0";
// Aliased: clients has a send too.
import { send as streamSend, complete as streamComplete } from "hubhost:hub/streams@0.2.0";
import { next as uploadNext } from "hubhost:hub/uploads@0.2.0";

// The hub's kv list of the last chat messages, oldest first.
const HISTORY_KEY = "history";
const HISTORY_KEEP = 50;
// "To the last item": a stop past the end is clamped to it, as -1 would be.
// Not -1n: componentize-js 0.23.0 traps lowering a negative s64 argument
// (bytecodealliance/ComponentizeJS#343).
const HISTORY_STOP = 2n ** 63n - 1n;
// How many connection ids GroupMembers returns at most.
const MEMBERS_LIMIT = 1000;

// A failed import call throws its error value; hand it back as the hub's error.
function orFail(call) {
  try {
    return call();
  } catch (error) {
    throw { tag: "failed", val: String(error?.payload ?? error) };
  }
}

// A method's result that is JSON text already: handed back as it is.
class Json {
  constructor(text) {
    this.text = text;
  }
}

function checkArgs(args, expected) {
  if (args.length !== expected) {
    throw { tag: "bad-arguments", val: `expected ${expected} argument(s), got ${args.length}` };
  }
}

function checkUploads(method, uploads, expected) {
  if (uploads.length !== expected) {
    const noun = expected === 1 ? "stream" : "streams";
    throw { tag: "bad-arguments", val: `${method} expects ${expected} ${noun}, got ${uploads.length}` };
  }
}

// A streams import call: false once the stream is gone (the client cancelled
// or left: stop producing); a limit's refusal becomes the hub's error.
function stillOpen(call) {
  try {
    call();
    return true;
  } catch (error) {
    const reason = error?.payload;
    if (reason?.tag === "cancelled" || reason?.tag === "closed") return false;
    if (reason?.tag === "refused") throw { tag: "failed", val: String(reason.val) };
    throw error;
  }
}

function send(to, method, ...args) {
  orFail(() => sendTo(to, method, JSON.stringify(args)));
}

const methods = {
  sendmessage: (caller, user, message) => {
    // Kept before sending, so History() already has a message its receivers saw.
    const entry = JSON.stringify({ user, message });
    orFail(() => listPush(HISTORY_KEY, entry, HISTORY_KEEP));
    send({ tag: "all" }, "ReceiveMessage", user, message);
  },
  joingroup: (caller, group) => orFail(() => add(caller.connectionId, group)),
  leavegroup: (caller, group) => orFail(() => remove(caller.connectionId, group)),
  sendtogroup: (caller, group, user, message) =>
    send({ tag: "group", val: group }, "ReceiveMessage", user, message),
  sendtoothers: (caller, user, message) =>
    send({ tag: "all-except", val: [caller.connectionId] }, "ReceiveMessage", user, message),
  sendtouser: (caller, userId, user, message) =>
    send({ tag: "user", val: userId }, "ReceiveMessage", user, message),
  echo: (caller, value) => value,
  whoami: (caller) => ({ connectionId: caller.connectionId, userId: caller.userId ?? null }),
  fail: (caller, text) => {
    throw { tag: "failed", val: text };
  },
  // Items are JSON text: hand back the objects, not strings.
  history: (caller) => orFail(() => listRange(HISTORY_KEY, 0n, HISTORY_STOP)).map((item) => JSON.parse(item)),
  // s64/u64 come and go as BigInt, which JSON.stringify rejects.
  count: (caller) => Number(orFail(() => increment("count", 1n))),
  groupcount: (caller, group) => Number(orFail(() => groupCount(group))),
  groupmembers: (caller, group) => orFail(() => groupMembers(group, MEMBERS_LIMIT)),
  isonline: (caller, userId) => orFail(() => isOnline(userId)),
  // Any JSON value: stored as its text, as the SDKs do.
  setitem: (caller, key, value) => orFail(() => itemSet(key, JSON.stringify(value))),
  getitem: (caller, key) => {
    const text = itemGet(key);
    // `none` arrives as undefined; == also takes null, should a binding use it.
    return text == null ? null : JSON.parse(text);
  },
  // The real wall clock: the build keeps componentize-js's clocks (no `-d clocks`).
  now: (caller) => Date.now(),
  // A tenant variable (a secret reads as its value), or null.
  config: (caller, name) => configGet(name) ?? null,
  // GET `url` (the operator allows the tenant its origins): the status and
  // the body's length in bytes.
  fetch: (caller, url) => {
    const response = orFail(() => httpFetch({ method: "GET", url, headers: [], body: new Uint8Array(0) }));
    return { status: response.status, bytes: response.body.length };
  },
  // `Reminder(text)` to the caller after `delayMs`, if it is still connected
  // then; the timer's id. A u64 goes in as BigInt; below 2 ** 64 it fits.
  remind: (caller, delayMs, text) => {
    if (!Number.isInteger(delayMs) || delayMs < 0 || delayMs >= 2 ** 64) {
      throw { tag: "bad-arguments", val: "delayMs must be a whole number of milliseconds" };
    }
    const args = JSON.stringify([caller.connectionId, text]);
    return orFail(() => schedule(BigInt(delayMs), "DeliverReminder", args));
  },
  // Timers call with an empty connection id, which no client connection has.
  deliverreminder: (caller, connection, text) => {
    if (caller.connectionId !== "") {
      throw { tag: "unauthorized", val: "reminders come from timers only" };
    }
    send({ tag: "connection", val: connection }, "Reminder", text);
  },
  // A client result: the answer of that client's GetName handler, JSON already.
  // `none` (no timeout of its own) is undefined.
  askname: (caller, connectionId) =>
    new Json(orFail(() => invokeClient(connectionId, "GetName", "[]", undefined))),
  // Item i of a Ticks stream; the arguments are those Ticks or the previous
  // Tick scheduled. Timers call with an empty connection id: a client could
  // otherwise push items into any stream whose handle it knew.
  tick: (caller, stream, i, n, intervalMs) => {
    if (caller.connectionId !== "") {
      throw { tag: "unauthorized", val: "ticks come from timers only" };
    }
    // Gone (cancelled, or the client left): schedule no more.
    if (!stillOpen(() => streamSend(stream, JSON.stringify(i)))) return;
    if (i + 1 === n) {
      stillOpen(() => streamComplete(stream, undefined));
    } else {
      scheduleTick(stream, i + 1, n, intervalMs);
    }
  },
};
// Counter and Ticks (through openStream) and UploadSum (through
// invokeWithUploads) take a stream rather than return a value, so they are
// not in methods.

// The stream 0, 1, ..., n - 1.
function counter(stream, n) {
  if (!Number.isInteger(n) || n < 0) {
    throw { tag: "bad-arguments", val: "n must be a non-negative whole number" };
  }
  for (let i = 0; i < n; i++) {
    if (!stillOpen(() => streamSend(stream, JSON.stringify(i)))) return;
  }
  stillOpen(() => streamComplete(stream, undefined));
}

// The stream 0, 1, ..., n - 1, one item every intervalMs. Timers push the
// items after openStream has returned, on whichever node runs them: the
// stream outlives its call, and its handle reaches it from any node.
function ticks(stream, n, intervalMs) {
  if (!Number.isInteger(n) || n < 0) {
    throw { tag: "bad-arguments", val: "n must be a non-negative whole number" };
  }
  if (!Number.isInteger(intervalMs) || intervalMs < 0 || intervalMs >= 2 ** 64) {
    throw { tag: "bad-arguments", val: "intervalMs must be a whole number of milliseconds" };
  }
  if (n === 0) {
    stillOpen(() => streamComplete(stream, undefined));
    return;
  }
  // Not completed: returning leaves the stream open for the timers.
  scheduleTick(stream, 0, n, intervalMs);
}

// A u64 goes in as BigInt; JSON brings intervalMs back as a number.
function scheduleTick(stream, i, n, intervalMs) {
  const args = JSON.stringify([stream, i, n, intervalMs]);
  orFail(() => schedule(BigInt(intervalMs), "Tick", args));
}

// The methods openStream serves: their name as written, and what produces
// the stream.
const streaming = {
  counter: ["Counter", counter],
  ticks: ["Ticks", ticks],
};

// The sum of the numbers the client uploads, read until it ends the upload.
function uploadSum(upload) {
  let total = 0;
  for (;;) {
    const item = orFail(() => uploadNext(upload));
    // `none` arrives as undefined; == also takes null.
    if (item == null) break;
    const value = JSON.parse(item);
    if (typeof value !== "number") {
      throw { tag: "bad-arguments", val: "UploadSum adds numbers only" };
    }
    total += value;
  }
  // JSON.stringify would write Infinity as null.
  if (!Number.isFinite(total)) throw { tag: "bad-arguments", val: "the sum is too large" };
  return total;
}

// Positions of arguments that may be any JSON value; all others must be strings.
const anyJsonArgs = new Map([
  [methods.echo, [0]],
  [methods.setitem, [1]],
  // A number; remind checks it is a whole number of milliseconds.
  [methods.remind, [0]],
  // i, n and intervalMs: numbers, as Ticks or the previous Tick scheduled them.
  [methods.tick, [1, 2, 3]],
]);

export const hub = {
  onConnected(caller) {},
  onDisconnected(caller, error) {},
  invoke(caller, method, argsJson) {
    return dispatch(caller, method, argsJson, []);
  },
  invokeWithUploads(caller, method, argsJson, uploads) {
    return dispatch(caller, method, argsJson, uploads);
  },
  openStream(caller, method, argsJson, uploads, stream) {
    const name = method.toLowerCase();
    // Own properties only, as in dispatch.
    if (!Object.hasOwn(streaming, name)) throw { tag: "unknown-method", val: method };
    const [, producer] = streaming[name];
    const args = JSON.parse(argsJson);
    // Less the stream.
    checkArgs(args, producer.length - 1);
    checkUploads(method, uploads, 0);
    producer(stream, ...args);
  },
};

function dispatch(caller, method, argsJson, uploads) {
  // Method names match case-insensitively, as in ASP.NET Core SignalR.
  const name = method.toLowerCase();
  if (Object.hasOwn(streaming, name)) {
    throw { tag: "failed", val: `${streaming[name][0]} is a streaming method: call it with stream()` };
  }
  if (name === "uploadsum") {
    checkArgs(JSON.parse(argsJson), 0);
    checkUploads(method, uploads, 1);
    return JSON.stringify(uploadSum(uploads[0]));
  }
  // Own properties only: "constructor" or "__proto__" name no method.
  const handler = Object.hasOwn(methods, name) ? methods[name] : undefined;
  if (!handler) throw { tag: "unknown-method", val: method };
  // A method that takes no stream was passed one: its arguments are wrong
  // (as ASP.NET Core says), the method is not unknown.
  checkUploads(method, uploads, 0);
  const args = JSON.parse(argsJson);
  checkArgs(args, handler.length - 1);
  const anyJson = anyJsonArgs.get(handler) ?? [];
  if (!args.every((a, i) => typeof a === "string" || anyJson.includes(i))) {
    throw { tag: "bad-arguments", val: "arguments must be strings" };
  }
  const result = handler(caller, ...args);
  if (result instanceof Json) return result.text;
  return JSON.stringify(result === undefined ? null : result);
}
