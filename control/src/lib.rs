//! The sluice control layer.
//!
//! Owns the configuration model (TOML, validated with AWS Client VPN semantics), the management
//! verbs behind the `sluice` binary, and (from the control-channel work on) the sans-IO OpenVPN
//! control channel and its mio runtime.
//!
//! It does **not** touch packets on the data path: it compiles tables and hands them to the
//! engine's cores.

#![deny(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod compile;
pub mod config;
pub mod connlog;
pub mod proto;
pub mod runtime;
pub mod timefmt;
