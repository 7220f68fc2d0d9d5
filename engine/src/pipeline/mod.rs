//! The stages a packet goes through on a core, as `impl Worker` blocks: `client` (client to
//! network: decrypt, authorize, route, SNAT), `network` (network to client: reverse SNAT,
//! encrypt) and `l2` (ARP, pings to the appliance, Ethernet output).
//!
//! Every stage ends a packet in exactly one of: queued for transmission, handed to the owning
//! core, punted to control (copied), queued waiting for ARP, or dropped with a named reason.

pub(crate) mod client;
pub(crate) mod l2;
pub(crate) mod network;
