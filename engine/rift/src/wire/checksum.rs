//! CRC-16/KERMIT over RIFT header bytes (spec RIFT §2.3). The payload is covered by the AEAD.

// Slice-by-16 tables: a header is 16 or 28 bytes, one or two table steps. A `static`, not a
// `const`: a const of this size may be materialised on the stack at every use.
static KERMIT: crc::Crc<u16, crc::Table<16>> =
    crc::Crc::<u16, crc::Table<16>>::new(&crc::CRC_16_KERMIT);

/// CRC-16/KERMIT of `bytes` (check value for ASCII "123456789" is `0x2189`).
pub fn crc16_kermit(bytes: &[u8]) -> u16 {
    KERMIT.checksum(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kermit_check_value() {
        assert_eq!(crc16_kermit(b"123456789"), 0x2189);
    }
}
