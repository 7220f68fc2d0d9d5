//! Shared helpers for sluice's integration tests (temporary configs, PKIs, namespaces).
