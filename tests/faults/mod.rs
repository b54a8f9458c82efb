//! Fault-injection harness (test support, one machine): network namespaces
//! with nftables loss and partitions ([`netns`]), a QUIC Initial flood
//! ([`flood`]), and hostile peers that hold a connection without speaking or
//! exhaust its streams ([`peers`]). Delay and reordering are in
//! `support::udp_proxy`.
#![allow(unreachable_pub, dead_code)]

pub mod flood;
pub mod netns;
pub mod peers;
