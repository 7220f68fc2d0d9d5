//! Raw bindings to DPDK 22.11 (Debian's libdpdk-dev) and the `shim_` C functions that expose its
//! `static inline` fast path. Safe wrappers live in `sluice-engine`'s `dpdk` module.
