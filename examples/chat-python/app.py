"""The example ChatHub in Python, built with componentize-py.

Same public methods as the Rust example (examples/chat): the chat tests run
against both. The WIT world wit/hub.wit is the reference for what a hub can
import and must export.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import clients, groups, types


def send(target, method, *args):
    """Call `method(*args)` on the clients `target` names."""
    try:
        clients.send(target, method, json.dumps(list(args)))
    except Err as error:
        raise Err(types.HubError_Failed(error.value))


def change_group(change, connection_id, group):
    try:
        change(connection_id, group)
    except Err as error:
        raise Err(types.HubError_Failed(error.value))


def send_message(caller, user, message):
    send(types.Target_All(), "ReceiveMessage", user, message)


def join_group(caller, group):
    change_group(groups.add, caller.connection_id, group)


def leave_group(caller, group):
    change_group(groups.remove, caller.connection_id, group)


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
}


class Hub(exports.Hub):
    def on_connected(self, caller):
        pass

    def on_disconnected(self, caller, error):
        pass

    def invoke(self, caller, method, args_json):
        handler = METHODS.get(method.lower())
        if handler is None:
            raise Err(types.HubError_UnknownMethod(method))
        args = json.loads(args_json)
        expected = handler.__code__.co_argcount - 1
        if len(args) != expected:
            raise Err(types.HubError_BadArguments(f"expected {expected} argument(s), got {len(args)}"))
        if handler not in (echo,) and not all(isinstance(a, str) for a in args):
            raise Err(types.HubError_BadArguments("arguments must be strings"))
        return json.dumps(handler(caller, *args))
