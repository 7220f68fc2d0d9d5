//! Zero-copy views of the wire formats the data path touches, smoltcp-style: `XxxPacket<T>`
//! over `T: AsRef<[u8]>` checks lengths once in `new_checked`, after which every accessor is in
//! bounds; setters need `T: AsMut<[u8]>` and keep checksums valid incrementally.
//!
//! Views never allocate and never panic on any input that passed `new_checked`.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod openvpn;
pub mod tcp;
pub mod udp;

/// A packet too short or inconsistent to be what it claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;
