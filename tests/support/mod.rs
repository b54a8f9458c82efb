//! Shared integration-test harness; each module is a helper other tests reuse.
#![allow(unreachable_pub, dead_code)]

pub mod events;
pub mod fleet;
pub mod mmdb;
pub mod served;
pub mod sim;
pub mod udp_proxy;
