//! Box's own nftables table, `ip box`: NAT for its bridge networks, isolation between them and
//! published ports. Nothing outside the table is touched.
//!
//! The rules never change once written; what changes are set and map elements: a network adds
//! its bridge and subnet (masquerade, isolation pairs), a running box adds its published ports
//! to the `ports` map (DNAT). Every script is applied by `nft -f -` as one transaction, and
//! the table's rules are rewritten (flush + add) each time it is ensured, so concurrent
//! writers end in the same state.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::ports::PortMapping;
use crate::subnet::Subnet;
use crate::{NetError, Result};

/// The table's family and name.
pub const TABLE: &str = "ip box";

/// The table, its sets and chains, and the chains' rules (rewritten).
fn ensure_script() -> String {
    format!(
        "add table {TABLE}
add set {TABLE} bridges {{ type ifname; }}
add set {TABLE} subnets {{ type ipv4_addr; flags interval; }}
add set {TABLE} isolate {{ type ifname . ifname; }}
add map {TABLE} ports {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; flags interval; }}
add chain {TABLE} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}
add chain {TABLE} output {{ type nat hook output priority -100; policy accept; }}
add chain {TABLE} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}
add chain {TABLE} forward {{ type filter hook forward priority filter; policy accept; }}
flush chain {TABLE} prerouting
flush chain {TABLE} output
flush chain {TABLE} postrouting
flush chain {TABLE} forward
add rule {TABLE} prerouting meta l4proto {{ tcp, udp }} fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @ports
add rule {TABLE} output meta l4proto {{ tcp, udp }} fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @ports
add rule {TABLE} postrouting ip saddr @subnets oifname != @bridges masquerade
add rule {TABLE} postrouting ip saddr 127.0.0.0/8 oifname @bridges masquerade
add rule {TABLE} postrouting ct status dnat ip saddr @subnets oifname @bridges masquerade
add rule {TABLE} forward iifname . oifname @isolate drop
"
    )
}

/// Runs an nft script as one transaction.
fn apply(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            NetError::Firewall(format!(
                "cannot run nft ({e}): bridge networks need nftables (apt-get install nftables)"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| NetError::io("cannot write to nft", e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetError::io("cannot wait for nft", e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Firewall(format!(
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Runs each line of `script` on its own, ignoring failures (removals of what may be gone).
fn apply_each(script: &str) {
    if apply(script).is_err() {
        for line in script.lines() {
            let _ = apply(line);
        }
    }
}

/// The host-wide lock of Box's table, held while a network is added or the last one removed
/// (so that the table is never deleted under a network being added). Best effort: without
/// /run/lock the operations go on unlocked.
struct TableLock(#[allow(dead_code)] Option<nix::fcntl::Flock<std::fs::File>>);

impl TableLock {
    fn take() -> TableLock {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/run/lock/box-net.lock");
        TableLock(
            file.ok()
                .and_then(|f| nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).ok()),
        )
    }
}

/// Sets a network up in the table: masquerade for its subnet and isolation from `others`
/// (the bridges of the other networks).
pub fn add_network(bridge: &str, subnet: Subnet, others: &[String]) -> Result<()> {
    let _lock = TableLock::take();
    let mut script = ensure_script();
    script += &format!("add element {TABLE} bridges {{ \"{bridge}\" }}\n");
    script += &format!("add element {TABLE} subnets {{ {subnet} }}\n");
    for other in others.iter().filter(|o| o.as_str() != bridge) {
        script += &format!(
            "add element {TABLE} isolate {{ \"{bridge}\" . \"{other}\", \"{other}\" . \"{bridge}\" }}\n"
        );
    }
    apply(&script)
}

/// Takes a network out of the table (what is already gone is skipped).
pub fn remove_network(bridge: &str, subnet: Subnet, others: &[String]) {
    let _lock = TableLock::take();
    let mut script = format!("delete element {TABLE} bridges {{ \"{bridge}\" }}\n");
    script += &format!("delete element {TABLE} subnets {{ {subnet} }}\n");
    for other in others.iter().filter(|o| o.as_str() != bridge) {
        script += &format!(
            "delete element {TABLE} isolate {{ \"{bridge}\" . \"{other}\", \"{other}\" . \"{bridge}\" }}\n"
        );
    }
    apply_each(&script);
    // The last network anywhere on the host takes the table with it.
    if !table_in_use() {
        let _ = apply(&format!("delete table {TABLE}\n"));
    }
}

fn port_key(p: &PortMapping) -> String {
    let ip = match p.host_ip {
        Some(ip) => ip.to_string(),
        None => "0.0.0.0/0".to_string(),
    };
    format!("{ip} . {} . {}", p.proto, p.host_port)
}

/// Publishes `ports` of the box at `box_ip` (DNAT from the host's addresses, loopback too).
pub fn add_ports(box_ip: Ipv4Addr, ports: &[PortMapping]) -> Result<()> {
    if ports.is_empty() {
        return Ok(());
    }
    let elements: Vec<String> = ports
        .iter()
        .map(|p| format!("{} : {box_ip} . {}", port_key(p), p.box_port))
        .collect();
    let script = format!(
        "{}add element {TABLE} ports {{ {} }}\n",
        ensure_script(),
        elements.join(", ")
    );
    apply(&script).map_err(|e| match e {
        NetError::Firewall(why) if why.contains("exists") => NetError::Firewall(format!(
            "a published port is already taken by another box ({why})"
        )),
        e => e,
    })
}

/// Withdraws published ports (those already gone are skipped).
pub fn remove_ports(ports: &[PortMapping]) {
    let script: String = ports
        .iter()
        .map(|p| format!("delete element {TABLE} ports {{ {} }}\n", port_key(p)))
        .collect();
    if !script.is_empty() {
        apply_each(&script);
    }
}

/// Whether the table still holds any bridge (some data root still has networks).
fn table_in_use() -> bool {
    Command::new("nft")
        .args(["list", "set", "ip", "box", "bridges"])
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("elements"))
        .unwrap_or(false)
}
