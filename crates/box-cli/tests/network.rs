//! Networks (root): `--network none` (a namespace of its own, loopback only), `host` (the host's
//! namespace, /etc files and hostname), `container:NAME` (another box's namespace, again after
//! that box restarts), the default bridge network with published ports, user networks (names,
//! isolation, connect/disconnect), and no leftovers after rm, kill -9 and system reset. Each
//! test's data dir has a bridge and subnet of its own; traffic stays on loopback, the bridges
//! and the namespaces the tests make.

mod support;

use support::*;

#[test]
fn none_host_and_container_networks() {
    if !require_root("none_host_and_container_networks") {
        return;
    }
    let d = BoxData::new("n");
    let host_ns = own_ns("net");

    // none: a namespace of its own with only the loopback interface.
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "host",
        "sh",
        "-c",
        "readlink /proc/self/ns/net; ls /sys/class/net",
    ]);
    let mut lines = out.lines();
    assert_ne!(lines.next(), Some(host_ns.as_str()), "{out}");
    assert_eq!(lines.collect::<Vec<_>>(), ["lo"], "{out}");
    // Its loopback interface is up (IFF_UP | IFF_LOOPBACK), as crun and docker leave it.
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "--net",
            "none",
            "host",
            "cat",
            "/sys/class/net/lo/flags"
        ]),
        "0x9\n"
    );

    // host: the host's namespace, its hostname, hosts and resolv.conf.
    let out = d.ok(&[
        "run",
        "--rm",
        "--net",
        "host",
        "host",
        "sh",
        "-c",
        "readlink /proc/self/ns/net; hostname; cat /etc/hosts",
    ]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(host_ns.as_str()), "{out}");
    let hostname = sh("hostname");
    assert_eq!(lines.next(), Some(hostname.trim()), "{out}");
    let hosts: Vec<&str> = lines.collect();
    let host_hosts = std::fs::read_to_string("/etc/hosts").expect("/etc/hosts");
    assert_eq!(hosts, host_hosts.lines().collect::<Vec<_>>(), "{out}");
    let created = d.ok(&["create", "--network", "host", "host", "true"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&d.ok(&["inspect", created.trim()])).expect("JSON");
    assert_eq!(inspect[0]["Config"]["network"]["mode"], "host", "{inspect}");

    // container:NAME: the other box's namespace; a loopback server in one is reached from the
    // other. After the other box restarts, a new start of the joiner follows it.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "none",
        "host",
        "sh",
        "-c",
        "while true; do echo hello-from-web | nc -l -p 8123; done",
    ]);
    let web_ns = d.ok(&["exec", "web", "readlink", "/proc/self/ns/net"]);
    let script = format!("readlink /proc/self/ns/net; {}", loopback_fetch(8123));
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "container:web",
        "host",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(out, format!("{}hello-from-web\n", web_ns), "{out}");
    d.ok(&[
        "create",
        "--name",
        "side",
        "--network",
        "container:web",
        "host",
        "sleep",
        "1000",
    ]);
    d.ok(&["restart", "-t", "0", "web"]);
    let web_ns = d.ok(&["exec", "web", "readlink", "/proc/self/ns/net"]);
    d.ok(&["start", "side"]);
    assert_eq!(
        d.ok(&["exec", "side", "readlink", "/proc/self/ns/net"]),
        web_ns
    );

    // Joining a box that does not run, or a mode Box does not have: said clearly, nothing made.
    d.ok(&["stop", "-t", "0", "side", "web"]);
    let out = d.boxc(&["run", "--rm", "--network", "container:web", "host", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("running one"),
        "{err}"
    );
    let out = d.boxc(&["run", "--rm", "--network", "nope", "host", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no such network"),
        "{err}"
    );
    let out = d.boxc(&["run", "--rm", "--network", "container:", "host", "true"]);
    assert!(!out.status.success());
    let ps = d.ok(&["ps", "-a", "--format", "json"]);
    let boxes: serde_json::Value = serde_json::from_str(&ps).expect("JSON");
    assert_eq!(boxes.as_array().map(Vec::len), Some(3), "{ps}");
}

/// A number for this test process's interface names and subnets (0-249).
fn tag() -> u32 {
    std::process::id() % 250
}

/// A data dir whose default bridge network is `bxt<tag><n>` on `10.<second>.<tag>.0/24`.
fn bridged_data(n: u32, second: u32) -> (BoxData, String) {
    let bridge = format!("bxt{}n{n}", tag());
    let settings = format!(
        "[network]\nbridge = \"{bridge}\"\nsubnet = \"10.{second}.{}.0/24\"\n",
        tag()
    );
    (BoxData::with_settings("nb", &settings), bridge)
}

/// Network interfaces of the host whose names start with `prefix`.
fn links(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .expect("/sys/class/net")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Waits until no host interface starts with `prefix` (a namespace's veth goes shortly after
/// the namespace) and returns the ones left after ~5 s.
fn wait_links_gone(prefix: &str) -> Vec<String> {
    for _ in 0..100 {
        if links(prefix).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    links(prefix)
}

/// The published-port elements of Box's nftables table (the `ports` map's element lines).
fn published() -> String {
    let out = std::process::Command::new("nft")
        .args(["list", "map", "ip", "box", "ports"])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn inspect(d: &BoxData, name: &str) -> serde_json::Value {
    serde_json::from_str(&d.ok(&["inspect", name])).expect("inspect JSON")
}

/// The host end of a box's veth pairs: `vb` + the first 8 hex digits of its id.
fn veth_prefix(d: &BoxData, name: &str) -> String {
    let id = inspect(d, name)[0]["Id"].as_str().expect("Id").to_string();
    format!("vb{}", &id[..8])
}

/// From a box: `GET /` from box `a` by name (busybox nc: the static busybox's wget cannot
/// resolve names), retried while a's server starts (up to ~10 s); prints the body.
const FETCH_A: &str = "for i in $(seq 100); do \
     out=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc a 80 2>/dev/null); \
     case \"$out\" in *hello*) echo \"$out\" | tail -n 1; exit 0;; esac; sleep 0.1; done; exit 1";

const HTTPD: &str = "mkdir -p /www && echo \"hello from $(hostname)\" > /www/index.html && \
                     exec httpd -f -vv -p 80 -h /www";

#[test]
fn bridge_is_the_default_and_publishes_ports() {
    if !require_root("bridge_is_the_default_and_publishes_ports") {
        return;
    }
    let (d, bridge) = bridged_data(0, 214);
    let subnet = format!("10.214.{}", tag());

    // No --network as root: the default bridge network, an address from its subnet, the
    // default route through the bridge, and the box's name in its own hosts file.
    let out = d.ok(&[
        "run",
        "--rm",
        "--name",
        "first",
        "host",
        "sh",
        "-c",
        "ip -4 addr show eth0; ip route; cat /etc/hosts",
    ]);
    assert!(out.contains(&format!("inet {subnet}.2/24")), "{out}");
    assert!(
        out.contains(&format!("default via {subnet}.1 dev eth0")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{subnet}.2\t")) && out.contains(" first"),
        "{out}"
    );

    // A web server published on a chosen and on a kernel-chosen loopback port.
    let port = free_tcp_port();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &format!("{port}:80"),
        "-p",
        "127.0.0.1::80",
        "host",
        "sh",
        "-c",
        HTTPD,
    ]);
    let ports = d.ok(&["port", "web"]);
    let ps = d.ok(&["ps"]);
    assert!(
        ps.contains(&format!("0.0.0.0:{port}->80/tcp, 127.0.0.1:")),
        "{ps}"
    );
    let lines: Vec<&str> = ports.lines().collect();
    assert_eq!(lines.len(), 2, "{ports}");
    assert_eq!(lines[0], format!("80/tcp -> 0.0.0.0:{port}"), "{ports}");
    let second: u16 = lines[1]
        .strip_prefix("80/tcp -> 127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{ports}"));
    assert_ne!(second, 0);
    let info = inspect(&d, "web");
    let ip = info[0]["NetworkSettings"]["IPAddress"]
        .as_str()
        .expect("IPAddress")
        .to_string();
    assert!(ip.starts_with(&subnet), "{info}");
    assert_eq!(
        info[0]["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"],
        port.to_string()
    );
    let hostname = d.ok(&["exec", "web", "hostname"]);
    let want = format!("hello from {}", hostname.trim());
    for addr in [
        format!("127.0.0.1:{port}"),
        format!("127.0.0.1:{second}"),
        format!("{ip}:80"),
    ] {
        let body = http_get(&addr).unwrap_or_else(|| panic!("no answer from {addr}"));
        assert_eq!(body.trim(), want, "{addr}");
    }

    // A client in a namespace of this test's own, routed through the host: the box sees the
    // client's own address (DNAT keeps the source).
    let ns = format!("bxc{}", tag());
    let (host_end, client_ip, host_ip) = (
        format!("bxc{}h", tag()),
        format!("10.215.{}.2", tag()),
        format!("10.215.{}.1", tag()),
    );
    sh(&format!(
        "ip netns add {ns} && ip link add {host_end} type veth peer name eth0 netns {ns} && \
         ip addr add {host_ip}/24 dev {host_end} && ip link set {host_end} up && \
         ip -n {ns} addr add {client_ip}/24 dev eth0 && ip -n {ns} link set eth0 up && \
         ip -n {ns} link set lo up && ip -n {ns} route add default via {host_ip}"
    ));
    let fetched = http_get_in(&format!("/run/netns/{ns}"), &format!("{host_ip}:{port}"));
    sh(&format!(
        "ip netns del {ns}; ip link del {host_end} 2>/dev/null; true"
    ));
    assert_eq!(fetched.as_deref().map(str::trim), Some(want.as_str()));
    // httpd logs each request (with the client's address) on its stderr.
    let logs = String::from_utf8_lossy(&d.boxc(&["logs", "web"]).stderr).into_owned();
    assert!(
        logs.contains(&client_ip),
        "httpd saw another source: {logs}"
    );

    // Box to box on the bridge, by address.
    let out = d.ok(&[
        "run",
        "--rm",
        "host",
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://{ip}/"),
    ]);
    assert_eq!(out.trim(), want);

    // A restart keeps the address and publishes the ports again.
    d.ok(&["restart", "-t", "0", "web"]);
    let again = inspect(&d, "web")[0]["NetworkSettings"]["IPAddress"].clone();
    assert_eq!(again, ip.as_str());
    let body = http_get(&format!("127.0.0.1:{port}")).expect("answer after restart");
    assert_eq!(body.trim(), want);

    // A taken host port is refused, and nothing is made.
    let out = d.boxc(&[
        "run",
        "-d",
        "--name",
        "clash",
        "-p",
        &format!("{port}:81"),
        "host",
        "true",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("published already"),
        "{err}"
    );
    assert!(d.boxc(&["inspect", "clash"]).status.code() != Some(0));

    // rm: no veth, no published port, the address free again.
    let veths = veth_prefix(&d, "web");
    d.ok(&["rm", "-f", "web"]);
    assert_eq!(wait_links_gone(&veths), Vec::<String>::new());
    assert!(
        !published().contains(&format!(". {port} :")),
        "{}",
        published()
    );
    let out = d.ok(&["run", "--rm", "host", "sh", "-c", "ip -4 addr show eth0"]);
    assert!(out.contains(&format!("inet {subnet}.2/24")), "{out}");

    // system reset takes the bridge and its firewall entries along.
    d.ok(&["system", "reset", "--force"]);
    assert_eq!(links(&bridge), Vec::<String>::new());
    let table = sh("nft list ruleset");
    assert!(!table.contains(&bridge), "{table}");
}

/// [`http_get`] from the network namespace at `netns` (a thread of this process joins it).
fn http_get_in(netns: &str, addr: &str) -> Option<String> {
    let (netns, addr) = (netns.to_string(), addr.to_string());
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&netns).expect("client namespace");
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        http_get(&addr)
    })
    .join()
    .expect("client thread")
}

/// A TCP port free on the host now.
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[test]
fn user_networks_resolve_names_and_are_isolated() {
    if !require_root("user_networks_resolve_names_and_are_isolated") {
        return;
    }
    let (d, _) = bridged_data(1, 216);
    let (s1, s2) = (
        format!("10.217.{}.0/24", tag()),
        format!("10.218.{}.0/24", tag()),
    );
    d.ok(&["network", "create", "--subnet", &s1, "front"]);
    d.ok(&["network", "create", "--subnet", &s2, "back"]);
    let nets = d.ok(&["network", "ls", "-q"]);
    assert!(
        nets.lines().any(|l| l == "front") && nets.lines().any(|l| l == "back"),
        "{nets}"
    );
    // A subnet the host already has on another interface: refused, nothing recorded.
    let dummy = format!("bxd{}", tag());
    sh(&format!(
        "ip link add {dummy} type veth peer name {dummy}p && ip addr add 10.220.{}.1/24 dev {dummy}",
        tag()
    ));
    let out = d.boxc(&[
        "network",
        "create",
        "--subnet",
        &format!("10.220.{}.0/24", tag()),
        "clash",
    ]);
    sh(&format!("ip link del {dummy}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&dummy) && err.contains("another subnet"),
        "{err}"
    );
    assert!(!d.ok(&["network", "ls", "-q"]).contains("clash"));
    // An overlapping subnet, a mode's name, a taken name: refused.
    for args in [
        &["network", "create", "--subnet", &s1, "other"][..],
        &["network", "create", "host"][..],
        &["network", "create", "--subnet", "10.219.0.0/24", "front"][..],
    ] {
        assert!(!d.boxc(args).status.success(), "{args:?}");
    }

    d.ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        "front",
        "host",
        "sh",
        "-c",
        HTTPD,
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "b",
        "--network",
        "front",
        "host",
        "sleep",
        "1000",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "c",
        "--network",
        "back",
        "host",
        "sleep",
        "1000",
    ]);
    let a_ip = inspect(&d, "a")[0]["NetworkSettings"]["Networks"]["front"]["IPAddress"]
        .as_str()
        .expect("a's address")
        .to_string();
    // Boxes on one network reach each other by name.
    let got = d.ok(&["exec", "b", "sh", "-c", FETCH_A]);
    assert!(got.starts_with("hello from"), "{got}");
    d.ok(&["exec", "b", "ping", "-c", "1", "-W", "2", "a"]);
    // A box on another network reaches neither the name nor the address.
    let hosts = d.ok(&["exec", "c", "cat", "/etc/hosts"]);
    assert!(!hosts.contains(" a "), "{hosts}");
    let out = d.boxc(&["exec", "c", "ping", "-c", "1", "-W", "1", &a_ip]);
    assert!(!out.status.success(), "back reached front");

    // Connected to front too, c reaches a by name, and is isolated again once disconnected.
    d.ok(&["network", "connect", "front", "c"]);
    let out = d.ok(&["exec", "c", "ip", "-4", "addr", "show", "eth1"]);
    assert!(out.contains("10.217."), "{out}");
    let got = d.ok(&["exec", "c", "sh", "-c", FETCH_A]);
    assert!(got.starts_with("hello from"), "{got}");
    let view: serde_json::Value =
        serde_json::from_str(&d.ok(&["network", "inspect", "front"])).expect("JSON");
    assert_eq!(
        view[0]["Containers"].as_object().map(|m| m.len()),
        Some(3),
        "{view}"
    );
    d.ok(&["network", "disconnect", "front", "c"]);
    assert!(!d
        .boxc(&["exec", "c", "ping", "-c", "1", "-W", "1", &a_ip])
        .status
        .success());
    let hosts = d.ok(&["exec", "b", "cat", "/etc/hosts"]);
    assert!(!hosts.contains(" c "), "{hosts}");

    // A network in use is not removed; once its boxes are gone it is, with its bridge.
    let out = d.boxc(&["network", "rm", "front"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("in use"), "{err}");
    let bridges: Vec<String> = ["front", "back"]
        .iter()
        .map(|n| {
            let v: serde_json::Value =
                serde_json::from_str(&d.ok(&["network", "inspect", n])).expect("JSON");
            v[0]["Options"]["com.docker.network.bridge.name"]
                .as_str()
                .expect("bridge")
                .to_string()
        })
        .collect();
    d.ok(&["rm", "-f", "a", "b", "c"]);
    d.ok(&["network", "rm", "front", "back"]);
    for b in &bridges {
        assert_eq!(links(b), Vec::<String>::new());
    }
    assert!(!sh("nft list ruleset").contains(&bridges[0]));
}

#[test]
fn no_leftovers_after_many_runs_and_a_killed_supervisor() {
    if !require_root("no_leftovers_after_many_runs_and_a_killed_supervisor") {
        return;
    }
    let (d, _) = bridged_data(2, 219);
    let runs: usize = std::env::var("BOX_NET_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let port = free_tcp_port();
    for i in 0..runs {
        d.ok(&["run", "--rm", "-p", &format!("{port}:80"), "host", "true"]);
        if i % 50 == 0 {
            assert!(!published().contains(&format!(". {port} :")), "run {i}");
        }
    }
    assert!(
        !published().contains(&format!(". {port} :")),
        "{}",
        published()
    );
    let view: serde_json::Value =
        serde_json::from_str(&d.ok(&["network", "inspect", "bridge"])).expect("JSON");
    assert_eq!(
        view[0]["Containers"].as_object().map(|m| m.len()),
        Some(0),
        "{view}"
    );

    // A supervisor killed with SIGKILL: the next command withdraws the box's ports, rm takes
    // its veth pair.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "k",
        "-p",
        &format!("{port}:80"),
        "host",
        "sleep",
        "1000",
    ]);
    assert!(published().contains(&format!(". {port} :")));
    let sup = inspect(&d, "k")[0]["State"]["SupervisorPid"]
        .as_i64()
        .expect("supervisor");
    let veths = veth_prefix(&d, "k");
    // SAFETY: kill by pid of the supervisor this test started.
    unsafe { libc::kill(sup as i32, libc::SIGKILL) };
    wait_for(
        std::time::Duration::from_secs(10),
        "the supervisor to die",
        || {
            (!std::path::Path::new(&format!("/proc/{sup}")).exists()
                || std::fs::read_to_string(format!("/proc/{sup}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")))
            .then_some(())
        },
    );
    d.ok(&["ps", "-a"]);
    assert!(
        !published().contains(&format!(". {port} :")),
        "{}",
        published()
    );
    d.ok(&["rm", "-f", "k"]);
    assert_eq!(wait_links_gone(&veths), Vec::<String>::new());
}

/// `box save host` rewritten as image `exposing`, whose config exposes 80/tcp (EXPOSE).
fn load_exposing_image(d: &BoxData) {
    let saved = d.0.with_extension("host.tar");
    d.ok(&["image", "host"]);
    d.ok(&["save", "-o", saved.to_str().expect("path"), "host"]);
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&saved).expect("saved"));
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").display().to_string();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).expect("read");
        files.push((path, data));
    }
    let manifest_at = files
        .iter()
        .position(|(p, _)| p == "manifest.json")
        .expect("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&files[manifest_at].1).expect("manifest");
    manifest[0]["RepoTags"] = serde_json::json!(["exposing:latest"]);
    let config_name = manifest[0]["Config"].as_str().expect("Config").to_string();
    files[manifest_at].1 = serde_json::to_vec(&manifest).unwrap();
    let config_at = files
        .iter()
        .position(|(p, _)| *p == config_name)
        .expect("config");
    let mut config: serde_json::Value = serde_json::from_slice(&files[config_at].1).unwrap();
    config["config"]["ExposedPorts"] = serde_json::json!({"80/tcp": {}});
    let config = serde_json::to_vec(&config).unwrap();
    // The archive names a config by its digest (and load checks it).
    let tmp = d.0.with_extension("config.json");
    std::fs::write(&tmp, &config).expect("config");
    let digest = sh(&format!("sha256sum {}", tmp.display()));
    let _ = std::fs::remove_file(&tmp);
    let new_name = format!("{}.json", digest.split_whitespace().next().expect("digest"));
    files[config_at] = (new_name.clone(), config);
    manifest[0]["Config"] = serde_json::json!(new_name);
    files[manifest_at].1 = serde_json::to_vec(&manifest).unwrap();
    let mut out = tar::Builder::new(Vec::new());
    for (path, data) in &files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.append_data(&mut h, path, data.as_slice())
            .expect("append");
    }
    std::fs::write(&saved, out.into_inner().expect("tar")).expect("write");
    d.ok(&["load", "-i", saved.to_str().expect("path")]);
    let _ = std::fs::remove_file(&saved);
}

#[test]
fn publish_all_and_udp_ports() {
    if !require_root("publish_all_and_udp_ports") {
        return;
    }
    let (d, _) = bridged_data(3, 221);
    load_exposing_image(&d);
    // -P: every exposed port on a free host port.
    d.ok(&[
        "run", "-d", "--name", "all", "-P", "exposing", "sh", "-c", HTTPD,
    ]);
    let ports = d.ok(&["port", "all"]);
    let host_port: u16 = ports
        .trim()
        .strip_prefix("80/tcp -> 0.0.0.0:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{ports}"));
    let body = http_get(&format!("127.0.0.1:{host_port}")).expect("an answer through -P");
    assert!(body.starts_with("hello from"), "{body}");

    // UDP: a datagram to the host port reaches the box's port, and the answer comes back
    // (socat echoes it: the busybox here has no UDP server).
    let rootfs = d.0.with_extension("socat-root");
    sh(&format!(
        "set -e; R={r}; rm -rf $R; mkdir -p $R/bin $R/usr/bin $R/proc $R/sys $R/dev $R/tmp $R/etc; \
         cp /bin/busybox $R/bin/; ln -s busybox $R/bin/sh; ln -s busybox $R/bin/cat; \
         cp /usr/bin/socat $R/usr/bin/; \
         for l in $(ldd /usr/bin/socat | grep -o '/[^ ]*'); do mkdir -p $R$(dirname $l); cp -L $l $R$l; done",
        r = rootfs.display()
    ));
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free udp port");
    d.ok(&[
        "run",
        "-d",
        "--name",
        "udp",
        "-p",
        &format!("{port}:5353/udp"),
        "--rootfs",
        rootfs.to_str().expect("path"),
        "/usr/bin/socat",
        "UDP-RECVFROM:5353,fork",
        "EXEC:/bin/cat",
    ]);
    assert_eq!(
        d.ok(&["port", "udp"]).trim(),
        format!("5353/udp -> 0.0.0.0:{port}")
    );
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    sock.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .expect("timeout");
    let echoed = wait_for(std::time::Duration::from_secs(10), "the UDP echo", || {
        let _ = sock.send_to(b"ping-over-udp", ("127.0.0.1", port));
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    });
    assert_eq!(echoed, "ping-over-udp");
    d.ok(&["rm", "-f", "all", "udp"]);
    let _ = std::fs::remove_dir_all(&rootfs);
    let left = published();
    assert!(
        !left.contains(&format!(". {host_port} :")) && !left.contains(&format!(". {port} :")),
        "{left}"
    );
}
