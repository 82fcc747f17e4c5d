//! Pending identity challenges (register / login), keyed by a random challenge id that only
//! the requester learns, so nobody can overwrite or consume another's pending challenge. The
//! table is bounded: when full, the oldest pending challenge is evicted (never a 503 for all).

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

/// One pending challenge.
#[derive(Debug, Clone)]
pub(crate) struct Challenge {
    /// `register` or `login`.
    pub(crate) purpose: &'static str,
    /// The Wavry ID that must sign.
    pub(crate) wavry_id: String,
    /// Display name requested at registration.
    pub(crate) display_name: String,
    expires: Instant,
}

/// Bounded store of pending challenges.
#[derive(Debug)]
pub(crate) struct Challenges {
    max: usize,
    ttl: Duration,
    map: HashMap<String, Challenge>,
    /// Ids in insertion (= expiry) order; may hold ids already taken.
    order: VecDeque<String>,
}

impl Challenges {
    /// At most `max` pending challenges, each valid for `ttl`.
    pub(crate) fn new(max: usize, ttl: Duration) -> Self {
        Self {
            max: max.max(1),
            ttl,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Stores a challenge under `id` (fresh random), evicting expired and, when full, the
    /// oldest pending ones.
    pub(crate) fn insert(
        &mut self,
        id: String,
        purpose: &'static str,
        wavry_id: String,
        display_name: String,
        now: Instant,
    ) {
        self.purge(now);
        while self.map.len() >= self.max {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.map.remove(&oldest);
        }
        self.map.insert(
            id.clone(),
            Challenge {
                purpose,
                wavry_id,
                display_name,
                expires: now + self.ttl,
            },
        );
        self.order.push_back(id);
    }

    /// Removes and returns the challenge `id` when it is unexpired and was issued for this
    /// purpose and Wavry ID (a mismatch leaves it in place for its owner).
    pub(crate) fn take(
        &mut self,
        id: &str,
        purpose: &str,
        wavry_id: &str,
        now: Instant,
    ) -> Option<Challenge> {
        let c = self.map.get(id)?;
        if c.purpose != purpose || c.wavry_id != wavry_id {
            return None;
        }
        let c = self.map.remove(id)?;
        (c.expires > now).then_some(c)
    }

    /// Drops expired challenges.
    pub(crate) fn purge(&mut self, now: Instant) {
        while let Some(front) = self.order.front() {
            match self.map.get(front) {
                Some(c) if c.expires > now => break,
                Some(_) => {
                    self.map.remove(front);
                    self.order.pop_front();
                }
                None => {
                    self.order.pop_front();
                }
            }
        }
        if self.order.len() > self.map.len().saturating_mul(2).max(64) {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
    }

    /// Pending challenges.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keyed_by_id_bounded_and_single_use() {
        let now = Instant::now();
        let mut c = Challenges::new(2, Duration::from_secs(120));
        c.insert("a".into(), "login", "W1".into(), String::new(), now);
        c.insert("b".into(), "login", "W1".into(), String::new(), now);
        assert!(
            c.take("a", "register", "W1", now).is_none(),
            "wrong purpose"
        );
        assert!(c.take("a", "login", "W2", now).is_none(), "wrong identity");
        c.insert("c".into(), "login", "W1".into(), String::new(), now);
        assert_eq!(c.len(), 2, "full: the oldest was evicted");
        assert!(c.take("a", "login", "W1", now).is_none());
        assert!(c.take("b", "login", "W1", now).is_some());
        assert!(c.take("b", "login", "W1", now).is_none(), "single use");
        let later = now + Duration::from_secs(121);
        assert!(c.take("c", "login", "W1", later).is_none(), "expired");
        for i in 0..1000 {
            c.insert(format!("x{i}"), "login", "W".into(), String::new(), later);
        }
        assert_eq!(c.len(), 2);
    }
}
