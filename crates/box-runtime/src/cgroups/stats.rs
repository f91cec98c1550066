//! Usage figures of a box's cgroup, shaped like the `data` object of `runc events --stats`, and
//! the readers that fill them from v1 and v2 control files.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::files::{read_opt, read_u64};

/// Usage figures of a box's cgroup (runc `events --stats` shape). Missing files leave zeroes.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct CgroupStats {
    /// CPU time and throttling.
    pub cpu: CpuStats,
    /// Memory, swap and kernel memory.
    pub memory: MemoryStats,
    /// Process counts.
    pub pids: PidsStats,
    /// Block I/O (best effort).
    pub blkio: BlkioStats,
    /// Huge pages by page size (`2MB`, `1GB`, …).
    pub hugetlb: BTreeMap<String, HugetlbStats>,
}

/// CPU figures.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuStats {
    /// Time used.
    pub usage: CpuUsage,
    /// CFS throttling.
    pub throttling: Throttling,
}

/// CPU time used, in nanoseconds.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuUsage {
    /// Total.
    pub total: u64,
    /// Per CPU (v1 only).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub percpu: Vec<u64>,
    /// In kernel mode.
    pub kernel: u64,
    /// In user mode.
    pub user: u64,
}

/// CFS bandwidth throttling.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throttling {
    /// Enforcement periods elapsed.
    pub periods: u64,
    /// Periods in which the group was throttled.
    pub throttled_periods: u64,
    /// Total throttled time, nanoseconds.
    pub throttled_time: u64,
}

/// Memory figures.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryStats {
    /// Page cache bytes (v1 `cache`, v2 `file`).
    pub cache: u64,
    /// Memory.
    pub usage: MemoryEntry,
    /// v1: memory+swap (memsw); v2: swap alone.
    pub swap: MemoryEntry,
    /// Kernel memory (v1 kmem; v2 `kernel` from memory.stat as usage).
    pub kernel: MemoryEntry,
    /// Every line of memory.stat.
    pub raw: BTreeMap<String, u64>,
}

/// One memory counter; a limit of `u64::MAX` means none.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryEntry {
    /// Limit in bytes.
    pub limit: u64,
    /// Current usage in bytes.
    pub usage: u64,
    /// Peak usage in bytes (0 where the kernel does not say).
    pub max: u64,
    /// Times the limit was hit.
    pub failcnt: u64,
}

/// Process counts.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct PidsStats {
    /// Processes and threads now.
    pub current: u64,
    /// Limit (0: none).
    pub limit: u64,
}

/// Block I/O, recursive.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlkioStats {
    /// Bytes by device and operation.
    #[serde(rename = "ioServiceBytesRecursive")]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    /// Operations by device and operation.
    #[serde(rename = "ioServicedRecursive")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

/// One block I/O counter.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlkioEntry {
    /// Device major.
    pub major: u64,
    /// Device minor.
    pub minor: u64,
    /// `Read`, `Write`, `Sync`, `Async`, `Discard` or `Total`.
    pub op: String,
    /// Count.
    pub value: u64,
}

/// Huge page usage of one page size.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct HugetlbStats {
    /// Bytes in use.
    pub usage: u64,
    /// Peak bytes (v1) .
    pub max: u64,
    /// Times the limit was hit.
    pub failcnt: u64,
}

/// Parses `key value` lines (memory.stat, cpu.stat, cpuacct.stat).
pub fn parse_flat_keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?;
            let v = it.next()?.parse().ok()?;
            Some((k.to_owned(), v))
        })
        .collect()
}

fn keyed(path: &Path) -> BTreeMap<String, u64> {
    read_opt(path)
        .map(|t| parse_flat_keyed(&t))
        .unwrap_or_default()
}

fn num(path: &Path) -> u64 {
    read_u64(path).unwrap_or(0)
}

/// Parses v1 blkio files: `8:0 Read 4096` lines (a final `Total N` line is skipped).
pub fn parse_v1_blkio(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 3 {
                return None;
            }
            let (maj, min) = f[0].split_once(':')?;
            Some(BlkioEntry {
                major: maj.parse().ok()?,
                minor: min.parse().ok()?,
                op: f[1].to_owned(),
                value: f[2].parse().ok()?,
            })
        })
        .collect()
}

/// Parses v2 `io.stat` (`8:0 rbytes=1 wbytes=2 rios=3 wios=4 …`) into (bytes, ios) entries.
pub fn parse_v2_io_stat(text: &str) -> (Vec<BlkioEntry>, Vec<BlkioEntry>) {
    let mut bytes = Vec::new();
    let mut ios = Vec::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let Some((maj, min)) = it.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (maj.parse(), min.parse()) else {
            continue;
        };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(value) = v.parse() else { continue };
            let (list, op) = match k {
                "rbytes" => (&mut bytes, "Read"),
                "wbytes" => (&mut bytes, "Write"),
                "dbytes" => (&mut bytes, "Discard"),
                "rios" => (&mut ios, "Read"),
                "wios" => (&mut ios, "Write"),
                "dios" => (&mut ios, "Discard"),
                _ => continue,
            };
            list.push(BlkioEntry {
                major,
                minor,
                op: op.to_owned(),
                value,
            });
        }
    }
    (bytes, ios)
}

/// Huge page sizes for which `dir` has files `<prefix><size>.<suffix>`.
fn hugetlb_sizes(dir: &Path, suffix: &str) -> Vec<String> {
    let mut sizes: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let size = name.strip_prefix("hugetlb.")?.strip_suffix(suffix)?;
                    (!size.contains('.')).then(|| size.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    sizes.sort();
    sizes
}

/// Nanoseconds per USER_HZ tick (`cpuacct.stat` counts ticks).
fn ns_per_tick() -> u64 {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|&v| v > 0)
        .unwrap_or(100);
    1_000_000_000 / hz
}

/// v1 directories to read, by controller (any may be missing).
#[derive(Debug, Default)]
pub struct V1Dirs<'a> {
    /// cpu hierarchy dir.
    pub cpu: Option<&'a Path>,
    /// cpuacct hierarchy dir.
    pub cpuacct: Option<&'a Path>,
    /// memory hierarchy dir.
    pub memory: Option<&'a Path>,
    /// pids hierarchy dir.
    pub pids: Option<&'a Path>,
    /// blkio hierarchy dir.
    pub blkio: Option<&'a Path>,
    /// hugetlb hierarchy dir.
    pub hugetlb: Option<&'a Path>,
}

fn memory_entry_v1(dir: &Path, prefix: &str) -> MemoryEntry {
    MemoryEntry {
        limit: num(&dir.join(format!("{prefix}.limit_in_bytes"))),
        usage: num(&dir.join(format!("{prefix}.usage_in_bytes"))),
        max: num(&dir.join(format!("{prefix}.max_usage_in_bytes"))),
        failcnt: num(&dir.join(format!("{prefix}.failcnt"))),
    }
}

/// Reads v1 statistics.
pub fn read_v1(dirs: &V1Dirs<'_>) -> CgroupStats {
    let mut s = CgroupStats::default();
    if let Some(d) = dirs.cpuacct {
        s.cpu.usage.total = num(&d.join("cpuacct.usage"));
        s.cpu.usage.percpu = read_opt(&d.join("cpuacct.usage_percpu"))
            .map(|t| {
                t.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let st = keyed(&d.join("cpuacct.stat"));
        let tick = ns_per_tick();
        s.cpu.usage.user = st.get("user").copied().unwrap_or(0).saturating_mul(tick);
        s.cpu.usage.kernel = st.get("system").copied().unwrap_or(0).saturating_mul(tick);
    }
    if let Some(d) = dirs.cpu {
        let st = keyed(&d.join("cpu.stat"));
        s.cpu.throttling = Throttling {
            periods: st.get("nr_periods").copied().unwrap_or(0),
            throttled_periods: st.get("nr_throttled").copied().unwrap_or(0),
            throttled_time: st.get("throttled_time").copied().unwrap_or(0),
        };
    }
    if let Some(d) = dirs.memory {
        s.memory.usage = memory_entry_v1(d, "memory");
        s.memory.swap = memory_entry_v1(d, "memory.memsw");
        s.memory.kernel = memory_entry_v1(d, "memory.kmem");
        s.memory.raw = keyed(&d.join("memory.stat"));
        s.memory.cache = s.memory.raw.get("cache").copied().unwrap_or(0);
    }
    if let Some(d) = dirs.pids {
        s.pids.current = num(&d.join("pids.current"));
        s.pids.limit = match read_u64(&d.join("pids.max")) {
            Some(u64::MAX) | None => 0,
            Some(v) => v,
        };
    }
    if let Some(d) = dirs.blkio {
        let pick = |names: &[&str]| {
            names
                .iter()
                .map(|n| {
                    read_opt(&d.join(n))
                        .map(|t| parse_v1_blkio(&t))
                        .unwrap_or_default()
                })
                .find(|v| !v.is_empty())
                .unwrap_or_default()
        };
        s.blkio.io_service_bytes_recursive = pick(&[
            "blkio.io_service_bytes_recursive",
            "blkio.throttle.io_service_bytes_recursive",
        ]);
        s.blkio.io_serviced_recursive = pick(&[
            "blkio.io_serviced_recursive",
            "blkio.throttle.io_serviced_recursive",
        ]);
    }
    if let Some(d) = dirs.hugetlb {
        for size in hugetlb_sizes(d, ".usage_in_bytes") {
            let f = |what: &str| num(&d.join(format!("hugetlb.{size}.{what}")));
            let h = HugetlbStats {
                usage: f("usage_in_bytes"),
                max: f("max_usage_in_bytes"),
                failcnt: f("failcnt"),
            };
            s.hugetlb.insert(size, h);
        }
    }
    s
}

/// Reads v2 statistics from the box's directory.
pub fn read_v2(dir: &Path) -> CgroupStats {
    let mut s = CgroupStats::default();
    let cpu = keyed(&dir.join("cpu.stat"));
    let us = |k: &str| cpu.get(k).copied().unwrap_or(0).saturating_mul(1000);
    s.cpu.usage.total = us("usage_usec");
    s.cpu.usage.user = us("user_usec");
    s.cpu.usage.kernel = us("system_usec");
    s.cpu.throttling = Throttling {
        periods: cpu.get("nr_periods").copied().unwrap_or(0),
        throttled_periods: cpu.get("nr_throttled").copied().unwrap_or(0),
        throttled_time: us("throttled_usec"),
    };
    let events = keyed(&dir.join("memory.events"));
    s.memory.usage = MemoryEntry {
        limit: num(&dir.join("memory.max")),
        usage: num(&dir.join("memory.current")),
        max: num(&dir.join("memory.peak")),
        failcnt: events.get("max").copied().unwrap_or(0),
    };
    let swap_events = keyed(&dir.join("memory.swap.events"));
    s.memory.swap = MemoryEntry {
        limit: num(&dir.join("memory.swap.max")),
        usage: num(&dir.join("memory.swap.current")),
        max: num(&dir.join("memory.swap.peak")),
        failcnt: swap_events.get("max").copied().unwrap_or(0),
    };
    s.memory.raw = keyed(&dir.join("memory.stat"));
    s.memory.cache = s.memory.raw.get("file").copied().unwrap_or(0);
    s.memory.kernel.usage = s.memory.raw.get("kernel").copied().unwrap_or(0);
    s.pids.current = num(&dir.join("pids.current"));
    s.pids.limit = match read_u64(&dir.join("pids.max")) {
        Some(u64::MAX) | None => 0,
        Some(v) => v,
    };
    if let Some(t) = read_opt(&dir.join("io.stat")) {
        let (bytes, ios) = parse_v2_io_stat(&t);
        s.blkio.io_service_bytes_recursive = bytes;
        s.blkio.io_serviced_recursive = ios;
    }
    for size in hugetlb_sizes(dir, ".current") {
        let ev = keyed(&dir.join(format!("hugetlb.{size}.events")));
        let h = HugetlbStats {
            usage: num(&dir.join(format!("hugetlb.{size}.current"))),
            max: 0,
            failcnt: ev.get("max").copied().unwrap_or(0),
        };
        s.hugetlb.insert(size, h);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::files::testdir::TempDir;
    use super::*;

    fn put(dir: &Path, name: &str, text: &str) {
        fs::write(dir.join(name), text).expect("write sample");
    }

    #[test]
    fn v1_stats_are_read_from_sample_files() {
        let t = TempDir::new("stats1");
        let d = t.path();
        put(d, "cpuacct.usage", "123456\n");
        put(d, "cpuacct.usage_percpu", "100000 23456 \n");
        put(d, "cpuacct.stat", "user 3\nsystem 1\n");
        put(
            d,
            "cpu.stat",
            "nr_periods 10\nnr_throttled 2\nthrottled_time 999\n",
        );
        put(d, "memory.usage_in_bytes", "4096\n");
        put(d, "memory.max_usage_in_bytes", "8192\n");
        put(d, "memory.limit_in_bytes", "16777216\n");
        put(d, "memory.failcnt", "7\n");
        put(d, "memory.stat", "cache 1024\nrss 2048\n");
        put(d, "pids.current", "3\n");
        put(d, "pids.max", "max\n");
        put(
            d,
            "blkio.throttle.io_service_bytes_recursive",
            "8:0 Read 512\n8:0 Write 0\nTotal 512\n",
        );
        put(d, "hugetlb.2MB.usage_in_bytes", "2097152\n");
        put(d, "hugetlb.2MB.limit_in_bytes", "4194304\n");
        put(d, "hugetlb.2MB.failcnt", "1\n");
        let all = V1Dirs {
            cpu: Some(d),
            cpuacct: Some(d),
            memory: Some(d),
            pids: Some(d),
            blkio: Some(d),
            hugetlb: Some(d),
        };
        let s = read_v1(&all);
        assert_eq!(s.cpu.usage.total, 123456);
        assert_eq!(s.cpu.usage.percpu, vec![100000, 23456]);
        assert_eq!(s.cpu.usage.user, 3 * ns_per_tick());
        assert_eq!(s.cpu.throttling.throttled_periods, 2);
        assert_eq!(s.cpu.throttling.throttled_time, 999);
        assert_eq!(
            s.memory.usage,
            MemoryEntry {
                limit: 16777216,
                usage: 4096,
                max: 8192,
                failcnt: 7
            }
        );
        assert_eq!(s.memory.cache, 1024);
        assert_eq!(s.memory.raw.get("rss"), Some(&2048));
        assert_eq!(
            s.pids,
            PidsStats {
                current: 3,
                limit: 0
            }
        );
        assert_eq!(s.blkio.io_service_bytes_recursive.len(), 2);
        assert_eq!(s.blkio.io_service_bytes_recursive[0].value, 512);
        assert_eq!(
            s.hugetlb["2MB"],
            HugetlbStats {
                usage: 2097152,
                max: 0,
                failcnt: 1
            }
        );
    }

    #[test]
    fn v2_stats_are_read_from_sample_files() {
        let t = TempDir::new("stats2");
        let d = t.path();
        put(d, "cpu.stat", "usage_usec 2000\nuser_usec 1500\nsystem_usec 500\nnr_periods 4\nnr_throttled 1\nthrottled_usec 30\n");
        put(d, "memory.current", "65536\n");
        put(d, "memory.max", "max\n");
        put(
            d,
            "memory.events",
            "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n",
        );
        put(d, "memory.swap.current", "0\n");
        put(d, "memory.swap.max", "0\n");
        put(d, "memory.stat", "anon 4096\nfile 8192\nkernel 512\n");
        put(d, "pids.current", "2\n");
        put(d, "pids.max", "5\n");
        put(
            d,
            "io.stat",
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
        );
        put(d, "hugetlb.1GB.current", "0\n");
        put(d, "hugetlb.1GB.events", "max 3\n");
        let s = read_v2(d);
        assert_eq!(s.cpu.usage.total, 2_000_000);
        assert_eq!(s.cpu.usage.kernel, 500_000);
        assert_eq!(s.cpu.throttling.throttled_time, 30_000);
        assert_eq!(s.memory.usage.limit, u64::MAX);
        assert_eq!(s.memory.usage.usage, 65536);
        assert_eq!(s.memory.usage.failcnt, 5);
        assert_eq!(s.memory.cache, 8192);
        assert_eq!(s.memory.kernel.usage, 512);
        assert_eq!(
            s.pids,
            PidsStats {
                current: 2,
                limit: 5
            }
        );
        assert_eq!(s.blkio.io_service_bytes_recursive[1].op, "Write");
        assert_eq!(s.blkio.io_service_bytes_recursive[1].value, 8192);
        assert_eq!(s.blkio.io_serviced_recursive[0].value, 1);
        assert_eq!(s.hugetlb["1GB"].failcnt, 3);
    }

    #[test]
    fn stats_serialize_in_runc_events_shape() {
        let v = serde_json::to_value(CgroupStats::default()).expect("serializes");
        assert!(v["cpu"]["usage"]["total"].is_u64());
        assert!(v["cpu"]["throttling"]["throttled_periods"].is_u64());
        assert!(v["memory"]["usage"]["failcnt"].is_u64());
        assert!(v["memory"]["swap"]["limit"].is_u64());
        assert!(v["pids"]["limit"].is_u64());
        assert!(v["blkio"]["ioServiceBytesRecursive"].is_array());
    }
}
