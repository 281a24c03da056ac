//! Per-API IP allow and deny lists (CIDR, or a bare address). The client
//! address is the TCP peer's. Deny wins over allow; a non-empty allow list
//! admits only the addresses it covers.

use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRules {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

fn parse(list: &[String], field: &str) -> Result<Vec<IpNet>, String> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.trim();
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| format!("{field}[{i}]: {s:?} is not an IP address or CIDR"))
        })
        .collect()
}

/// `::ffff:a.b.c.d` is the IPv4 client a.b.c.d on a dual-stack socket.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl IpRules {
    /// `None` when both lists are empty (nothing to check).
    pub fn compile(allow: &[String], deny: &[String]) -> Result<Option<IpRules>, String> {
        if allow.is_empty() && deny.is_empty() {
            return Ok(None);
        }
        Ok(Some(IpRules {
            allow: parse(allow, "ip_allow")?,
            deny: parse(deny, "ip_deny")?,
        }))
    }

    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> IpRules {
        let s = |l: &[&str]| l.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        IpRules::compile(&s(allow), &s(deny)).unwrap().unwrap()
    }

    #[test]
    fn deny_wins_and_allow_restricts() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(IpRules::compile(&[], &[]).unwrap().is_none());
        let r = rules(
            &["10.0.0.0/8", "2001:db8::/32"],
            &["10.1.0.0/16", "10.2.3.4"],
        );
        assert!(r.admits(ip("10.9.9.9")));
        assert!(r.admits(ip("::ffff:10.9.9.9")));
        assert!(r.admits(ip("2001:db8::1")));
        assert!(!r.admits(ip("10.1.2.3")));
        assert!(!r.admits(ip("10.2.3.4")));
        assert!(r.admits(ip("10.2.3.5")));
        assert!(!r.admits(ip("192.168.1.1")));
        let only_deny = rules(&[], &["127.0.0.0/8"]);
        assert!(!only_deny.admits(ip("127.0.0.1")));
        assert!(only_deny.admits(ip("192.0.2.1")));
        // Host bits set in a CIDR are ignored, as most firewalls do.
        assert!(rules(&["192.0.2.77/24"], &[]).admits(ip("192.0.2.1")));
        assert!(IpRules::compile(&["nope".into()], &[]).is_err());
    }
}
