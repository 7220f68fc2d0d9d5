//! Compiled, immutable rule tables: built off the data path by the control thread, read by the
//! cores without locks, swapped whole at burst boundaries.
//!
//! Owns the IPv4 longest-prefix-match structure (`Lpm`), the AWS authorization semantics
//! (`authz`), and the per-generation `RuleTable` (routes, target networks, security groups). Must not allocate or mutate during lookups.

pub mod authz;
pub mod cidr;
pub mod lpm;
pub mod table;

pub use authz::{authorize_naive, AuthzRule, AuthzTable, Grant, GroupMask};
pub use cidr::Ipv4Cidr;
pub use lpm::{Lpm, LpmError};
pub use table::{
    Decision, EgressRule, EndpointTables, RuleProtocol, RuleTable, SecurityPolicy, TargetNetwork,
};
