//! The memory figures of this process, from `/proc/self/status` (Linux).

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`) in bytes; `None`
/// where the file or the field is missing.
pub(crate) fn status_bytes(field: &str) -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| {
        line.strip_prefix(field)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
