//! Per-source-IP state in a fixed-size, two-way set-associative table: allocated once, O(1)
//! per lookup, and full sets evict their least recently seen entry. A flood of spoofed
//! sources can only evict entries, and an evicted source starts again from a full bucket
//! (lenient, never harsher), so the table can neither grow nor be used to lock anyone out.

use std::hash::BuildHasher;
use std::net::IpAddr;

use super::bucket::TokenBucket;

/// Budgets of one source IP.
#[derive(Debug, Clone, Copy)]
pub struct IpEntry {
    /// Packets not forwarded for an admitted peer (control and junk).
    pub packets: TokenBucket,
    /// Lease and signature verifications.
    pub verify: TokenBucket,
    /// LEASE_REJECTs sent to this source.
    pub rejects: TokenBucket,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    ip: Option<IpAddr>,
    last_ns: u64,
    entry: IpEntry,
}

/// Initial burst sizes of a fresh entry.
#[derive(Debug, Clone, Copy)]
pub struct IpBursts {
    /// Packet burst.
    pub packets: f64,
    /// Verification burst.
    pub verify: f64,
    /// Reject burst.
    pub rejects: f64,
}

/// The bounded per-IP table.
#[derive(Debug)]
pub struct IpTable {
    slots: Vec<Slot>,
    mask: usize,
    /// Randomly seeded per table, so sources cannot be chosen to collide.
    hasher: foldhash::fast::RandomState,
    /// The slot of the last lookup: a GRO batch is many datagrams from one source.
    last: usize,
    evictions: u64,
}

impl IpTable {
    /// A table of at least `capacity` entries (rounded up to a power of two, minimum 2).
    pub fn new(capacity: usize) -> Self {
        let n = capacity.max(2).next_power_of_two();
        let empty = Slot {
            ip: None,
            last_ns: 0,
            entry: IpEntry {
                packets: TokenBucket::full(0.0, 0),
                verify: TokenBucket::full(0.0, 0),
                rejects: TokenBucket::full(0.0, 0),
            },
        };
        Self {
            slots: vec![empty; n],
            mask: n / 2 - 1,
            hasher: foldhash::fast::RandomState::default(),
            last: 0,
            evictions: 0,
        }
    }

    /// Number of entries the table holds at most.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Entries evicted to make room so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The entry of `ip`, created with full buckets (evicting the older entry of its set) if
    /// absent.
    #[inline]
    pub fn entry(&mut self, ip: IpAddr, now_ns: u64, bursts: IpBursts) -> &mut IpEntry {
        if self.slots[self.last].ip == Some(ip) {
            let slot = &mut self.slots[self.last];
            slot.last_ns = now_ns;
            return &mut slot.entry;
        }
        let set = (self.hasher.hash_one(ip) as usize & self.mask) * 2;
        let pick = if self.slots[set].ip == Some(ip) {
            set
        } else if self.slots[set + 1].ip == Some(ip) {
            set + 1
        } else {
            let victim = match (self.slots[set].ip, self.slots[set + 1].ip) {
                (None, _) => set,
                (_, None) => set + 1,
                _ => {
                    self.evictions += 1;
                    if self.slots[set].last_ns <= self.slots[set + 1].last_ns {
                        set
                    } else {
                        set + 1
                    }
                }
            };
            self.slots[victim] = Slot {
                ip: Some(ip),
                last_ns: now_ns,
                entry: IpEntry {
                    packets: TokenBucket::full(bursts.packets, now_ns),
                    verify: TokenBucket::full(bursts.verify, now_ns),
                    rejects: TokenBucket::full(bursts.rejects, now_ns),
                },
            };
            victim
        };
        self.last = pick;
        let slot = &mut self.slots[pick];
        slot.last_ns = now_ns;
        &mut slot.entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: IpBursts = IpBursts {
        packets: 2.0,
        verify: 1.0,
        rejects: 1.0,
    };

    #[test]
    fn bounded_and_evicts_least_recent() {
        let mut t = IpTable::new(8);
        assert_eq!(t.capacity(), 8);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(t.entry(a, 0, B).packets.take(0, 0.0, 2.0, 1.0));
        assert!(t.entry(a, 0, B).packets.take(0, 0.0, 2.0, 1.0));
        assert!(!t.entry(a, 0, B).packets.take(0, 0.0, 2.0, 1.0));
        // Thousands of other sources never grow the table.
        for i in 0..10_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            t.entry(ip, 1 + u64::from(i), B);
        }
        assert_eq!(t.slots.len(), 8);
        assert!(t.evictions() > 0);
    }
}
