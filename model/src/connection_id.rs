//! WebSocket connection ids (contract §5.3): unguessable, URL-safe
//! (`[A-Za-z0-9_-]`), and naming the data plane that holds the
//! connection, so the connections API finds it without a lookup table.
//!
//! Layout: 22 characters of base64url for 128 random bits, then the data
//! plane's node id in base64url (no padding). The random part comes first
//! and has a fixed length, so the rest decodes unambiguously.

const RANDOM_CHARS: usize = 22;
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A fresh id for a connection held by `data_plane`.
pub fn new_id(data_plane: &str) -> String {
    let random: [u8; 16] = rand::random();
    let mut id = encode(&random);
    debug_assert_eq!(id.len(), RANDOM_CHARS);
    id.push_str(&encode(data_plane.as_bytes()));
    id
}

/// The node id of the data plane holding connection `id`, or `None` if
/// `id` is not a well-formed connection id.
pub fn data_plane_of(id: &str) -> Option<String> {
    if id.len() <= RANDOM_CHARS || !id.bytes().all(|b| ALPHABET.contains(&b)) {
        return None;
    }
    String::from_utf8(decode(&id[RANDOM_CHARS..])?).ok()
}

fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| ALPHABET.iter().position(|a| *a == c).map(|v| v as u32);
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.as_bytes().chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_data_plane_and_differ() {
        for dp in ["dp-1", "a", "ab", "abc", "data-plane.eu-west-1:7"] {
            let a = new_id(dp);
            let b = new_id(dp);
            assert_ne!(a, b);
            assert!(a
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
            assert_eq!(data_plane_of(&a).as_deref(), Some(dp), "{a}");
        }
    }

    #[test]
    fn malformed_ids_name_nothing() {
        assert_eq!(data_plane_of(""), None);
        assert_eq!(data_plane_of("short"), None);
        let good = new_id("dp-1");
        assert_eq!(data_plane_of(&good[..RANDOM_CHARS]), None);
        assert_eq!(data_plane_of(&format!("{good}=")), None);
        let dangling = format!("{}A", &good[..RANDOM_CHARS]);
        assert_eq!(data_plane_of(&dangling), None, "one character is no byte");
    }
}
