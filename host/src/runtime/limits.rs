//! What one hub instance may take: linear memory for the whole store (all
//! its memories together), table elements, and how many instances, tables
//! and memories it may create. A limit that is hit traps the call, and is
//! recorded so that the caller's error can name it.

use wasmtime::ResourceLimiter;

/// Most elements of one table.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// Core instances, tables and memories of one component instance. Guest
/// toolchains differ (componentize-py links several modules), so these are
/// generous; memory is what is really bounded.
const MAX_INSTANCES: usize = 64;
const MAX_TABLES: usize = 64;
const MAX_MEMORIES: usize = 16;

/// Which limit stopped a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    Memory,
    Table,
}

/// The limiter of one store.
#[derive(Debug)]
pub struct Limiter {
    memory_limit: usize,
    /// Bytes of linear memory the store holds, all memories together.
    memory_used: usize,
    /// The limit hit since the last [`Limiter::take_hit`].
    hit: Option<LimitHit>,
}

impl Limiter {
    pub fn new(memory_limit: usize) -> Self {
        Self {
            memory_limit,
            memory_used: 0,
            hit: None,
        }
    }

    /// The limit hit since the last call, if any; clears it.
    pub fn take_hit(&mut self) -> Option<LimitHit> {
        self.hit.take()
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .memory_used
            .saturating_add(desired.saturating_sub(current));
        if total > self.memory_limit {
            self.hit = Some(LimitHit::Memory);
            wasmtime::bail!(
                "hub exceeded its memory limit of {} bytes",
                self.memory_limit
            );
        }
        self.memory_used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.hit = Some(LimitHit::Table);
            wasmtime::bail!("hub exceeded its table limit of {MAX_TABLE_ELEMENTS} elements");
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_memory_of_the_store() -> wasmtime::Result<()> {
        let mut limiter = Limiter::new(100);
        assert!(limiter.memory_growing(0, 60, None)?);
        assert!(
            limiter.memory_growing(0, 40, None)?,
            "a second memory shares the budget"
        );
        assert!(limiter.memory_growing(40, 41, None).is_err());
        assert_eq!(limiter.take_hit(), Some(LimitHit::Memory));
        assert_eq!(limiter.take_hit(), None);
        Ok(())
    }
}
