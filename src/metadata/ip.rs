//! Client IP minimisation: the only way an address gets into an event.
//!
//! [`minimise`] turns a client address into a [`MinimisedIp`] according to
//! the configured [`IpMode`]: `truncate` (the default) keeps the IPv4 /24 or
//! IPv6 /48 network, `full` keeps the address (the sweeper removes it after
//! `ip_retention_days`, at most 7), `drop` keeps nothing. IPv4-mapped IPv6
//! addresses (`::ffff:a.b.c.d`) are treated as IPv4. [`MinimisedIp`] has no
//! public constructor other than [`minimise`] and [`MinimisedIp::dropped`], so
//! an unminimised address cannot reach a store by accident.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::config::IpMode;

/// Prefix kept from an IPv4 address in `truncate` mode.
pub const IPV4_PREFIX: u8 = 24;
/// Prefix kept from an IPv6 address in `truncate` mode.
pub const IPV6_PREFIX: u8 = 48;

/// A client address after minimisation: a network, a full address (only in
/// `full` mode) or nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MinimisedIp(Kept);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
enum Kept {
    #[default]
    Nothing,
    Network(IpNet),
    Full(IpAddr),
}

/// Minimises `ip` according to `mode`.
pub fn minimise(ip: IpAddr, mode: IpMode) -> MinimisedIp {
    let ip = ip.to_canonical();
    MinimisedIp(match mode {
        IpMode::Drop => Kept::Nothing,
        IpMode::Full => Kept::Full(ip),
        IpMode::Truncate => Kept::Network(truncate(ip)),
    })
}

fn truncate(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(v4) => IpNet::V4(
            Ipv4Net::new(v4, IPV4_PREFIX)
                .map(|net| net.trunc())
                .unwrap_or_else(|_| Ipv4Net::from(Ipv4Addr::UNSPECIFIED)),
        ),
        IpAddr::V6(v6) => IpNet::V6(
            Ipv6Net::new(v6, IPV6_PREFIX)
                .map(|net| net.trunc())
                .unwrap_or_else(|_| Ipv6Net::from(Ipv6Addr::UNSPECIFIED)),
        ),
    }
}

impl MinimisedIp {
    /// No address at all (`drop` mode, or no address known).
    pub fn dropped() -> Self {
        Self(Kept::Nothing)
    }

    /// The truncated network, in `truncate` mode.
    pub fn network(&self) -> Option<IpNet> {
        match self.0 {
            Kept::Network(net) => Some(net),
            _ => None,
        }
    }

    /// The full address, in `full` mode.
    pub fn full_address(&self) -> Option<IpAddr> {
        match self.0 {
            Kept::Full(ip) => Some(ip),
            _ => None,
        }
    }

    /// Whether this holds a full address (subject to `ip_retention_days`).
    pub fn is_full(&self) -> bool {
        matches!(self.0, Kept::Full(_))
    }

    /// Whether nothing is kept.
    pub fn is_dropped(&self) -> bool {
        matches!(self.0, Kept::Nothing)
    }

    /// The stored text form: `203.0.113.0/24`, `2001:db8::7`, or `None`.
    pub(crate) fn to_stored(self) -> Option<String> {
        match self.0 {
            Kept::Nothing => None,
            Kept::Network(net) => Some(net.to_string()),
            Kept::Full(ip) => Some(ip.to_string()),
        }
    }

    /// Reads back the stored text form; `None` for text no store wrote.
    pub(crate) fn from_stored(text: Option<&str>) -> Option<Self> {
        Some(Self(match text {
            None => Kept::Nothing,
            Some(text) if text.contains('/') => Kept::Network(text.parse().ok()?),
            Some(text) => Kept::Full(text.parse().ok()?),
        }))
    }
}

impl fmt::Display for MinimisedIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Kept::Nothing => f.write_str("-"),
            Kept::Network(net) => write!(f, "{net}"),
            Kept::Full(ip) => write!(f, "{ip}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn truncate_keeps_v4_slash_24() {
        let kept = minimise(ip("203.0.113.77"), IpMode::Truncate);
        assert_eq!(kept.network(), Some("203.0.113.0/24".parse().unwrap()));
        assert_eq!(kept.to_string(), "203.0.113.0/24");
        assert!(!kept.is_full());
        assert_eq!(kept.full_address(), None);
    }

    #[test]
    fn truncate_keeps_v6_slash_48() {
        let kept = minimise(ip("2001:db8:abcd:1234:5678::9"), IpMode::Truncate);
        assert_eq!(kept.network(), Some("2001:db8:abcd::/48".parse().unwrap()));
    }

    #[test]
    fn ipv4_mapped_addresses_are_truncated_as_ipv4() {
        let kept = minimise(ip("::ffff:198.51.100.200"), IpMode::Truncate);
        assert_eq!(kept.network(), Some("198.51.100.0/24".parse().unwrap()));
        let full = minimise(ip("::ffff:198.51.100.200"), IpMode::Full);
        assert_eq!(full.full_address(), Some(ip("198.51.100.200")));
    }

    #[test]
    fn full_keeps_and_drop_discards() {
        let full = minimise(ip("192.0.2.9"), IpMode::Full);
        assert!(full.is_full());
        assert_eq!(full.full_address(), Some(ip("192.0.2.9")));
        let dropped = minimise(ip("192.0.2.9"), IpMode::Drop);
        assert!(dropped.is_dropped());
        assert_eq!(dropped.to_stored(), None);
        assert_eq!(dropped, MinimisedIp::dropped());
    }

    #[test]
    fn stored_form_round_trips() {
        for (text, mode) in [
            ("203.0.113.77", IpMode::Truncate),
            ("2001:db8::1", IpMode::Truncate),
            ("2001:db8::1", IpMode::Full),
            ("192.0.2.1", IpMode::Full),
            ("192.0.2.1", IpMode::Drop),
        ] {
            let kept = minimise(ip(text), mode);
            let stored = kept.to_stored();
            assert_eq!(MinimisedIp::from_stored(stored.as_deref()), Some(kept));
        }
        assert_eq!(MinimisedIp::from_stored(Some("not an ip")), None);
    }

    proptest::proptest! {
        #[test]
        fn truncation_never_keeps_host_bits(raw in proptest::prelude::any::<u32>(), raw6 in proptest::prelude::any::<u128>()) {
            let v4 = minimise(IpAddr::V4(Ipv4Addr::from(raw)), IpMode::Truncate);
            let net = v4.network().unwrap();
            proptest::prop_assert_eq!(net.prefix_len(), IPV4_PREFIX);
            proptest::prop_assert!(net.contains(&IpAddr::V4(Ipv4Addr::from(raw))));
            proptest::prop_assert_eq!(net.network(), IpAddr::V4(Ipv4Addr::from(raw & 0xffff_ff00)));
            let addr6 = Ipv6Addr::from(raw6);
            let v6 = minimise(IpAddr::V6(addr6), IpMode::Truncate);
            let net6 = v6.network().unwrap();
            if addr6.to_ipv4_mapped().is_none() {
                proptest::prop_assert_eq!(net6.prefix_len(), IPV6_PREFIX);
                proptest::prop_assert_eq!(net6.network(), IpAddr::V6(Ipv6Addr::from(raw6 & !((1u128 << 80) - 1))));
            } else {
                proptest::prop_assert_eq!(net6.prefix_len(), IPV4_PREFIX);
            }
        }
    }
}
