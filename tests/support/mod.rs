//! Shared integration-test harness; each module is a helper other tests reuse.

pub mod mmdb;
