//! Forward error correction for video: systematic Reed-Solomon (`reed-solomon-simd`) over the
//! plaintext `Message` bytes of a frame's chunks, in groups of at most
//! [`MAX_GROUP_SHARDS`](crate::media::MAX_GROUP_SHARDS) data shards. Parity travels in
//! encrypted `FecPacket`s, so a rebuilt chunk needs no AEAD step. The [`FecPolicy`] picks the
//! parity count per group from measured loss: a binomial bound for random loss and the recent
//! worst per-frame loss fraction for bursts.

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

/// Most parity shards per group.
pub const MAX_PARITY: usize = 32;

/// FEC codec failures (bad parameters from the network, or a failed reconstruction).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FecError {
    /// Shard counts or size unusable.
    #[error("unsupported FEC parameters: {0}")]
    Params(String),
    /// The Reed-Solomon library refused the shards.
    #[error("reed-solomon: {0}")]
    Codec(String),
}

fn codec_err(e: reed_solomon_simd::Error) -> FecError {
    FecError::Codec(e.to_string())
}

/// Shard size for data shards of at most `max_len` bytes (the library needs an even size).
pub fn shard_bytes(max_len: usize) -> usize {
    (max_len.max(2) + 1) & !1
}

/// Reusable Reed-Solomon encoder and decoder (their work buffers are kept between groups).
#[derive(Default)]
pub struct FecCodec {
    enc: Option<ReedSolomonEncoder>,
    dec: Option<ReedSolomonDecoder>,
}

impl std::fmt::Debug for FecCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FecCodec")
    }
}

impl FecCodec {
    /// Computes `parity` recovery shards over `data` (each exactly `shard_bytes` long) and
    /// hands each to `sink(index, bytes)`.
    pub fn encode<'a>(
        &mut self,
        shard_bytes: usize,
        data_count: usize,
        parity: usize,
        data: impl IntoIterator<Item = &'a [u8]>,
        sink: impl FnMut(usize, &[u8]),
    ) -> Result<(), FecError> {
        self.encode_with(
            shard_bytes,
            data_count,
            parity,
            |feed| {
                for shard in data {
                    feed.original(shard)?;
                }
                Ok(())
            },
            sink,
        )
    }

    /// Like [`Self::encode`], but `feed` hands the data shards over one at a time, so a
    /// caller can build each one in a reused scratch buffer (the encoder copies them).
    pub fn encode_with(
        &mut self,
        shard_bytes: usize,
        data_count: usize,
        parity: usize,
        feed: impl FnOnce(&mut DataFeed<'_>) -> Result<(), FecError>,
        mut sink: impl FnMut(usize, &[u8]),
    ) -> Result<(), FecError> {
        check(data_count, parity, shard_bytes)?;
        let enc = match &mut self.enc {
            Some(e) => {
                e.reset(data_count, parity, shard_bytes)
                    .map_err(codec_err)?;
                e
            }
            None => self.enc.insert(
                ReedSolomonEncoder::new(data_count, parity, shard_bytes).map_err(codec_err)?,
            ),
        };
        feed(&mut DataFeed { enc })?;
        let result = enc.encode().map_err(codec_err)?;
        for (i, r) in result.recovery_iter().enumerate() {
            sink(i, r);
        }
        Ok(())
    }

    /// Rebuilds missing data shards from the present data shards and recovery shards (each
    /// `(index, bytes)`, bytes exactly `shard_bytes` long); `sink(index, bytes)` receives each
    /// restored data shard.
    pub fn decode<'a>(
        &mut self,
        shard_bytes: usize,
        data_count: usize,
        parity: usize,
        data: impl IntoIterator<Item = (usize, &'a [u8])>,
        recovery: impl IntoIterator<Item = (usize, &'a [u8])>,
        sink: impl FnMut(usize, &[u8]),
    ) -> Result<(), FecError> {
        self.decode_with(
            shard_bytes,
            data_count,
            parity,
            |feed| {
                for (i, s) in data {
                    feed.original(i, s)?;
                }
                for (i, s) in recovery {
                    feed.recovery(i, s)?;
                }
                Ok(())
            },
            sink,
        )
    }

    /// Like [`Self::decode`], but `feed` hands the shards over one at a time, so a caller can
    /// build each one in a reused scratch buffer (the decoder copies what it is given).
    pub fn decode_with(
        &mut self,
        shard_bytes: usize,
        data_count: usize,
        parity: usize,
        feed: impl FnOnce(&mut ShardFeed<'_>) -> Result<(), FecError>,
        mut sink: impl FnMut(usize, &[u8]),
    ) -> Result<(), FecError> {
        check(data_count, parity, shard_bytes)?;
        let dec = match &mut self.dec {
            Some(d) => {
                d.reset(data_count, parity, shard_bytes)
                    .map_err(codec_err)?;
                d
            }
            None => self.dec.insert(
                ReedSolomonDecoder::new(data_count, parity, shard_bytes).map_err(codec_err)?,
            ),
        };
        feed(&mut ShardFeed { dec })?;
        let result = dec.decode().map_err(codec_err)?;
        for (i, s) in result.restored_original_iter() {
            sink(i, s);
        }
        Ok(())
    }
}

/// Hands data shards to an encoder in [`FecCodec::encode_with`].
pub struct DataFeed<'a> {
    enc: &'a mut ReedSolomonEncoder,
}

impl std::fmt::Debug for DataFeed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataFeed")
    }
}

impl DataFeed<'_> {
    /// The next data shard, in order (exactly `shard_bytes` long).
    pub fn original(&mut self, shard: &[u8]) -> Result<(), FecError> {
        self.enc.add_original_shard(shard).map_err(codec_err)
    }
}

/// Hands shards to a decoder in [`FecCodec::decode_with`].
pub struct ShardFeed<'a> {
    dec: &'a mut ReedSolomonDecoder,
}

impl std::fmt::Debug for ShardFeed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShardFeed")
    }
}

impl ShardFeed<'_> {
    /// A present data shard (`index` within the group, exactly `shard_bytes` long).
    pub fn original(&mut self, index: usize, shard: &[u8]) -> Result<(), FecError> {
        self.dec.add_original_shard(index, shard).map_err(codec_err)
    }

    /// A recovery (parity) shard (`index` among the group's parity shards).
    pub fn recovery(&mut self, index: usize, shard: &[u8]) -> Result<(), FecError> {
        self.dec.add_recovery_shard(index, shard).map_err(codec_err)
    }
}

/// XORs `shard` into the start of `acc` (`acc` at least as long as `shard`).
///
/// With a single recovery shard the Reed-Solomon code of `reed-solomon-simd` (Leopard-style
/// additive FFT over GF(2^16)) degenerates to plain parity: its one recovery shard is the XOR
/// of all data shards, zero-padded to the shard size (checked against the library in this
/// module's tests). A sender that needs one parity shard per group accumulates it with this
/// while packetising, instead of padding, copying and transforming every shard; the receiver's
/// decoder cannot tell the difference.
pub fn xor_into(acc: &mut [u8], shard: &[u8]) {
    let acc = &mut acc[..shard.len()];
    // Word-wide XOR over fixed 32-byte blocks, which the compiler turns into vector
    // instructions; the tail goes byte by byte.
    let mut a = acc.chunks_exact_mut(32);
    let mut s = shard.chunks_exact(32);
    for (x, y) in (&mut a).zip(&mut s) {
        let mut w = [0u64; 4];
        for (k, w) in w.iter_mut().enumerate() {
            let at = k * 8;
            *w = u64::from_ne_bytes(x[at..at + 8].try_into().unwrap_or_default())
                ^ u64::from_ne_bytes(y[at..at + 8].try_into().unwrap_or_default());
        }
        for (k, w) in w.iter().enumerate() {
            x[k * 8..k * 8 + 8].copy_from_slice(&w.to_ne_bytes());
        }
    }
    for (x, y) in a.into_remainder().iter_mut().zip(s.remainder()) {
        *x ^= *y;
    }
}

/// Checks group parameters the way the codec does (the XOR fast path must refuse the same).
pub(crate) fn check(data_count: usize, parity: usize, shard_bytes: usize) -> Result<(), FecError> {
    if data_count == 0
        || data_count > crate::media::MAX_GROUP_SHARDS
        || parity == 0
        || parity > MAX_PARITY
        || shard_bytes == 0
        || shard_bytes % 2 != 0
        || shard_bytes > 2048
    {
        return Err(FecError::Params(format!(
            "{data_count} data, {parity} parity, {shard_bytes} bytes"
        )));
    }
    Ok(())
}

/// Splits `n` chunks into balanced groups of at most `max` shards: `(first_chunk, count)`.
pub fn groups(n: usize, max: usize) -> impl Iterator<Item = (usize, usize)> {
    let g = n.div_ceil(max.max(1)).max(1);
    let base = n / g;
    let extra = n % g;
    (0..g).scan(0, move |start, i| {
        let len = base + usize::from(i < extra);
        let item = (*start, len);
        *start += len;
        Some(item)
    })
}

/// Adaptive parity: how many parity shards a group of `n` data shards gets.
#[derive(Debug, Clone)]
pub struct FecPolicy {
    loss: f64,
    burst: f64,
    min_ratio: f64,
    target_failure: f64,
}

impl Default for FecPolicy {
    fn default() -> Self {
        Self {
            loss: 0.01,
            burst: 0.0,
            min_ratio: 0.02,
            target_failure: 1e-4,
        }
    }
}

impl FecPolicy {
    /// Current packet-loss estimate.
    pub fn loss(&self) -> f64 {
        self.loss
    }

    /// Feeds one feedback report: packets received and lost in the period, and for each frame
    /// finished in it the fraction of its shards lost (in permille).
    pub fn on_feedback(
        &mut self,
        received: u32,
        lost: u32,
        frame_loss_permille: impl IntoIterator<Item = u32>,
    ) {
        // Peer-reported: summed wide, so extreme values cannot overflow.
        let total = (u64::from(received) + u64::from(lost)) as f64;
        if total > 0.0 {
            // Weight by packet count: about 1000 packets of memory.
            let alpha = (total / 1000.0).min(1.0);
            self.loss =
                ((1.0 - alpha) * self.loss + alpha * f64::from(lost) / total).clamp(0.0, 1.0);
        }
        for pm in frame_loss_permille {
            let f = f64::from(pm.min(1000)) / 1000.0;
            // Peak-hold with decay over roughly 200 frames (3 s at 60 fps).
            self.burst = (self.burst * 0.995).max(f);
        }
    }

    /// Most data shards per group for a frame of `n` chunks, groups being at most `max`.
    ///
    /// When the policy wants no more than its floor of parity (a clean path), the floor's
    /// shards are spread as one parity shard per group of about `1 / min_ratio` chunks rather
    /// than several per large group: the same overhead, and each group's single parity shard is
    /// a plain XOR the sender builds while packetising (see [`xor_into`]) instead of a
    /// Reed-Solomon pass over every shard. As soon as measured loss or bursts ask for more than
    /// one shard per such group, groups go back to `max`, where Reed-Solomon parity is the
    /// most efficient.
    pub fn group_size(&self, n: usize, max: usize) -> usize {
        let max = max.max(1);
        let small = ((1.0 / self.min_ratio).floor() as usize).clamp(1, max);
        if n > small && self.parity_for(small) == 1 {
            small
        } else {
            max
        }
    }

    /// Parity shards for a group of `n` data shards (0 < result ≤ [`MAX_PARITY`]).
    pub fn parity_for(&self, n: usize) -> usize {
        let floor = (n as f64 * self.min_ratio).ceil() as usize;
        let burst = (n as f64 * self.burst * 1.75).ceil() as usize;
        let mut p = floor.max(burst).max(1);
        while p < MAX_PARITY && binomial_tail(n + p, p, self.loss) > self.target_failure {
            p += 1;
        }
        p.clamp(1, MAX_PARITY.min(n.max(1)).max(1))
    }
}

/// P[X > k] for X ~ Binomial(m, q).
fn binomial_tail(m: usize, k: usize, q: f64) -> f64 {
    if q <= 0.0 {
        return 0.0;
    }
    let q = q.min(0.999_999);
    let mut pmf = (1.0 - q).powi(i32::try_from(m).unwrap_or(i32::MAX)); // P[X = 0]
    let mut cdf = pmf;
    for i in 0..k.min(m) {
        pmf *= (m - i) as f64 / (i + 1) as f64 * q / (1.0 - q);
        cdf += pmf;
    }
    (1.0 - cdf).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuilds_any_missing_data_shards_up_to_parity() {
        let n = 10;
        let p = 3;
        let sb = shard_bytes(99);
        let data: Vec<Vec<u8>> = (0..n)
            .map(|i| (0..sb).map(|j| (i * 31 + j) as u8).collect())
            .collect();
        let mut parity = vec![Vec::new(); p];
        let mut codec = FecCodec::default();
        codec
            .encode(sb, n, p, data.iter().map(Vec::as_slice), |i, b| {
                parity[i] = b.to_vec();
            })
            .unwrap();
        // Lose shards 0, 4 and 9; keep all parity.
        let lost = [0, 4, 9];
        let mut restored = vec![None; n];
        codec
            .decode(
                sb,
                n,
                p,
                data.iter()
                    .enumerate()
                    .filter(|(i, _)| !lost.contains(i))
                    .map(|(i, d)| (i, d.as_slice())),
                parity.iter().enumerate().map(|(i, d)| (i, d.as_slice())),
                |i, b| restored[i] = Some(b.to_vec()),
            )
            .unwrap();
        for i in lost {
            assert_eq!(restored[i].as_deref(), Some(data[i].as_slice()));
        }
        // One more loss than parity cannot be repaired.
        assert!(
            codec
                .decode(
                    sb,
                    n,
                    p,
                    data.iter()
                        .enumerate()
                        .skip(4)
                        .map(|(i, d)| (i, d.as_slice())),
                    parity.iter().enumerate().map(|(i, d)| (i, d.as_slice())),
                    |_, _| {}
                )
                .is_err()
        );
    }

    #[test]
    fn one_recovery_shard_is_the_xor_of_the_data_shards() {
        let mut codec = FecCodec::default();
        let mut seed = 0x1234_5678_u32;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as u8
        };
        for n in (1..=crate::media::MAX_GROUP_SHARDS).chain([31, 32, 33]) {
            for max_len in [2usize, 63, 64, 65, 130, 1091, 1100, 2048] {
                let sb = shard_bytes(max_len);
                // Shards of uneven true length, zero-padded for the library.
                let data: Vec<Vec<u8>> = (0..n)
                    .map(|i| {
                        let len = if i % 3 == 2 { max_len / 2 } else { max_len };
                        let mut d: Vec<u8> = (0..len).map(|_| rnd()).collect();
                        d.resize(sb, 0);
                        d
                    })
                    .collect();
                let mut lib = Vec::new();
                codec
                    .encode(sb, n, 1, data.iter().map(Vec::as_slice), |_, b| {
                        lib = b.to_vec();
                    })
                    .unwrap();
                let mut acc = vec![0u8; sb];
                for d in &data {
                    xor_into(&mut acc, d);
                }
                assert_eq!(acc, lib, "{n} shards of {sb} bytes");
            }
        }
    }

    #[test]
    fn bad_parameters_are_errors_not_panics() {
        let mut c = FecCodec::default();
        assert!(c.encode(3, 1, 1, [&[0u8; 3][..]], |_, _| {}).is_err());
        assert!(c.encode(4, 0, 1, [], |_, _| {}).is_err());
        assert!(
            c.decode(
                4,
                2,
                1,
                [(0, &[0u8; 4][..]), (0, &[0u8; 4][..])],
                [],
                |_, _| {}
            )
            .is_err()
        );
        assert!(
            c.decode(4, 2, 1, [(5, &[0u8; 4][..])], [], |_, _| {})
                .is_err()
        );
    }

    #[test]
    fn groups_are_balanced_and_cover_everything() {
        let g: Vec<_> = groups(70, 32).collect();
        assert_eq!(g, vec![(0, 24), (24, 23), (47, 23)]);
        assert_eq!(groups(1, 32).collect::<Vec<_>>(), vec![(0, 1)]);
    }

    #[test]
    fn policy_tracks_loss() {
        let mut p = FecPolicy::default();
        for _ in 0..50 {
            p.on_feedback(1000, 0, [0, 0]);
        }
        assert_eq!(
            p.parity_for(35),
            1,
            "lossless path needs one parity shard for 35"
        );
        // A clean path's floor parity is spread as one XOR shard per group of 50.
        assert_eq!(p.group_size(62, 64), 50);
        assert_eq!(p.parity_for(62), 2);
        assert_eq!(groups(62, p.group_size(62, 64)).count(), 2);
        assert_eq!(
            p.group_size(40, 64),
            64,
            "one group already has one parity shard"
        );
        for _ in 0..50 {
            p.on_feedback(950, 50, []);
        }
        assert_eq!(
            p.group_size(62, 64),
            64,
            "loss wants Reed-Solomon over big groups"
        );
        let five = p.parity_for(35);
        assert!((6..=12).contains(&five), "{five}");
        p.on_feedback(100, 0, [300]);
        assert!(p.parity_for(35) >= 13);
    }
}
