//! SNAT state on a core: the flow table and the translated-port pools, partitioned per core.
//! Owns no packets; the pipeline's SNAT stage rewrites them with what these tables answer.

pub mod fragments;
mod index;
mod lanes;
pub mod ports;
pub mod table;

pub use ports::{core_for_port, PortPool, PortRange};
pub use table::{
    default_flows_per_session, Flow, FlowId, FlowKey, FlowTable, ReverseKey, TcpSeen, Timeouts,
};
