//! Network modes (root): `--network none` (a namespace of its own, loopback only), `host` (the
//! host's namespace, /etc files and hostname), `container:NAME` (another box's namespace, again
//! after that box restarts), and clear errors for modes Box does not have and for joining a box
//! that does not run. Only loopback and the namespaces the boxes make are touched.

mod support;

use support::*;

/// The network namespace of this test process.
fn own_netns() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .expect("own netns")
        .display()
        .to_string()
}

#[test]
fn none_host_and_container_networks() {
    if !require_root("none_host_and_container_networks") {
        return;
    }
    let d = BoxData::new("n");
    let host_ns = own_netns();

    // none (the default): a namespace of its own with only the loopback interface.
    for args in [
        &["run", "--rm"][..],
        &["run", "--rm", "--network", "none"][..],
    ] {
        let mut a = args.to_vec();
        a.extend([
            "host",
            "sh",
            "-c",
            "readlink /proc/self/ns/net; ls /sys/class/net",
        ]);
        let out = d.ok(&a);
        let mut lines = out.lines();
        assert_ne!(lines.next(), Some(host_ns.as_str()), "{out}");
        assert_eq!(lines.collect::<Vec<_>>(), ["lo"], "{out}");
    }
    // Its loopback interface is up (IFF_UP | IFF_LOOPBACK), as crun and docker leave it.
    assert_eq!(
        d.ok(&["run", "--rm", "host", "cat", "/sys/class/net/lo/flags"]),
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
        !out.status.success() && err.contains("not supported yet"),
        "{err}"
    );
    let out = d.boxc(&["run", "--rm", "--network", "container:", "host", "true"]);
    assert!(!out.status.success());
    let ps = d.ok(&["ps", "-a", "--format", "json"]);
    let boxes: serde_json::Value = serde_json::from_str(&ps).expect("JSON");
    assert_eq!(boxes.as_array().map(Vec::len), Some(3), "{ps}");
}
