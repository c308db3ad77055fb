//! A hub that misbehaves on purpose, for the host's fault tests.

use hubhost_guest::{HubError, Methods, Value, export_hub, log};

struct Faulty;

impl hubhost_guest::Hub for Faulty {
    fn methods(m: &mut Methods) {
        // A Rust panic aborts the instance: the host sees a trap.
        m.on("Panic", |_, ()| -> Result<(), HubError> {
            panic!("faulty hub panicked on purpose")
        });
        m.on("Echo", |_, (value,): (Value,)| Ok(value));
        m.on("Log", |_, (text,): (String,)| {
            log::warn(text);
            Ok(())
        });
        m.on(
            "AddToGroup",
            |ctx, (connection, group): (String, String)| ctx.groups().add(&connection, &group),
        );
        // Sends `count` messages of `size` bytes to the caller in one call.
        m.on("Flood", |ctx, (count, size): (u32, usize)| {
            let payload = "x".repeat(size);
            for _ in 0..count {
                ctx.clients().caller().send("Flood", (&payload,))?;
            }
            Ok(())
        });
        m.on("Loop", |_, ()| -> Result<(), HubError> {
            #[allow(clippy::empty_loop)]
            loop {}
        });
        m.on("Deny", |_, ()| {
            Err::<(), _>(HubError::Unauthorized("no".into()))
        });
    }

    fn on_connected(ctx: &hubhost_guest::Context) -> Result<(), HubError> {
        log::info(format!("connected {}", ctx.connection_id()));
        Ok(())
    }
}

export_hub!(Faulty);
