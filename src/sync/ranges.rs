//! Range splitting: the time ranges still to reconcile. A relay that refuses a range as too
//! large (`blocked:` about size) gets its two halves instead, newer half first, down to one
//! second; every other refusal ends the job.

use super::SyncError;
use crate::event::Filter;
use crate::event::wire::Prefix;

/// How far past now an open-ended range is taken to reach when split (events dated in the
/// future are rare; splitting at `u64::MAX / 2` would take 64 halvings to reach them).
const NOW_SLACK: u64 = 366 * 86_400;

/// An inclusive range of `created_at` times.
pub(super) type Range = (u64, u64);

/// The ranges left to reconcile, the next one last.
#[derive(Debug)]
pub(super) struct Ranges {
    todo: Vec<Range>,
}

impl Ranges {
    /// The whole of `filter`'s time window.
    pub(super) fn of(filter: &Filter) -> Self {
        Self {
            todo: vec![(filter.since.unwrap_or(0), filter.until.unwrap_or(u64::MAX))],
        }
    }

    /// The next range to reconcile.
    pub(super) fn pop(&mut self) -> Option<Range> {
        self.todo.pop()
    }

    /// Ranges to reconcile again (parked while we authenticated).
    pub(super) fn extend(&mut self, ranges: impl IntoIterator<Item = Range>) {
        self.todo.extend(ranges);
    }

    /// Nothing left.
    pub(super) fn is_empty(&self) -> bool {
        self.todo.is_empty()
    }

    /// `range` was refused as too large (`reason`): queues its halves, the newer one to be
    /// reconciled first. A one-second range cannot be split: that ends the job.
    pub(super) fn split(&mut self, range: Range, reason: &str, now: u64) -> Result<(), SyncError> {
        let (lo, hi) = range;
        let hi_eff = hi.min(now.saturating_add(NOW_SLACK)).max(lo);
        if lo >= hi_eff {
            return Err(SyncError::Refused(format!(
                "{reason} (cannot split a one-second range)"
            )));
        }
        let mid = lo + (hi_eff - lo) / 2;
        // Newer half first, older half popped last.
        self.todo.push((lo, mid));
        self.todo.push((mid + 1, hi));
        Ok(())
    }
}

/// `filter` narrowed to `range`.
pub(super) fn filter_for(filter: &Filter, range: Range) -> Filter {
    let mut f = filter.clone();
    if range.0 > 0 {
        f.since = Some(range.0);
    }
    if range.1 < u64::MAX {
        f.until = Some(range.1);
    }
    f
}

/// `blocked:` refusals about size (a 4th element with the maximum, or words saying so) are split;
/// other refusals end the job.
pub(super) fn is_size_refusal(reason: &str, max: Option<u64>) -> bool {
    let r = reason.to_ascii_lowercase();
    Prefix::Blocked.starts(&r)
        && (max.is_some()
            || [
                "too many",
                "too big",
                "too large",
                "maximum",
                "max ",
                "limit",
                "size",
            ]
            .iter()
            .any(|w| r.contains(w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_refusals() {
        assert!(is_size_refusal("blocked: too many records", None));
        assert!(is_size_refusal("blocked: query", Some(1000)));
        assert!(!is_size_refusal("blocked: you are banned", None));
        assert!(!is_size_refusal("error: too many", None));
    }

    #[test]
    fn halves_newer_first_down_to_one_second() {
        let f = Filter::from_json(r#"{"since":100,"until":200}"#).unwrap();
        let mut r = Ranges::of(&f);
        let whole = r.pop().unwrap();
        assert_eq!(whole, (100, 200));
        r.split(whole, "blocked: too many", 1_000).unwrap();
        assert_eq!((r.pop(), r.pop()), (Some((151, 200)), Some((100, 150))));
        let e = r.split((7, 7), "blocked: too many", 1_000).unwrap_err();
        assert_eq!(
            e.to_string(),
            "refused by relay: blocked: too many (cannot split a one-second range)"
        );
        assert!(r.is_empty());
    }

    #[test]
    fn an_open_end_splits_near_now() {
        let mut r = Ranges::of(&Filter::default());
        let whole = r.pop().unwrap();
        assert_eq!(whole, (0, u64::MAX));
        let now = 1_700_000_000;
        r.split(whole, "blocked: too many", now).unwrap();
        let mid = (now + NOW_SLACK) / 2;
        assert_eq!(
            (r.pop(), r.pop()),
            (Some((mid + 1, u64::MAX)), Some((0, mid)))
        );
        let narrowed = filter_for(&Filter::default(), (0, mid));
        assert_eq!((narrowed.since, narrowed.until), (None, Some(mid)));
    }
}
