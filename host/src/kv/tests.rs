//! One spec suite, run against every backend: memory, memory snapshotted to
//! a directory, and Redis (the machine's, under a unique prefix).

use super::memory::MemoryKv;
use super::redis::RedisKv;
use super::*;
use std::time::Instant;

const QUOTA: Quota = Quota {
    max_keys: 1_000,
    max_bytes: 1 << 20,
};

fn hub(tenant: &str, hub: &str) -> HubKey {
    HubKey::new(tenant, hub).unwrap_or_else(|e| panic!("{e}"))
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{name}-{}-{nanos}", std::process::id())
}

fn spec(kv: &dyn KvBackend) -> Result<(), KvError> {
    let tenant = unique("t");
    let a = hub(&tenant, "a");
    let b = hub(&tenant, "b");

    // Values.
    assert_eq!(kv.get(&a, "k")?, None);
    kv.set(&a, "k", "v1", None, QUOTA)?;
    assert_eq!(kv.get(&a, "k")?.as_deref(), Some("v1"));
    kv.set(&a, "k", "v22", None, QUOTA)?;
    assert_eq!(kv.usage(&tenant)?, (1, 4));
    assert!(kv.delete(&a, "k")?);
    assert!(!kv.delete(&a, "k")?);
    assert_eq!(kv.usage(&tenant)?, (0, 0));

    // Keys are data: names that look like separators, patterns or hash
    // tags reach exactly one key of one hub.
    let mut crafted: Vec<String> = [
        ":", "*", "{a}", "a:v", "b:v:x", "\n", "a*", "?", "[ab]", "\\", "é",
    ]
    .map(str::to_owned)
    .to_vec();
    crafted.push("x".repeat(MAX_KEY_BYTES));
    for key in &crafted {
        kv.set(&a, key, &format!("a={key}"), None, QUOTA)?;
    }
    for key in &crafted {
        assert_eq!(kv.get(&a, key)?, Some(format!("a={key}")), "{key:?}");
        assert_eq!(kv.get(&b, key)?, None, "hub b sees a's {key:?}");
        assert_eq!(kv.get(&hub(&unique("other"), "a"), key)?, None);
    }
    assert_eq!(kv.list_keys(&b, "", None, 100)?, Vec::<String>::new());
    assert_eq!(kv.list_keys(&a, "*", None, 100)?, vec!["*".to_string()]);
    assert_eq!(kv.list_keys(&a, "a", None, 100)?, vec!["a*", "a:v"]);
    let mut all = crafted.clone();
    all.sort();
    assert_eq!(kv.list_keys(&a, "", None, 100)?, all);
    // Paging.
    let first = kv.list_keys(&a, "", None, 5)?;
    let rest = kv.list_keys(&a, "", first.last().map(String::as_str), 100)?;
    assert_eq!([first, rest].concat(), all);
    kv.delete_hub(&a)?;
    assert_eq!(kv.usage(&tenant)?, (0, 0));
    assert_eq!(kv.list_keys(&a, "", None, 100)?, Vec::<String>::new());

    // Increment and compare-and-swap.
    assert_eq!(kv.increment(&a, "n", 5, QUOTA)?, 5);
    assert_eq!(kv.increment(&a, "n", -7, QUOTA)?, -2);
    kv.set(&a, "big", &i64::MAX.to_string(), None, QUOTA)?;
    assert_eq!(kv.increment(&a, "big", 1, QUOTA), Err(KvError::Overflow));
    assert_eq!(kv.increment(&a, "big", 0, QUOTA)?, i64::MAX);
    kv.set(&a, "text", "abc", None, QUOTA)?;
    assert_eq!(kv.increment(&a, "text", 1, QUOTA), Err(KvError::NotInteger));
    assert!(!kv.compare_and_swap(&a, "c", Some("x"), "y", QUOTA)?);
    assert!(kv.compare_and_swap(&a, "c", None, "1", QUOTA)?);
    assert!(!kv.compare_and_swap(&a, "c", None, "2", QUOTA)?);
    assert!(kv.compare_and_swap(&a, "c", Some("1"), "2", QUOTA)?);
    assert_eq!(kv.get(&a, "c")?.as_deref(), Some("2"));

    // Lists: a capped history.
    for i in 0..7 {
        kv.list_push(&a, "h", &format!("m{i}"), 5, QUOTA)?;
    }
    assert_eq!(
        kv.list_range(&a, "h", 0, -1, 100)?,
        ["m2", "m3", "m4", "m5", "m6"]
    );
    assert_eq!(kv.list_range(&a, "h", -2, -1, 100)?, ["m5", "m6"]);
    assert_eq!(kv.list_range(&a, "h", 3, 1, 100)?, Vec::<String>::new());
    assert_eq!(
        kv.list_range(&a, "h", 0, -1, 3),
        Err(KvError::ReadItems { count: 5, limit: 3 })
    );
    assert_eq!(kv.get(&a, "h")?, None, "values and lists are apart");
    kv.list_trim(&a, "h", 1, 2)?;
    assert_eq!(kv.list_range(&a, "h", 0, -1, 100)?, ["m3", "m4"]);
    kv.delete_hub(&a)?;
    assert_eq!(kv.usage(&tenant)?, (0, 0));

    // Quotas, for the tenant's hubs together.
    let small = Quota {
        max_keys: 2,
        max_bytes: 20,
    };
    kv.set(&a, "k1", "0123456789", None, small)?;
    assert_eq!(
        kv.set(&b, "k2", "0123456789", None, small),
        Err(KvError::Bytes(20))
    );
    kv.set(&b, "k2", "x", None, small)?;
    assert_eq!(kv.set(&a, "k3", "x", None, small), Err(KvError::Keys(2)));
    assert_eq!(kv.list_push(&a, "k3", "x", 5, small), Err(KvError::Keys(2)));
    assert_eq!(kv.increment(&a, "k3", 1, small), Err(KvError::Keys(2)));
    assert_eq!(
        kv.get(&a, "k3")?,
        None,
        "a refused increment leaves nothing"
    );
    assert!(kv.delete(&a, "k1")?);
    kv.list_push(&a, "k3", "x", 5, small)?;
    kv.delete_hub(&a)?;
    kv.delete_hub(&b)?;
    assert_eq!(kv.usage(&tenant)?, (0, 0));

    // Time-to-live: gone once due, and no longer counted.
    kv.set(&a, "short", "v", Some(Duration::from_millis(50)), QUOTA)?;
    kv.set(&a, "long", "v", Some(Duration::from_secs(600)), QUOTA)?;
    assert_eq!(kv.get(&a, "short")?.as_deref(), Some("v"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while kv.get(&a, "short")?.is_some() {
        assert!(
            Instant::now() < deadline,
            "a 50 ms value still there after 5 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(kv.usage(&tenant)?, (1, 5));
    assert_eq!(kv.list_keys(&a, "", None, 10)?, ["long"]);
    kv.delete_hub(&a)?;
    Ok(())
}

#[test]
fn memory_backend_meets_the_spec() -> Result<(), KvError> {
    spec(&MemoryKv::new())
}

#[test]
fn snapshotted_backend_meets_the_spec_and_keeps_state() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(unique("hubhost-kv"));
    let kv = MemoryKv::open(&dir)?;
    spec(kv.as_ref())?;
    let key = hub("keep", "chat");
    kv.set(&key, "k", "v", None, QUOTA)?;
    kv.list_push(&key, "h", "1", 10, QUOTA)?;
    kv.set(&key, "soon", "v", Some(Duration::from_millis(1)), QUOTA)?;
    kv.flush();
    drop(kv);
    std::thread::sleep(Duration::from_millis(5));
    let again = MemoryKv::open(&dir)?;
    assert_eq!(again.get(&key, "k")?.as_deref(), Some("v"));
    assert_eq!(again.list_range(&key, "h", 0, -1, 10)?, ["1"]);
    assert_eq!(again.get(&key, "soon")?, None);
    assert_eq!(again.usage("keep")?, (2, 4));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn redis_backend_meets_the_spec() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let kv = {
        let _entered = runtime.enter();
        RedisKv::new("redis://127.0.0.1:6379", &unique("kvspec"))?
    };
    spec(&kv)?;
    Ok(())
}

#[test]
fn ranges_follow_redis() {
    assert_eq!(range(5, 0, -1), Some((0, 4)));
    assert_eq!(range(5, -2, -1), Some((3, 4)));
    assert_eq!(range(5, -100, 100), Some((0, 4)));
    assert_eq!(range(5, 3, 1), None);
    assert_eq!(range(0, 0, -1), None);
    assert_eq!(range(5, 5, 9), None);
}
