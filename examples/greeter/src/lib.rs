//! The smallest example hub, the one the README walks through.

use hubhost_guest::{Hub, HubError, Methods, export_hub};

struct Greeter;

impl Hub for Greeter {
    fn methods(m: &mut Methods) {
        // Broadcast to every connection of this hub.
        m.on("Greet", |ctx, (name,): (String,)| {
            ctx.clients()
                .all()
                .send("Greeted", (name, ctx.connection_id()))
        });
        // Return a value: the client's invoke() resolves with it.
        m.on("Add", |_, (a, b): (i64, i64)| Ok(a + b));
        // Fail: the client's invoke() rejects with this text.
        m.on("Refuse", |_, ()| {
            Err::<(), _>(HubError::failed("not today"))
        });
    }

    fn on_connected(ctx: &hubhost_guest::Context) -> Result<(), HubError> {
        ctx.groups().add(ctx.connection_id(), "lobby")
    }
}

export_hub!(Greeter);
