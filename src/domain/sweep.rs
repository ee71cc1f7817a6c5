//! The sweep guard: when a full sync's silence about a row may be read as its deletion.

/// Whether a full sync that saw `seen` of `live` rows may soft-delete the rest: only when it
/// saw at least `min_percent` of them. A sync that saw a fraction of what is there more likely
/// lost pages (a rate limit, a paging cap, a filter changed in the workflow) than watched most
/// of the source vanish; tools writing into customer systems guard deletes the same way.
pub fn sweep_allowed(live: i64, seen: i64, min_percent: i16) -> bool {
    live == 0 || seen.saturating_mul(100) >= live.saturating_mul(i64::from(min_percent))
}

/// Why a sweep was skipped, for the sync's record and its operator.
pub fn skipped_reason(live: i64, seen: i64, min_percent: i16) -> String {
    format!(
        "the sync saw {seen} of {live} live rows ({:.1} %), fewer than the {min_percent} % a sweep needs; \
         nothing was soft-deleted (apply it with `syncbridge syncs sweep <sync-id>` if the rest is really gone)",
        seen as f64 * 100.0 / live.max(1) as f64
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_that_saw_too_little_may_not_sweep() {
        assert!(sweep_allowed(0, 0, 50), "nothing to delete");
        assert!(sweep_allowed(100, 50, 50), "exactly the share");
        assert!(!sweep_allowed(100, 49, 50));
        assert!(!sweep_allowed(2500, 1000, 50), "40 %");
        assert!(sweep_allowed(100, 0, 0), "the guard turned off");
        assert!(!sweep_allowed(100, 99, 100));
        assert!(skipped_reason(2500, 1000, 50).contains("1000 of 2500 live rows (40.0 %)"));
    }
}
