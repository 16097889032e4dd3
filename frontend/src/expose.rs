//! EXPOSE port specs (`80`, `80/tcp`, `53/udp`, `8000-8010`), parsed as
//! BuildKit's `convert_expose.go` parses them.

/// `[ip:][hostPort:]containerPort[/proto]` → `["<port>/<proto>", …]`.
pub fn parse_port(raw: &str) -> Result<Vec<String>, String> {
    let parts: Vec<&str> = raw.split(':').collect();
    let (ip, host_port, container) = match parts.len() {
        1 => ("".to_owned(), "", parts[0]),
        2 => ("".to_owned(), parts[0], parts[1]),
        3 => (parts[0].to_owned(), parts[1], parts[2]),
        n => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
    };
    let (port, proto) = container.split_once('/').unwrap_or((container, ""));
    if port.is_empty() {
        return Err(format!("invalid port: {raw:?}: no port specified"));
    }
    let proto = match proto.to_lowercase().as_str() {
        "" => "tcp".to_owned(),
        p @ ("tcp" | "udp" | "sctp") => p.to_owned(),
        _ => return Err(format!("invalid port: {raw:?}: invalid proto: {proto}")),
    };
    if !ip.is_empty() {
        let bare = ip
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(&ip);
        if bare.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("invalid IP address: {ip}"));
        }
    }
    let (start, end) = port_range(port).map_err(|_| format!("invalid containerPort: {port}"))?;
    if !host_port.is_empty() {
        let (hs, he) =
            port_range(host_port).map_err(|_| format!("invalid hostPort: {host_port}"))?;
        if end - start != he - hs && end != start {
            return Err(format!(
                "invalid ranges specified for container and host Ports: {port} and {host_port}"
            ));
        }
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

fn port_range(s: &str) -> Result<(u32, u32), ()> {
    if s.is_empty() {
        return Err(());
    }
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let start = port_number(a)?;
    if a == b {
        return Ok((start, start));
    }
    let end = port_number(b)?;
    if end < start {
        return Err(());
    }
    Ok((start, end))
}

fn port_number(s: &str) -> Result<u32, ()> {
    let n: i64 = s.parse().map_err(|_| ())?;
    if !(0..=65535).contains(&n) {
        return Err(());
    }
    u32::try_from(n).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::parse_port;

    #[test]
    fn ports() {
        assert_eq!(parse_port("80").unwrap(), ["80/tcp"]);
        assert_eq!(parse_port("53/udp").unwrap(), ["53/udp"]);
        assert_eq!(parse_port("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(
            parse_port("8000-8002/tcp").unwrap(),
            ["8000/tcp", "8001/tcp", "8002/tcp"]
        );
        assert_eq!(parse_port("8080:80").unwrap(), ["80/tcp"]);
        assert_eq!(parse_port("127.0.0.1:8080:80").unwrap(), ["80/tcp"]);
        assert!(parse_port("80/foo").is_err());
        assert!(parse_port("70000").is_err());
        assert!(parse_port("x").is_err());
        assert!(parse_port("/tcp").is_err());
        assert!(parse_port("90-80").is_err());
        assert!(parse_port("1.2.3:80:80").is_err());
    }
}
