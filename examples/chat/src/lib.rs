//! The example ChatHub, the one from ASP.NET Core SignalR's tutorial. Its
//! method names and messages are a public contract: the end-to-end tests and
//! the demo page rely on them.

use hubhost_guest::{HubError, Methods, Value, export_hub, json};

struct Chat;

impl hubhost_guest::Hub for Chat {
    fn methods(m: &mut Methods) {
        m.on("SendMessage", |ctx, (user, message): (String, String)| {
            ctx.clients().all().send("ReceiveMessage", (user, message))
        });
        m.on("JoinGroup", |ctx, (group,): (String,)| {
            ctx.groups().add(ctx.connection_id(), &group)
        });
        m.on("LeaveGroup", |ctx, (group,): (String,)| {
            ctx.groups().remove(ctx.connection_id(), &group)
        });
        m.on(
            "SendToGroup",
            |ctx, (group, user, message): (String, String, String)| {
                ctx.clients()
                    .group(group)
                    .send("ReceiveMessage", (user, message))
            },
        );
        m.on("SendToOthers", |ctx, (user, message): (String, String)| {
            ctx.clients()
                .others()
                .send("ReceiveMessage", (user, message))
        });
        m.on(
            "SendToUser",
            |ctx, (user_id, user, message): (String, String, String)| {
                ctx.clients()
                    .user(user_id)
                    .send("ReceiveMessage", (user, message))
            },
        );
        m.on("Echo", |_, (value,): (Value,)| Ok(value));
        m.on("WhoAmI", |ctx, ()| {
            Ok(json!({ "connectionId": ctx.connection_id(), "userId": ctx.user_id() }))
        });
        m.on("Fail", |_, (text,): (String,)| {
            Err::<(), _>(HubError::failed(text))
        });
    }
}

export_hub!(Chat);
