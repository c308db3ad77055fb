//! Connection items: the `items` capability of world 0.2, values a hub keeps
//! with one connection, as ASP.NET Core's `Context.Items`.
//!
//! The connection owns its [`Items`] and hands them to every call it makes,
//! so they outlive any version of the hub and go when the connection does.
//! They are bounded per connection by count and bytes (keys and values
//! together), so what a hub can make the host keep grows only with the
//! connections the tenant is allowed.

use std::collections::HashMap;
use std::sync::Mutex;

/// Longest item key, in bytes.
pub const MAX_ITEM_KEY_BYTES: usize = 256;

/// What one connection's items may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemLimits {
    pub max_items: usize,
    pub max_bytes: usize,
}

/// Why a change was refused; the text reaches the hub.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ItemError {
    #[error("item keys must be 1 to {MAX_ITEM_KEY_BYTES} bytes")]
    BadKey,
    #[error(
        "this connection already has {0} items, its limit (hub_limits.max_items_per_connection)"
    )]
    Count(usize),
    #[error(
        "this connection's items would exceed {0} bytes, their limit (hub_limits.max_item_bytes_per_connection)"
    )]
    Bytes(usize),
}

impl ItemError {
    /// The setting of the limit that refused the change, if one did.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            Self::BadKey => None,
            Self::Count(_) => Some("hub_limits.max_items_per_connection"),
            Self::Bytes(_) => Some("hub_limits.max_item_bytes_per_connection"),
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    values: HashMap<String, String>,
    bytes: usize,
}

/// One connection's items.
#[derive(Debug, Default)]
pub struct Items {
    table: Mutex<Table>,
}

impl Items {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // Changes are checked before they are made: a poisoned table is whole.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every item, for another node (a drain's handover).
    pub fn entries(&self) -> Vec<(String, String)> {
        let table = self.table();
        table
            .values
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The items another node kept (within the limits there).
    pub fn from_entries(entries: Vec<(String, String)>) -> Self {
        let bytes = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
        Self {
            table: Mutex::new(Table {
                values: entries.into_iter().collect(),
                bytes,
            }),
        }
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.table().values.get(key).cloned()
    }

    /// Set `key` to `value`, or remove it, within `limits`.
    pub fn set(
        &self,
        key: &str,
        value: Option<String>,
        limits: ItemLimits,
    ) -> Result<(), ItemError> {
        if key.is_empty() || key.len() > MAX_ITEM_KEY_BYTES {
            return Err(ItemError::BadKey);
        }
        let mut table = self.table();
        let old = table.values.get(key).map(|v| key.len() + v.len());
        let Some(value) = value else {
            if let Some(old) = old {
                table.values.remove(key);
                table.bytes -= old;
            }
            return Ok(());
        };
        if old.is_none() && table.values.len() >= limits.max_items {
            return Err(ItemError::Count(limits.max_items));
        }
        let bytes = table.bytes - old.unwrap_or(0) + key.len() + value.len();
        if bytes > limits.max_bytes {
            return Err(ItemError::Bytes(limits.max_bytes));
        }
        table.bytes = bytes;
        table.values.insert(key.to_owned(), value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ItemLimits = ItemLimits {
        max_items: 2,
        max_bytes: 10,
    };

    #[test]
    fn items_are_set_replaced_removed_and_bounded() {
        let items = Items::default();
        assert_eq!(items.set("a", Some("1234".into()), LIMITS), Ok(()));
        assert_eq!(items.get("a").as_deref(), Some("1234"));
        assert_eq!(
            items.set("b", Some("12345".into()), LIMITS),
            Err(ItemError::Bytes(10))
        );
        assert_eq!(items.set("b", Some("1".into()), LIMITS), Ok(()));
        assert_eq!(
            items.set("c", Some("1".into()), LIMITS),
            Err(ItemError::Count(2))
        );
        // Replacing counts the difference; removing frees.
        assert_eq!(items.set("a", Some("1234567".into()), LIMITS), Ok(()));
        assert_eq!(items.set("a", None, LIMITS), Ok(()));
        assert_eq!(items.get("a"), None);
        assert_eq!(items.set("c", Some("1234567".into()), LIMITS), Ok(()));
        assert_eq!(
            items.set("", Some("x".into()), LIMITS),
            Err(ItemError::BadKey)
        );
        assert_eq!(
            items.set(&"k".repeat(257), None, LIMITS),
            Err(ItemError::BadKey)
        );
        let moved = Items::from_entries(items.entries());
        assert_eq!(moved.get("c").as_deref(), Some("1234567"));
        assert_eq!(
            moved.set("b", Some("12".into()), LIMITS),
            Err(ItemError::Bytes(10)),
            "bytes carry over"
        );
    }
}
