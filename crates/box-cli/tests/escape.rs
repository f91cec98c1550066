//! The escape suite: from inside a box, try to break out. Every attempt must fail, and each test
//! prints (and asserts, where the kernel's answer tells them apart) which defence stopped it:
//! `ESCAPE BLOCKED [setup] attempt: defence (evidence: ...)`. An attempt that succeeds fails the
//! test with `ESCAPE SUCCEEDED`. docs/security.md maps each defence to its test.
//!
//! Setups: rootful and rootless, each with the capabilities of `box-runc spec` (3 caps,
//! no_new_privs) and, where it matters, with Docker's 14 default capabilities and Box's default
//! seccomp profile (box_runtime::policy::default_seccomp).

mod escape_support;
mod support;

use std::ffi::OsStr;
use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::process::Stdio;
use std::time::Duration;

use escape_support::*;
use serde_json::json;
use support::*;

/// Run `script` (after the `try` preamble) in a fresh box of `setup`; returns the box's output.
fn attempt(name: &str, setup: &Setup, script: &str) -> Outcome {
    let mut b = bundle(name, setup);
    attempt_in(&mut b, script)
}

fn attempt_in(b: &mut Bundle, script: &str) -> Outcome {
    b.script(&format!("{PREAMBLE}\n{script}"));
    let out = b.run_once();
    println!("--- box output ---\n{}", out.stdout);
    out
}

fn never_leaks(setup: &Setup, out: &Outcome, secret: &str) {
    assert!(
        !out.stdout.contains(secret) && !out.stderr.contains(secret),
        "ESCAPE SUCCEEDED [{}]: the box read a host file's secret\n{out}",
        setup.label()
    );
}

// ---------------------------------------------------------------------------------------------
// 1. chroot-in-chroot with `..`
// ---------------------------------------------------------------------------------------------

#[test]
fn chroot_in_chroot_with_dotdot_stays_in_the_box() {
    let marker = HostMarker::file("escape-chroot", 0o644);
    for s in setups(
        "chroot_in_chroot_with_dotdot_stays_in_the_box",
        &[Profile::Spec, Profile::DockerSeccomp],
        true,
    ) {
        let m = marker.name();
        let script = format!(
            r#"
mkdir -p /tmp/x/bin && cp /bin/busybox /tmp/x/bin/busybox
try classic chroot /tmp/x /bin/busybox sh -c 'cd ../../../../../../..; /bin/busybox chroot . /bin/busybox sh -c "/bin/busybox cat {m}; /bin/busybox cat ../../../../{m}; /bin/busybox cat /box-root-id"'
try viaproc chroot /proc /1/root/bin/busybox sh -c 'cd -P /1/root/../../../../..; /1/root/bin/busybox chroot . /bin/busybox sh -c "/bin/busybox cat /box-root-id; /bin/busybox cat {m} || /bin/busybox cat ../../../..{m}"'
try toplevel sh -c 'cd /../../../../..; chroot . /bin/cat ./box-root-id {m}'
"#
        );
        let out = attempt("esc-chroot", &s, &script);
        never_leaks(&s, &out, &marker.secret);
        let recs = records(&out.stdout);
        let all = out.to_string();
        if s.docker_caps() {
            // CAP_SYS_CHROOT: the chroots work, and `..` above the box's root is the box's root.
            let v = rec(&recs, "viaproc", &all);
            assert!(
                v.out.contains("box-root") && v.rc != 0,
                "[{}] expected the /proc chroot escape to end at the box's own root: {v:?}\n{all}",
                s.label()
            );
            blocked(
                &s,
                "chroot /proc, cd /1/root/../../.., chroot .",
                "the outer chroot was escaped, but only to the box's root: pivot_root into a private mount namespace makes the box's / its own parent; the host file is ENOENT",
                &v.out,
            );
            expect_blocked(
                &s,
                &recs,
                "classic",
                &["No such file"],
                "ENOENT: chroot(2) moved cwd inside, `..` stops at the chroot; host path absent",
                &all,
            );
            expect_blocked(
                &s,
                &recs,
                "toplevel",
                &["No such file"],
                "ENOENT: `..` of the box's root is itself (pivot_root, old root detached)",
                &all,
            );
        } else {
            expect_blocked(
                &s,
                &recs,
                "classic",
                &["Operation not permitted"],
                "EPERM: CAP_SYS_CHROOT is not among the box's capabilities",
                &all,
            );
            expect_blocked(
                &s,
                &recs,
                "viaproc",
                &["Operation not permitted"],
                "EPERM: CAP_SYS_CHROOT is not among the box's capabilities",
                &all,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. /proc/1/root, /proc/self/root, host pids
// ---------------------------------------------------------------------------------------------

#[test]
fn proc_root_links_and_host_pids_stay_in_the_box() {
    let marker = HostMarker::file("escape-procroot", 0o644);
    let host_pid = std::process::id();
    // SAFETY: getppid has no preconditions.
    let host_ppid = unsafe { libc::getppid() };
    for s in setups(
        "proc_root_links_and_host_pids_stay_in_the_box",
        &[Profile::Spec, Profile::DockerSeccomp],
        true,
    ) {
        let m = marker.name();
        let script = format!(
            r#"
try p1root cat /proc/1/root{m}
try selfroot cat /proc/self/root{m}
try p1dotdot cat /proc/1/root/../../../../..{m}
try cwdclimb sh -c 'cd /proc/1/root/../../../..; cat .{m}'
try p1own cat /proc/1/root/box-root-id
try hostpid ls /proc/{host_pid}/
try hostppid cat /proc/{host_ppid}/cmdline
try hostroot cat /proc/{host_pid}/root{m}
try kill0 kill -0 {host_pid}
echo "@npids rc=0 out=$(ls -d /proc/[0-9]* | wc -l)"
"#
        );
        let out = attempt("esc-procroot", &s, &script);
        never_leaks(&s, &out, &marker.secret);
        let recs = records(&out.stdout);
        let all = out.to_string();
        let own = rec(&recs, "p1own", &all);
        assert!(
            own.rc == 0 && own.out.contains("box-root"),
            "/proc/1/root is not the box's root: {own:?}\n{all}"
        );
        for n in ["p1root", "selfroot", "p1dotdot", "cwdclimb"] {
            expect_blocked(
                &s,
                &recs,
                n,
                &["No such file"],
                "ENOENT: /proc/<pid>/root of every visible pid is the box's pivot_root'ed root (pid + mount namespaces); `..` stops there",
                &all,
            );
        }
        for n in ["hostpid", "hostppid", "hostroot"] {
            expect_blocked(
                &s,
                &recs,
                n,
                &["No such file"],
                "ENOENT: the pid namespace hides host pids",
                &all,
            );
        }
        expect_blocked(
            &s,
            &recs,
            "kill0",
            &["No such process"],
            "ESRCH: host pid not in the box's pid namespace",
            &all,
        );
        let n: usize = rec(&recs, "npids", &all).out.parse().unwrap_or(usize::MAX);
        assert!(
            n < 10,
            "the box sees {n} pids: not its own pid namespace?\n{all}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. overwrite the runtime binary through /proc/<pid>/exe (CVE-2019-5736)
// ---------------------------------------------------------------------------------------------

/// A pipe whose buffer is already full: a process given its write end blocks on its first write.
fn full_pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 returned two fresh descriptors we own.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on our own descriptor.
    unsafe {
        libc::fcntl(fds[1], libc::F_SETFL, libc::O_NONBLOCK);
        let buf = [b'x'; 4096];
        while libc::write(fds[1], buf.as_ptr().cast(), buf.len()) > 0 {}
        libc::fcntl(fds[1], libc::F_SETFL, 0);
    }
    (r, w)
}

#[test]
fn runtime_binary_cannot_be_overwritten_through_proc_exe() {
    for s in setups(
        "runtime_binary_cannot_be_overwritten_through_proc_exe",
        &[Profile::Spec, Profile::DockerSeccomp],
        true,
    ) {
        let mut b = bundle("esc-exe", &s);
        if !s.rootless() {
            // Attack a private copy, so a successful attack cannot corrupt the build.
            let copy = b.path("bin/box-runc");
            fs::copy(&b.bin, &copy).expect("copy runtime");
            fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod");
            b.bin = copy;
        }
        let bin = b.bin.clone();
        let before = sha256(&bin);
        // The box can run the runtime binary itself (its libraries are there), so `#!/proc/self/exe`
        // makes the runtime's exec helper re-execute the runtime inside the box: the CVE's setup.
        copy_libs_for(&bin, &b.rootfs());
        b.rootfs_file("/evil", "#!/proc/self/exe\n", true);
        b.give(&b.rootfs());
        // The attacker: the box's init finds a process whose exe is not busybox, keeps a read
        // handle on it, tries to write through it while it runs and after it is gone.
        let script = r#"
found=
i=0
while [ -z "$found" ] && [ $i -lt 600 ]; do
  for p in /proc/[0-9]*; do
    n=${p#/proc/}; [ "$n" = 1 ] && continue
    t=$(readlink $p/exe 2>/tmp/.err)
    case "$t" in ''|*busybox*) ;; *) found=$n; exe=$t;; esac
  done
  i=$((i+1)); sleep 0.05
done
echo "@found rc=0 out=pid=$found exe=$exe"
for p in /proc/[0-9]*; do echo "@ps-${p#/proc/} rc=0 out=$(readlink $p/exe 2>&1) $(tr '\\0' ' ' < $p/cmdline)"; done
if [ -n "$found" ]; then
  try openro sh -c "exec 3</proc/$found/exe && echo opened"
  exec 3</proc/$found/exe
  try writerunning sh -c "printf PWNED >> /proc/$found/exe"
  try truncrunning sh -c "printf PWNED > /proc/$found/exe"
  kill -9 $found
  j=0; while [ -e /proc/$found/exe ] && readlink /proc/$found/exe >/tmp/.out 2>&1 && [ $j -lt 100 ]; do sleep 0.05; j=$((j+1)); done
  sleep 0.2
  try writeafter sh -c 'echo PWNED >> /proc/self/fd/3'
  try truncafter sh -c 'printf PWNED > /proc/self/fd/3'
fi
touch /attack-done
"#;
        b.script(&format!("{PREAMBLE}\n{script}"));
        let id = b.id();
        let created = b.create(&id);
        assert!(created.success(), "create failed: {created}");
        b.start(&id).ok();
        b.wait_status(&id, "running");
        // The runtime's exec helper enters the box and execs /evil -> the runtime again, which
        // blocks writing its usage error to a full pipe: a runtime process the attacker can find.
        let (pipe_r, pipe_w) = full_pipe();
        let mut cmd = b.command(&[OsStr::new("exec"), id.as_ref(), "/evil".as_ref()]);
        cmd.stdout(Stdio::from(pipe_w.try_clone().expect("dup")))
            .stderr(Stdio::from(pipe_w));
        let mut exec = cmd.spawn().expect("spawn exec");
        let done = b.rootfs().join("attack-done");
        wait_for(Duration::from_secs(45), "the attacker to finish", || {
            done.exists().then_some(())
        });
        drop(pipe_r); // anything still blocked on the pipe now gets SIGPIPE
        let _ = wait_deadline(&mut exec, Duration::from_secs(20), "exec of /evil");
        b.wait_status(&id, "stopped");
        b.raw(&["delete", "--force", &id]).ok();
        // The box's output went to the create command's log files.
        let report = fs::read_dir(b.path("logs"))
            .expect("logs")
            .filter_map(|e| e.ok())
            .map(|e| fs::read_to_string(e.path()).unwrap_or_default())
            .filter(|t| t.contains("@found"))
            .collect::<Vec<_>>()
            .join("\n");
        println!("--- box output ---\n{report}");
        let after = sha256(&bin);
        assert_eq!(
            before,
            after,
            "ESCAPE SUCCEEDED [{}]: the runtime binary {} was modified from inside the box\n{report}",
            s.label(),
            bin.display()
        );
        let recs = records(&report);
        let found = rec(&recs, "found", &report);
        assert!(
            found.out.contains("exe=/") || found.out.contains("memfd:"),
            "[{}] the attack never saw a runtime process inside the box (no handle to attack): {found:?}\n{report}",
            s.label()
        );
        let opened = rec(&recs, "openro", &report);
        assert!(
            opened.rc == 0,
            "[{}] could not even open the runtime's exe for reading: {opened:?}",
            s.label()
        );
        expect_blocked(
            &s,
            &recs,
            "writerunning",
            &[
                "Text file busy",
                "Read-only file system",
                "Operation not permitted",
            ],
            "ETXTBSY while the runtime runs (the kernel denies writes to a running executable)",
            &report,
        );
        expect_blocked(
            &s,
            &recs,
            "truncrunning",
            &[
                "Text file busy",
                "Read-only file system",
                "Operation not permitted",
            ],
            "EROFS (O_TRUNC checks the mount first) or ETXTBSY while the runtime runs",
            &report,
        );
        let (errs, defence): (&[&str], &str) = if s.rootless() {
            (
                &["Operation not permitted"],
                "EPERM: the runtime ran from a sealed memfd copy (F_SEAL_WRITE), never from the file on disk",
            )
        } else {
            (
                &["Read-only file system"],
                "EROFS: the runtime re-executed itself through a read-only bind mount of its binary",
            )
        };
        expect_blocked(&s, &recs, "writeafter", errs, defence, &report);
        expect_blocked(&s, &recs, "truncafter", errs, defence, &report);
    }
}

// ---------------------------------------------------------------------------------------------
// 4. mknod of the host's disk
// ---------------------------------------------------------------------------------------------

/// major:minor of the host's first block device (the disk), from /proc/partitions.
fn host_disk() -> (String, String) {
    read_lines("/proc/partitions")
        .iter()
        .skip(2)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4).then(|| (f[0].to_string(), f[1].to_string()))
        })
        .unwrap_or(("8".into(), "0".into()))
}

#[test]
fn mknod_of_the_host_disk_cannot_be_read() {
    let (maj, min) = host_disk();
    for s in setups(
        "mknod_of_the_host_disk_cannot_be_read",
        &[Profile::Spec, Profile::DockerSeccomp],
        true,
    ) {
        let script = format!(
            r#"
try mknod mknod /tmp/disk b {maj} {min}
try read dd if=/tmp/disk of=/tmp/out bs=512 count=1
try mknodmem mknod /tmp/kmem c 1 1
try readmem dd if=/tmp/kmem of=/tmp/out bs=1 count=1 skip=4096
try mknodshm mknod /dev/shm/disk b {maj} {min}
try readshm dd if=/dev/shm/disk of=/tmp/out bs=512 count=1
echo "@capeff rc=0 out=$(grep CapEff /proc/self/status | cut -f2)"
"#
        );
        let out = attempt("esc-mknod", &s, &script);
        let recs = records(&out.stdout);
        let all = out.to_string();
        if !s.docker_caps() {
            for n in ["mknod", "mknodmem", "mknodshm"] {
                expect_blocked(
                    &s,
                    &recs,
                    n,
                    &["Operation not permitted"],
                    "EPERM: no CAP_MKNOD in the box",
                    &all,
                );
            }
        } else if s.rootless() {
            for n in ["mknod", "mknodmem", "mknodshm"] {
                expect_blocked(
                    &s,
                    &recs,
                    n,
                    &["Operation not permitted"],
                    "EPERM: device nodes cannot be made in a user namespace (CAP_MKNOD only counts in the initial one)",
                    &all,
                );
            }
        } else {
            let capeff =
                u64::from_str_radix(rec(&recs, "capeff", &all).out.trim(), 16).unwrap_or(0);
            assert!(
                capeff & (1 << 27) != 0,
                "CAP_MKNOD missing from the docker-caps box: {all}"
            );
            if rec(&recs, "mknod", &all).rc != 0 {
                for n in ["mknod", "mknodmem", "mknodshm"] {
                    expect_blocked(
                        &s,
                        &recs,
                        n,
                        &["Operation not permitted"],
                        "EPERM from the devices cgroup: mknod ('m') is denied for every device the box is not given (CAP_MKNOD is in CapEff)",
                        &all,
                    );
                }
            }
        }
        if s.docker_caps() && !s.rootless() && rec(&recs, "mknod", &all).rc == 0 {
            for n in ["read", "readmem"] {
                expect_blocked(
                    &s,
                    &recs,
                    n,
                    &["Operation not permitted"],
                    "EPERM: the devices cgroup allows only the box's own devices (mknod worked with CAP_MKNOD; open is refused)",
                    &all,
                );
            }
            expect_blocked(
                &s,
                &recs,
                "readshm",
                &["Permission denied", "Operation not permitted"],
                "EACCES: /dev/shm is mounted nodev (and the devices cgroup would refuse it too)",
                &all,
            );
        }
        for n in ["read", "readmem", "readshm"] {
            assert_ne!(
                rec(&recs, n, &all).rc,
                0,
                "ESCAPE SUCCEEDED [{}] {n}: read a host device\n{all}",
                s.label()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. mount / umount inside the box
// ---------------------------------------------------------------------------------------------

#[test]
fn mount_and_umount_are_refused() {
    for s in setups(
        "mount_and_umount_are_refused",
        &[Profile::Spec, Profile::Docker, Profile::DockerSeccomp],
        true,
    ) {
        let script = r#"
try proc mount -t proc proc /mnt
try tmpfs mount -t tmpfs t /mnt
try bind mount -o bind / /mnt
try remountsys mount -o remount,rw /proc/sys
try remountcg mount -o remount,rw /sys
try umountsys umount /proc/sys
try umountkcore umount /proc/timer_list
try cgroup mount -t cgroup -o memory cg /mnt
echo "@mnt rc=0 out=$(grep -c ' /mnt ' /proc/self/mountinfo)"
echo "@seccomp rc=0 out=$(grep Seccomp: /proc/self/status)"
"#;
        let out = attempt("esc-mount", &s, script);
        let recs = records(&out.stdout);
        let all = out.to_string();
        let defence = if s.has_seccomp() {
            "EPERM: seccomp (mount/umount2 only with CAP_SYS_ADMIN) and no CAP_SYS_ADMIN"
        } else {
            "EPERM: no CAP_SYS_ADMIN in the box"
        };
        for n in [
            "proc",
            "tmpfs",
            "bind",
            "remountsys",
            "remountcg",
            "umountsys",
            "umountkcore",
            "cgroup",
        ] {
            expect_blocked(
                &s,
                &recs,
                n,
                &["Operation not permitted", "permission denied"],
                defence,
                &all,
            );
        }
        assert_eq!(
            rec(&recs, "mnt", &all).out,
            "0",
            "a mount appeared on /mnt\n{all}"
        );
        let sc = rec(&recs, "seccomp", &all).out.clone();
        assert_eq!(
            sc.ends_with('2'),
            s.has_seccomp(),
            "seccomp filter state unexpected: {sc}\n{all}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. ptrace / enter a host pid
// ---------------------------------------------------------------------------------------------

#[test]
fn host_processes_cannot_be_traced_or_entered() {
    let host_pid = std::process::id();
    for s in setups(
        "host_processes_cannot_be_traced_or_entered",
        &[Profile::Spec, Profile::DockerSeccomp],
        true,
    ) {
        let script = format!(
            r#"
try mem dd if=/proc/{host_pid}/mem of=/dev/null bs=1 count=1
try nsenterhost nsenter -t {host_pid} -m -p true
try nsenter1 nsenter -t 1 -m -u -i -n -p true
try nsenter1root nsenter -t 1 -r -w true
try killhost kill -9 {host_pid}
"#
        );
        let out = attempt("esc-ptrace", &s, &script);
        let recs = records(&out.stdout);
        let all = out.to_string();
        for n in ["mem", "nsenterhost"] {
            expect_blocked(
                &s,
                &recs,
                n,
                &["No such file"],
                "ENOENT: host pid invisible in the box's pid namespace (nothing to attach to)",
                &all,
            );
        }
        expect_blocked(
            &s,
            &recs,
            "killhost",
            &["No such process"],
            "ESRCH: host pid invisible in the box's pid namespace",
            &all,
        );
        let d = if s.has_seccomp() {
            "EPERM: setns needs CAP_SYS_ADMIN (seccomp and capabilities); pid 1 is the box's own init anyway"
        } else {
            "EPERM: setns/chroot need CAP_SYS_ADMIN/CAP_SYS_CHROOT; pid 1 is the box's own init anyway"
        };
        expect_blocked(&s, &recs, "nsenter1", &["Operation not permitted"], d, &all);
        if !s.docker_caps() {
            expect_blocked(
                &s,
                &recs,
                "nsenter1root",
                &["Operation not permitted"],
                d,
                &all,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 7. /proc/sysrq-trigger, /proc/sys, /sys, /proc/kcore
// ---------------------------------------------------------------------------------------------

#[test]
fn kernel_interfaces_are_read_only_or_masked() {
    for s in setups(
        "kernel_interfaces_are_read_only_or_masked",
        &[Profile::Spec, Profile::DockerSeccomp],
        true,
    ) {
        // Writes put back the current value, so even a success changes nothing on the host.
        let script = r#"
try sysrq sh -c 'echo h > /proc/sysrq-trigger'
try corepattern sh -c 'cat /proc/sys/kernel/core_pattern > /proc/sys/kernel/core_pattern'
try modprobe sh -c 'cat /proc/sys/kernel/modprobe > /proc/sys/kernel/modprobe'
try sysfs sh -c 'touch /sys/kernel/escape-test'
try sysfsuevent sh -c 'cat /sys/kernel/uevent_helper > /sys/kernel/uevent_helper'
try timerlist sh -c 'n=$(cat /proc/timer_list 2>/tmp/.err | wc -c); echo bytes=$n; [ "$n" -gt 0 ]'
echo "@timerdev rc=0 out=$(stat -c %F:%t:%T /proc/timer_list)"
try kcore sh -c '[ ! -e /proc/kcore ] || { n=$(dd if=/proc/kcore bs=4096 count=1 2>/tmp/.err | wc -c); echo bytes=$n; [ "$n" -gt 0 ]; }'
echo "@firmware rc=0 out=$(ls -A /sys/firmware | wc -l):$(grep -c ' /sys/firmware ' /proc/self/mountinfo)"
try firmwarewrite touch /sys/firmware/x
"#;
        let out = attempt("esc-sysfs", &s, script);
        let recs = records(&out.stdout);
        let all = out.to_string();
        // Files this kernel lacks fail with ENOENT ("nonexistent directory" in busybox's words).
        let absent = |p: &str| !std::path::Path::new(p).exists();
        for (n, path, d) in [
            (
                "sysrq",
                "/proc/sysrq-trigger",
                "EROFS: /proc/sysrq-trigger is bound read-only (readonlyPaths)",
            ),
            (
                "corepattern",
                "/proc/sys/kernel/core_pattern",
                "EROFS: /proc/sys is bound read-only (readonlyPaths)",
            ),
            (
                "modprobe",
                "/proc/sys/kernel/modprobe",
                "EROFS: /proc/sys is bound read-only (readonlyPaths)",
            ),
        ] {
            if absent(path) {
                expect_blocked(
                    &s,
                    &recs,
                    n,
                    &["nonexistent"],
                    "ENOENT: not in this kernel",
                    &all,
                );
            } else {
                expect_blocked(&s, &recs, n, &["Read-only file system"], d, &all);
            }
        }
        for n in ["sysfs", "sysfsuevent"] {
            expect_blocked(
                &s,
                &recs,
                n,
                &["Read-only file system"],
                "EROFS: /sys is mounted read-only",
                &all,
            );
        }
        expect_blocked(
            &s,
            &recs,
            "timerlist",
            &["bytes=0"],
            "masked: /proc/timer_list is /dev/null bound over it (maskedPaths)",
            &all,
        );
        let dev = rec(&recs, "timerdev", &all);
        assert!(
            dev.out.contains("character special file:1:3"),
            "/proc/timer_list is not the null device: {dev:?}"
        );
        if absent("/proc/kcore") {
            println!("NOTE: /proc/kcore does not exist on this kernel; /proc/timer_list stands in for it");
        } else {
            expect_blocked(
                &s,
                &recs,
                "kcore",
                &["bytes=0"],
                "masked: /proc/kcore is /dev/null bound over it (maskedPaths)",
                &all,
            );
        }
        let fw = rec(&recs, "firmware", &all);
        assert!(
            fw.out.starts_with("0:1"),
            "/sys/firmware not masked by an empty tmpfs: {fw:?}"
        );
        expect_blocked(
            &s,
            &recs,
            "firmwarewrite",
            &["Read-only file system"],
            "masked: /sys/firmware is an empty read-only tmpfs (maskedPaths)",
            &all,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 8. symlinked mount targets (CVE-2021-30465)
// ---------------------------------------------------------------------------------------------

#[test]
fn symlinked_mount_targets_stay_in_the_rootfs() {
    let host_dir = HostMarker::dir("escape-mnt");
    let host_file = HostMarker::file("escape-mntf", 0o644);
    let h = host_dir.name();
    for s in setups(
        "symlinked_mount_targets_stay_in_the_rootfs",
        &[Profile::Spec],
        true,
    ) {
        let before_dir = host_dir.fingerprint();
        let before_file = host_file.fingerprint();
        // Directory targets: absolute, relative climbing, and the root itself.
        let mut b = bundle("esc-symmnt", &s);
        let r = b.rootfs();
        // The symlinks' targets also exist inside the rootfs: that is where the mounts must land.
        fs::create_dir_all(r.join(h.trim_start_matches('/'))).expect("mkdir in rootfs");
        b.give(&r.join("tmp"));
        symlink(&host_dir.path, r.join("mnt/abs")).expect("symlink");
        symlink(format!("../../../../../../..{h}"), r.join("mnt/rel")).expect("symlink");
        symlink("../../../../..", r.join("mnt/up")).expect("symlink");
        let payload = b.path("payload");
        fs::create_dir_all(&payload).expect("payload");
        fs::write(payload.join("planted"), "planted\n").expect("planted");
        b.give(&payload);
        b.add_mount(tmpfs_mount("/mnt/abs/a"));
        b.add_mount(json!({"destination": "/mnt/rel/b", "type": "bind",
                           "source": payload, "options": ["rbind", "ro"]}));
        b.add_mount(tmpfs_mount("/mnt/up/landed-up"));
        let script = format!(
            r#"
mps=$(awk '{{print $5}}' /proc/self/mountinfo | tr '\n' ' ')
echo "@mps rc=0 out=$mps"
try writea sh -c 'echo x > /mnt/abs/a/f && cat {h}/a/f'
try readb cat /mnt/rel/b/planted
try keep cat {h}/keep
"#
        );
        let out = attempt_in(&mut b, &script);
        let all = out.to_string();
        let recs = records(&out.stdout);
        let landed = |p: &str| {
            recs.get("mps")
                .is_some_and(|m| m.out.split(' ').any(|x| x == p))
        };
        {
            for p in [format!("{h}/a"), format!("{h}/b"), "/landed-up".to_string()] {
                assert!(
                    landed(&p),
                    "[{}] mount for {p} not inside the rootfs\n{all}",
                    s.label()
                );
            }
            assert_eq!(rec(&recs, "writea", &all).rc, 0, "{all}");
            assert_eq!(rec(&recs, "readb", &all).rc, 0, "{all}");
            expect_blocked(
                &s,
                &recs,
                "keep",
                &["No such file"],
                "mount targets resolved inside the rootfs (openat2 RESOLVE_IN_ROOT): the symlinks' host paths became paths in the rootfs",
                &all,
            );
        }
        // The host's directory: nothing created, nothing mounted.
        assert_eq!(
            host_dir.fingerprint(),
            before_dir,
            "ESCAPE SUCCEEDED: host dir changed\n{all}"
        );
        assert!(
            host_dir.host_mounts().is_empty(),
            "host mounts under {h}: {:?}",
            host_dir.host_mounts()
        );
        assert!(
            r.join(h.trim_start_matches('/')).join("a").is_dir(),
            "the mount point was not made inside the rootfs"
        );
        drop(b);

        // A dangling symlink (its target exists only on the host): the mount must land inside the
        // rootfs or create must fail.
        let mut b = bundle("esc-symmntd", &s);
        symlink(&host_dir.path, b.rootfs().join("mnt/abs")).expect("symlink");
        b.add_mount(tmpfs_mount("/mnt/abs/a"));
        let out = attempt_in(
            &mut b,
            "echo \"@mps rc=0 out=$(awk '{print $5}' /proc/self/mountinfo | tr '\\n' ' ')\"",
        );
        let all = out.to_string();
        if out.success() {
            let recs = records(&out.stdout);
            assert!(
                rec(&recs, "mps", &all)
                    .out
                    .split(' ')
                    .any(|x| x == format!("{h}/a")),
                "[{}] dangling symlink target: mount not inside the rootfs\n{all}",
                s.label()
            );
            blocked(
                &s,
                "dangling symlinked dir target",
                "mount landed inside the rootfs (RESOLVE_IN_ROOT)",
                &all,
            );
        } else {
            blocked(
                &s,
                "dangling symlinked dir target",
                "create failed cleanly: the target resolved inside the rootfs, where it does not exist",
                out.stderr.lines().last().unwrap_or(""),
            );
        }
        assert_eq!(
            host_dir.fingerprint(),
            before_dir,
            "ESCAPE SUCCEEDED: host dir changed\n{all}"
        );
        drop(b);

        // A file target that is a symlink to a host file.
        let mut b = bundle("esc-symmntf", &s);
        symlink(&host_file.path, b.rootfs().join("mnt/file")).expect("symlink");
        symlink(
            format!("../../../../..{}", host_file.name()),
            b.rootfs().join("mnt/relfile"),
        )
        .expect("symlink");
        let src = b.path("payload.txt");
        fs::write(&src, "payload\n").expect("payload");
        b.give(&src);
        b.add_mount(
            json!({"destination": "/mnt/file", "type": "bind", "source": src, "options": ["bind"]}),
        );
        b.add_mount(json!({"destination": "/mnt/relfile", "type": "bind", "source": src, "options": ["bind"]}));
        let out = attempt_in(
            &mut b,
            &format!(
                "try hostfile cat {}\ntry via cat /mnt/file",
                host_file.name()
            ),
        );
        let all = out.to_string();
        never_leaks(&s, &out, &host_file.secret);
        if out.success() {
            let recs = records(&out.stdout);
            assert!(rec(&recs, "via", &all).out.contains("payload"), "{all}");
            blocked(
                &s,
                "file target symlinked to a host file",
                "bind landed on a file inside the rootfs",
                &all,
            );
        } else {
            blocked(
                &s,
                "file target symlinked to a host file",
                "create failed cleanly: the target resolved inside the rootfs, the host file never touched",
                out.stderr.lines().last().unwrap_or(""),
            );
        }
        assert_eq!(
            host_file.fingerprint(),
            before_file,
            "ESCAPE SUCCEEDED: host file changed\n{all}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 9. /dev/null replaced before masking (CVE-2025-31133)
// ---------------------------------------------------------------------------------------------

#[test]
fn planted_dev_null_is_never_used_for_masking() {
    let mut holes = Vec::new();
    for s in setups(
        "planted_dev_null_is_never_used_for_masking",
        &[Profile::Spec],
        true,
    ) {
        for case in [
            "abs-symlink",
            "rel-symlink",
            "regular-file",
            "bound-dev-symlink",
        ] {
            let host = HostMarker::file("escape-devnull", 0o600);
            let before = host.fingerprint();
            let mut b = bundle("esc-devnull", &s);
            let dev = b.rootfs().join("dev");
            let evil = b.path("evil-dev");
            let mounts = b.config["mounts"].as_array_mut().expect("mounts");
            mounts.retain(|m| m["destination"] != "/dev");
            if case == "bound-dev-symlink" {
                // /dev bind-mounted from a directory the image controls.
                mounts.insert(1, json!({"destination": "/dev", "type": "bind", "source": evil, "options": ["rbind"]}));
            } else {
                // No tmpfs on /dev: the rootfs's own /dev, with a planted null, is used.
                match case {
                    "abs-symlink" => symlink(&host.path, dev.join("null")).expect("symlink"),
                    "rel-symlink" => symlink(
                        format!("../../../../../..{}", host.name()),
                        dev.join("null"),
                    )
                    .expect("symlink"),
                    _ => fs::write(dev.join("null"), "not a device\n").expect("write"),
                }
                b.give(&dev);
            }
            if case == "bound-dev-symlink" {
                fs::create_dir_all(&evil).expect("evil dev");
                symlink(&host.path, evil.join("null")).expect("symlink");
                b.give(&evil);
            }
            let out = attempt_in(
                &mut b,
                "echo \"@kcore rc=0 out=$(stat -c %F:%t:%T /proc/timer_list)\"; echo \"@null rc=0 out=$(stat -c %F:%t:%T /dev/null)\"",
            );
            let all = out.to_string();
            let after = host.fingerprint();
            if before != after {
                let msg = format!(
                    "ESCAPE SUCCEEDED [{}] {case}: the host file {} the planted /dev/null pointed at was modified by the runtime: before {before:?}, after {after:?}; runtime said: {}",
                    s.label(),
                    host.name(),
                    out.stderr.trim()
                );
                println!("{msg}");
                holes.push(msg);
                continue;
            }
            never_leaks(&s, &out, &host.secret);
            if out.success() {
                let recs = records(&out.stdout);
                let k = rec(&recs, "kcore", &all);
                assert!(
                    k.out.contains("character special file:1:3"),
                    "[{}] {case}: the box ran, but /proc/timer_list is not masked by the null device: {k:?}\n{all}",
                    s.label()
                );
                blocked(
                    &s,
                    &format!("/dev/null {case}"),
                    "replaced by a real 1:3 node before masking",
                    &k.out,
                );
            } else {
                assert!(
                    out.text().contains("null"),
                    "[{}] {case}: create failed, but not over /dev/null: {all}",
                    s.label()
                );
                blocked(
                    &s,
                    &format!("/dev/null {case}"),
                    "create refused: /dev/null verified to be the 1:3 character device (opened O_NOFOLLOW in the root) before masking",
                    out.stderr.lines().last().unwrap_or(""),
                );
            }
        }
    }
    assert!(holes.is_empty(), "{}", holes.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 10. escaping the cgroup
// ---------------------------------------------------------------------------------------------

#[test]
fn cgroup_cannot_be_escaped() {
    for s in setups(
        "cgroup_cannot_be_escaped",
        &[Profile::Spec, Profile::DockerSeccomp],
        true,
    ) {
        let script = r#"
echo "@cg rc=0 out=$(cat /proc/self/cgroup | tr '\n' ' ')"
try procsall sh -c 'for f in $(find /sys/fs/cgroup -name cgroup.procs); do echo $$ > $f || exit 1; done; echo wrote-all'
try procsown sh -c 'echo $$ > /sys/fs/cgroup/pids/cgroup.procs'
try mkdirc mkdir /sys/fs/cgroup/memory/escape
try parent sh -c 'ls /sys/fs/cgroup/memory/../../../memory/.. | grep -q -v -e cgroup -e memory -e cpu -e pids -e devices -e freezer -e blkio -e systemd -e unified -e hugetlb -e net -e perf -e rdma -e misc && echo host-view'
echo "@nprocs rc=0 out=$(cat /sys/fs/cgroup/pids/cgroup.procs 2>/dev/null | wc -l)"
"#;
        let out = attempt("esc-cgroup", &s, script);
        let recs = records(&out.stdout);
        let all = out.to_string();
        if !out.stdout.contains("@procsall") {
            panic!("cgroup attempt did not run: {all}");
        }
        expect_blocked(
            &s,
            &recs,
            "procsall",
            &["Read-only file system"],
            "EROFS: the cgroup mount is read-only in the box",
            &all,
        );
        if rec(&recs, "procsown", &all).out.contains("nonexistent") {
            // No pids controller bound in this setup: covered by procsall.
        } else {
            expect_blocked(
                &s,
                &recs,
                "procsown",
                &["Read-only file system", "No such file"],
                "EROFS: the cgroup mount is read-only in the box",
                &all,
            );
        }
        expect_blocked(
            &s,
            &recs,
            "mkdirc",
            &["Read-only file system", "No such file"],
            "EROFS: the cgroup mount is read-only in the box",
            &all,
        );
        let p = rec(&recs, "parent", &all);
        assert_ne!(
            p.rc, 0,
            "ESCAPE: the box sees host cgroups above its own: {p:?}\n{all}"
        );
        blocked(
            &s,
            "walk above the own cgroup",
            "only the box's own cgroup directory is bound (cgroup namespace + bind)",
            &p.out,
        );
        let n: usize = rec(&recs, "nprocs", &all).out.parse().unwrap_or(0);
        assert!(
            n < 10,
            "[{}] the box's pids cgroup lists {n} processes: not its own cgroup\n{all}",
            s.label()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 11. new user (and other) namespaces inside the box
// ---------------------------------------------------------------------------------------------

#[test]
fn namespace_creation_is_refused_by_seccomp() {
    for s in setups(
        "namespace_creation_is_refused_by_seccomp",
        &[Profile::Spec, Profile::DockerSeccomp],
        true,
    ) {
        let script = r#"
try userns unshare -U true
try userns_mount unshare -U -r -m sh -c 'mount -t tmpfs t /mnt && echo mounted-in-own-userns'
try mntns unshare -m true
try netns unshare -n true
try pidns unshare -p -f true
"#;
        let out = attempt("esc-unshare", &s, script);
        let recs = records(&out.stdout);
        let all = out.to_string();
        if s.has_seccomp() {
            for n in ["userns", "userns_mount", "mntns", "netns", "pidns"] {
                expect_blocked(
                    &s,
                    &recs,
                    n,
                    &["Operation not permitted"],
                    "EPERM from seccomp: unshare/clone with namespace flags only with CAP_SYS_ADMIN",
                    &all,
                );
            }
        } else {
            for n in ["mntns", "netns", "pidns"] {
                expect_blocked(
                    &s,
                    &recs,
                    n,
                    &["Operation not permitted"],
                    "EPERM: no CAP_SYS_ADMIN",
                    &all,
                );
            }
            let u = rec(&recs, "userns", &all);
            println!(
                "NOTE [{}] unshare(CLONE_NEWUSER) without a seccomp profile: rc={} {} (the spec-default config carries no seccomp profile, as runc's; only the kernel's own user-namespace rules apply)",
                s.label(),
                u.rc,
                u.out
            );
        }
    }
}
