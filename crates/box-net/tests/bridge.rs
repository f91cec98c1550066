//! Privileged: a bridge, a veth pair into a namespace made here, traffic over it, and no
//! leftovers. Skipped without root unless BOX_REQUIRE_PRIVILEGED=1 (then it fails).

use std::os::fd::AsFd;
use std::process::{Command, Stdio};

use box_net::bridge::{self, BridgeNet, Endpoint};
use box_net::subnet::Subnet;

fn root_or_skip() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("BOX_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
        panic!("needs root, and BOX_REQUIRE_PRIVILEGED=1 forbids skipping");
    }
    eprintln!("SKIPPED: needs root");
    false
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn veth_into_a_namespace_on_a_bridge() {
    if !root_or_skip() {
        return;
    }
    let tag = std::process::id() % 10000;
    let net = BridgeNet {
        bridge: format!("bxt{tag}"),
        subnet: format!("10.213.{}.0/24", tag % 250)
            .parse::<Subnet>()
            .unwrap(),
    };
    // A process in a network namespace of its own stands in for a box.
    let mut holder = Command::new("unshare")
        .args(["-n", "sleep", "30"])
        .stdin(Stdio::null())
        .spawn()
        .expect("unshare");
    std::thread::sleep(std::time::Duration::from_millis(100));
    let netns = std::fs::File::open(format!("/proc/{}/ns/net", holder.id())).unwrap();
    let box_ip = net.subnet.next_free(&[]).unwrap();
    let ep = Endpoint {
        host_if: format!("vbt{tag}"),
        box_if: "eth0".into(),
        ip: box_ip,
        default_route: true,
    };
    let result = bridge::attach(&net, &ep, netns.as_fd(), &[]);
    let pid = holder.id().to_string();
    let in_box = |args: &[&str]| {
        let out = Command::new("nsenter")
            .args(["-t", &pid, "-n"])
            .args(args)
            .output()
            .expect("nsenter");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let addr = in_box(&["ip", "-4", "-br", "addr", "show", "eth0"]);
    let route = in_box(&["ip", "route"]);
    let ping = Command::new("ping")
        .args(["-c", "1", "-W", "2", &box_ip.to_string()])
        .output()
        .map(|o| o.status.success());
    let host_side = ip(&["-br", "link", "show", "master", &net.bridge]);
    // Tear down before asserting, so that a failure leaves nothing behind.
    let _ = holder.kill();
    let _ = holder.wait();
    drop(netns);
    // The kernel dismantles a namespace (and the veth pair with it) shortly after its last user.
    let mut veth_gone = false;
    for _ in 0..100 {
        veth_gone = !bridge::link_exists(&ep.host_if).unwrap();
        if veth_gone {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    bridge::remove_bridge(&net, &[]).unwrap();
    let bridge_gone = !bridge::link_exists(&net.bridge).unwrap();

    result.unwrap();
    assert!(
        addr.contains(&format!("{box_ip}/24")) && addr.contains("UP"),
        "{addr}"
    );
    assert!(
        route.contains(&format!("default via {}", net.subnet.gateway())),
        "{route}"
    );
    assert!(host_side.contains(&ep.host_if), "{host_side}");
    if let Ok(ok) = ping {
        assert!(ok, "ping {box_ip} from the host failed");
    }
    assert!(veth_gone, "the host end outlived the namespace");
    assert!(bridge_gone, "the bridge is still there");
}
