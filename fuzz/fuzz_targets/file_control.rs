//! The file-transfer and clipboard control messages from the peer (spec RIFT §11): a
//! `FileHeader` either validates into an offer whose geometry is consistent or is refused,
//! and a `FileStatus` message always sanitises and parses without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wavry_rift::{
    proto::{self, control_message::Content, message::Content as Top},
    transfer::{self, FileOffer},
};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = proto::decode_message(data) else {
        return;
    };
    let Some(Top::Control(c)) = m.content else {
        return;
    };
    match c.content {
        Some(Content::FileHeader(h)) => {
            if let Ok(o) = FileOffer::from_header(&h, 1126, 1 << 30) {
                assert!(o.file_id != 0 && o.size <= 1 << 30);
                assert!(o.chunk_size >= 1 && o.chunk_size <= 1126);
                assert_eq!(o.size.div_ceil(u64::from(o.chunk_size)), u64::from(o.total_chunks));
                assert!(o.is_clipboard() || transfer::sanitize_filename(&o.name) == Some(o.name.clone()));
                let last = o.total_chunks.saturating_sub(1);
                assert!(o.chunk_len(last) <= o.chunk_size as usize);
            }
        }
        Some(Content::FileStatus(s)) => {
            let msg = transfer::sanitize_message(&s.message);
            assert!(msg.chars().count() <= transfer::MAX_STATUS_MESSAGE);
            assert!(!msg.chars().any(char::is_control));
            let _ = transfer::parse_commands(&msg).count();
        }
        Some(Content::Clipboard(t)) => {
            let _ = transfer::sha256(t.text.as_bytes());
        }
        _ => {}
    }
});
