//! The OpenVPN data channel on a core: ciphers, in-place AEAD open/seal of P_DATA_V2, the
//! replay window. Owns per-key state only; which key a packet uses is the session table's job.

pub mod aead;
pub mod data_channel;
pub mod replay;

pub use aead::Cipher;
pub use data_channel::{
    classify_plaintext, DataKey, KeyMaterial, OpenKey, Plaintext, SealKey, SealOutcome,
};
pub use replay::ReplayWindow;
