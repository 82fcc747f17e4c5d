//! Zero-copy codec for the per-packet media messages (`VideoChunk`, `FecPacket`,
//! `AudioPacket` inside `Message.media`). Encodes straight into the caller's datagram buffer and
//! decodes by borrowing the payload, producing exactly the bytes prost would (tests compare).
//! Everything else on the logical plane goes through the prost types in [`crate::proto`].

use prost::bytes::BufMut;
use prost::encoding::{
    WireType, decode_key, decode_varint, encode_key, encode_varint, encoded_len_varint,
};

/// Errors of the media codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// The output buffer is too small.
    #[error("buffer too small: need {0} bytes")]
    BufferTooSmall(usize),
    /// The bytes are not a well-formed media message.
    #[error("malformed media message: {0}")]
    Malformed(&'static str),
    /// Well-formed, but not a media message (control or input): decode with prost.
    #[error("not a media message")]
    NotMedia,
    /// Too many shard lengths in a FEC packet.
    #[error("too many FEC shard lengths")]
    TooManyShards,
}

/// Largest number of data shards in one FEC group.
pub const MAX_GROUP_SHARDS: usize = 64;

/// One chunk of an encoded video frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VideoChunkRef<'a> {
    /// Frame number, per session.
    pub frame_id: u64,
    /// 0-based chunk index.
    pub chunk_index: u32,
    /// Chunks in the frame.
    pub chunk_count: u32,
    /// Sender's capture timestamp, µs.
    pub timestamp_us: u64,
    /// Whether the frame is a keyframe.
    pub keyframe: bool,
    /// Chunk bytes.
    pub payload: &'a [u8],
    /// Capture duration, µs.
    pub capture_us: u32,
    /// Encode duration, µs.
    pub encode_us: u32,
}

/// One Reed-Solomon parity shard of a FEC group (see `fec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FecPacketRef<'a> {
    /// Frame the group belongs to.
    pub group_id: u64,
    /// First chunk index covered by the group (the spec's `first_packet_id` slot).
    pub first_chunk: u64,
    /// Data + parity shards in the group.
    pub shard_count: u32,
    /// Index of this shard among all shards of the group (data shards come first).
    pub parity_index: u32,
    /// Parity bytes.
    pub payload: &'a [u8],
    /// True lengths of the group's data shards, in order (Wavry sends none: its shards are
    /// self-delimiting, see [`message_len`]).
    pub shard_lengths: ShardLengths,
    /// Data shards in the group (Wavry extension, field 7).
    pub data_shards: u32,
}

/// Fixed-capacity list of data shard lengths (no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardLengths {
    len: usize,
    values: [u32; MAX_GROUP_SHARDS],
}

impl Default for ShardLengths {
    fn default() -> Self {
        Self {
            len: 0,
            values: [0; MAX_GROUP_SHARDS],
        }
    }
}

impl ShardLengths {
    /// Appends a length; fails past [`MAX_GROUP_SHARDS`].
    pub fn push(&mut self, v: u32) -> Result<(), MediaError> {
        if self.len == MAX_GROUP_SHARDS {
            return Err(MediaError::TooManyShards);
        }
        self.values[self.len] = v;
        self.len += 1;
        Ok(())
    }

    /// The lengths.
    pub fn as_slice(&self) -> &[u32] {
        &self.values[..self.len]
    }
}

/// One Opus packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioPacketRef<'a> {
    /// Capture timestamp, µs.
    pub timestamp_us: u64,
    /// One raw Opus packet.
    pub payload: &'a [u8],
}

/// A decoded media message.
// The FEC variant carries its length table inline so decoding never allocates.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaRef<'a> {
    /// `MediaMessage.video`.
    Video(VideoChunkRef<'a>),
    /// `MediaMessage.fec`.
    Fec(FecPacketRef<'a>),
    /// `MediaMessage.audio`.
    Audio(AudioPacketRef<'a>),
    /// `MediaMessage.file_chunk`.
    File(FileChunkRef<'a>),
}

/// One chunk of an in-band file transfer (spec RIFT §11). Wavry sends file chunks on the
/// reliable channel, so the enclosing `Message.reliable_seq` travels with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileChunkRef<'a> {
    /// The transfer (from its `FileHeader`).
    pub file_id: u64,
    /// 0-based chunk number; its offset is `chunk_index × chunk_size`.
    pub chunk_index: u32,
    /// The chunk's bytes.
    pub payload: &'a [u8],
    /// `Message.reliable_seq` of the enclosing message (0: sent unreliably).
    pub reliable_seq: u64,
}

// Field sizes, omitting proto3 defaults exactly like prost does.
fn varint_field(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(v)
    }
}
fn bytes_field(tag: u32, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(len as u64) + len
    }
}
fn key_len(tag: u32) -> usize {
    encoded_len_varint(u64::from(tag << 3))
}

struct Writer<B> {
    buf: B,
}

impl<B: BufMut> Writer<B> {
    fn varint(&mut self, tag: u32, v: u64) {
        if v != 0 {
            encode_key(tag, WireType::Varint, &mut self.buf);
            encode_varint(v, &mut self.buf);
        }
    }
    fn header(&mut self, tag: u32, len: usize) {
        encode_key(tag, WireType::LengthDelimited, &mut self.buf);
        encode_varint(len as u64, &mut self.buf);
    }
    fn bytes(&mut self, tag: u32, b: &[u8]) {
        if !b.is_empty() {
            self.header(tag, b.len());
            self.buf.put_slice(b);
        }
    }
}

/// Size of `Message{media{<field>: inner}}` for an inner message of `inner_len` bytes.
fn wrapped_len(field: u32, inner_len: usize) -> (usize, usize) {
    let media_len = key_len(field) + encoded_len_varint(inner_len as u64) + inner_len;
    (
        key_len(3) + encoded_len_varint(media_len as u64) + media_len,
        media_len,
    )
}

/// Writes `Message{media{<field>: body}}` into `out`, returning the total length.
fn write_wrapped(
    out: &mut [u8],
    field: u32,
    inner_len: usize,
    body: impl FnOnce(&mut Writer<&mut [u8]>),
) -> Result<usize, MediaError> {
    let (total, media_len) = wrapped_len(field, inner_len);
    if out.len() < total {
        return Err(MediaError::BufferTooSmall(total));
    }
    let mut w = Writer {
        buf: &mut out[..total],
    };
    w.header(3, media_len);
    w.header(field, inner_len);
    body(&mut w);
    debug_assert!(w.buf.is_empty());
    Ok(total)
}

/// Appends `Message{media{<field>: body}}` to `out` (no zero-fill first).
fn append_wrapped(
    out: &mut Vec<u8>,
    field: u32,
    inner_len: usize,
    body: impl FnOnce(&mut Writer<&mut Vec<u8>>),
) -> usize {
    let (total, media_len) = wrapped_len(field, inner_len);
    out.reserve(total);
    let mut w = Writer { buf: out };
    w.header(3, media_len);
    w.header(field, inner_len);
    body(&mut w);
    total
}

impl VideoChunkRef<'_> {
    fn inner_len(&self) -> usize {
        varint_field(1, self.frame_id)
            + varint_field(2, u64::from(self.chunk_index))
            + varint_field(3, u64::from(self.chunk_count))
            + varint_field(4, self.timestamp_us)
            + varint_field(5, u64::from(self.keyframe))
            + bytes_field(6, self.payload.len())
            + varint_field(7, u64::from(self.capture_us))
            + varint_field(8, u64::from(self.encode_us))
    }

    /// Encoded size of the whole `Message`.
    pub fn encoded_len(&self) -> usize {
        let inner = self.inner_len();
        let media = key_len(1) + encoded_len_varint(inner as u64) + inner;
        key_len(3) + encoded_len_varint(media as u64) + media
    }

    /// Writes `Message{media{video{..}}}` into `out`, returning its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, MediaError> {
        write_wrapped(out, 1, self.inner_len(), |w| self.fields(w))
    }

    /// Appends `Message{media{video{..}}}` to `out`, returning its length.
    pub fn append_to(&self, out: &mut Vec<u8>) -> usize {
        append_wrapped(out, 1, self.inner_len(), |w| self.fields(w))
    }

    /// Writes the message's bytes around the payload into `env`: the `pre` bytes that come
    /// before it, then the `post` bytes after it; returns `(pre, post)`, or `None` if `env`
    /// is too small. `env[..pre]`, the payload and `env[pre..pre + post]` in a row are
    /// exactly [`Self::encode`]'s output, so a sender can compute parity over a chunk without
    /// assembling it.
    pub fn envelope(&self, env: &mut [u8]) -> Option<(usize, usize)> {
        let inner = self.inner_len();
        let (total, media_len) = wrapped_len(1, inner);
        let post = varint_field(7, u64::from(self.capture_us))
            + varint_field(8, u64::from(self.encode_us));
        let pre = total - post - self.payload.len();
        if pre + post > env.len() {
            return None;
        }
        let (head, tail) = env.split_at_mut(pre);
        let mut w = Writer { buf: head };
        w.header(3, media_len);
        w.header(1, inner);
        w.varint(1, self.frame_id);
        w.varint(2, u64::from(self.chunk_index));
        w.varint(3, u64::from(self.chunk_count));
        w.varint(4, self.timestamp_us);
        w.varint(5, u64::from(self.keyframe));
        if !self.payload.is_empty() {
            w.header(6, self.payload.len());
        }
        let mut w = Writer {
            buf: &mut tail[..post],
        };
        w.varint(7, u64::from(self.capture_us));
        w.varint(8, u64::from(self.encode_us));
        Some((pre, post))
    }

    /// Where [`Self::envelope`] writes this chunk's index in its `pre` bytes. The envelopes
    /// of a frame's chunks with equal payload lengths differ only there, as long as their
    /// indexes' varints are as long: a sender computes one and rewrites the index for the
    /// others. `None` for index 0, which proto3 leaves out.
    pub fn index_slot(&self) -> Option<IndexSlot> {
        if self.chunk_index == 0 {
            return None;
        }
        let inner = self.inner_len();
        let (_, media_len) = wrapped_len(1, inner);
        let at = key_len(3)
            + encoded_len_varint(media_len as u64)
            + key_len(1)
            + encoded_len_varint(inner as u64)
            + varint_field(1, self.frame_id)
            + key_len(2);
        Some(IndexSlot {
            at,
            len: encoded_len_varint(u64::from(self.chunk_index)),
        })
    }

    fn fields<B: BufMut>(&self, w: &mut Writer<B>) {
        w.varint(1, self.frame_id);
        w.varint(2, u64::from(self.chunk_index));
        w.varint(3, u64::from(self.chunk_count));
        w.varint(4, self.timestamp_us);
        w.varint(5, u64::from(self.keyframe));
        w.bytes(6, self.payload);
        w.varint(7, u64::from(self.capture_us));
        w.varint(8, u64::from(self.encode_us));
    }
}

/// The chunk index's place in a video chunk's envelope (see [`VideoChunkRef::index_slot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexSlot {
    at: usize,
    len: usize,
}

impl IndexSlot {
    /// Writes `index` into `pre` (an envelope's bytes before the payload), turning it into the
    /// envelope of chunk `index` of the same frame and payload length. False, and nothing
    /// written, when that would change a length: `index` is 0 or its varint is longer or
    /// shorter than the slot, or `pre` does not hold the slot.
    pub fn write(&self, pre: &mut [u8], index: u32) -> bool {
        let index = u64::from(index);
        if index == 0 || encoded_len_varint(index) != self.len {
            return false;
        }
        let Some(mut slot) = pre.get_mut(self.at..self.at + self.len) else {
            return false;
        };
        encode_varint(index, &mut slot);
        true
    }
}

impl FecPacketRef<'_> {
    fn lengths_len(&self) -> usize {
        self.shard_lengths
            .as_slice()
            .iter()
            .map(|&l| encoded_len_varint(u64::from(l)))
            .sum()
    }

    fn inner_len(&self) -> usize {
        varint_field(1, self.group_id)
            + varint_field(2, self.first_chunk)
            + varint_field(3, u64::from(self.shard_count))
            + varint_field(4, u64::from(self.parity_index))
            + bytes_field(5, self.payload.len())
            + bytes_field(6, self.lengths_len())
            + varint_field(7, u64::from(self.data_shards))
    }

    /// Encoded size of the whole `Message`.
    pub fn encoded_len(&self) -> usize {
        let inner = self.inner_len();
        let media = key_len(2) + encoded_len_varint(inner as u64) + inner;
        key_len(3) + encoded_len_varint(media as u64) + media
    }

    /// Writes `Message{media{fec{..}}}` into `out`, returning its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, MediaError> {
        write_wrapped(out, 2, self.inner_len(), |w| {
            w.varint(1, self.group_id);
            w.varint(2, self.first_chunk);
            w.varint(3, u64::from(self.shard_count));
            w.varint(4, u64::from(self.parity_index));
            w.bytes(5, self.payload);
            let packed = self.lengths_len();
            if packed > 0 {
                w.header(6, packed);
                for &l in self.shard_lengths.as_slice() {
                    encode_varint(u64::from(l), &mut w.buf);
                }
            }
            w.varint(7, u64::from(self.data_shards));
        })
    }
}

impl AudioPacketRef<'_> {
    fn inner_len(&self) -> usize {
        varint_field(1, self.timestamp_us) + bytes_field(2, self.payload.len())
    }

    /// Writes `Message{media{audio{..}}}` into `out`, returning its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, MediaError> {
        write_wrapped(out, 3, self.inner_len(), |w| {
            w.varint(1, self.timestamp_us);
            w.bytes(2, self.payload);
        })
    }
}

impl FileChunkRef<'_> {
    fn inner_len(&self) -> usize {
        varint_field(1, self.file_id)
            + varint_field(2, u64::from(self.chunk_index))
            + bytes_field(3, self.payload.len())
    }

    /// Encoded size of the whole `Message` (reliable sequence number included).
    pub fn encoded_len(&self) -> usize {
        wrapped_len(4, self.inner_len()).0 + varint_field(4, self.reliable_seq)
    }

    /// Appends `Message{media{file_chunk{..}}, reliable_seq}` to `out`, returning its length.
    pub fn append_to(&self, out: &mut Vec<u8>) -> usize {
        let n = append_wrapped(out, 4, self.inner_len(), |w| {
            w.varint(1, self.file_id);
            w.varint(2, u64::from(self.chunk_index));
            w.bytes(3, self.payload);
        });
        let mut w = Writer { buf: out };
        w.varint(4, self.reliable_seq);
        n + varint_field(4, self.reliable_seq)
    }
}

/// Length of the protobuf `Message` that starts `bytes`, when it is a single media field
/// (how Wavry's FEC data shards are laid out): lets a rebuilt, zero-padded shard be cut back to
/// its true length without a length table.
pub fn message_len(bytes: &[u8]) -> Option<usize> {
    let mut buf = bytes;
    let (tag, wt) = decode_key(&mut buf).ok()?;
    if tag != 3 || wt != WireType::LengthDelimited {
        return None;
    }
    let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
    let total = (bytes.len() - buf.len()).checked_add(len)?;
    (total <= bytes.len()).then_some(total)
}

/// The `Message` at the start of a datagram's plaintext, without the zero padding a sender
/// may append to media datagrams so that every datagram of a GSO batch has one size. A zero
/// byte where a field key would start cannot begin a field (field number 0 is invalid), so
/// everything from there on is padding. Bytes that are not well-formed come back whole, for
/// the decoder to reject.
pub fn unpadded(bytes: &[u8]) -> &[u8] {
    let mut buf = bytes;
    while let Some(&first) = buf.first() {
        if first == 0 {
            return &bytes[..bytes.len() - buf.len()];
        }
        if next_field(&mut buf).is_err() {
            return bytes;
        }
    }
    bytes
}

/// Reads one field: (tag, value for varints, slice for length-delimited).
enum Field<'a> {
    Varint(u32, u64),
    Bytes(u32, &'a [u8]),
    Other,
}

fn next_field<'a>(buf: &mut &'a [u8]) -> Result<Field<'a>, MediaError> {
    let (tag, wt) = decode_key(buf).map_err(|_| MediaError::Malformed("bad field key"))?;
    match wt {
        WireType::Varint => Ok(Field::Varint(
            tag,
            decode_varint(buf).map_err(|_| MediaError::Malformed("bad varint"))?,
        )),
        WireType::LengthDelimited => {
            let len = decode_varint(buf).map_err(|_| MediaError::Malformed("bad length"))?;
            let len = usize::try_from(len).map_err(|_| MediaError::Malformed("length overflow"))?;
            if len > buf.len() {
                return Err(MediaError::Malformed("truncated field"));
            }
            let (v, rest) = buf.split_at(len);
            *buf = rest;
            Ok(Field::Bytes(tag, v))
        }
        WireType::SixtyFourBit => skip(buf, 8),
        WireType::ThirtyTwoBit => skip(buf, 4),
        WireType::StartGroup | WireType::EndGroup => {
            Err(MediaError::Malformed("groups are not used"))
        }
    }
}

fn skip<'a>(buf: &mut &'a [u8], n: usize) -> Result<Field<'a>, MediaError> {
    if buf.len() < n {
        return Err(MediaError::Malformed("truncated field"));
    }
    *buf = &buf[n..];
    Ok(Field::Other)
}

fn u32_of(v: u64) -> u32 {
    // Protobuf semantics: a uint32 field read from a larger varint is truncated.
    v as u32
}

/// Decodes a plaintext `Message` if it is a media message, borrowing payloads from `bytes`.
/// Returns [`MediaError::NotMedia`] for control/input messages (decode those with prost).
pub fn decode(bytes: &[u8]) -> Result<MediaRef<'_>, MediaError> {
    match video_as_sent(bytes) {
        Some(v) => Ok(MediaRef::Video(v)),
        None => decode_general(bytes),
    }
}

/// A video chunk in the shape every Wavry sender writes: `Message{media{video{..}}}` and
/// nothing else, each field's key one known byte. Most datagrams of a stream are this, and
/// matching key bytes skips the general field walk; anything else (`None`) takes that walk,
/// which reads this shape to the same chunk (the fuzz target `media_message` checks it).
fn video_as_sent(bytes: &[u8]) -> Option<VideoChunkRef<'_>> {
    // Key bytes: (field << 3) | wire type.
    const MEDIA: u8 = 3 << 3 | 2;
    const VIDEO: u8 = 1 << 3 | 2;
    const PAYLOAD: u8 = 6 << 3 | 2;
    let mut buf = bytes;
    for key in [MEDIA, VIDEO] {
        let (&k, rest) = buf.split_first()?;
        buf = rest;
        let len = decode_varint(&mut buf).ok()?;
        if k != key || len != buf.len() as u64 {
            return None;
        }
    }
    let mut v = VideoChunkRef::default();
    while let Some((&key, rest)) = buf.split_first() {
        buf = rest;
        if key == PAYLOAD {
            let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
            if len > buf.len() {
                return None;
            }
            (v.payload, buf) = buf.split_at(len);
            continue;
        }
        // Every other field is a varint: (field << 3) | 0.
        if key & 7 != 0 {
            return None;
        }
        let x = decode_varint(&mut buf).ok()?;
        match key >> 3 {
            1 => v.frame_id = x,
            2 => v.chunk_index = u32_of(x),
            3 => v.chunk_count = u32_of(x),
            4 => v.timestamp_us = x,
            5 => v.keyframe = x != 0,
            7 => v.capture_us = u32_of(x),
            8 => v.encode_us = u32_of(x),
            _ => return None,
        }
    }
    Some(v)
}

/// [`decode`] by walking every field, for any valid encoding (fields in any order, unknown
/// fields skipped). Public for the fuzz target that checks the fast path against it.
#[doc(hidden)]
pub fn decode_general(bytes: &[u8]) -> Result<MediaRef<'_>, MediaError> {
    let mut media: Option<&[u8]> = None;
    let mut buf = bytes;
    let mut other = false;
    let mut reliable_seq = 0;
    while !buf.is_empty() {
        match next_field(&mut buf)? {
            Field::Bytes(3, m) => media = Some(m),
            Field::Bytes(1 | 2, _) => other = true,
            Field::Varint(4, seq) => reliable_seq = seq,
            _ => {}
        }
    }
    let Some(mut m) = media else {
        return Err(if other {
            MediaError::NotMedia
        } else {
            MediaError::Malformed("empty message")
        });
    };
    let mut found = None;
    while !m.is_empty() {
        if let Field::Bytes(tag @ 1..=4, inner) = next_field(&mut m)? {
            found = Some((tag, inner));
        }
    }
    let (tag, mut inner) = found.ok_or(MediaError::Malformed("empty media message"))?;
    match tag {
        1 => {
            let mut v = VideoChunkRef::default();
            while !inner.is_empty() {
                match next_field(&mut inner)? {
                    Field::Varint(1, x) => v.frame_id = x,
                    Field::Varint(2, x) => v.chunk_index = u32_of(x),
                    Field::Varint(3, x) => v.chunk_count = u32_of(x),
                    Field::Varint(4, x) => v.timestamp_us = x,
                    Field::Varint(5, x) => v.keyframe = x != 0,
                    Field::Bytes(6, b) => v.payload = b,
                    Field::Varint(7, x) => v.capture_us = u32_of(x),
                    Field::Varint(8, x) => v.encode_us = u32_of(x),
                    _ => {}
                }
            }
            Ok(MediaRef::Video(v))
        }
        2 => {
            let mut f = FecPacketRef {
                group_id: 0,
                first_chunk: 0,
                shard_count: 0,
                parity_index: 0,
                payload: &[],
                shard_lengths: ShardLengths::default(),
                data_shards: 0,
            };
            while !inner.is_empty() {
                match next_field(&mut inner)? {
                    Field::Varint(1, x) => f.group_id = x,
                    Field::Varint(2, x) => f.first_chunk = x,
                    Field::Varint(3, x) => f.shard_count = u32_of(x),
                    Field::Varint(4, x) => f.parity_index = u32_of(x),
                    Field::Bytes(5, b) => f.payload = b,
                    Field::Bytes(6, mut packed) => {
                        while !packed.is_empty() {
                            let l = decode_varint(&mut packed)
                                .map_err(|_| MediaError::Malformed("bad shard length"))?;
                            f.shard_lengths.push(u32_of(l))?;
                        }
                    }
                    Field::Varint(6, l) => f.shard_lengths.push(u32_of(l))?,
                    Field::Varint(7, x) => f.data_shards = u32_of(x),
                    _ => {}
                }
            }
            Ok(MediaRef::Fec(f))
        }
        4 => {
            let mut f = FileChunkRef {
                reliable_seq,
                ..FileChunkRef::default()
            };
            while !inner.is_empty() {
                match next_field(&mut inner)? {
                    Field::Varint(1, x) => f.file_id = x,
                    Field::Varint(2, x) => f.chunk_index = u32_of(x),
                    Field::Bytes(3, b) => f.payload = b,
                    _ => {}
                }
            }
            Ok(MediaRef::File(f))
        }
        _ => {
            let mut a = AudioPacketRef {
                timestamp_us: 0,
                payload: &[],
            };
            while !inner.is_empty() {
                match next_field(&mut inner)? {
                    Field::Varint(1, x) => a.timestamp_us = x,
                    Field::Bytes(2, b) => a.payload = b,
                    _ => {}
                }
            }
            Ok(MediaRef::Audio(a))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;
    use prost::Message as _;

    fn prost_video(v: &VideoChunkRef<'_>) -> Vec<u8> {
        proto::Message {
            content: Some(proto::message::Content::Media(proto::MediaMessage {
                content: Some(proto::media_message::Content::Video(proto::VideoChunk {
                    frame_id: v.frame_id,
                    chunk_index: v.chunk_index,
                    chunk_count: v.chunk_count,
                    timestamp_us: v.timestamp_us,
                    keyframe: v.keyframe,
                    payload: v.payload.to_vec(),
                    capture_us: v.capture_us,
                    encode_us: v.encode_us,
                })),
            })),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn video_envelope_plus_payload_is_the_encoded_chunk() {
        for (payload, capture_us, encode_us) in [
            (&[7u8; 1070][..], 0, 0),
            (&[1u8; 3][..], 123_456, 9),
            (&[][..], 1, 0),
            (&[5u8; 200][..], u32::MAX, u32::MAX),
        ] {
            let v = VideoChunkRef {
                frame_id: u64::MAX,
                chunk_index: 300,
                chunk_count: 4096,
                timestamp_us: 1 << 40,
                keyframe: true,
                payload,
                capture_us,
                encode_us,
            };
            let mut env = [0u8; 80];
            let (pre, post) = v.envelope(&mut env).unwrap();
            let mut joined = env[..pre].to_vec();
            joined.extend_from_slice(payload);
            joined.extend_from_slice(&env[pre..pre + post]);
            assert_eq!(joined, prost_video(&v));
            assert!(v.envelope(&mut env[..pre + post - 1]).is_none());
        }
    }

    #[test]
    fn file_chunk_matches_prost_and_round_trips() {
        for (seq, payload) in [
            (0u64, &b"abc"[..]),
            (77_000, &[9u8; 1100][..]),
            (1, &[][..]),
        ] {
            let c = FileChunkRef {
                file_id: 0xdead_beef_0001,
                chunk_index: 5,
                payload,
                reliable_seq: seq,
            };
            let mut ours = Vec::new();
            let n = c.append_to(&mut ours);
            assert_eq!(n, ours.len());
            assert_eq!(n, c.encoded_len());
            let theirs = proto::Message {
                content: Some(proto::message::Content::Media(proto::MediaMessage {
                    content: Some(proto::media_message::Content::FileChunk(proto::FileChunk {
                        file_id: c.file_id,
                        chunk_index: c.chunk_index,
                        payload: payload.to_vec(),
                    })),
                })),
                reliable_seq: seq,
            }
            .encode_to_vec();
            assert_eq!(ours, theirs);
            assert_eq!(decode(&ours), Ok(MediaRef::File(c)));
        }
    }

    #[test]
    fn video_chunk_matches_prost_bytes_and_round_trips() {
        let payload = vec![0xAB; 1000];
        for (fid, idx, kf) in [
            (0u64, 0u32, false),
            (1, 5, true),
            (u64::MAX, u32::MAX, true),
        ] {
            let v = VideoChunkRef {
                frame_id: fid,
                chunk_index: idx,
                chunk_count: 40,
                timestamp_us: 123_456_789,
                keyframe: kf,
                payload: &payload,
                capture_us: 0,
                encode_us: 4000,
            };
            let mut out = [0u8; 1200];
            let n = v.encode(&mut out).unwrap();
            assert_eq!(n, v.encoded_len());
            assert_eq!(&out[..n], &prost_video(&v)[..]);
            assert_eq!(decode(&out[..n]).unwrap(), MediaRef::Video(v));
        }
    }

    #[test]
    fn fec_and_audio_match_prost_bytes() {
        let mut lens = ShardLengths::default();
        for l in [1000, 1000, 333] {
            lens.push(l).unwrap();
        }
        let f = FecPacketRef {
            group_id: 9,
            first_chunk: 32,
            shard_count: 5,
            parity_index: 3,
            payload: &[7; 1002],
            shard_lengths: lens,
            data_shards: 3,
        };
        let mut out = [0u8; 1200];
        let n = f.encode(&mut out).unwrap();
        assert_eq!(n, f.encoded_len());
        let reference = proto::Message {
            content: Some(proto::message::Content::Media(proto::MediaMessage {
                content: Some(proto::media_message::Content::Fec(proto::FecPacket {
                    group_id: 9,
                    first_packet_id: 32,
                    shard_count: 5,
                    parity_index: 3,
                    payload: vec![7; 1002],
                    shard_lengths: vec![1000, 1000, 333],
                    data_shards: 3,
                })),
            })),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(&out[..n], &reference[..]);
        assert_eq!(decode(&out[..n]).unwrap(), MediaRef::Fec(f));

        let a = AudioPacketRef {
            timestamp_us: 77,
            payload: &[1, 2, 3],
        };
        let n = a.encode(&mut out).unwrap();
        let reference = proto::Message {
            content: Some(proto::message::Content::Media(proto::MediaMessage {
                content: Some(proto::media_message::Content::Audio(proto::AudioPacket {
                    timestamp_us: 77,
                    payload: vec![1, 2, 3],
                })),
            })),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(&out[..n], &reference[..]);
        assert_eq!(decode(&out[..n]).unwrap(), MediaRef::Audio(a));
    }

    #[test]
    fn chunks_as_sent_and_other_encodings_decode_alike() {
        let v = VideoChunkRef {
            frame_id: 1 << 33,
            chunk_index: 130,
            chunk_count: 200,
            timestamp_us: 99_999,
            keyframe: true,
            payload: &[5; 300],
            capture_us: 7,
            encode_us: 1_000_000,
        };
        let mut sent = vec![0u8; v.encoded_len()];
        v.encode(&mut sent).expect("fits");
        assert!(
            video_as_sent(&sent).is_some(),
            "the sender's shape takes the fast path"
        );
        assert_eq!(decode(&sent), Ok(MediaRef::Video(v)));
        assert_eq!(decode(&sent), decode_general(&sent));
        // With a reliable_seq beside the media field the walk decodes it, to the same chunk.
        let mut m = proto::Message::decode(&sent[..]).expect("prost reads it");
        m.reliable_seq = 5;
        let other = m.encode_to_vec();
        assert!(video_as_sent(&other).is_none());
        assert_eq!(decode(&other), Ok(MediaRef::Video(v)));
        // Cut anywhere, the fast path never accepts what the walk refuses.
        for n in 0..sent.len() {
            assert_eq!(decode(&sent[..n]), decode_general(&sent[..n]), "cut at {n}");
        }
    }

    #[test]
    fn unpadded_cuts_zero_padding_after_the_message() {
        let chunk = VideoChunkRef {
            frame_id: 300,
            chunk_index: 2,
            chunk_count: 9,
            payload: &[7; 40],
            ..VideoChunkRef::default()
        };
        let mut msg = vec![0u8; chunk.encoded_len()];
        let n = chunk.encode(&mut msg).expect("fits");
        assert_eq!(unpadded(&msg[..n]), &msg[..n]);
        let mut padded = msg[..n].to_vec();
        padded.extend_from_slice(&[0; 23]);
        assert_eq!(unpadded(&padded), &msg[..n]);
        assert_eq!(decode(unpadded(&padded)), decode(&msg[..n]));
        // Padding alone is an empty message; garbage comes back whole for decode to refuse.
        assert!(unpadded(&[0, 0, 0]).is_empty());
        let garbage = [
            0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(unpadded(&garbage), &garbage[..]);
        // A zero inside a field's value is data, not padding.
        let zero_chunk = VideoChunkRef {
            payload: &[0; 16],
            ..chunk
        };
        let mut z = vec![0u8; zero_chunk.encoded_len()];
        let zn = zero_chunk.encode(&mut z).expect("fits");
        z.truncate(zn);
        z.extend_from_slice(&[0; 5]);
        assert_eq!(unpadded(&z).len(), zn);
    }

    #[test]
    fn message_len_cuts_padding() {
        let v = VideoChunkRef {
            frame_id: 3,
            chunk_index: 2,
            chunk_count: 9,
            payload: &[5; 300],
            ..Default::default()
        };
        let mut out = [0u8; 400];
        let n = v.encode(&mut out).unwrap();
        assert_eq!(message_len(&out), Some(n));
        assert_eq!(message_len(&out[..n - 1]), None);
        assert_eq!(message_len(&[0x0a, 0x00]), None);
        // Found by fuzzing: a huge length must not overflow.
        assert_eq!(
            message_len(&[
                0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ]),
            None
        );
    }

    #[test]
    fn control_is_not_media_and_garbage_is_an_error() {
        let ping = proto::Message {
            content: Some(proto::message::Content::Control(proto::ControlMessage {
                content: Some(proto::control_message::Content::Ping(proto::Ping {
                    timestamp_us: 5,
                })),
            })),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(decode(&ping), Err(MediaError::NotMedia));
        assert!(decode(&[0x1a, 0x05, 0x0a]).is_err());
        assert!(decode(&[]).is_err());
        let mut small = [0u8; 10];
        let v = VideoChunkRef {
            payload: &[1; 100],
            ..Default::default()
        };
        assert!(matches!(
            v.encode(&mut small),
            Err(MediaError::BufferTooSmall(_))
        ));
    }
}
