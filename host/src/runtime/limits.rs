//! What one hub instance may take: linear memory for the whole store (all
//! its memories together), table elements, and how many instances, tables
//! and memories it may create. A limit that is hit traps the call, and is
//! recorded so that the caller's error can name it.

use wasmtime::ResourceLimiter;

use super::HubLimits;

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
    table_elements: usize,
    instances: usize,
    tables: usize,
    memories: usize,
    /// Bytes of linear memory the store holds, all memories together.
    memory_used: usize,
    /// The limit hit since the last [`Limiter::take_hit`].
    hit: Option<LimitHit>,
}

impl Limiter {
    pub fn new(limits: &HubLimits) -> Self {
        Self {
            memory_limit: limits.memory_bytes,
            table_elements: limits.max_table_elements,
            instances: limits.max_instances,
            tables: limits.max_tables,
            memories: limits.max_memories,
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
        if desired > self.table_elements {
            self.hit = Some(LimitHit::Table);
            wasmtime::bail!(
                "hub exceeded its table limit of {} elements",
                self.table_elements
            );
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        self.memories
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_memory_of_the_store() -> wasmtime::Result<()> {
        let mut limiter = Limiter::new(&HubLimits {
            memory_bytes: 100,
            ..HubLimits::default()
        });
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
