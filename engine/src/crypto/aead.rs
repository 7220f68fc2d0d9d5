//! The data-channel ciphers OpenVPN 2.6 negotiates, over ring.

use ring::aead::{Algorithm, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305};

/// A data-channel AEAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// AES-256-GCM, the default.
    Aes256Gcm,
    /// AES-128-GCM.
    Aes128Gcm,
    /// ChaCha20-Poly1305.
    ChaCha20Poly1305,
}

impl Cipher {
    /// The OpenVPN name (`cipher` and `IV_CIPHERS`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Aes256Gcm => "AES-256-GCM",
            Self::Aes128Gcm => "AES-128-GCM",
            Self::ChaCha20Poly1305 => "CHACHA20-POLY1305",
        }
    }

    /// The cipher with this OpenVPN name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Aes256Gcm, Self::Aes128Gcm, Self::ChaCha20Poly1305]
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        self.algorithm().key_len()
    }

    pub(crate) fn algorithm(self) -> &'static Algorithm {
        match self {
            Self::Aes256Gcm => &AES_256_GCM,
            Self::Aes128Gcm => &AES_128_GCM,
            Self::ChaCha20Poly1305 => &CHACHA20_POLY1305,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for c in [
            Cipher::Aes256Gcm,
            Cipher::Aes128Gcm,
            Cipher::ChaCha20Poly1305,
        ] {
            assert_eq!(Cipher::from_name(c.name()), Some(c));
        }
        assert_eq!(Cipher::from_name("aes-256-gcm"), Some(Cipher::Aes256Gcm));
        assert_eq!(Cipher::from_name("BF-CBC"), None);
        assert_eq!(
            (
                Cipher::Aes256Gcm.key_len(),
                Cipher::Aes128Gcm.key_len(),
                Cipher::ChaCha20Poly1305.key_len()
            ),
            (32, 16, 32)
        );
    }
}
