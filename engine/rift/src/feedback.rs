//! Allocation-free decoding of `TransportFeedback` (the Wavry extension at
//! `ControlMessage.feedback`), which arrives several times per RTT: the prost type would
//! allocate its repeated fields on every packet. Encoding uses the prost type (into a reused
//! buffer, which does not allocate).

use prost::encoding::{WireType, decode_key, decode_varint};

/// A packed run of varints, borrowed from the datagram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Packed<'a>(&'a [u8]);

impl Packed<'_> {
    /// The values; a malformed tail ends the iteration.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let mut buf = self.0;
        std::iter::from_fn(move || {
            if buf.is_empty() {
                None
            } else {
                decode_varint(&mut buf).ok()
            }
        })
    }
}

/// A decoded feedback report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedbackRef<'a> {
    /// Highest packet id authenticated so far.
    pub highest_packet_id: u64,
    /// Delay between receiving it and sending the report, µs.
    pub ack_delay_us: u32,
    /// Packets since the previous report.
    pub received_packets: u32,
    /// Forward gaps since the previous report.
    pub lost_packets: u32,
    /// Datagram bytes since the previous report.
    pub received_bytes: u64,
    /// Receive-side time the counts cover, µs.
    pub interval_us: u32,
    /// Chunks rebuilt from parity.
    pub fec_recovered: u32,
    /// Inter-arrival jitter, µs.
    pub jitter_us: u32,
    /// Per finished frame: permille of shards lost.
    pub frame_losses: Packed<'a>,
    /// Reliable sequence numbers received.
    pub acked_reliable: Packed<'a>,
}

fn field<'a>(buf: &mut &'a [u8]) -> Option<(u32, Result<u64, &'a [u8]>)> {
    let (tag, wt) = decode_key(buf).ok()?;
    match wt {
        WireType::Varint => Some((tag, Ok(decode_varint(buf).ok()?))),
        WireType::LengthDelimited => {
            let len = usize::try_from(decode_varint(buf).ok()?).ok()?;
            if len > buf.len() {
                return None;
            }
            let (v, rest) = buf.split_at(len);
            *buf = rest;
            Some((tag, Err(v)))
        }
        WireType::SixtyFourBit if buf.len() >= 8 => {
            *buf = &buf[8..];
            Some((0, Ok(0)))
        }
        WireType::ThirtyTwoBit if buf.len() >= 4 => {
            *buf = &buf[4..];
            Some((0, Ok(0)))
        }
        _ => None,
    }
}

/// The single length-delimited field `tag` of a message, if present (last wins).
fn submessage(mut buf: &[u8], tag: u32) -> Option<&[u8]> {
    let mut found = None;
    while !buf.is_empty() {
        match field(&mut buf)? {
            (t, Err(b)) if t == tag => found = Some(b),
            (4, Ok(seq)) if seq != 0 => return None, // reliable: take the general path
            _ => {}
        }
    }
    found
}

/// Decodes `Message{control{feedback{..}}}` without allocating. `None` when the bytes are
/// anything else (or malformed): the caller then uses the general decoder.
pub fn decode(bytes: &[u8]) -> Option<FeedbackRef<'_>> {
    let control = submessage(bytes, 1)?;
    let mut fb = submessage(control, 19)?;
    let mut f = FeedbackRef::default();
    while !fb.is_empty() {
        match field(&mut fb)? {
            (1, Ok(v)) => f.highest_packet_id = v,
            (2, Ok(v)) => f.ack_delay_us = v as u32,
            (3, Ok(v)) => f.received_packets = v as u32,
            (4, Ok(v)) => f.lost_packets = v as u32,
            (5, Ok(v)) => f.received_bytes = v,
            (6, Ok(v)) => f.interval_us = v as u32,
            (7, Ok(v)) => f.fec_recovered = v as u32,
            (8, Ok(v)) => f.jitter_us = v as u32,
            (9, Err(b)) => f.frame_losses = Packed(b),
            (10, Err(b)) => f.acked_reliable = Packed(b),
            _ => {}
        }
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;
    use prost::Message as _;

    #[test]
    fn matches_the_prost_encoding() {
        let fb = proto::TransportFeedback {
            highest_packet_id: 123_456,
            ack_delay_us: 700,
            received_packets: 40,
            lost_packets: 2,
            received_bytes: 48_000,
            interval_us: 20_000,
            fec_recovered: 3,
            jitter_us: 150,
            frame_losses: vec![0, 58, 1000],
            acked_reliable: vec![7, 8, 300_000],
        };
        let msg = proto::Message {
            content: Some(proto::message::Content::Control(proto::ControlMessage {
                content: Some(proto::control_message::Content::Feedback(fb.clone())),
            })),
            reliable_seq: 0,
        };
        let bytes = msg.encode_to_vec();
        let d = decode(&bytes).unwrap();
        assert_eq!(d.highest_packet_id, fb.highest_packet_id);
        assert_eq!(d.received_bytes, fb.received_bytes);
        assert_eq!(d.jitter_us, fb.jitter_us);
        assert_eq!(d.frame_losses.iter().collect::<Vec<_>>(), vec![0, 58, 1000]);
        assert_eq!(
            d.acked_reliable.iter().collect::<Vec<_>>(),
            vec![7, 8, 300_000]
        );
        let ping = proto::Message {
            content: Some(proto::message::Content::Control(proto::ControlMessage {
                content: Some(proto::control_message::Content::Ping(proto::Ping {
                    timestamp_us: 1,
                })),
            })),
            reliable_seq: 0,
        };
        assert!(decode(&ping.encode_to_vec()).is_none());
        assert!(decode(&bytes[..bytes.len() - 3]).is_none());
    }
}
