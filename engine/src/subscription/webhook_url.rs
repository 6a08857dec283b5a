//! Webhook URL validation against server-side request forgery (§6.2, §12.8).
//!
//! Accepted: `https://` URLs whose host is a DNS name or a public IP address; with
//! `allow_local` (development: `DS_SUBSCRIPTIONS__ALLOW_LOCAL_WEBHOOKS`), also `http://` and
//! `https://` to `localhost`, `127.0.0.x` and `[::1]`. Refused: other schemes, userinfo,
//! literal addresses in private, loopback, link-local, shared (CGNAT), multicast,
//! documentation and reserved ranges (IPv4, IPv6, and IPv4 inside IPv6: mapped, 6to4, NAT64,
//! compatible), hosts that end in a number but are not a plain dotted quad (`0x7f.1`,
//! `2130706433`, `127.1`, `0177.0.0.1`, which resolvers read as addresses), `localhost`
//! names without `allow_local`, and anything malformed. A DNS name can still resolve to a
//! refused address: the sender checks every resolved address with [`refused_ip`] before it
//! connects (and connects to the address it checked).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest webhook URL accepted.
pub const MAX_URL_BYTES: usize = 2048;

/// A validated webhook URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookUrl {
    /// `https` (else plain `http`, only to loopback with `allow_local`).
    pub https: bool,
    /// The host: a lower-case DNS name, or an address.
    pub host: Host,
    /// The port (443 or 80 unless given).
    pub port: u16,
    /// Path and query, starting with `/`; the fragment is dropped.
    pub target: String,
}

/// A webhook host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// A DNS name, lower case, without a trailing dot.
    Name(String),
    /// A literal address.
    Ip(IpAddr),
}

impl WebhookUrl {
    /// The host as it goes in a `Host` header (brackets around IPv6) with the port if it is
    /// not the scheme's default.
    #[must_use]
    pub fn authority(&self) -> String {
        let host = match &self.host {
            Host::Name(n) => n.clone(),
            Host::Ip(IpAddr::V4(a)) => a.to_string(),
            Host::Ip(IpAddr::V6(a)) => format!("[{a}]"),
        };
        let default = if self.https { 443 } else { 80 };
        if self.port == default { host } else { format!("{host}:{}", self.port) }
    }
}

/// Parses and checks a webhook URL; the error says why it is refused.
///
/// # Errors
/// A short reason, for the `WEBHOOK_URL_REJECTED` answer.
pub fn validate(url: &str, allow_local: bool) -> Result<WebhookUrl, &'static str> {
    if url.len() > MAX_URL_BYTES {
        return Err("webhook.url is longer than 2048 bytes");
    }
    if url.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'\\') {
        return Err("webhook.url contains spaces, control characters or backslashes");
    }
    let (https, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "https://") {
        (true, rest)
    } else if let Some(rest) = strip_prefix_ignore_case(url, "http://") {
        (false, rest)
    } else {
        return Err("webhook.url must be an https:// URL");
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(end);
    if authority.contains('@') {
        return Err("webhook.url must not contain user information");
    }
    let (host_text, port_text) = split_port(authority)?;
    let port = match port_text {
        None => {
            if https {
                443
            } else {
                80
            }
        }
        Some(p) => parse_port(p)?,
    };
    let host = parse_host(host_text)?;
    let local = is_local(&host);
    if local && !allow_local {
        return Err("webhook.url names a local host");
    }
    if !https && !local {
        return Err("webhook.url must be an https:// URL");
    }
    if let Host::Ip(ip) = host
        && !local
        && refused_ip(ip)
    {
        return Err("webhook.url names a private, local or reserved address");
    }
    let target = if target.is_empty() {
        "/".to_owned()
    } else if target.starts_with('?') {
        format!("/{target}")
    } else {
        target.to_owned()
    };
    Ok(WebhookUrl { https, host, port, target })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// Splits `host[:port]` and `[v6][:port]`.
fn split_port(authority: &str) -> Result<(&str, Option<&str>), &'static str> {
    if let Some(rest) = authority.strip_prefix('[') {
        let close = rest.find(']').ok_or("webhook.url has an unclosed [")?;
        let (v6, after) = (&rest[..close], &rest[close + 1..]);
        return match after {
            "" => Ok((&authority[..close + 2], None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((&authority[..close + 2], Some(port))),
                None if v6.is_empty() => Err("webhook.url has an empty host"),
                None => Err("webhook.url has bytes after its IPv6 address"),
            },
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((authority, None)),
    }
}

fn parse_port(p: &str) -> Result<u16, &'static str> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err("webhook.url has an invalid port");
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err("webhook.url has an invalid port"),
        Ok(port) => Ok(port),
    }
}

fn parse_host(text: &str) -> Result<Host, &'static str> {
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        // No zone ids (`%25eth0`): they only name local interfaces.
        let v6: Ipv6Addr = inner.parse().map_err(|_| "webhook.url has an invalid IPv6 address")?;
        return Ok(Host::Ip(IpAddr::V6(v6)));
    }
    let name = text.to_ascii_lowercase();
    let name = name.strip_suffix('.').unwrap_or(&name);
    if name.is_empty() || name.len() > 253 {
        return Err("webhook.url has an empty or overlong host");
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.iter().any(|l| {
        l.is_empty()
            || l.len() > 63
            || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }) {
        return Err("webhook.url has an invalid host name");
    }
    // A host whose last label is a number is an IPv4 address to URL parsers and resolvers
    // (`127.1`, `0x7f.1`, `2130706433`): only the plain dotted quad is accepted.
    let last = labels.last().copied().unwrap_or_default();
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || (last.len() > 1
            && (last.starts_with("0x"))
            && last[2..].bytes().all(|b| b.is_ascii_hexdigit()));
    if numeric {
        return dotted_quad(&labels)
            .map(|a| Host::Ip(IpAddr::V4(a)))
            .ok_or("webhook.url has a numeric host that is not a plain IPv4 address");
    }
    Ok(Host::Name(name.to_owned()))
}

/// `a.b.c.d`, each 0..=255 in decimal without leading zeros.
fn dotted_quad(labels: &[&str]) -> Option<Ipv4Addr> {
    if labels.len() != 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (o, l) in octets.iter_mut().zip(labels) {
        if l.is_empty() || l.len() > 3 || (l.len() > 1 && l.starts_with('0')) {
            return None;
        }
        *o = l.parse().ok()?;
    }
    Some(Ipv4Addr::from(octets))
}

/// `localhost` (and `*.localhost`, RFC 6761), `127.0.0.x`, `::1`.
fn is_local(host: &Host) -> bool {
    match host {
        Host::Name(n) => n == "localhost" || n.ends_with(".localhost"),
        Host::Ip(IpAddr::V4(a)) => a.octets()[..3] == [127, 0, 0],
        Host::Ip(IpAddr::V6(a)) => *a == Ipv6Addr::LOCALHOST,
    }
}

/// Whether a webhook may not be sent to `ip` (without `allow_local`): anything but a
/// public unicast address, IPv4 inside IPv6 judged as IPv4.
#[must_use]
pub fn refused_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => refused_v4(a),
        IpAddr::V6(a) => refused_v6(a),
    }
}

/// Whether a resolved address may be used for a webhook: a public one, or with
/// `allow_local` a loopback one.
#[must_use]
pub fn allowed_target(ip: IpAddr, allow_local: bool) -> bool {
    let loopback = match ip {
        IpAddr::V4(a) => a.octets()[..3] == [127, 0, 0],
        IpAddr::V6(a) => a == Ipv6Addr::LOCALHOST,
    };
    (allow_local && loopback) || !refused_ip(ip)
}

fn refused_v4(a: Ipv4Addr) -> bool {
    let [o0, o1, o2, _] = a.octets();
    o0 == 0 // "this network"
        || o0 == 10
        || (o0 == 100 && (64..128).contains(&o1)) // shared address space (CGNAT)
        || o0 == 127
        || (o0 == 169 && o1 == 254)
        || (o0 == 172 && (16..32).contains(&o1))
        || (o0 == 192 && o1 == 0 && (o2 == 0 || o2 == 2)) // IETF protocol assignments, TEST-NET-1
        || (o0 == 192 && o1 == 88 && o2 == 99) // 6to4 relay anycast
        || (o0 == 192 && o1 == 168)
        || (o0 == 198 && (o1 == 18 || o1 == 19)) // benchmarking
        || (o0 == 198 && o1 == 51 && o2 == 100) // TEST-NET-2
        || (o0 == 203 && o1 == 0 && o2 == 113) // TEST-NET-3
        || o0 >= 224 // multicast, reserved, broadcast
}

fn refused_v6(a: Ipv6Addr) -> bool {
    let s = a.segments();
    if let Some(v4) = a.to_ipv4_mapped() {
        return refused_v4(v4);
    }
    // 6to4 (2002::/16) and NAT64 (64:ff9b::/96, 64:ff9b:1::/48) carry an IPv4 address.
    if s[0] == 0x2002 {
        return refused_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    if s[0] == 0x64 && s[1] == 0xff9b {
        return s[2] != 0
            || refused_v4(Ipv4Addr::new(
                (s[6] >> 8) as u8,
                s[6] as u8,
                (s[7] >> 8) as u8,
                s[7] as u8,
            ));
    }
    s[0..6] == [0; 6] // unspecified, loopback, IPv4-compatible (deprecated)
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] < 0x0200) // IETF protocol assignments (Teredo, ORCHID, …)
        || (s[0] == 0x0100 && s[1..4] == [0; 3]) // discard-only
        || (s[0] & 0xe000) != 0x2000 // outside global unicast 2000::/3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_https_urls_are_accepted_and_normalized() {
        let u = validate("HTTPS://Worker.Example.com./hooks?x=1#frag", false).unwrap();
        assert_eq!(u.host, Host::Name("worker.example.com".into()));
        assert_eq!((u.https, u.port, u.target.as_str()), (true, 443, "/hooks?x=1"));
        assert_eq!(u.authority(), "worker.example.com");
        let u = validate("https://8.8.8.8:8443", false).unwrap();
        assert_eq!((u.port, u.target.as_str(), u.authority()), (8443, "/", "8.8.8.8:8443".into()));
        let u = validate("https://[2606:4700::1111]/h", false).unwrap();
        assert_eq!(u.authority(), "[2606:4700::1111]");
        assert!(validate("https://a-b_c.example/x", false).is_ok());
        assert!(validate("https://example.com?q", false).unwrap().target == "/?q");
    }

    #[test]
    fn local_development_urls_need_the_setting() {
        for url in [
            "http://127.0.0.1:5555/webhook",
            "http://localhost:80/x",
            "http://[::1]:9/x",
            "https://localhost/x",
            "http://api.localhost/x",
        ] {
            assert!(validate(url, true).is_ok(), "{url}");
            assert!(validate(url, false).is_err(), "{url}");
        }
        assert!(validate("http://127.0.1.1/x", true).is_err(), "only 127.0.0.x");
        assert!(validate("http://example.com/x", true).is_err(), "plain http only to loopback");
    }

    #[test]
    fn private_reserved_and_disguised_addresses_are_refused() {
        for url in [
            "http://10.0.0.1/hook",
            "https://10.0.0.1/hook",
            "https://172.16.0.1/",
            "https://172.31.255.255/",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/",
            "https://127.0.0.1/",
            "https://0.0.0.0/",
            "https://224.0.0.1/",
            "https://255.255.255.255/",
            "https://198.18.0.1/",
            "https://192.0.2.1/",
            "https://[::1]/",
            "https://[::]/",
            "https://[fd00::1]/",
            "https://[fe80::1]/",
            "https://[ff02::1]/",
            "https://[::ffff:10.0.0.1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[64:ff9b::a00:1]/",
            "https://[2002:a00:1::]/",
            "https://[2001:db8::1]/",
            "https://[::a00:1]/",
            "https://2130706433/",
            "https://0x7f.1/",
            "https://0x7f000001/",
            "https://127.1/",
            "https://0177.0.0.1/",
            "https://010.0.0.1/",
            "https://1.2.3.4.5/",
            "https://example.123/",
        ] {
            assert!(validate(url, false).is_err(), "{url}");
        }
        // Public addresses inside IPv6 forms are fine.
        assert!(validate("https://[::ffff:8.8.8.8]/", false).is_ok());
        assert!(validate("https://[2002:808:808::]/", false).is_ok());
        assert!(validate("https://[64:ff9b::808:808]/", false).is_ok());
    }

    #[test]
    fn malformed_urls_are_refused() {
        for url in [
            "",
            "ftp://example.com/",
            "example.com/hook",
            "https://",
            "https:///path",
            "https://user:pw@example.com/",
            "https://example.com@evil.com/",
            "https://exa mple.com/",
            "https://example.com:0/",
            "https://example.com:65536/",
            "https://example.com:/",
            "https://example.com:8x/",
            "https://[::1/",
            "https://[zz::1]/",
            "https://[::1]x/",
            "https://exa%6dple.com/",
            "https://a..b/",
            "https://example.com\\@evil/",
            "https://ex\u{e4}mple.com/",
        ] {
            assert!(validate(url, true).is_err(), "{url:?}");
        }
        assert!(validate(&format!("https://example.com/{}", "a".repeat(2048)), false).is_err());
    }

    proptest::proptest! {
        /// Any input: no panic, and whatever is accepted without `allow_local` is https to
        /// a name or a public address.
        #[test]
        fn anything_is_judged_without_panic(url in "(https?://)?[a-z0-9.:\\[\\]@%/?#x-]{0,40}") {
            if let Ok(u) = validate(&url, false) {
                proptest::prop_assert!(u.https);
                if let Host::Ip(ip) = u.host {
                    proptest::prop_assert!(!refused_ip(ip));
                }
            }
            let _ = validate(&url, true);
        }
    }

    #[test]
    fn resolved_addresses_are_checked_the_same_way() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(allowed_target(ip("93.184.216.34"), false));
        assert!(!allowed_target(ip("10.1.2.3"), false));
        assert!(!allowed_target(ip("127.0.0.1"), false));
        assert!(allowed_target(ip("127.0.0.1"), true));
        assert!(!allowed_target(ip("192.168.0.1"), true), "allow_local is loopback only");
        assert!(!allowed_target(ip("::ffff:169.254.169.254"), true));
    }
}
