// The example ChatHub in JavaScript, built with componentize-js.
//
// Same public methods as the Rust example (examples/chat): the chat tests run
// against both. The WIT world wit/hub.wit is the reference for what a hub can
// import and must export.

import { send as sendTo } from "hubhost:hub/clients@0.1.0";
import { add, remove } from "hubhost:hub/groups@0.1.0";

// A failed import call throws its error value; hand it back as the hub's error.
function orFail(call) {
  try {
    call();
  } catch (error) {
    throw { tag: "failed", val: String(error?.payload ?? error) };
  }
}

function send(to, method, ...args) {
  orFail(() => sendTo(to, method, JSON.stringify(args)));
}

const methods = {
  sendmessage: (caller, user, message) => send({ tag: "all" }, "ReceiveMessage", user, message),
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
};

export const hub = {
  onConnected(caller) {},
  onDisconnected(caller, error) {},
  invoke(caller, method, argsJson) {
    // Method names match case-insensitively, as in ASP.NET Core SignalR.
    const handler = methods[method.toLowerCase()];
    if (!handler) throw { tag: "unknown-method", val: method };
    const args = JSON.parse(argsJson);
    const expected = handler.length - 1;
    if (args.length !== expected) {
      throw { tag: "bad-arguments", val: `expected ${expected} argument(s), got ${args.length}` };
    }
    if (handler !== methods.echo && !args.every((a) => typeof a === "string")) {
      throw { tag: "bad-arguments", val: "arguments must be strings" };
    }
    const result = handler(caller, ...args);
    return JSON.stringify(result === undefined ? null : result);
  },
};
