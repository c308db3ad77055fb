//! The example ChatHub, the one from ASP.NET Core SignalR's tutorial. Its
//! method names and messages are a public contract: the end-to-end tests and
//! the demo page rely on them.

use hubhost_guest::{HubError, Methods, Stream, StreamError, Value, export_hub, json};
use serde::{Deserialize, Serialize};

struct Chat;

/// One message of the hub's history.
#[derive(Serialize, Deserialize)]
struct Said {
    user: String,
    message: String,
}

/// Messages `History()` keeps.
const HISTORY: u32 = 50;
/// Most ids `GroupMembers` returns.
const MEMBERS: u32 = 1_000;

impl hubhost_guest::Hub for Chat {
    fn methods(m: &mut Methods) {
        m.on("SendMessage", |ctx, (user, message): (String, String)| {
            let said = Said { user, message };
            ctx.state().push("history", &said, HISTORY)?;
            ctx.clients()
                .all()
                .send("ReceiveMessage", (said.user, said.message))
        });
        m.on("History", |ctx, ()| {
            ctx.state().range::<Said>("history", 0, -1)
        });
        m.on("Count", |ctx, ()| ctx.state().increment("count", 1));
        m.on("GroupCount", |ctx, (group,): (String,)| {
            ctx.presence().group_count(&group)
        });
        m.on("GroupMembers", |ctx, (group,): (String,)| {
            ctx.presence().group_members(&group, MEMBERS)
        });
        m.on("IsOnline", |ctx, (user_id,): (String,)| {
            ctx.presence().is_online(&user_id)
        });
        m.on("SetItem", |ctx, (key, value): (String, Value)| {
            ctx.items().set(&key, &value)
        });
        m.on("GetItem", |ctx, (key,): (String,)| {
            ctx.items().get::<Value>(&key)
        });
        // `Reminder(text)` to the caller after `delay_ms`, if it is still
        // connected then; the timer's id.
        m.on("Remind", |ctx, (delay_ms, text): (u64, String)| {
            let delay = std::time::Duration::from_millis(delay_ms);
            ctx.timers()
                .schedule(delay, "DeliverReminder", (ctx.connection_id(), text))
        });
        m.on(
            "DeliverReminder",
            |ctx, (connection, text): (String, String)| {
                if !ctx.from_timer() {
                    return Err(HubError::Unauthorized(
                        "reminders come from timers only".into(),
                    ));
                }
                ctx.clients().client(connection).send("Reminder", (text,))
            },
        );
        // GET `url` through the tenant's allow-list: its status and size.
        m.on("Fetch", |ctx, (url,): (String,)| {
            let response = ctx.http().get(&url)?;
            Ok(json!({ "status": response.status, "bytes": response.body.len() }))
        });
        // A tenant variable (a secret reads as its value), or null.
        m.on("Config", |ctx, (name,): (String,)| {
            Ok(ctx.config().get(&name))
        });
        // The wall clock, in milliseconds since the Unix epoch.
        m.on("Now", |_, ()| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| HubError::failed(e.to_string()))?;
            Ok(u64::try_from(now.as_millis()).unwrap_or(u64::MAX))
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
        // The integers 0 to n-1, as a stream.
        m.stream("Counter", |_, (n,): (u64,), stream| {
            for i in 0..n {
                stream.send(&i)?;
            }
            Ok(())
        });
        // The integers 0 to n-1, one every `interval_ms`: a stream that
        // outlives its call, sent to by timer calls (on any node) through
        // its handle.
        m.stream("Ticks", |ctx, (n, interval_ms): (u64, u64), stream| {
            if n == 0 {
                return Ok(());
            }
            let handle = stream.keep_open();
            let interval = std::time::Duration::from_millis(interval_ms);
            ctx.timers()
                .schedule(interval, "Tick", (handle, 0, n, interval_ms))?;
            Ok(())
        });
        m.on(
            "Tick",
            |ctx, (handle, i, n, interval_ms): (String, u64, u64, u64)| {
                if !ctx.from_timer() {
                    return Err(HubError::Unauthorized("ticks come from timers only".into()));
                }
                let stream = Stream::from_handle(handle);
                match stream.send(&i) {
                    Ok(()) => {}
                    // Cancelled, or the client left: no more ticks.
                    Err(StreamError::Cancelled | StreamError::Closed) => return Ok(()),
                    Err(error) => return Err(error.into()),
                }
                if i + 1 == n {
                    let _ = stream.complete();
                    return Ok(());
                }
                let interval = std::time::Duration::from_millis(interval_ms);
                let next = (stream.keep_open(), i + 1, n, interval_ms);
                ctx.timers().schedule(interval, "Tick", next)?;
                Ok(())
            },
        );
        // The sum of the numbers the client streams.
        m.on_uploads("UploadSum", 1, |_, (), uploads| {
            let mut sum = 0.0;
            for upload in &uploads {
                while let Some(number) = upload.next::<f64>()? {
                    sum += number;
                }
            }
            Ok(sum)
        });
        // What connection `id`'s `GetName` handler returns.
        m.on("AskName", |ctx, (id,): (String,)| {
            ctx.clients().invoke::<_, Value>(&id, "GetName", (), None)
        });
        m.on("WhoAmI", |ctx, ()| {
            Ok(json!({ "connectionId": ctx.connection_id(), "userId": ctx.user_id() }))
        });
        m.on("Fail", |_, (text,): (String,)| {
            Err::<(), _>(HubError::failed(text))
        });
    }
}

export_hub!(Chat);
