//! A node's id in cluster mode (contract section 1): `CONFAB_NODE_ID`, or the hostname plus a
//! random suffix, so that two processes on one host never share an id by accident, while an
//! operator who wants a restarted node to take over its own record sets the id explicitly.

use rand::Rng;

/// Longest id accepted; ids end up in Redis keys and log lines.
pub const MAX_LEN: usize = 64;

/// Whether `id` is 1..=64 characters of `[A-Za-z0-9._-]`.
pub fn is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `HOSTNAME-xxxxxx`: the hostname (other characters dropped, shortened to fit) and six random
/// lowercase letters and digits.
pub fn generate() -> String {
    let host = gethostname::gethostname();
    let host: String = host
        .to_string_lossy()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(MAX_LEN - 7)
        .collect();
    let host = if host.is_empty() {
        "confab".to_owned()
    } else {
        host
    };
    let suffix: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .map(|b| char::from(b).to_ascii_lowercase())
        .take(6)
        .collect();
    format!("{host}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_differ() {
        let (a, b) = (generate(), generate());
        assert!(is_valid(&a), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn ids_are_checked() {
        assert!(is_valid("node-1.eu_west"));
        assert!(!is_valid(""));
        assert!(!is_valid("a b"));
        assert!(!is_valid("a:b"));
        assert!(!is_valid(&"x".repeat(MAX_LEN + 1)));
    }
}
