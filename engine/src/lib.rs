//! The sluice data plane.
//!
//! Owns everything a poll-mode core does to a packet: zero-copy views of the wire formats, the
//! OpenVPN data channel (AEAD open/seal, replay window), the compiled rule tables (route and
//! authorization longest-prefix match), SNAT flow tables, ARP, and the per-core pipeline.
//!
//! It does **not** read the clock, make system calls other than through a `Port`, allocate per
//! packet, or know anything about the control channel beyond punting its packets.

#![deny(unsafe_code)]

pub mod cookie;
pub mod crypto;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod flow;
pub mod mailbox;
pub mod mem;
pub mod neighbour;
pub mod packet;
pub mod pipeline;
pub mod port;
pub mod punt;
pub mod reassembly;
pub mod rules;
pub mod session;
pub mod stages;
pub mod stats;
pub mod testkit;
pub mod wire;
pub mod worker;
