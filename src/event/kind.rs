//! Kind classes: which storage rule applies to an event (NIP-01).

use super::wire::kind;

/// Storage semantics of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindClass {
    /// Stored as is.
    Regular,
    /// Newest per (pubkey, kind) wins: 0, 3, 10000..=19999.
    Replaceable,
    /// Newest per (pubkey, kind, `d` tag) wins: 30000..=39999.
    Addressable,
    /// Never stored: 20000..=29999.
    Ephemeral,
    /// Kind 5: removes the author's referenced events.
    Deletion,
}

impl KindClass {
    /// The class of `kind`.
    pub fn of(kind: u16) -> Self {
        match kind {
            kind::DELETION => Self::Deletion,
            0 | 3 | 10000..=19999 => Self::Replaceable,
            20000..=29999 => Self::Ephemeral,
            30000..=39999 => Self::Addressable,
            _ => Self::Regular,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries() {
        let table = [
            (0, KindClass::Replaceable),
            (1, KindClass::Regular),
            (3, KindClass::Replaceable),
            (5, KindClass::Deletion),
            (9999, KindClass::Regular),
            (10000, KindClass::Replaceable),
            (19999, KindClass::Replaceable),
            (20000, KindClass::Ephemeral),
            (29999, KindClass::Ephemeral),
            (30000, KindClass::Addressable),
            (39999, KindClass::Addressable),
            (40000, KindClass::Regular),
            (65535, KindClass::Regular),
        ];
        for (k, c) in table {
            assert_eq!(KindClass::of(k), c, "kind {k}");
        }
    }
}
