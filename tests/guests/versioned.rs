// The hub of the hot-swap tests, shared by `versioned-v1` and
// `versioned-v2`, which differ only in `VERSION`: every answer and every
// message names the version that produced it.

use hubhost_guest::{Methods, Value, export_hub, json};
use std::collections::BTreeMap;

struct Versioned;

impl hubhost_guest::Hub for Versioned {
    fn methods(m: &mut Methods) {
        m.on("Version", |_, ()| Ok(VERSION));
        // A timer that reports the version it fired on to the caller.
        m.on("Later", |ctx, (delay_ms,): (u64,)| {
            let delay = std::time::Duration::from_millis(delay_ms);
            ctx.timers().schedule(delay, "Fired", (ctx.connection_id(),))
        });
        m.on("Fired", |ctx, (connection,): (String,)| {
            ctx.clients().client(connection).send("Fired", (VERSION, ctx.from_timer()))
        });
        m.on("JoinGroup", |ctx, (group,): (String,)| {
            ctx.groups().add(ctx.connection_id(), &group)
        });
        // A numbered message to a group, stamped with the version that sent it.
        m.on("Tick", |ctx, (group, sender, seq): (String, String, u64)| {
            ctx.clients().group(group).send("Tick", (VERSION, sender, seq))?;
            Ok(VERSION)
        });
        m.on("SendToUser", |ctx, (user, text): (String, String)| {
            ctx.clients().user(user).send("Direct", (VERSION, text))
        });
        m.on("Caller", |ctx, ()| {
            let claims: BTreeMap<String, Value> = ctx
                .claims()
                .iter()
                .map(|(name, value)| (name.clone(), json!(value)))
                .collect();
            Ok(json!({ "connectionId": ctx.connection_id(), "userId": ctx.user_id(), "claims": claims }))
        });
    }
}

export_hub!(Versioned);
