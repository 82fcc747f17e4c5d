//! A free list of byte buffers so steady-state packets reuse memory instead of allocating.

/// Pool of `Vec<u8>` buffers of one nominal capacity.
#[derive(Debug)]
pub(crate) struct BufPool {
    free: Vec<Vec<u8>>,
    capacity: usize,
}

impl BufPool {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            free: Vec::new(),
            capacity,
        }
    }

    /// An empty buffer with at least the pool's capacity.
    pub(crate) fn get(&mut self) -> Vec<u8> {
        self.free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.capacity))
    }

    /// Returns a buffer (cleared) for reuse; keeps at most 4096.
    pub(crate) fn put(&mut self, mut buf: Vec<u8>) {
        if self.free.len() < 4096 {
            buf.clear();
            self.free.push(buf);
        }
    }
}
