//! The OpenVPN control channel, sans-IO: no sockets, no clock. It takes datagrams and `now`,
//! and yields datagrams to send, its next timer, and events for the data plane (keys ready,
//! session closed) and for the logs (authentication failed).
//!
//! Layers, bottom up: `packet` (codec), `reliable` (acks, windows, retransmission), `tls`
//! (rustls, the only file that touches it), `key_method` (key exchange, key derivation),
//! `push` (PUSH_REPLY), `ippool` (client addresses), `room` (the data cores' room for
//! sessions), `session` (one client), `admission` (the stateless first exchange, on
//! `sluice_engine::cookie`), `server` (demultiplexing, limits, authentication), `verify` (the
//! password checks the server hands out, run off its thread).

pub mod admission;
pub mod client;
pub mod ippool;
pub mod key_method;
pub mod packet;
pub mod push;
pub mod reliable;
pub mod room;
pub mod server;
pub mod session;
pub mod tls;
pub mod token;
pub mod verify;

/// A UDP address (IPv4 address and port), as the data plane has it.
pub use sluice_engine::session::Remote;
