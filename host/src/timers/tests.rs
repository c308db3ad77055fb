//! One spec suite for both timer backends (Redis: the machine's, under a
//! unique prefix).

use super::memory::MemoryTimers;
use super::redis::RedisTimers;
use super::*;

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{name}-{}-{nanos}", std::process::id())
}

fn timer(tenant: &str, hub: &str, due_ms: u64) -> Result<Timer, TimerError> {
    Ok(Timer {
        id: new_id()?,
        tenant: tenant.into(),
        hub: hub.into(),
        method: "Tick".into(),
        args: "[1]".into(),
        due_ms,
    })
}

fn spec(timers: &dyn TimerBackend) -> anyhow::Result<()> {
    let tenant = unique("t");
    let now = now_ms();
    let soon = timer(&tenant, "a", now)?;
    let later = timer(&tenant, "a", now + 60_000)?;
    let other = timer(&tenant, "b", now)?;
    for t in [&soon, &later, &other] {
        timers.add(t, 3)?;
    }
    assert_eq!(
        timers.add(&timer(&tenant, "a", now)?, 3),
        Err(TimerError::Count(3))
    );
    assert_eq!(timers.count(&tenant)?, 3);

    // Cancelled only by its own hub, and only while pending.
    let hub_b = HubKey::new(&tenant, "b")?;
    let hub_a = HubKey::new(&tenant, "a")?;
    assert!(!timers.cancel(&hub_b, &later.id)?);
    assert!(timers.cancel(&hub_a, &later.id)?);
    assert!(!timers.cancel(&hub_a, &later.id)?);

    // Claimed once; a claim held is not claimed again until its lease ends.
    let mut claimed = timers.claim(now_ms(), 10)?;
    claimed.retain(|t| t.tenant == tenant);
    claimed.sort_by(|x, y| x.hub.cmp(&y.hub));
    assert_eq!(claimed, [soon.clone(), other.clone()]);
    assert!(
        !timers.cancel(&hub_a, &soon.id)?,
        "a claimed timer is firing"
    );
    let again = timers.claim(now_ms(), 10)?;
    assert!(again.iter().all(|t| t.tenant != tenant), "{again:?}");
    timers.done(&soon)?;
    // `other`'s node went quiet: past the lease, another claims it.
    let after_lease = now_ms() + LEASE.as_millis() as u64 + 1;
    let reclaimed: Vec<Timer> = timers
        .claim(after_lease, 10)?
        .into_iter()
        .filter(|t| t.tenant == tenant)
        .collect();
    assert_eq!(reclaimed, std::slice::from_ref(&other));
    // A renewed claim is kept past the first lease.
    timers.renew(std::slice::from_ref(&other.id))?;
    timers.done(&other)?;
    assert_eq!(timers.count(&tenant)?, 0);
    Ok(())
}

#[test]
fn memory_timers_meet_the_spec() -> anyhow::Result<()> {
    spec(&MemoryTimers::new())
}

#[test]
fn redis_timers_meet_the_spec() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let timers = {
        let _entered = runtime.enter();
        RedisTimers::new("redis://127.0.0.1:6379", &unique("timerspec"))?
    };
    spec(&timers)
}
