//! Strict lowercase hex for fixed-size fields (NIP-01 uses lowercase hex only).

/// Decodes exactly 64 lowercase hex characters.
pub fn decode_hex32(s: &str) -> Result<[u8; 32], String> {
    decode_fixed::<32>(s)
}

/// Decodes exactly 128 lowercase hex characters.
pub fn decode_hex64(s: &str) -> Result<[u8; 64], String> {
    decode_fixed::<64>(s)
}

fn decode_fixed<const N: usize>(s: &str) -> Result<[u8; N], String> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return Err(format!(
            "expected {} hex characters, got {}",
            2 * N,
            b.len()
        ));
    }
    let mut out = [0u8; N];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(out)
}

fn nibble(c: u8) -> Result<u8, String> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(format!("not lowercase hex: {:?}", c as char)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_wrong_length_and_case() {
        assert!(decode_hex32(&"a".repeat(63)).is_err());
        assert!(decode_hex32(&"a".repeat(65)).is_err());
        assert!(decode_hex32(&"A".repeat(64)).is_err());
        assert!(decode_hex32(&"g".repeat(64)).is_err());
        assert_eq!(decode_hex32(&"0f".repeat(32)).unwrap(), [0x0f; 32]);
    }
}
