//! Lowercase hex, the text form of the digests and MACs (`sha256:<hex>`,
//! `hmac-sha256:<hex>`). A leaf: `mod.rs` and `keys.rs` both build on it.

/// `bytes` as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}
