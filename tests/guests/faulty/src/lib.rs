//! A hub that misbehaves on purpose, for the host's fault tests.

use hubhost_guest::{HubError, Methods, Value, export_hub, log};

struct Faulty;

static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
static HOARD: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

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
            log::info("flood done");
            Ok(())
        });
        // Says it started, then spins until the deadline: a call known to
        // be running.
        m.on("StartThenLoop", |ctx, ()| -> Result<(), HubError> {
            ctx.clients().caller().send("Started", ((),))?;
            #[allow(clippy::empty_loop)]
            loop {}
        });
        m.on("Loop", |_, ()| -> Result<(), HubError> {
            #[allow(clippy::empty_loop)]
            loop {}
        });
        // Allocates until something gives.
        m.on("MemoryBomb", |_, ()| -> Result<(), HubError> {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1; 1 << 20]);
            }
        });
        // Deep calls with small frames: overflows the engine's call stack.
        m.on("StackOverflow", |_, (depth,): (u64,)| Ok(recurse(depth)));
        // Deep calls with big frames: runs the shadow stack in linear memory
        // below address 0, which traps as an out-of-bounds access.
        m.on("StackSmash", |_, (depth,): (u64,)| Ok(smash(depth)));
        // The streams and client-result imports, called raw with what the
        // SDK never sends (an item or arguments that are not JSON, handles
        // that name no stream): the host's answers, as text.
        m.on("RawStreamAbuse", |_, ()| {
            use hubhost_guest::bindings::hubhost::hub::{clients, streams};
            let invoked = |args: &str, timeout: Option<u64>| match clients::invoke(
                "someone-else",
                "M",
                args,
                timeout,
            ) {
                Ok(value) => format!("ok: {value}"),
                Err(text) => format!("error: {text}"),
            };
            Ok(vec![
                told(streams::send("nobody:1", "{not json")),
                told(streams::send("no-colon", "1")),
                told(streams::send("nobody:1", "1")),
                told(streams::complete("nobody:1", None)),
                invoked("{not json", None),
                invoked(r#"{"an":1}"#, None),
                invoked("[]", Some(10)),
            ])
        });
        // Counts the calls this instance has served: shows whether the host
        // reused it.
        m.on("Calls", |_, ()| {
            Ok(CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
        });
        // Grows memory by `size` bytes and keeps it (the instance stays big).
        m.on("Hoard", |_, (size,): (usize,)| {
            let mut hoard = HOARD.lock().map_err(|_| HubError::failed("poisoned"))?;
            hoard.push(vec![1u8; size]);
            Ok(hoard.len())
        });
        m.on("GiantResult", |_, (size,): (usize,)| Ok("x".repeat(size)));
        // Puts the caller into groups g0..g(count-1), stopping at the first
        // refusal.
        m.on("JoinMany", |ctx, (count,): (u32,)| {
            for i in 0..count {
                ctx.groups().add(ctx.connection_id(), &format!("g{i}"))?;
            }
            Ok(count)
        });
        // Fails with an error text of `size` bytes.
        m.on("GiantError", |_, (size,): (usize,)| {
            Err::<(), _>(HubError::failed("é".repeat(size / 2)))
        });
        // Sends `count` messages to the caller, stopping at the first refusal.
        m.on("SendFlood", |ctx, (count,): (u32,)| {
            for i in 0..count {
                ctx.clients().caller().send("Flooded", (i,))?;
            }
            Ok(count)
        });
        m.on("LogFlood", |_, (count,): (u32,)| {
            for i in 0..count {
                log::info(format!("line {i}"));
            }
            Ok(count)
        });
        // Tries to reach a connection by id, whatever hub or tenant it is on.
        m.on("SendTo", |ctx, (connection, text): (String, String)| {
            ctx.clients()
                .client(connection)
                .send("ReceiveMessage", ("intruder", text))
        });
        // Sends `Targeted(text)` to the target named by `kind`, `names` and
        // `excluded`: the positive controls of every hub send target.
        m.on(
            "Target",
            |ctx, (kind, names, excluded, text): (String, Vec<String>, Vec<String>, String)| {
                let clients = ctx.clients();
                let first = names.first().cloned().unwrap_or_default();
                let proxy = match kind.as_str() {
                    "all" => clients.all(),
                    "all-except" => clients.all_except(excluded),
                    "caller" => clients.caller(),
                    "others" => clients.others(),
                    "client" => clients.client(first),
                    "clients" => clients.clients(names),
                    "group" => clients.group(first),
                    "group-except" => clients.group_except(first, excluded),
                    "groups" => clients.groups(names),
                    "others-in-group" => clients.others_in_group(first),
                    "user" => clients.user(first),
                    "users" => clients.users(names),
                    other => return Err(HubError::failed(format!("no target kind {other}"))),
                };
                proxy.send("Targeted", (text,))
            },
        );
        // Writes to stdout and stderr, which the host puts into its log.
        m.on("Print", |_, (text,): (String,)| {
            println!("out: {text}");
            eprintln!("err: {text}");
            Ok(text)
        });
        m.on("Deny", |_, ()| {
            Err::<(), _>(HubError::Unauthorized("no".into()))
        });
        // State with every argument the hub's: for the limits of kv, items
        // and presence. Values are stored as the JSON of the text given.
        m.on("KvSet", |ctx, (key, value): (String, String)| {
            ctx.state().set(&key, &value)
        });
        m.on(
            "KvSetFor",
            |ctx, (key, value, ms): (String, String, u64)| {
                ctx.state()
                    .set_for(&key, &value, std::time::Duration::from_millis(ms))
            },
        );
        m.on("KvGet", |ctx, (key,): (String,)| {
            ctx.state().get::<Value>(&key)
        });
        m.on("KvGets", |ctx, (count,): (u32,)| {
            for _ in 0..count {
                ctx.state().get::<Value>("k")?;
            }
            Ok(count)
        });
        m.on("KvIncrement", |ctx, (key, delta): (String, i64)| {
            ctx.state().increment(&key, delta)
        });
        m.on(
            "KvPush",
            |ctx, (key, value, keep): (String, String, u32)| ctx.state().push(&key, &value, keep),
        );
        m.on("KvRange", |ctx, (key, start, stop): (String, i64, i64)| {
            ctx.state().range::<Value>(&key, start, stop)
        });
        m.on("KvKeys", |ctx, (prefix, limit): (String, u32)| {
            ctx.state().keys(&prefix, None, limit)
        });
        m.on("ItemSet", |ctx, (key, value): (String, String)| {
            ctx.items().set(&key, &value)
        });
        m.on("Members", |ctx, (group, limit): (String, u32)| {
            ctx.presence().group_members(&group, limit)
        });
        // A timer whose call leaves a trace in state (no connection needed).
        m.on("BumpLater", |ctx, (delay_ms,): (u64,)| {
            let delay = std::time::Duration::from_millis(delay_ms);
            ctx.timers().schedule(delay, "Bump", ())
        });
        m.on("Bump", |ctx, ()| ctx.state().increment("bumps", 1));
        m.on("Bumps", |ctx, ()| {
            Ok(ctx.state().get::<i64>("bumps")?.unwrap_or(0))
        });
        // The clocks: read them, then try to wait on one.
        m.on("Clocks", |_, ()| {
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| HubError::failed(e.to_string()))?;
            let start = std::time::Instant::now();
            Ok((wall.as_millis() as u64, start.elapsed().as_nanos() as u64))
        });
        m.on("Sleep", |_, (ms,): (u64,)| {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Ok(ms)
        });
        m.on("Presences", |ctx, (count,): (u32,)| {
            for _ in 0..count {
                ctx.presence().connection_count()?;
            }
            Ok(count)
        });
    }

    fn on_connected(ctx: &hubhost_guest::Context) -> Result<(), HubError> {
        log::info(format!("connected {}", ctx.connection_id()));
        Ok(())
    }
}

/// Recursion the optimizer cannot turn into a loop, with tiny frames.
#[inline(never)]
/// A stream import's answer, as text.
fn told(result: Result<(), hubhost_guest::bindings::hubhost::hub::streams::StreamError>) -> String {
    use hubhost_guest::bindings::hubhost::hub::streams::StreamError;
    match result {
        Ok(()) => "ok".into(),
        Err(StreamError::Cancelled) => "cancelled".into(),
        Err(StreamError::Closed) => "closed".into(),
        Err(StreamError::Refused(text)) => format!("refused: {text}"),
    }
}

fn recurse(depth: u64) -> u64 {
    if depth == 0 {
        return 0;
    }
    std::hint::black_box(recurse(depth - 1)).wrapping_add(depth)
}

/// Recursion with 512-byte frames in linear memory.
#[inline(never)]
fn smash(depth: u64) -> u64 {
    if depth == 0 {
        return 0;
    }
    let frame = [depth; 64];
    std::hint::black_box(&frame);
    smash(depth - 1).wrapping_add(std::hint::black_box(frame[depth as usize % 64]))
}

export_hub!(Faulty);
