"""The example ChatHub in Python, built with componentize-py.

Same public methods as the Rust example (examples/chat): the chat tests run
against both. The WIT world wit/0.2.0/hub.wit is the reference for what a hub
can import and must export.
"""

import json
import math

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import clients, clock, config, groups, http, items, kv, presence, streams, timers, types, uploads

# The hub's kv list of the last chat messages, oldest first.
HISTORY_KEY = "history"
HISTORY_KEEP = 50
# How many connection ids GroupMembers returns at most.
MEMBERS_LIMIT = 1000
# One past the largest delay timers.schedule takes (a u64).
DELAY_LIMIT = 2**64


def or_fail(call, *args):
    """Call an import; its error text becomes the hub's `failed` error."""
    try:
        return call(*args)
    except Err as error:
        raise Err(types.HubError_Failed(error.value))


class Json(str):
    """A method's result that is JSON text already: handed back as it is."""


def check_args(args, expected):
    if len(args) != expected:
        raise Err(types.HubError_BadArguments(f"expected {expected} argument(s), got {len(args)}"))


def check_uploads(method, upload_ids, expected):
    if len(upload_ids) != expected:
        noun = "stream" if expected == 1 else "streams"
        raise Err(types.HubError_BadArguments(f"{method} expects {expected} {noun}, got {len(upload_ids)}"))


def still_open(call, *args):
    """Call a streams import: False once the stream is gone (the client
    cancelled or left: stop producing); a limit's refusal becomes `failed`."""
    try:
        call(*args)
        return True
    except Err as error:
        if isinstance(error.value, streams.StreamError_Refused):
            raise Err(types.HubError_Failed(error.value.value))
        return False


def send(target, method, *args):
    """Call `method(*args)` on the clients `target` names."""
    or_fail(clients.send, target, method, json.dumps(list(args)))


def send_message(caller, user, message):
    # Kept before sending, so History() already has a message its receivers saw.
    entry = json.dumps({"user": user, "message": message})
    or_fail(kv.list_push, HISTORY_KEY, entry, HISTORY_KEEP)
    send(types.Target_All(), "ReceiveMessage", user, message)


def join_group(caller, group):
    or_fail(groups.add, caller.connection_id, group)


def leave_group(caller, group):
    or_fail(groups.remove, caller.connection_id, group)


def send_to_group(caller, group, user, message):
    send(types.Target_Group(group), "ReceiveMessage", user, message)


def send_to_others(caller, user, message):
    send(types.Target_AllExcept([caller.connection_id]), "ReceiveMessage", user, message)


def send_to_user(caller, user_id, user, message):
    send(types.Target_User(user_id), "ReceiveMessage", user, message)


def echo(caller, value):
    return value


def who_am_i(caller):
    return {"connectionId": caller.connection_id, "userId": caller.user_id}


def fail(caller, text):
    raise Err(types.HubError_Failed(text))


def history(caller):
    # Items are JSON text: hand back the objects, not strings.
    return [json.loads(item) for item in or_fail(kv.list_range, HISTORY_KEY, 0, -1)]


def count(caller):
    return or_fail(kv.increment, "count", 1)


def group_count(caller, group):
    return or_fail(presence.group_count, group)


def group_members(caller, group):
    return or_fail(presence.group_members, group, MEMBERS_LIMIT)


def is_online(caller, user_id):
    return or_fail(presence.is_online, user_id)


def set_item(caller, key, value):
    # Any JSON value: stored as its text, as the SDKs do.
    or_fail(items.set, key, json.dumps(value))


def get_item(caller, key):
    text = items.get(key)
    return None if text is None else json.loads(text)


def config_value(caller, name):
    # A tenant variable (a secret reads as its value), or None.
    return config.get(name)


def fetch(caller, url):
    # GET `url` (the operator allows the tenant its origins): the status and
    # the body's length in bytes.
    response = or_fail(http.fetch, http.Request(method="GET", url=url, headers=[], body=b""))
    return {"status": response.status, "bytes": len(response.body)}


def remind(caller, delay_ms, text):
    # `Reminder(text)` to the caller after `delay_ms`, if it is still connected
    # then; the timer's id. bool is an int in Python, but not a JSON number.
    if isinstance(delay_ms, bool) or not isinstance(delay_ms, int) or not 0 <= delay_ms < DELAY_LIMIT:
        raise Err(types.HubError_BadArguments("delayMs must be a whole number of milliseconds"))
    args = json.dumps([caller.connection_id, text])
    return or_fail(timers.schedule, delay_ms, "DeliverReminder", args)


def deliver_reminder(caller, connection, text):
    # Timers call with an empty connection id, which no client connection has.
    if caller.connection_id != "":
        raise Err(types.HubError_Unauthorized("reminders come from timers only"))
    send(types.Target_Connection(connection), "Reminder", text)


def ask_name(caller, connection_id):
    # A client result: the answer of that client's GetName handler, JSON already.
    return Json(or_fail(clients.invoke, connection_id, "GetName", "[]", None))


def counter(caller, stream, n):
    # The stream 0, 1, ..., n - 1. bool is an int in Python, but not a JSON number.
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise Err(types.HubError_BadArguments("n must be a non-negative whole number"))
    for i in range(n):
        if not still_open(streams.send, stream, json.dumps(i)):
            return
    still_open(streams.complete, stream, None)


def ticks(caller, stream, n, interval_ms):
    # The stream 0, 1, ..., n - 1, one item every interval_ms. Timers push the
    # items after open_stream has returned, on whichever node runs them: the
    # stream outlives its call, and its handle reaches it from any node.
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise Err(types.HubError_BadArguments("n must be a non-negative whole number"))
    if isinstance(interval_ms, bool) or not isinstance(interval_ms, int) or not 0 <= interval_ms < DELAY_LIMIT:
        raise Err(types.HubError_BadArguments("intervalMs must be a whole number of milliseconds"))
    if n == 0:
        still_open(streams.complete, stream, None)
        return
    # Not completed: returning ok leaves the stream open for the timers.
    schedule_tick(stream, 0, n, interval_ms)


def schedule_tick(stream, i, n, interval_ms):
    args = json.dumps([stream, i, n, interval_ms])
    or_fail(timers.schedule, interval_ms, "Tick", args)


def tick(caller, stream, i, n, interval_ms):
    # Item i of a Ticks stream; the arguments are those Ticks or the previous
    # Tick scheduled. Timers call with an empty connection id: a client could
    # otherwise push items into any stream whose handle it knew.
    if caller.connection_id != "":
        raise Err(types.HubError_Unauthorized("ticks come from timers only"))
    # Gone (cancelled, or the client left): schedule no more.
    if not still_open(streams.send, stream, json.dumps(i)):
        return
    if i + 1 == n:
        still_open(streams.complete, stream, None)
    else:
        schedule_tick(stream, i + 1, n, interval_ms)


def upload_sum(caller, upload):
    # The sum of the numbers the client uploads, read until it ends the upload.
    total = 0
    while (item := or_fail(uploads.next, upload)) is not None:
        value = json.loads(item)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Err(types.HubError_BadArguments("UploadSum adds numbers only"))
        total += value
    # json.dumps would write Infinity, which is no JSON.
    if isinstance(total, float) and not math.isfinite(total):
        raise Err(types.HubError_BadArguments("the sum is too large"))
    return total


def now(caller):
    # Not time.time(): componentize-py's --stub-wasi makes every WASI clock
    # trap, so the hub reads the host's clock through the world.
    return clock.now_ms()


# Method names match case-insensitively, as in ASP.NET Core SignalR.
METHODS = {
    "sendmessage": send_message,
    "joingroup": join_group,
    "leavegroup": leave_group,
    "sendtogroup": send_to_group,
    "sendtoothers": send_to_others,
    "sendtouser": send_to_user,
    "echo": echo,
    "whoami": who_am_i,
    "fail": fail,
    "history": history,
    "count": count,
    "groupcount": group_count,
    "groupmembers": group_members,
    "isonline": is_online,
    "setitem": set_item,
    "getitem": get_item,
    "now": now,
    "config": config_value,
    "fetch": fetch,
    "remind": remind,
    "deliverreminder": deliver_reminder,
    "askname": ask_name,
    "tick": tick,
}
# Counter and Ticks (through open_stream) and UploadSum (through
# invoke_with_uploads) take a stream rather than return a value, so they are
# not in METHODS.

# The methods open_stream serves: their name as written, and what produces
# the stream.
STREAMING = {
    "counter": ("Counter", counter),
    "ticks": ("Ticks", ticks),
}

# Positions of arguments that may be any JSON value; all others must be strings.
ANY_JSON_ARGS = {
    echo: {0},
    set_item: {1},
    # A number; remind checks it is a whole number of milliseconds.
    remind: {0},
    # i, n and intervalMs: numbers, as Ticks or the previous Tick scheduled them.
    tick: {1, 2, 3},
}


class Hub(exports.Hub):
    def on_connected(self, caller):
        pass

    def on_disconnected(self, caller, error):
        pass

    def invoke(self, caller, method, args_json):
        return self.invoke_with_uploads(caller, method, args_json, [])

    # Not `uploads`: that is the import.
    def invoke_with_uploads(self, caller, method, args_json, upload_ids):
        name = method.lower()
        if name in STREAMING:
            written, _ = STREAMING[name]
            raise Err(types.HubError_Failed(f"{written} is a streaming method: call it with stream()"))
        if name == "uploadsum":
            check_args(json.loads(args_json), 0)
            check_uploads(method, upload_ids, 1)
            return json.dumps(upload_sum(caller, upload_ids[0]))
        handler = METHODS.get(name)
        if handler is None:
            raise Err(types.HubError_UnknownMethod(method))
        # A method that takes no stream was passed one: its arguments are
        # wrong (as ASP.NET Core says), the method is not unknown.
        check_uploads(method, upload_ids, 0)
        args = json.loads(args_json)
        check_args(args, handler.__code__.co_argcount - 1)
        any_json = ANY_JSON_ARGS.get(handler, set())
        if not all(isinstance(a, str) for i, a in enumerate(args) if i not in any_json):
            raise Err(types.HubError_BadArguments("arguments must be strings"))
        result = handler(caller, *args)
        return str(result) if isinstance(result, Json) else json.dumps(result)

    def open_stream(self, caller, method, args_json, upload_ids, stream):
        entry = STREAMING.get(method.lower())
        if entry is None:
            raise Err(types.HubError_UnknownMethod(method))
        _, producer = entry
        args = json.loads(args_json)
        # Less the caller and the stream.
        check_args(args, producer.__code__.co_argcount - 2)
        check_uploads(method, upload_ids, 0)
        producer(caller, stream, *args)
