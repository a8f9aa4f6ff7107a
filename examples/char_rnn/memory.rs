//! The memory a run may plan to use: the least of what the system has free, what the process's
//! rlimits leave it and what its cgroups leave it, each named as a message names it.

use std::fs;
use std::path::Path;

/// The bytes a run may still allocate, and where that bound comes from: the least of
/// MemAvailable (16 GiB where /proc/meminfo is missing), the address-space and data rlimits less
/// what the process already maps, and the memory limit of its cgroup and of every cgroup above
/// it less their usage.
pub fn limit() -> (u64, &'static str) {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cgroups = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut bounds = vec![available()];
    bounds.extend(rlimit_left(Rlimit::AddressSpace, kib(&status, "VmSize:")));
    bounds.extend(rlimit_left(Rlimit::Data, kib(&status, "VmData:")));
    bounds.extend(cgroup_left(Path::new("/sys/fs/cgroup"), &cgroups));
    bounds
        .into_iter()
        .min_by_key(|&(bytes, _)| bytes)
        .expect("MemAvailable is always a bound")
}

fn available() -> (u64, &'static str) {
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    match kib(&meminfo, "MemAvailable:") {
        Some(bytes) => (bytes, "MemAvailable in /proc/meminfo"),
        None => (16 << 30, "the fixed limit where /proc/meminfo is missing"),
    }
}

/// The value of the line `key  1234 kB` of a /proc file, in bytes.
fn kib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The rlimits that bound allocation.
#[derive(Clone, Copy)]
enum Rlimit {
    /// RLIMIT_AS, set by `ulimit -v`.
    AddressSpace,
    /// RLIMIT_DATA, set by `ulimit -d`.
    Data,
}

/// The soft limit less `used`, if there is a limit.
#[cfg(unix)]
fn rlimit_left(which: Rlimit, used: Option<u64>) -> Option<(u64, &'static str)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `r`, which outlives the call.
    let read = unsafe {
        match which {
            Rlimit::AddressSpace => libc::getrlimit(libc::RLIMIT_AS, &mut r),
            Rlimit::Data => libc::getrlimit(libc::RLIMIT_DATA, &mut r),
        }
    };
    if read != 0 || r.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    let name = match which {
        Rlimit::AddressSpace => "the address-space rlimit (ulimit -v) less what the process maps",
        Rlimit::Data => "the data rlimit (ulimit -d) less the process's data",
    };
    Some((r.rlim_cur.saturating_sub(used.unwrap_or(0)), name))
}

#[cfg(not(unix))]
fn rlimit_left(_: Rlimit, _: Option<u64>) -> Option<(u64, &'static str)> {
    None
}

/// What the cgroups named in `proc_cgroup` (the text of /proc/self/cgroup) leave, under `root`
/// (/sys/fs/cgroup): for cgroup v2 (`0::/path`) `memory.max` less `memory.current`, for v1's
/// memory controller (`4:memory:/path`) `memory.limit_in_bytes` less `memory.usage_in_bytes`,
/// of the process's group and of every group above it; the least of them.
pub fn cgroup_left(root: &Path, proc_cgroup: &str) -> Option<(u64, &'static str)> {
    let mut least: Option<(u64, &'static str)> = None;
    for line in proc_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (top, max, current, name) = match controllers {
            "" => (
                root.to_path_buf(),
                "memory.max",
                "memory.current",
                "the cgroup's memory.max less its memory.current",
            ),
            c if c.split(',').any(|c| c == "memory") => (
                root.join("memory"),
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
                "the cgroup's memory.limit_in_bytes less its memory.usage_in_bytes",
            ),
            _ => continue,
        };
        let mut group = top.join(path.trim_start_matches('/'));
        loop {
            // "max" (no limit) does not parse, and a missing file (the root group) is no limit.
            if let Some(limit) = read_number(&group.join(max)) {
                let left = limit.saturating_sub(read_number(&group.join(current)).unwrap_or(0));
                if least.is_none_or(|(l, _)| left < l) {
                    least = Some((left, name));
                }
            }
            if group == top || !group.pop() {
                break;
            }
        }
    }
    least
}

fn read_number(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}
