//! User-mode networking for rootless boxes: pasta (from passt) or slirp4netns give the box's
//! network namespace a tap interface whose traffic they carry through ordinary host sockets,
//! and forward published ports into it.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::{PortMapping, Proto};
use crate::{NetError, Result};

/// Which user-mode network helper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Helper {
    /// pasta (passt's namespace mode): spliced TCP, fast; the default.
    Pasta,
    /// slirp4netns: the fallback where passt is not installed.
    Slirp4netns,
}

impl Helper {
    /// The program's name.
    pub fn program(self) -> &'static str {
        match self {
            Helper::Pasta => "pasta",
            Helper::Slirp4netns => "slirp4netns",
        }
    }
}

/// Whether `program` is on PATH.
pub fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// The helper to use by default: pasta where installed, else slirp4netns.
pub fn default_helper() -> Option<Helper> {
    [Helper::Pasta, Helper::Slirp4netns]
        .into_iter()
        .find(|h| installed(h.program()))
}

fn not_installed(h: Helper) -> NetError {
    let package = match h {
        Helper::Pasta => "passt",
        Helper::Slirp4netns => "slirp4netns",
    };
    NetError::Other(format!(
        "cannot run {}: it is not installed (apt-get install {package}), or use --network none",
        h.program()
    ))
}

/// pasta's port spec for one mapping: `[ADDR/]HOST:BOX`.
fn pasta_spec(p: &PortMapping) -> String {
    match p.host_ip {
        Some(ip) => format!("{ip}/{}:{}", p.host_port, p.box_port),
        None => format!("{}:{}", p.host_port, p.box_port),
    }
}

/// Starts the helper for the network namespace `netns` (the box's, open in this process: the
/// helper gets the descriptor, as it may lack the right to open another process's namespace
/// after dropping its capabilities) with `ports` published; returns the helper's pid once the
/// namespace is configured. The helper runs until [`stop`].
pub fn start(
    helper: Helper,
    netns: BorrowedFd<'_>,
    ports: &[PortMapping],
    pid_file: &Path,
) -> Result<i32> {
    if !installed(helper.program()) {
        return Err(not_installed(helper));
    }
    match helper {
        Helper::Pasta => start_pasta(netns, ports, pid_file),
        Helper::Slirp4netns => start_slirp(netns, ports, pid_file),
    }
}

/// Lets the child inherit `fd` (the namespace descriptor) across exec.
fn inherit(cmd: &mut Command, fd: RawFd, detach: bool) {
    // SAFETY: between fork and exec only async-signal-safe calls (fcntl, setsid) on a
    // descriptor this process keeps open.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            if detach {
                libc::setsid();
            }
            Ok(())
        });
    }
}

fn start_pasta(netns: BorrowedFd<'_>, ports: &[PortMapping], pid_file: &Path) -> Result<i32> {
    let fd = netns.as_raw_fd();
    let mut cmd = Command::new("pasta");
    cmd.args(["--config-net", "--quiet", "--ipv4-only"]);
    // Keep our ids (pasta would otherwise drop to nobody, also as root in a user namespace).
    cmd.arg("--runas").arg(format!(
        "{}:{}",
        nix::unistd::geteuid(),
        nix::unistd::getegid()
    ));
    for proto in [Proto::Tcp, Proto::Udp] {
        let specs: Vec<String> = ports
            .iter()
            .filter(|p| p.proto == proto)
            .map(pasta_spec)
            .collect();
        let flag = if proto == Proto::Tcp { "-t" } else { "-u" };
        cmd.arg(flag);
        cmd.arg(if specs.is_empty() {
            "none".to_string()
        } else {
            specs.join(",")
        });
    }
    // No forwarding from the box to the host's own ports.
    cmd.args(["-T", "none", "-U", "none"]);
    cmd.arg("--pid").arg(pid_file);
    cmd.arg("--netns")
        .arg(format!("/proc/self/fd/{fd}"))
        .arg("--netns-only");
    inherit(&mut cmd, fd, false);
    // pasta configures the namespace, then goes to the background; its first process exits.
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| NetError::io("cannot run pasta", e))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.contains("syslog"))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(NetError::Other(format!("pasta failed: {why}")));
    }
    read_pid(pid_file)
}

fn read_pid(pid_file: &Path) -> Result<i32> {
    std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(|| NetError::Other(format!("no helper pid in {}", pid_file.display())))
}

fn start_slirp(netns: BorrowedFd<'_>, ports: &[PortMapping], pid_file: &Path) -> Result<i32> {
    let (ready_read, ready_write) = nix::unistd::pipe()
        .map_err(|e| NetError::io("cannot make a pipe", std::io::Error::from(e)))?;
    let api = pid_file.with_extension("sock");
    let _ = std::fs::remove_file(&api);
    let mut cmd = Command::new("slirp4netns");
    cmd.args(["--configure", "--mtu=65520", "--disable-host-loopback"])
        .arg(format!("--ready-fd={}", ready_write.as_raw_fd()))
        .arg(format!("--api-socket={}", api.display()))
        .arg("--netns-type=path")
        .arg(format!("/proc/self/fd/{}", netns.as_raw_fd()))
        .arg("tap0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    inherit(&mut cmd, ready_write.as_raw_fd(), false);
    inherit(&mut cmd, netns.as_raw_fd(), true);
    let child = cmd
        .spawn()
        .map_err(|e| NetError::io("cannot run slirp4netns", e))?;
    drop(ready_write);
    // slirp4netns writes "1" to the ready descriptor once the tap is configured.
    let mut ready = std::fs::File::from(ready_read);
    let mut byte = [0u8; 1];
    let got = std::io::Read::read(&mut ready, &mut byte).unwrap_or(0);
    let helper = child.id() as i32;
    std::fs::write(pid_file, format!("{helper}\n"))
        .map_err(|e| NetError::io("cannot record the helper's pid", e))?;
    if got != 1 {
        stop(helper);
        return Err(NetError::Other(
            "slirp4netns exited before the box's network was ready".into(),
        ));
    }
    for p in ports {
        if let Err(e) = slirp_forward(&api, p) {
            stop(helper);
            return Err(e);
        }
    }
    Ok(helper)
}

/// Asks slirp4netns (over its API socket) to forward one host port into the box.
fn slirp_forward(api: &Path, p: &PortMapping) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let stream = loop {
        match UnixStream::connect(api) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(NetError::io("cannot reach slirp4netns's API socket", e)),
        }
    };
    let host_addr = p
        .host_ip
        .map(|ip| ip.to_string())
        .unwrap_or("0.0.0.0".into());
    let request = format!(
        "{{\"execute\":\"add_hostfwd\",\"arguments\":{{\"proto\":\"{}\",\"host_addr\":\"{host_addr}\",\"host_port\":{},\"guest_port\":{}}}}}",
        p.proto, p.host_port, p.box_port
    );
    (&stream)
        .write_all(request.as_bytes())
        .map_err(|e| NetError::io("cannot talk to slirp4netns", e))?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut reply = String::new();
    let _ = BufReader::new(&stream).read_line(&mut reply);
    if reply.contains("error") {
        return Err(NetError::Other(format!(
            "slirp4netns cannot publish {p}: {}",
            reply.trim()
        )));
    }
    Ok(())
}

/// Stops a helper started by [`start`] (by pid; best effort).
pub fn stop(pid: i32) {
    if pid > 0 {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// Stops the helper recorded in `pid_file` if it is still the helper (its command name is
/// pasta or slirp4netns), and removes the file.
pub fn stop_recorded(pid_file: &Path) {
    if let Ok(pid) = read_pid(pid_file) {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let comm = comm.trim();
        // pasta runs as `passt.avx2` (or `passt`, `pasta`) on most machines.
        if comm.starts_with("pas") || comm.starts_with("slirp4netns") {
            stop(pid);
        }
    }
    let _ = std::fs::remove_file(pid_file);
    let _ = std::fs::remove_file(pid_file.with_extension("sock"));
}
