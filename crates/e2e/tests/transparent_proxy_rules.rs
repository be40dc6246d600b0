//! `kumactl install|uninstall transparent-proxy` against real iptables, in network namespaces
//! the test creates (the host's rules are never touched).
//!
//! Topology: namespace `app` (where the rules go) joined by a veth to namespace `peer`
//! (`10.77.0.1` / `10.77.0.2`, plus `10.77.0.3` and `10.77.0.4` on the peer; `fd77::1` / `fd77::2`). In
//! `app`, small TCP/UDP servers stand in for Envoy and kuma-dp on the redirect ports and
//! answer with their name and the connection's original destination (`SO_ORIGINAL_DST`);
//! in `peer`, "direct" servers answer what is not redirected. A connection's answer thus
//! says where iptables sent it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::netns::{Namespace, User, ensure_user};
use e2e::{Proc, binary, launched, wait_for};

/// The system Python: other users than root may run it (not a shim under /root).
const PYTHON: &str = "/usr/bin/python3";

/// Servers and clients, in Python (the namespaces have no Rust test process in them).
const NET_PY: &str = r#"
import socket, struct, sys, threading

def orig_dst(conn, v6):
    try:
        if v6:
            raw = conn.getsockopt(socket.IPPROTO_IPV6, 80, 64)
            return "[%s]:%d" % (socket.inet_ntop(socket.AF_INET6, raw[8:24]), struct.unpack("!H", raw[2:4])[0])
        raw = conn.getsockopt(socket.SOL_IP, 80, 16)
        return "%s:%d" % (socket.inet_ntoa(raw[4:8]), struct.unpack("!H", raw[2:4])[0])
    except Exception:
        return "-"

def listen(kind, host, port):
    v6 = ":" in host
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET,
                      socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if v6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((host, int(port)))
    if kind == "tcp":
        s.listen(64)
    return s, v6

def serve_tcp(tag, s, v6):
    while True:
        c, _ = s.accept()
        # The stand-ins name the original destination; "direct" servers only themselves.
        line = tag if tag.startswith("direct") else "%s %s" % (tag, orig_dst(c, v6))
        c.sendall((line + "\n").encode())
        c.close()

def serve_udp(tag, s):
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(("%s %s" % (tag, data.decode())).encode(), peer)

if sys.argv[1] == "serve":
    threads = []
    for spec in sys.argv[2:]:
        kind, tag, host, port = spec.split(",")
        s, v6 = listen(kind, host, port)
        t = threading.Thread(target=serve_tcp if kind == "tcp" else serve_udp,
                             args=(tag, s, v6) if kind == "tcp" else (tag, s), daemon=True)
        threads.append(t)
    for t in threads:
        t.start()
    print("ready", flush=True)
    threading.Event().wait()
else:
    kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        if kind == "tcp":
            src = (sys.argv[4], 0) if len(sys.argv) > 4 else None
            s = socket.create_connection((host, port), timeout=3, source_address=src)
            print(s.makefile().readline().strip())
        else:
            # Connected, as resolvers are: only an answer from (host, port) is received, so
            # the reply of a redirected query must come back translated.
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.settimeout(2)
            s.connect((host, port))
            s.send(b"query")
            print(s.recv(2048).decode())
    except OSError as e:
        print("ERR %s" % e)
"#;

/// The two namespaces, the script, and the servers of both sides.
struct Net {
    // Dropped first: the servers stop before their logs and namespaces go.
    _servers: Vec<Proc>,
    app: Namespace,
    peer: Namespace,
    dir: tempfile::TempDir,
}

impl Net {
    /// `tag`: a few letters naming the test (names must differ between tests running at
    /// once).
    fn new(tag: &str, ipv6: bool) -> Self {
        let id = std::process::id() % 100_000;
        let app = Namespace::new(&format!("tp-{tag}-app-{id}"));
        let peer = Namespace::new(&format!("tp-{tag}-peer-{id}"));
        let (mut here, mut there) = (
            vec!["10.77.0.1/24"],
            vec!["10.77.0.2/24", "10.77.0.3/24", "10.77.0.4/24"],
        );
        if ipv6 {
            here.push("fd77::1/64");
            there.push("fd77::2/64");
        }
        app.veth(&peer, &format!("t{tag}{id}"), &here, &there);
        app.set_resolv_conf("nameserver 10.77.0.2\n");
        let dir = tempfile::tempdir().expect("temp dir");
        // The kuma-dp user runs the script too.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod temp dir");
        std::fs::write(dir.path().join("net.py"), NET_PY).expect("net.py");
        let mut app_specs = vec![
            "tcp,outbound,127.0.0.1,15001",
            "tcp,inbound,0.0.0.0,15006",
            "tcp,direct-in,0.0.0.0,2222",
        ];
        // kuma-dp's DNS runs as the kuma-dp user (the conntrack zone rules match its uid).
        let dns_specs = ["udp,dns,127.0.0.1,15053", "tcp,dns-tcp,127.0.0.1,15053"];
        let mut peer_specs = vec![
            "tcp,direct,0.0.0.0,8080",
            "tcp,direct,0.0.0.0,8081",
            // One UDP socket per address: it answers from the address it was asked at.
            "udp,direct-dns,10.77.0.2,53",
            "udp,direct-dns,10.77.0.3,53",
            "tcp,direct-dns-tcp,0.0.0.0,53",
        ];
        if ipv6 {
            app_specs.push("tcp,outbound,::1,15001");
            peer_specs.push("tcp,direct,::,8080");
        }
        let servers = vec![
            serve(&app, None, dir.path(), "app", &app_specs),
            serve(
                &app,
                Some(&kuma_dp_user()),
                dir.path(),
                "app-dns",
                &dns_specs,
            ),
            serve(&peer, None, dir.path(), "peer", &peer_specs),
        ];
        Self {
            app,
            peer,
            dir,
            _servers: servers,
        }
    }

    fn script(&self) -> std::path::PathBuf {
        self.dir.path().join("net.py")
    }

    /// A client in `ns`, as `user` (root when `None`): what the server answered, or `ERR ...`.
    fn client(&self, ns: &Namespace, user: Option<&User>, args: &[&str]) -> String {
        let exec = ns.exec();
        let launcher: Vec<&str> = exec.iter().map(String::as_str).collect();
        let mut cmd = match user {
            Some(u) => u.command(&launcher, PYTHON),
            None => launched(&launcher, PYTHON),
        };
        let out = cmd.arg(self.script()).args(args).output().expect(PYTHON);
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if stdout.is_empty() {
            return format!("NO OUTPUT: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        stdout
    }

    /// `kumactl <args>` in the app namespace: (success, stdout, stderr).
    fn kumactl(&self, args: &[&str]) -> (bool, String, String) {
        let exec = self.app.exec();
        let launcher: Vec<&str> = exec.iter().map(String::as_str).collect();
        let out = launched(&launcher, binary("kumactl"))
            .args(args)
            .output()
            .expect("kumactl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `iptables-save` (or `ip6tables-save`) of the app namespace without the comment
    /// lines (generated-by header, completed-on footer) and with counters zeroed.
    fn save(&self, tool: &str) -> String {
        let out = self.app.output(&[tool]);
        assert!(out.status.success(), "{tool}: {:?}", out);
        normalize(&String::from_utf8_lossy(&out.stdout))
    }

    /// Rules of someone else, in nat and filter, that the install and uninstall must keep.
    fn preexisting_rules(&self, tool_restore: &str, addr: &str) {
        let input = format!(
            "*filter\n-A INPUT -p tcp --dport 9999 -j ACCEPT\nCOMMIT\n*nat\n:USER_NAT - [0:0]\n-A OUTPUT -d {addr} -j USER_NAT\n-A USER_NAT -j RETURN\nCOMMIT\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", self.app.name(), tool_restore, "--noflush"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("iptables-restore");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("writing rules");
        assert!(child.wait().expect("iptables-restore").success());
    }
}

fn serve(ns: &Namespace, user: Option<&User>, dir: &Path, name: &str, specs: &[&str]) -> Proc {
    let exec = ns.exec();
    let launcher: Vec<&str> = exec.iter().map(String::as_str).collect();
    let mut cmd = match user {
        Some(u) => u.command(&launcher, PYTHON),
        None => launched(&launcher, PYTHON),
    };
    cmd.arg("-u")
        .arg(dir.join("net.py"))
        .arg("serve")
        .args(specs);
    let proc = Proc::spawn(
        &format!("servers in {name}"),
        cmd,
        dir.join(format!("{name}.log")),
    )
    .expect("python3 servers");
    wait_for(
        &format!("the servers in {name} listening"),
        Duration::from_secs(10),
        || proc.log_text().contains("ready").then_some(()),
    );
    proc
}

fn normalize(save: &str) -> String {
    save.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            // `:CHAIN POLICY [packets:bytes]` -> counters zeroed.
            match (l.starts_with(':'), l.rfind(" [")) {
                (true, Some(i)) => format!("{} [0:0]", &l[..i]),
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The test's kuma-dp user (created once on the machine, kept).
fn kuma_dp_user() -> User {
    ensure_user("kuma-dp-test")
}

#[test]
fn install_redirects_tcp_and_dns_and_uninstall_restores_the_rules() {
    let net = Net::new("a", false);
    let user = kuma_dp_user();
    let uid = user.uid.to_string();
    net.preexisting_rules("iptables-restore", "192.0.2.10/32");
    let before = net.save("iptables-save");
    assert!(before.contains("USER_NAT"), "{before}");

    // Before the install nothing is redirected.
    assert_eq!(
        net.client(&net.app, None, &["tcp", "10.77.0.2", "8080"]),
        "direct"
    );

    // A missing user is refused, naming it, and changes nothing.
    let (ok, _, err) = net.kumactl(&[
        "install",
        "transparent-proxy",
        "--kuma-dp-user",
        "no-such-user-for-tp",
    ]);
    assert!(!ok);
    assert!(err.contains("'no-such-user-for-tp'"), "{err}");
    assert_eq!(net.save("iptables-save"), before);

    let install = [
        "install",
        "transparent-proxy",
        "--kuma-dp-user",
        user.name.as_str(),
        "--redirect-dns",
        "--exclude-inbound-ports",
        "2222",
        "--exclude-outbound-ports",
        "8081",
        "--exclude-outbound-ips",
        "10.77.0.4/32",
        "--ip-family-mode",
        "ipv4",
    ];

    // --dry-run prints the rules and changes nothing.
    let mut dry = install.to_vec();
    dry.push("--dry-run");
    let (ok, out, err) = net.kumactl(&dry);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("### IPv4 ###\n* raw\n") && out.contains("\n* nat\n-N KUMA_MESH_INBOUND\n"),
        "{out}"
    );
    assert!(
        out.contains("-d 10.77.0.2 -p udp --dport 53 -j REDIRECT --to-ports 15053"),
        "{out}"
    );
    assert_eq!(net.save("iptables-save"), before);

    let (ok, out, err) = net.kumactl(&install);
    assert!(ok, "install failed: {err}\n{out}");
    assert!(
        out.contains("transparent proxy setup completed successfully"),
        "{out}"
    );
    let after = net.save("iptables-save");
    for chain in [
        "KUMA_MESH_INBOUND",
        "KUMA_MESH_OUTBOUND",
        "KUMA_MESH_INBOUND_REDIRECT",
        "KUMA_MESH_OUTBOUND_REDIRECT",
    ] {
        assert!(
            after.contains(&format!("\n:{chain} - [0:0]")),
            "{chain}:\n{after}"
        );
    }
    for jump in [
        "-A PREROUTING -p tcp -m comment --comment \"kuma/mesh/transparent/proxy/redirect inbound TCP traffic to our custom chain for processing\" -j KUMA_MESH_INBOUND",
        "-A OUTPUT -p tcp -m comment --comment \"kuma/mesh/transparent/proxy/redirect outbound TCP traffic to our custom chain for processing\" -j KUMA_MESH_OUTBOUND",
    ] {
        assert!(after.contains(jump), "{jump}:\n{after}");
    }
    assert!(
        after.contains(&format!("-m owner --uid-owner {uid} -j RETURN")),
        "{after}"
    );
    // DNS conntrack zones are split in the raw table.
    assert!(
        after.contains("-j CT --zone 2") && after.contains("-s 10.77.0.2/32 -p udp"),
        "{after}"
    );
    // Someone else's rules are still there.
    assert!(after.contains("-A USER_NAT -j RETURN") && after.contains("--dport 9999 -j ACCEPT"));

    // Outbound TCP of the application (root) lands on the outbound port, with its original
    // destination; kuma-dp's own and excluded ports go out directly.
    assert_eq!(
        net.client(&net.app, None, &["tcp", "10.77.0.2", "8080"]),
        "outbound 10.77.0.2:8080"
    );
    assert_eq!(
        net.client(&net.app, Some(&user), &["tcp", "10.77.0.2", "8080"]),
        "direct"
    );
    assert_eq!(
        net.client(&net.app, None, &["tcp", "10.77.0.2", "8081"]),
        "direct"
    );
    assert_eq!(
        net.client(&net.app, None, &["tcp", "10.77.0.4", "8080"]),
        "direct"
    );
    assert_eq!(
        net.client(&net.app, None, &["tcp", "10.77.0.3", "8080"]),
        "outbound 10.77.0.3:8080"
    );
    // Loopback, as Kuma: kuma-dp calling the host's own address goes to the inbound port
    // (excluded inbound ports do not apply), but not from the inbound passthrough source
    // 127.0.0.6; other users' loopback traffic is left alone.
    assert_eq!(
        net.client(&net.app, Some(&user), &["tcp", "10.77.0.1", "2222"]),
        "inbound 10.77.0.1:2222"
    );
    assert_eq!(
        net.client(
            &net.app,
            Some(&user),
            &["tcp", "10.77.0.1", "2222", "127.0.0.6"]
        ),
        "direct-in"
    );
    assert_eq!(
        net.client(&net.app, None, &["tcp", "10.77.0.1", "2222"]),
        "direct-in"
    );
    assert_eq!(
        net.client(&net.app, None, &["tcp", "127.0.0.1", "2222"]),
        "direct-in"
    );
    // Inbound TCP lands on the inbound port, but for the excluded port.
    assert_eq!(
        net.client(&net.peer, None, &["tcp", "10.77.0.1", "8080"]),
        "inbound 10.77.0.1:8080"
    );
    assert_eq!(
        net.client(&net.peer, None, &["tcp", "10.77.0.1", "2222"]),
        "direct-in"
    );
    // DNS to the resolv.conf nameserver lands on the DNS port (UDP and TCP); kuma-dp's own
    // queries and queries to another server go out.
    assert_eq!(
        net.client(&net.app, None, &["udp", "10.77.0.2", "53"]),
        "dns query"
    );
    assert_eq!(
        net.client(&net.app, None, &["tcp", "10.77.0.2", "53"]),
        "dns-tcp 10.77.0.2:53"
    );
    assert_eq!(
        net.client(&net.app, Some(&user), &["udp", "10.77.0.2", "53"]),
        "direct-dns query"
    );
    assert_eq!(
        net.client(&net.app, Some(&user), &["tcp", "10.77.0.2", "53"]),
        "direct-dns-tcp"
    );
    assert_eq!(
        net.client(&net.app, None, &["udp", "10.77.0.3", "53"]),
        "direct-dns query"
    );

    // A second install refuses and changes nothing.
    let (ok, out, err) = net.kumactl(&install);
    assert!(!ok, "{out}");
    assert!(
        err.contains("already installed") && err.contains("kumactl uninstall transparent-proxy"),
        "{err}"
    );
    assert_eq!(net.save("iptables-save"), after);

    // Uninstall --dry-run changes nothing; uninstall restores exactly the rules of before.
    let (ok, out, err) = net.kumactl(&["uninstall", "transparent-proxy", "--dry-run"]);
    assert!(ok, "{err}");
    assert!(out.contains("-X KUMA_MESH_OUTBOUND"), "{out}");
    assert_eq!(net.save("iptables-save"), after);
    let (ok, out, err) = net.kumactl(&["uninstall", "transparent-proxy"]);
    assert!(ok, "uninstall failed: {err}\n{out}");
    assert_eq!(net.save("iptables-save"), before);
    assert_eq!(
        net.client(&net.app, None, &["tcp", "10.77.0.2", "8080"]),
        "direct"
    );
    assert_eq!(
        net.client(&net.app, None, &["udp", "10.77.0.2", "53"]),
        "direct-dns query"
    );

    // A second uninstall is a no-op.
    let (ok, out, err) = net.kumactl(&["uninstall", "transparent-proxy"]);
    assert!(ok, "{err}");
    assert!(out.contains("No cleanup necessary"), "{out}");
    assert_eq!(net.save("iptables-save"), before);
}

#[test]
fn dualstack_installs_the_same_rules_with_ip6tables() {
    let net = Net::new("b", true);
    let user = kuma_dp_user();
    net.preexisting_rules("iptables-restore", "192.0.2.10/32");
    net.preexisting_rules("ip6tables-restore", "2001:db8::10/128");
    let (before4, before6) = (net.save("iptables-save"), net.save("ip6tables-save"));

    // ipv4 mode leaves ip6tables alone.
    let (ok, out, err) = net.kumactl(&[
        "install",
        "transparent-proxy",
        "--kuma-dp-user",
        &user.name,
        "--ip-family-mode",
        "ipv4",
    ]);
    assert!(ok, "{err}\n{out}");
    assert_eq!(net.save("ip6tables-save"), before6);
    assert_ne!(net.save("iptables-save"), before4);
    let (ok, _, err) = net.kumactl(&["uninstall", "transparent-proxy"]);
    assert!(ok, "{err}");
    assert_eq!(net.save("iptables-save"), before4);

    // dualstack (the default) installs both families.
    let (ok, out, err) =
        net.kumactl(&["install", "transparent-proxy", "--kuma-dp-user", &user.name]);
    assert!(ok, "{err}\n{out}");
    assert!(out.contains("[ip6tables] installed"), "{out}");
    let after6 = net.save("ip6tables-save");
    assert!(
        after6.contains("-A KUMA_MESH_OUTBOUND -s ::6/128 -o lo"),
        "{after6}"
    );
    assert!(
        after6.contains("\n:KUMA_MESH_INBOUND_REDIRECT - [0:0]"),
        "{after6}"
    );
    // The inbound passthrough address is on the loopback.
    let lo = net.app.output(&["ip", "-6", "addr", "show", "dev", "lo"]);
    assert!(
        String::from_utf8_lossy(&lo.stdout).contains("inet6 ::6/128"),
        "{lo:?}"
    );
    // IPv6 outbound TCP of the application lands on the outbound port; kuma-dp's does not.
    assert_eq!(
        net.client(&net.app, None, &["tcp", "fd77::2", "8080"]),
        "outbound [fd77::2]:8080"
    );
    assert_eq!(
        net.client(&net.app, Some(&user), &["tcp", "fd77::2", "8080"]),
        "direct"
    );
    assert_eq!(
        net.client(&net.app, None, &["tcp", "10.77.0.2", "8080"]),
        "outbound 10.77.0.2:8080"
    );

    let (ok, out, err) = net.kumactl(&["uninstall", "transparent-proxy"]);
    assert!(ok, "{err}");
    assert!(out.contains("[ip6tables] removed"), "{out}");
    assert_eq!(net.save("iptables-save"), before4);
    assert_eq!(net.save("ip6tables-save"), before6);
    assert_eq!(
        net.client(&net.app, None, &["tcp", "fd77::2", "8080"]),
        "direct"
    );
}

#[test]
fn a_fresh_namespace_is_left_without_tables() {
    // No nat or raw table before: the install creates them, the uninstall deletes them again
    // (empty, nf_tables backend), so iptables-save shows the same (nothing) afterwards.
    let net = Net::new("c", true);
    let user = kuma_dp_user();
    let (before4, before6) = (net.save("iptables-save"), net.save("ip6tables-save"));
    assert!(
        !before4.contains("*nat") && !before4.contains("*raw"),
        "{before4}"
    );
    let (ok, out, err) = net.kumactl(&[
        "install",
        "transparent-proxy",
        "--kuma-dp-user",
        &user.name,
        "--redirect-dns",
    ]);
    assert!(ok, "{err}\n{out}");
    // resolv.conf has an IPv4 nameserver only.
    assert!(err.contains("no IPv6 DNS servers found"), "{err}");
    assert!(net.save("iptables-save").contains("*raw"));
    assert!(net.save("ip6tables-save").contains("*nat"));
    let (ok, out, err) = net.kumactl(&["uninstall", "transparent-proxy"]);
    assert!(ok, "{err}\n{out}");
    assert_eq!(net.save("iptables-save"), before4);
    assert_eq!(net.save("ip6tables-save"), before6);
}
