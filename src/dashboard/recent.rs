//! The dashboard's memory of recent denials: a bounded ring filled by the
//! admission recorder chain, so the overview never reads the audit file.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::admission::{Event, RecordError, Recorder};
use crate::audit::record::{Entry, format_rfc3339_micros, now_micros};

/// One denied change, as the dashboard shows it (identity, owner, the
/// message; never the object).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub time: String,
    pub entry: Entry,
}

/// The last `cap` denials, newest first.
pub struct RecentDenials {
    ring: Mutex<VecDeque<Denial>>,
    cap: usize,
    /// Where the count of denials is published (`/api/v1/apps`' `denied`).
    status: Option<std::sync::Arc<crate::sync::status::StatusStore>>,
}

impl RecentDenials {
    pub fn new(cap: usize) -> Self {
        RecentDenials { ring: Mutex::new(VecDeque::with_capacity(cap.min(1024))), cap: cap.max(1), status: None }
    }

    /// Also counts every denial into `status` (what a fleet's hub reads).
    pub fn counting(mut self, status: std::sync::Arc<crate::sync::status::StatusStore>) -> Self {
        self.status = Some(status);
        self
    }

    pub fn push(&self, entry: Entry) {
        let denial = Denial { time: format_rfc3339_micros(now_micros()), entry };
        if let Some(status) = &self.status {
            status.denied(denial.time.clone());
        }
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == self.cap {
            ring.pop_back();
        }
        ring.push_front(denial);
    }

    /// Newest first.
    pub fn list(&self) -> Vec<Denial> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }
}

impl Recorder for RecentDenials {
    fn record(&self, e: &Event<'_>) -> Result<(), RecordError> {
        if e.decision.denial.is_some() {
            self.push(crate::audit::recorder::admission_entry(e));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{EventKind, Outcome};

    #[test]
    fn keeps_the_newest_denials_up_to_its_bound() {
        let r = RecentDenials::new(2);
        for name in ["a", "b", "c"] {
            let mut e = Entry::new(EventKind::Admission, Outcome::Deny);
            e.name = name.into();
            r.push(e);
        }
        let names: Vec<String> = r.list().into_iter().map(|d| d.entry.name).collect();
        assert_eq!(names, ["c", "b"]);
    }
}
