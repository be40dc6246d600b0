//! The iptables rules of the transparent proxy, as `iptables-restore` input: a pure function
//! of a [`Plan`] (one IP family, everything resolved beforehand).
//!
//! The rules are Kuma 2.14.3's (`pkg/transparentproxy/iptables/builder`), in the nat table:
//! - `PREROUTING`: inbound TCP jumps to `KUMA_MESH_INBOUND`, which returns the excluded
//!   inbound ports and sends the rest to `KUMA_MESH_INBOUND_REDIRECT` (`REDIRECT` to the
//!   inbound port, 15006).
//! - `OUTPUT`: TCP jumps to `KUMA_MESH_OUTBOUND`, which returns the excluded outbound ports,
//!   traffic from the inbound passthrough source (`127.0.0.6` / `::6`) on the loopback,
//!   loopback traffic of other users than kuma-dp, all of kuma-dp's other traffic and traffic
//!   to `127.0.0.1` / `::1`; kuma-dp's loopback traffic to another local address goes to
//!   `KUMA_MESH_INBOUND_REDIRECT` (Envoy calling its own inbound); everything else goes to
//!   `KUMA_MESH_OUTBOUND_REDIRECT` (`REDIRECT` to the outbound port, 15001).
//! - DNS (`--redirect-dns` / `--redirect-all-dns-traffic`): rules inserted at the top of
//!   `OUTPUT`: kuma-dp's own UDP queries return first, then queries to the resolv.conf
//!   nameservers (or every query) are redirected to the DNS port; in the raw table,
//!   conntrack zones keep the application's redirected UDP queries (zone 2) apart from
//!   kuma-dp's own queries to the same servers (zone 1).
//!
//! Every rule carries a comment `kuma/mesh/transparent/proxy/<text>` with Kuma's text; the
//! uninstall finds the rules it must delete from the built-in chains by that prefix.
//!
//! One addition to Kuma: DNS over TCP to the same nameservers is redirected to the DNS port
//! too (kuma-dp answers TCP), except kuma-dp's own; Kuma 2.14.3 redirects UDP only.

use std::fmt::Write as _;
use std::net::IpAddr;

/// Prefix of the custom chains (`KUMA_MESH_INBOUND`...).
pub const CHAIN_PREFIX: &str = "KUMA_MESH";
/// Prefix of every rule comment.
pub const COMMENT_PREFIX: &str = "kuma/mesh/transparent/proxy";
/// `KUMA_MESH_INBOUND`.
pub const CHAIN_INBOUND: &str = "KUMA_MESH_INBOUND";
/// `KUMA_MESH_OUTBOUND`.
pub const CHAIN_OUTBOUND: &str = "KUMA_MESH_OUTBOUND";
/// `KUMA_MESH_INBOUND_REDIRECT`.
pub const CHAIN_INBOUND_REDIRECT: &str = "KUMA_MESH_INBOUND_REDIRECT";
/// `KUMA_MESH_OUTBOUND_REDIRECT`.
pub const CHAIN_OUTBOUND_REDIRECT: &str = "KUMA_MESH_OUTBOUND_REDIRECT";

/// The port of DNS.
const DNS_PORT: u16 = 53;
/// iptables truncates longer comments; Kuma cuts at 254 characters.
const MAX_COMMENT: usize = 254;

/// An IP family: iptables for IPv4, ip6tables for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// `IPv4` / `IPv6`.
    pub fn label(self) -> &'static str {
        match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        }
    }

    /// `iptables` / `ip6tables` (also the prefix of the `-save` and `-restore` tools).
    pub fn iptables(self) -> &'static str {
        match self {
            Family::Ipv4 => "iptables",
            Family::Ipv6 => "ip6tables",
        }
    }

    /// Whether `ip` belongs to this family.
    pub fn contains(self, ip: &IpAddr) -> bool {
        matches!(
            (self, ip),
            (Family::Ipv4, IpAddr::V4(_)) | (Family::Ipv6, IpAddr::V6(_))
        )
    }

    fn localhost(self) -> &'static str {
        match self {
            Family::Ipv4 => "127.0.0.1/32",
            Family::Ipv6 => "::1/128",
        }
    }

    /// The source address of Envoy's inbound passthrough (`127.0.0.6` / `::6`).
    fn inbound_passthrough(self) -> &'static str {
        match self {
            Family::Ipv4 => "127.0.0.6/32",
            Family::Ipv6 => "::6/128",
        }
    }
}

/// What DNS traffic is redirected to kuma-dp's DNS port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dns {
    /// None.
    Off,
    /// Queries to these nameservers (of `/etc/resolv.conf`, of the plan's family).
    Servers { port: u16, servers: Vec<IpAddr> },
    /// Every query to port 53.
    All { port: u16 },
}

/// Everything the rules of one family depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub family: Family,
    /// The uid of the user running kuma-dp and Envoy; its traffic is not captured.
    pub kuma_dp_uid: u32,
    /// Name of the loopback interface (`lo`).
    pub loopback: String,
    /// Redirect inbound TCP (`--redirect-inbound`).
    pub redirect_inbound: bool,
    /// `--redirect-inbound-port`.
    pub inbound_port: u16,
    /// `--exclude-inbound-ports`.
    pub exclude_inbound_ports: Vec<u16>,
    /// `--redirect-outbound-port`.
    pub outbound_port: u16,
    /// `--exclude-outbound-ports`.
    pub exclude_outbound_ports: Vec<u16>,
    /// `--exclude-inbound-ips` of this family (addresses or CIDRs, as given).
    pub exclude_inbound_ips: Vec<String>,
    /// `--exclude-outbound-ips` of this family (addresses or CIDRs, as given).
    pub exclude_outbound_ips: Vec<String>,
    pub dns: Dns,
    /// Split conntrack zones for UDP DNS in the raw table (Kuma's default with DNS
    /// redirection; off with `--skip-dns-conntrack-zone-split`).
    pub conntrack_zone_split: bool,
    /// Long flag names and section headers (`--verbose`).
    pub verbose: bool,
}

/// One token of a rule: a flag with its short and long spelling, or a literal.
#[derive(Clone, Copy)]
enum Tok<'a> {
    Flag(&'static str, &'static str),
    Lit(&'a str),
}

use Tok::{Flag, Lit};

const PROTO: Tok = Flag("-p", "--protocol");
const DPORT: Tok = Flag("--dport", "--destination-port");
const SRC: Tok = Flag("-s", "--source");
const DST: Tok = Flag("-d", "--destination");
const OUT_IF: Tok = Flag("-o", "--out-interface");
const MATCH: Tok = Flag("-m", "--match");
const JUMP: Tok = Flag("-j", "--jump");
const NOT: Tok = Lit("!");

struct Rule {
    chain: &'static str,
    /// 1-based position for `-I`; `None` appends.
    position: Option<u32>,
    comment: String,
    args: Vec<String>,
}

/// A chain's rules under construction; inserts get increasing positions, as Kuma numbers
/// them (the first inserted rule of a chain is 1, the next 2...).
struct Chain {
    name: &'static str,
    inserted: u32,
    rules: Vec<Rule>,
}

impl Chain {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            inserted: 0,
            rules: Vec::new(),
        }
    }

    fn append(&mut self, verbose: bool, comment: String, toks: &[Tok]) -> &mut Self {
        self.rules.push(Rule {
            chain: self.name,
            position: None,
            comment,
            args: render(verbose, toks),
        });
        self
    }

    fn insert(&mut self, verbose: bool, comment: String, toks: &[Tok]) -> &mut Self {
        self.inserted += 1;
        self.rules.push(Rule {
            chain: self.name,
            position: Some(self.inserted),
            comment,
            args: render(verbose, toks),
        });
        self
    }
}

fn render(verbose: bool, toks: &[Tok]) -> Vec<String> {
    toks.iter()
        .map(|t| match *t {
            Flag(short, long) => (if verbose { long } else { short }).to_string(),
            Lit(s) => s.to_string(),
        })
        .collect()
}

impl Rule {
    fn line(&self, verbose: bool) -> String {
        let mut line = String::new();
        match self.position {
            Some(p) => {
                let flag = if verbose { "--insert" } else { "-I" };
                let _ = write!(line, "{flag} {} {p}", self.chain);
            }
            None => {
                let flag = if verbose { "--append" } else { "-A" };
                let _ = write!(line, "{flag} {}", self.chain);
            }
        }
        let mut comment = format!("{COMMENT_PREFIX}/{}", self.comment);
        // All comments are ASCII, so a byte cut is a character cut.
        comment.truncate(MAX_COMMENT);
        let m = if verbose { "--match" } else { "-m" };
        let _ = write!(line, " {m} comment --comment {}", quote(&comment));
        for a in &self.args {
            line.push(' ');
            line.push_str(a);
        }
        line
    }
}

/// A double-quoted string as iptables-restore reads it.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The nat table of `plan` as `iptables-restore --noflush` input (ending with `COMMIT` and a
/// newline). Built-in chains get `-A`/`-I` rules, the four `KUMA_MESH_*` chains are created.
pub fn restore_input(plan: &Plan) -> String {
    let v = plan.verbose;
    let uid = plan.kuma_dp_uid.to_string();
    let uid = uid.as_str();
    let lo = plan.loopback.as_str();
    let localhost = plan.family.localhost();
    let passthrough = plan.family.inbound_passthrough();
    let ports = |ps: &[u16]| ps.iter().map(|p| p.to_string()).collect::<Vec<_>>();

    let mut prerouting = Chain::new("PREROUTING");
    let mut output = Chain::new("OUTPUT");
    let mut inbound = Chain::new(CHAIN_INBOUND);
    let mut outbound = Chain::new(CHAIN_OUTBOUND);
    let mut inbound_redirect = Chain::new(CHAIN_INBOUND_REDIRECT);
    let mut outbound_redirect = Chain::new(CHAIN_OUTBOUND_REDIRECT);

    // OUTPUT: excluded destinations, then DNS (all inserted at the top), then the jump to
    // KUMA_MESH_OUTBOUND.
    for ip in &plan.exclude_outbound_ips {
        output.insert(
            v,
            "skip further processing for configured IP addresses, ports and UIDs".into(),
            &[DST, Lit(ip), JUMP, Lit("RETURN")],
        );
    }
    let dns_port = match &plan.dns {
        Dns::Off => None,
        Dns::Servers { port, .. } | Dns::All { port } => Some(port.to_string()),
    };
    if let Some(dns_port) = &dns_port {
        let dns_port = dns_port.as_str();
        let d53 = DNS_PORT.to_string();
        let d53 = d53.as_str();
        output
            .insert(
                v,
                "return early for DNS traffic from kuma-dp".into(),
                &[
                    PROTO,
                    Lit("udp"),
                    DPORT,
                    Lit(d53),
                    MATCH,
                    Lit("owner"),
                    Lit("--uid-owner"),
                    Lit(uid),
                    JUMP,
                    Lit("RETURN"),
                ],
            )
            .append(
                v,
                format!(
                    "allow applications to perform DNS queries over TCP to port {DNS_PORT} without mesh redirection (only traffic not owned by UID {uid} (kuma-dp user))"
                ),
                &[
                    PROTO,
                    Lit("tcp"),
                    DPORT,
                    Lit(d53),
                    MATCH,
                    Lit("owner"),
                    NOT,
                    Lit("--uid-owner"),
                    Lit(uid),
                    JUMP,
                    Lit("RETURN"),
                ],
            );
        let redirect = [JUMP, Lit("REDIRECT"), Lit("--to-ports"), Lit(dns_port)];
        let not_kuma_dp = [MATCH, Lit("owner"), NOT, Lit("--uid-owner"), Lit(uid)];
        match &plan.dns {
            Dns::All { .. } => {
                output.insert(
                    v,
                    format!(
                        "redirect all DNS requests to the kuma-dp DNS proxy (listening on port {dns_port})"
                    ),
                    &[&[PROTO, Lit("udp"), DPORT, Lit(d53)][..], &redirect].concat(),
                );
                output.insert(
                    v,
                    format!(
                        "redirect all DNS requests over TCP to the kuma-dp DNS proxy (listening on port {dns_port})"
                    ),
                    &[&[PROTO, Lit("tcp"), DPORT, Lit(d53)][..], &not_kuma_dp, &redirect].concat(),
                );
            }
            Dns::Servers { servers, .. } => {
                for ip in servers {
                    let ip = ip.to_string();
                    output.insert(
                        v,
                        format!(
                            "redirect DNS requests to {ip} to the kuma-dp DNS proxy (listening on port {dns_port})"
                        ),
                        &[&[DST, Lit(&ip), PROTO, Lit("udp"), DPORT, Lit(d53)][..], &redirect]
                            .concat(),
                    );
                    output.insert(
                        v,
                        format!(
                            "redirect DNS requests over TCP to {ip} to the kuma-dp DNS proxy (listening on port {dns_port})"
                        ),
                        &[
                            &[DST, Lit(&ip), PROTO, Lit("tcp"), DPORT, Lit(d53)][..],
                            &not_kuma_dp,
                            &redirect,
                        ]
                        .concat(),
                    );
                }
            }
            Dns::Off => {}
        }
    }
    output.append(
        v,
        "redirect outbound TCP traffic to our custom chain for processing".into(),
        &[PROTO, Lit("tcp"), JUMP, Lit(CHAIN_OUTBOUND)],
    );

    prerouting.append(
        v,
        "redirect inbound TCP traffic to our custom chain for processing".into(),
        &[PROTO, Lit("tcp"), JUMP, Lit(CHAIN_INBOUND)],
    );

    // KUMA_MESH_INBOUND
    if plan.redirect_inbound {
        for ip in &plan.exclude_inbound_ips {
            inbound.append(
                v,
                "skip further processing for configured IP address".into(),
                &[SRC, Lit(ip), JUMP, Lit("RETURN")],
            );
        }
        for p in ports(&plan.exclude_inbound_ports) {
            inbound.append(
                v,
                format!("exclude inbound traffic from port {p} from redirection"),
                &[PROTO, Lit("tcp"), DPORT, Lit(&p), JUMP, Lit("RETURN")],
            );
        }
        inbound.append(
            v,
            "redirect all inbound traffic to the custom chain for processing".into(),
            &[PROTO, Lit("tcp"), JUMP, Lit(CHAIN_INBOUND_REDIRECT)],
        );
    } else {
        inbound.append(
            v,
            "inbound traffic redirection is disabled".into(),
            &[PROTO, Lit("tcp"), JUMP, Lit("RETURN")],
        );
    }

    // KUMA_MESH_OUTBOUND
    for p in ports(&plan.exclude_outbound_ports) {
        outbound.append(
            v,
            format!("exclude outbound traffic from port {p} from redirection"),
            &[PROTO, Lit("tcp"), DPORT, Lit(&p), JUMP, Lit("RETURN")],
        );
    }
    outbound
        .append(
            v,
            format!(
                "prevent traffic loops by ensuring traffic from the sidecar proxy (using {passthrough}) to loopback interface is not redirected again"
            ),
            &[SRC, Lit(passthrough), OUT_IF, Lit(lo), JUMP, Lit("RETURN")],
        )
        .append(
            v,
            format!(
                "redirect outbound TCP traffic destined for loopback interface, but not targeting address {localhost}, and owned by UID {uid} (kuma-dp user) to {CHAIN_INBOUND_REDIRECT} chain for proper handling"
            ),
            &[
                PROTO,
                Lit("tcp"),
                OUT_IF,
                Lit(lo),
                NOT,
                DST,
                Lit(localhost),
                MATCH,
                Lit("owner"),
                Lit("--uid-owner"),
                Lit(uid),
                JUMP,
                Lit(CHAIN_INBOUND_REDIRECT),
            ],
        )
        .append(
            v,
            format!(
                "return outbound TCP traffic destined for loopback interface, owned by any UID other than {uid} (kuma-dp user)"
            ),
            &[
                PROTO,
                Lit("tcp"),
                OUT_IF,
                Lit(lo),
                MATCH,
                Lit("owner"),
                NOT,
                Lit("--uid-owner"),
                Lit(uid),
                JUMP,
                Lit("RETURN"),
            ],
        )
        .append(
            v,
            format!("return outbound traffic owned by UID {uid} (kuma-dp user)"),
            &[
                MATCH,
                Lit("owner"),
                Lit("--uid-owner"),
                Lit(uid),
                JUMP,
                Lit("RETURN"),
            ],
        )
        .append(
            v,
            format!("return traffic destined for localhost ({localhost}) to avoid redirection"),
            &[DST, Lit(localhost), JUMP, Lit("RETURN")],
        )
        .append(
            v,
            "redirect all other outbound traffic to our custom chain for further processing"
                .into(),
            &[JUMP, Lit(CHAIN_OUTBOUND_REDIRECT)],
        );

    for (chain, port) in [
        (&mut inbound_redirect, plan.inbound_port),
        (&mut outbound_redirect, plan.outbound_port),
    ] {
        let p = port.to_string();
        chain.append(
            v,
            format!("redirect TCP traffic to envoy (port {port})"),
            &[
                PROTO,
                Lit("tcp"),
                JUMP,
                Lit("REDIRECT"),
                Lit("--to-ports"),
                Lit(&p),
            ],
        );
    }

    let custom = [inbound, outbound, inbound_redirect, outbound_redirect];
    let nat = table("nat", &[&prerouting, &output], &custom, v);
    let tables: Vec<String> = [raw_table(plan), nat].into_iter().flatten().collect();
    let mut text = tables.join(if v { "\n\n" } else { "\n" });
    text.push('\n');
    text
}

/// One table as Kuma renders it: `* <name>`, the custom chains (`-N`), the rules of the
/// built-in chains then of the custom ones, `COMMIT`; `None` without any rule.
fn table(name: &str, builtin: &[&Chain], custom: &[Chain], v: bool) -> Option<String> {
    let new_chain = if v { "--new-chain" } else { "-N" };
    let mut chain_lines: Vec<String> = custom
        .iter()
        .map(|c| format!("{new_chain} {}", c.name))
        .collect();
    let mut rule_lines: Vec<String> = builtin
        .iter()
        .copied()
        .chain(custom.iter())
        .flat_map(|c| c.rules.iter().map(|r| r.line(v)))
        .collect();
    if rule_lines.is_empty() {
        return None;
    }
    if v {
        if !chain_lines.is_empty() {
            chain_lines.insert(0, "# Custom Chains:".into());
        }
        rule_lines.insert(0, "# Rules:".into());
    }
    let mut sections = vec![format!("* {name}")];
    if !chain_lines.is_empty() {
        sections.push(chain_lines.join("\n"));
    }
    sections.push(rule_lines.join("\n"));
    sections.push("COMMIT".into());
    Some(sections.join(if v { "\n\n" } else { "\n" }))
}

/// The raw table: Kuma's conntrack zone splitting for UDP DNS, so the application's queries
/// redirected to kuma-dp (zone 2) and kuma-dp's own queries to the same nameservers (zone 1)
/// never share a conntrack entry. Only with DNS redirection and `conntrack_zone_split`.
fn raw_table(plan: &Plan) -> Option<String> {
    let port = match &plan.dns {
        Dns::Servers { port, .. } | Dns::All { port } if plan.conntrack_zone_split => *port,
        _ => return None,
    };
    let v = plan.verbose;
    let uid = plan.kuma_dp_uid.to_string();
    let uid = uid.as_str();
    let (d53, dns_port) = (DNS_PORT.to_string(), port.to_string());
    let (d53, dns_port) = (d53.as_str(), dns_port.as_str());
    const SPORT: Tok = Flag("--sport", "--source-port");
    let zone = |z: &'static str| [JUMP, Lit("CT"), Lit("--zone"), Lit(z)];
    let mut prerouting = Chain::new("PREROUTING");
    let mut output = Chain::new("OUTPUT");
    output
        .append(
            v,
            format!(
                "assign connection tracking zone 1 to DNS traffic from the kuma-dp user (UID {uid})"
            ),
            &[
                &[
                    PROTO,
                    Lit("udp"),
                    DPORT,
                    Lit(d53),
                    MATCH,
                    Lit("owner"),
                    Lit("--uid-owner"),
                    Lit(uid),
                ][..],
                &zone("1"),
            ]
            .concat(),
        )
        .append(
            v,
            "assign connection tracking zone 2 to DNS responses from the kuma-dp DNS proxy".into(),
            &[
                &[
                    PROTO,
                    Lit("udp"),
                    SPORT,
                    Lit(dns_port),
                    MATCH,
                    Lit("owner"),
                    Lit("--uid-owner"),
                    Lit(uid),
                ][..],
                &zone("2"),
            ]
            .concat(),
        );
    match &plan.dns {
        Dns::All { .. } => {
            output.append(
                v,
                "assign connection tracking zone 2 to all DNS requests".into(),
                &[&[PROTO, Lit("udp"), DPORT, Lit(d53)][..], &zone("2")].concat(),
            );
            prerouting.append(
                v,
                "assign connection tracking zone 1 to all DNS responses".into(),
                &[&[PROTO, Lit("udp"), SPORT, Lit(d53)][..], &zone("1")].concat(),
            );
        }
        Dns::Servers { servers, .. } => {
            let localhost = plan.family.localhost();
            for ip in servers {
                let s = ip.to_string();
                output.append(
                    v,
                    format!("assign connection tracking zone 2 to DNS requests destined for {s}"),
                    &[
                        &[DST, Lit(&s), PROTO, Lit("udp"), DPORT, Lit(d53)][..],
                        &zone("2"),
                    ]
                    .concat(),
                );
                if ip.is_loopback() {
                    output.append(
                        v,
                        "assign conntrack zone 1 to DNS responses from the local DNS server to localhost, needed when the DNS query port is altered by a DNAT iptables rule, such as with Docker containers in a custom network".into(),
                        &[&[SRC, Lit(&s), DST, Lit(localhost), PROTO, Lit("udp")][..], &zone("1")].concat(),
                    );
                }
                prerouting.append(
                    v,
                    format!("assign connection tracking zone 1 to DNS responses from {s}"),
                    &[
                        &[SRC, Lit(&s), PROTO, Lit("udp"), SPORT, Lit(d53)][..],
                        &zone("1"),
                    ]
                    .concat(),
                );
            }
        }
        Dns::Off => {}
    }
    table("raw", &[&prerouting, &output], &[], v)
}

/// What `--dry-run` prints: each family's input under a `### IPv4 ###` / `### IPv6 ###`
/// header, as Kuma prints it.
pub fn dry_run(plans: &[Plan]) -> String {
    let parts: Vec<String> = plans
        .iter()
        .map(|p| {
            format!(
                "### {} ###\n{}",
                p.family.label(),
                restore_input(p).trim_end()
            )
        })
        .collect();
    let mut text = parts.join("\n\n");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn plan(family: Family) -> Plan {
        Plan {
            family,
            kuma_dp_uid: 5678,
            loopback: "lo".into(),
            redirect_inbound: true,
            inbound_port: 15006,
            exclude_inbound_ports: vec![],
            outbound_port: 15001,
            exclude_outbound_ports: vec![],
            exclude_inbound_ips: vec![],
            exclude_outbound_ips: vec![],
            dns: Dns::Off,
            conntrack_zone_split: true,
            verbose: false,
        }
    }

    #[test]
    fn default_rules_match_the_golden() {
        crate::printers::assert_golden(
            "transparent-proxy-default",
            &dry_run(&[plan(Family::Ipv4)]),
        );
    }

    #[test]
    fn redirect_dns_rules_match_the_golden() {
        let mut p = plan(Family::Ipv4);
        p.dns = Dns::Servers {
            port: 15053,
            servers: vec!["10.0.0.2".parse().unwrap(), "127.0.0.53".parse().unwrap()],
        };
        crate::printers::assert_golden("transparent-proxy-redirect-dns", &dry_run(&[p.clone()]));
        p.conntrack_zone_split = false;
        let text = restore_input(&p);
        assert!(
            text.starts_with("* nat\n") && !text.contains("* raw"),
            "{text}"
        );
    }

    #[test]
    fn redirect_all_dns_and_excluded_ports_match_the_golden() {
        let mut p = plan(Family::Ipv4);
        p.dns = Dns::All { port: 25053 };
        p.kuma_dp_uid = 1001;
        p.inbound_port = 25006;
        p.outbound_port = 25001;
        p.exclude_inbound_ports = vec![22, 8443];
        p.exclude_outbound_ports = vec![5432];
        p.exclude_inbound_ips = vec!["192.168.0.0/24".into()];
        p.exclude_outbound_ips = vec!["10.0.0.1".into(), "172.16.0.0/16".into()];
        crate::printers::assert_golden("transparent-proxy-exclude-ports", &dry_run(&[p]));
    }

    #[test]
    fn dualstack_rules_match_the_golden() {
        let mut v4 = plan(Family::Ipv4);
        v4.dns = Dns::Servers {
            port: 15053,
            servers: vec!["10.0.0.2".parse().unwrap()],
        };
        let mut v6 = plan(Family::Ipv6);
        v6.dns = Dns::Servers {
            port: 15053,
            servers: vec!["fd00::53".parse().unwrap()],
        };
        crate::printers::assert_golden("transparent-proxy-ipv6", &dry_run(&[v4, v6]));
    }

    #[test]
    fn verbose_and_inbound_disabled_match_the_golden() {
        let mut p = plan(Family::Ipv4);
        p.verbose = true;
        p.redirect_inbound = false;
        crate::printers::assert_golden("transparent-proxy-verbose-no-inbound", &dry_run(&[p]));
    }

    #[test]
    fn every_rule_carries_the_comment_prefix_and_inserts_are_numbered() {
        let mut p = plan(Family::Ipv4);
        p.dns = Dns::Servers {
            port: 15053,
            servers: vec!["10.0.0.2".parse().unwrap()],
        };
        let text = restore_input(&p);
        let rules: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("-A") || l.starts_with("-I"))
            .collect();
        assert!(rules.len() > 10, "{text}");
        for r in &rules {
            assert!(
                r.contains(&format!("-m comment --comment \"{COMMENT_PREFIX}/")),
                "{r}"
            );
            assert!(r.len() < 400, "{r}");
        }
        let inserts: Vec<&str> = rules
            .iter()
            .filter(|l| l.starts_with("-I"))
            .copied()
            .collect();
        assert!(inserts[0].starts_with("-I OUTPUT 1 "), "{inserts:?}");
        assert!(inserts[1].starts_with("-I OUTPUT 2 "), "{inserts:?}");
        assert!(inserts[2].starts_with("-I OUTPUT 3 "), "{inserts:?}");
    }
}
