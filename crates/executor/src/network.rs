//! The network of a RUN step.
//!
//! * [`Network::Isolated`] (the default, as BuildKit's): a network namespace
//!   of the step's own. Its only way out is `eth0`, a tap device served by
//!   [slirp4netns](https://github.com/rootless-containers/slirp4netns), a
//!   user-mode TCP/IP stack that runs on the host side and turns the step's
//!   connections into ordinary sockets of its own: outbound connections work
//!   (package mirrors, registries, the host's non-loopback addresses), but
//!   the host's loopback is another namespace's (`--disable-host-loopback`
//!   also refuses slirp's own alias of it), a raw socket sees only the
//!   step's own interfaces, and a port the step binds is bound in its own
//!   namespace. Nothing of the host changes: no interface, route or
//!   firewall rule is made, so root and rootless (where kiln is root of a
//!   user namespace of its own) work the same way.
//! * [`Network::Host`]: the host's namespace, unchanged
//!   (`--network=host`, which needs the `network.host` entitlement).
//! * [`Network::None`]: a fresh namespace with `lo` only (made by the
//!   helper itself).
//!
//! Namespaces come from a [`Pool`] that lives as long as the executor (one
//! build): a step takes one, or has one made (a namespace and a
//! slirp4netns process: about 20 ms), and gives it back when it is done, as
//! BuildKit's network providers do. A namespace serves one step at a time,
//! and is given back only when the step ended normally: by then every
//! process of the step is gone (its pid namespace is empty when its pid 1
//! has been reaped), so nothing it started still listens there. A
//! privileged step (`--security=insecure`, with `CAP_NET_ADMIN` in the
//! namespace) never gives its namespace back. Pools are per kiln process:
//! two builds never share a namespace.
//!
//! The namespace is made on a thread of its own (`unshare(CLONE_NEWNET)`
//! affects only the calling thread), kept open as a file descriptor, and
//! named by `/proc/<kiln>/fd/<n>` for slirp4netns and the helper, which
//! join it with `setns`; nothing is written to the filesystem. slirp4netns
//! reads `--exit-fd` on its stdin, a pipe whose other end only kiln holds:
//! it exits when kiln closes it or dies, however it dies.
//!
//! DNS: `/etc/resolv.conf` is what BuildKit writes for a network other than
//! the host's ([`legacy_resolv_conf`], a port of its
//! `TransformForLegacyNw`): the host's file (systemd-resolved's upstream
//! file when the host's only names its `127.0.0.53` stub), without loopback
//! nameservers, and Google's public servers when none is left. The
//! step's queries then leave through slirp4netns like any other packet.
//! slirp4netns' own DNS forwarder (`10.0.2.3`, which would relay to the
//! host's first nameserver, loopback or not) is turned off: no loopback
//! service of the host is reachable, a resolver included. IPv6 is off, as
//! on Docker's default bridge, so IPv6 nameservers are dropped too.

use std::fs::File;
use std::io::{self, Read as _};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use nix::sched::CloneFlags;

use crate::error::ExecError;
use crate::spec::Network;

/// The user-mode network stack serving isolated namespaces.
const SLIRP4NETNS: &str = "slirp4netns";
/// The device tap interfaces are made with.
const TUN: &str = "/dev/net/tun";
/// nftables' command, for the egress guard.
const NFT: &str = "nft";
/// The step's interface name, as under Docker and BuildKit.
const INTERFACE: &str = "eth0";
/// slirp4netns' largest MTU (rootlesskit's choice: far faster than 1500).
const MTU: u32 = 65520;
/// How long slirp4netns may take to configure a namespace.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The subnets the namespaces may use (`/24`, slirp4netns' default first):
/// the first one that overlaps no route of the host and no nameserver.
const SUBNETS: [[u8; 3]; 6] = [
    [10, 0, 2],
    [10, 0, 3],
    [10, 200, 2],
    [172, 31, 254],
    [192, 168, 254],
    [100, 127, 254],
];

/// Network namespaces with slirp4netns attached, ready for the next step.
#[derive(Default)]
pub(crate) struct Pool {
    free: Mutex<Vec<Netns>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let free = self.free.lock().map(|v| v.len()).unwrap_or(0);
        f.debug_struct("Pool").field("free", &free).finish()
    }
}

impl Pool {
    /// A namespace for a step with `network`, or `None` when it does not
    /// use the pool (host, none).
    pub(crate) fn lease(&self, network: Network) -> Result<Option<Lease<'_>>, ExecError> {
        if network != Network::Isolated {
            return Ok(None);
        }
        let reused = {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            let mut found = None;
            while let Some(mut ns) = free.pop() {
                if ns.alive() {
                    found = Some(ns);
                    break;
                }
            }
            found
        };
        let ns = match reused {
            Some(ns) => ns,
            None => Netns::create()?,
        };
        Ok(Some(Lease {
            pool: self,
            ns: Some(ns),
            give_back: false,
        }))
    }
}

/// One namespace, used by one step at a time; dropped, it goes back to the
/// pool only if [`Lease::give_back`] was called.
pub(crate) struct Lease<'a> {
    pool: &'a Pool,
    ns: Option<Netns>,
    give_back: bool,
}

impl Lease<'_> {
    /// The path the helper joins the namespace by.
    pub(crate) fn path(&self) -> Option<PathBuf> {
        self.ns.as_ref().map(Netns::path)
    }

    /// The step ended normally (all its processes are gone) and was not
    /// privileged: the namespace may serve the next step.
    pub(crate) fn give_back(&mut self) {
        self.give_back = true;
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(ns) = self.ns.take()
            && self.give_back
        {
            self.pool
                .free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(ns);
        }
    }
}

/// A network namespace and the slirp4netns process serving it.
struct Netns {
    ns: File,
    slirp: Child,
    /// Never written: slirp4netns exits when this end closes.
    exit: Option<ChildStdin>,
}

impl Netns {
    fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.ns.as_raw_fd()
        ))
    }

    fn alive(&mut self) -> bool {
        matches!(self.slirp.try_wait(), Ok(None))
    }

    fn create() -> Result<Netns, ExecError> {
        let fail = |m: String| ExecError::Network(m);
        let ns = std::thread::spawn(new_namespace)
            .join()
            .map_err(|_| fail("making a network namespace: the thread panicked".to_owned()))?
            .map_err(|e| fail(format!("making a network namespace: {e}")))?;
        let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let subnet = choose_subnet(&routes, &nameservers(&resolv)).ok_or_else(|| {
            fail(format!(
                "no subnet for RUN steps: each of {} overlaps a route of the host",
                SUBNETS
                    .iter()
                    .map(|s| format!("{}.{}.{}.0/24", s[0], s[1], s[2]))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        // slirp4netns makes the tap device through /dev/net/tun: a user
        // (rootless) needs it open to all, as udev leaves it (mode 0666).
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(TUN)
            .map_err(|e| {
                fail(format!(
                    "RUN steps get a network of their own through a tap device, and {TUN} \
                     cannot be opened: {e} (it should be mode 0666, as udev makes it: \
                     chmod 0666 {TUN} as root); without it, use --network=none, or \
                     --network=host with --allow network.host"
                ))
            })?;
        let path = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            ns.as_raw_fd()
        ));
        let mut cmd = Command::new(SLIRP4NETNS);
        cmd.arg("--configure")
            .arg(format!("--mtu={MTU}"))
            .arg(format!("--cidr={subnet}/24"))
            .args([
                "--disable-host-loopback",
                "--disable-dns",
                "--enable-sandbox",
                "--enable-seccomp",
                "--exit-fd=0",
                "--ready-fd=1",
                "--netns-type=path",
            ])
            .arg(&path)
            .arg(INTERFACE)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut slirp = cmd.spawn().map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                fail(format!(
                    "RUN steps get a network of their own through {SLIRP4NETNS}, which is not \
                     installed (Debian: apt-get install {SLIRP4NETNS}); without it, use \
                     --network=none, or --network=host with --allow network.host"
                ))
            } else {
                fail(format!("starting {SLIRP4NETNS}: {e}"))
            }
        })?;
        let exit = slirp.stdin.take();
        // stdout is the ready fd: slirp4netns writes "1" there once the
        // namespace is configured (before that, at most a warning without
        // a "1"); kept drained afterwards.
        let (tx, rx) = mpsc::channel();
        if let Some(mut out) = slirp.stdout.take() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                let mut tx = Some(tx);
                loop {
                    match out.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if buf[..n].contains(&b'1')
                                && let Some(tx) = tx.take()
                            {
                                let _ = tx.send(());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            });
        }
        // stderr: the last few KiB, for the error message.
        let log = Arc::new(Mutex::new(Vec::new()));
        let log_thread = slirp.stderr.take().map(|mut err| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                loop {
                    match err.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                            l.extend_from_slice(&buf[..n]);
                            let excess = l.len().saturating_sub(4096);
                            l.drain(..excess);
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            })
        });
        let netns = Netns { ns, slirp, exit };
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(()) => {
                guard(&netns.ns, subnet).map_err(fail)?;
                Ok(netns)
            }
            Err(e) => {
                let why = match e {
                    mpsc::RecvTimeoutError::Timeout => {
                        format!("not ready after {} s", READY_TIMEOUT.as_secs())
                    }
                    mpsc::RecvTimeoutError::Disconnected => "it exited".to_owned(),
                };
                drop(netns);
                if let Some(t) = log_thread {
                    let _ = t.join();
                }
                let log = log.lock().unwrap_or_else(|e| e.into_inner());
                let log = String::from_utf8_lossy(&log);
                Err(fail(format!(
                    "{SLIRP4NETNS} could not set up the network of the RUN step ({why}): {}",
                    log.trim()
                )))
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        drop(self.exit.take());
        let _ = self.slirp.kill();
        let _ = self.slirp.wait();
    }
}

/// The egress guard of `eth0` (nftables, `netdev` family, `egress` hook:
/// Linux 5.16, nftables 1.0.1), for the hole a user-mode stack leaves: with
/// `CAP_NET_RAW` (one of Docker's default capabilities), a step can write a
/// hand-made frame to `eth0` addressed to `127.0.0.1` (the step's kernel
/// keeps such packets on its `lo`, a packet socket does not ask it), and
/// slirp4netns would then connect to the host's loopback for it
/// (`--disable-host-loopback` only refuses its own alias of the host,
/// the gateway address). The egress hook sees every frame sent on the
/// device, packet sockets' included (with `PACKET_QDISC_BYPASS` too), and
/// reads the frame's own bytes (`@ll`), never `skb->protocol`, which a
/// packet socket chooses. Only ARP and IPv4 frames leave, and no IPv4
/// packet to `0.0.0.0/8` or `127.0.0.0/8` (the host itself, to a socket of
/// the host) or to the slirp subnet (its aliases of the host: gateway, DNS);
/// anything the rules cannot read is dropped by the policy. The step
/// cannot change the rules: it has no `CAP_NET_ADMIN` (a privileged step,
/// which has, never gives its namespace back).
fn guard(ns: &File, subnet: Ipv4Addr) -> Result<(), String> {
    let [a, b, c, _] = subnet.octets();
    let rules = format!(
        "table netdev kiln {{\n\
         \tchain egress {{\n\
         \t\ttype filter hook egress device \"{INTERFACE}\" priority 0; policy drop;\n\
         \t\t@ll,96,16 0x0806 accept\n\
         \t\t@ll,96,16 != 0x0800 drop\n\
         \t\t@ll,240,8 0 drop\n\
         \t\t@ll,240,8 127 drop\n\
         \t\t@ll,240,24 0x{a:02x}{b:02x}{c:02x} drop\n\
         \t\t@ll,96,16 0x0800 accept\n\
         \t}}\n\
         }}\n"
    );
    let ns = ns
        .try_clone()
        .map_err(|e| format!("the network namespace: {e}"))?;
    // nft runs in the namespace: spawned from a thread that joined it.
    let out = std::thread::spawn(move || -> Result<std::process::Output, String> {
        nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("joining the network namespace: {e}"))?;
        let mut child = Command::new(NFT)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    format!(
                        "the network of RUN steps is guarded with nftables, and {NFT} is not \
                         installed (Debian: apt-get install nftables); without it, use \
                         --network=none, or --network=host with --allow network.host"
                    )
                } else {
                    format!("starting {NFT}: {e}")
                }
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write as _;
            stdin
                .write_all(rules.as_bytes())
                .map_err(|e| format!("writing to {NFT}: {e}"))?;
        }
        child
            .wait_with_output()
            .map_err(|e| format!("waiting for {NFT}: {e}"))
    })
    .join()
    .map_err(|_| "installing the egress guard: the thread panicked".to_owned())??;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "installing the egress guard of RUN steps' network with {NFT} failed ({}): {} \
             (it needs Linux 5.16 or later with nftables' egress hook, and nftables 1.0.1; \
             without them, use --network=none, or --network=host with --allow network.host)",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs on a thread of its own, which ends right after: a new network
/// namespace with `lo` up, as a file descriptor.
fn new_namespace() -> io::Result<File> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    crate::sys::loopback_up()?;
    File::open("/proc/thread-self/ns/net")
}

/// In the helper: joins the namespace at `path`.
pub(crate) fn join(path: &Path) -> Result<(), String> {
    let f = File::open(path)
        .map_err(|e| format!("opening the network namespace {}: {e}", path.display()))?;
    nix::sched::setns(&f, CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("joining the network namespace: {e}"))
}

/// `/proc/net/route` as (destination, mask) pairs.
fn routes(table: &str) -> Vec<(u32, u32)> {
    let field = |s: &str| u32::from_str_radix(s, 16).ok();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // The kernel prints the network-order words as host integers.
            let dest = field(f.get(1)?)?;
            let mask = field(f.get(7)?)?;
            Some((
                u32::from(Ipv4Addr::from(dest.to_ne_bytes())),
                u32::from(Ipv4Addr::from(mask.to_ne_bytes())),
            ))
        })
        .collect()
}

/// The first of [`SUBNETS`] that overlaps no route of `route_table` (the
/// default route aside) and holds none of `avoid`.
fn choose_subnet(route_table: &str, avoid: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    let routes = routes(route_table);
    SUBNETS.iter().find_map(|s| {
        let net = u32::from(Ipv4Addr::new(s[0], s[1], s[2], 0));
        let mask = 0xffff_ff00u32;
        let overlaps = routes
            .iter()
            .filter(|(_, m)| *m != 0)
            .any(|(d, m)| (d & m & mask) == (net & m & mask))
            || avoid.iter().any(|a| u32::from(*a) & mask == net);
        (!overlaps).then(|| Ipv4Addr::from(net))
    })
}

/// The IPv4 nameservers of a resolv.conf.
fn nameservers(resolv: &str) -> Vec<Ipv4Addr> {
    resolv
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()?.parse().ok())?
        })
        .collect()
}

/// The content of the step's `/etc/resolv.conf` for `network`, from the
/// host's files.
pub(crate) fn resolv_conf(network: Network) -> String {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let host = read("/etc/resolv.conf").unwrap_or_default();
    match network {
        // The host's resolvers, loopback ones included, are reachable.
        Network::Host => host,
        Network::Isolated | Network::None => {
            // BuildKit's `resolvconfPath`: systemd-resolved's upstream list
            // when the host's file names only its stub (an absent file
            // reads as empty, as in BuildKit).
            let source = if nameserver_addrs(&host) == ["127.0.0.53"] {
                read("/run/systemd/resolve/resolv.conf").unwrap_or_default()
            } else {
                host
            };
            legacy_resolv_conf(&source)
        }
    }
}

fn nameserver_addrs(resolv: &str) -> Vec<&str> {
    resolv
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next())?
        })
        .collect()
}

/// BuildKit's `TransformForLegacyNw(ipv6=false)` and `Generate(false)`
/// (`util/resolvconf`): nameservers without loopback and IPv6 ones (the
/// step has no IPv6), Google's when none is left; the last `search` (or
/// `domain`), every `options`, unknown lines kept; comments and blank lines
/// dropped.
pub(crate) fn legacy_resolv_conf(host: &str) -> String {
    let mut servers: Vec<Ipv4Addr> = Vec::new();
    let mut search: Vec<&str> = Vec::new();
    let mut options: Vec<&str> = Vec::new();
    let mut other: Vec<&str> = Vec::new();
    for line in host.lines() {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [] => {}
            ["nameserver", addr, ..] => {
                // IPv6 addresses (with ':') and unparsable ones are dropped.
                if let Ok(a) = addr.parse::<Ipv4Addr>()
                    && !a.is_loopback()
                {
                    servers.push(a);
                }
            }
            ["nameserver"] | ["search"] | ["domain"] | ["options"] => {}
            ["search" | "domain", rest @ ..] => search = rest.to_vec(),
            ["options", rest @ ..] => options.extend_from_slice(rest),
            _ => other.push(line),
        }
    }
    if servers.is_empty() {
        servers = vec![Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(8, 8, 4, 4)];
    }
    let mut out = String::new();
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    for o in other {
        out.push_str(o);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_as_buildkit_writes_it() {
        // Loopback and IPv6 nameservers go; search, options and unknown
        // lines stay; comments go.
        let host = "# generated\nnameserver 127.0.0.53\nnameserver 10.0.0.1\nnameserver ::1\n\
                    nameserver 2001:db8::1\ndomain old\nsearch lan corp\noptions edns0\n\
                    options ndots:2\nsortlist 10.0.0.0\n";
        assert_eq!(
            legacy_resolv_conf(host),
            "nameserver 10.0.0.1\nsearch lan corp\noptions edns0 ndots:2\nsortlist 10.0.0.0\n"
        );
        // Nothing left: Google's public servers (IPv4 only: no IPv6 here).
        assert_eq!(
            legacy_resolv_conf("nameserver 127.0.0.1\nsearch x\n"),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\nsearch x\n"
        );
        assert_eq!(
            legacy_resolv_conf(""),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        assert_eq!(
            nameserver_addrs("# nameserver 1.1.1.1\nnameserver 127.0.0.53\n"),
            ["127.0.0.53"]
        );
    }

    #[test]
    fn subnet_avoids_the_hosts_routes() {
        let header =
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n";
        // default via 192.0.2.1, 192.0.2.0/24 on eth0 (little-endian words)
        let plain = format!(
            "{header}eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
             eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        );
        assert_eq!(choose_subnet(&plain, &[]), Some(Ipv4Addr::new(10, 0, 2, 0)));
        // 10.0.0.0/8 on the host: the 10.x candidates overlap it.
        let tens = format!("{plain}eth1\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n");
        assert_eq!(
            choose_subnet(&tens, &[]),
            Some(Ipv4Addr::new(172, 31, 254, 0))
        );
        // A nameserver inside a candidate.
        assert_eq!(
            choose_subnet(&plain, &[Ipv4Addr::new(10, 0, 2, 3)]),
            Some(Ipv4Addr::new(10, 0, 3, 0))
        );
        assert_eq!(
            nameservers("nameserver 10.0.2.3\nnameserver ::1\n"),
            [Ipv4Addr::new(10, 0, 2, 3)]
        );
    }
}
