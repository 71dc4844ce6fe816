//! Sync windows (Argo CD's): when an app of a project may sync, from cron
//! schedules evaluated in civil time of an IANA time zone.
//!
//! A window is active at `now` when some start `t` of its schedule satisfies
//! `t <= now < t + duration`. For an app, the windows whose `apps` globs match
//! apply: an active deny window closes sync; otherwise, when allow windows
//! apply, sync is open only while one of them is active; with no applying
//! window sync is open. Civil times a DST change skips or repeats resolve like
//! jiff's "compatible" disambiguation (a skipped 02:30 runs at 03:30, a
//! repeated 02:30 runs once, at the first 02:30).
//!
//! Everything here is pure: no clock, no I/O; the caller passes `now`.

use std::time::Duration;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp, ToSpan};

/// The longest window a user may configure.
const MAX_DURATION: Duration = Duration::from_secs(31 * 24 * 3600);
/// How far `evaluate` looks ahead for `next_open` / `next_change`.
const HORIZON_DAYS: i64 = 366;
/// How far a schedule search looks (a 29 February schedule needs four years).
const SCAN_DAYS: i64 = 5 * 366;
/// What a schedule may be, appended to every schedule error.
const SCHEDULE_HINT: &str = "a 5-field cron: minute hour day-of-month month day-of-week, \
     or @yearly/@annually/@monthly/@weekly/@daily/@midnight/@hourly";
/// What a duration may be, appended to every duration error.
const DURATION_HINT: &str = "a duration such as 30m, 1h, 1h30m, 90s or 2d, greater than 0 and at most 31 days";
/// Upper bound on loop iterations of any search (a guard; real schedules
/// need a handful).
const MAX_STEPS: usize = 20_000;
/// How many window starts and ends `next_open` steps through (allow windows
/// that deny windows always cover would otherwise cost a year of hourly
/// steps, ~20 ms).
const MAX_OPEN_STEPS: usize = 2_000;

/// Whether a window opens or closes sync while it is active.
#[derive(Clone, Debug, PartialEq)]
pub enum WindowKind {
    /// Sync may run only while an allow window (of the app) is active.
    Allow,
    /// Sync may not run while this window is active.
    Deny,
}

/// One validated sync window of a project (`projects[].syncWindows[]`).
///
/// The public fields echo the configuration (for display); evaluation uses
/// the parsed schedule and time zone kept inside, so build one with
/// [`SyncWindow::parse`].
#[derive(Clone, Debug)]
pub struct SyncWindow {
    /// Allow or deny.
    pub kind: WindowKind,
    /// The schedule as written, e.g. `0 22 * * *`.
    pub schedule: String,
    /// How long the window stays active after each start of the schedule.
    pub duration: std::time::Duration,
    /// The IANA time zone the schedule is read in (`UTC` by default).
    pub time_zone: String,
    /// Globs (`*` matches any run of characters) of the app names the window applies to.
    pub apps: Vec<String>,
    /// Whether a manual (approved) sync may still run while this window closes sync.
    pub manual_sync: bool,
    /// Whether self-heal may still run while this window closes sync.
    pub self_heal_outside: bool,
    cron: Cron,
    tz: TimeZone,
    span: SignedDuration,
}

/// A sync window as written in `gitgate.yaml`.
#[derive(serde::Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSyncWindow {
    /// `allow` or `deny`.
    pub kind: String,
    /// A 5-field cron expression or a descriptor such as `@daily`.
    pub schedule: String,
    /// A duration such as `1h` or `1h30m`.
    pub duration: String,
    /// An IANA time zone name; `UTC` when absent.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// App name globs; all apps of the project when absent.
    #[serde(default)]
    pub apps: Option<Vec<String>>,
    /// Whether a manual sync may still run while this window closes sync.
    #[serde(default)]
    pub manual_sync: bool,
    /// Whether self-heal may still run while this window closes sync.
    #[serde(default)]
    pub self_heal_outside_window: bool,
}

/// What the windows of a project say about one app at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowVerdict {
    /// Whether an automated sync may run now.
    pub sync_open: bool,
    /// Whether self-heal may run now (true when sync is open, or when every
    /// window closing sync has `selfHealOutsideWindow: true`).
    pub self_heal_open: bool,
    /// Whether a manual (approved) sync may run now (true when sync is open,
    /// or when every window closing sync has `manualSync: true`).
    pub manual_allowed: bool,
    /// When closed: the next time sync opens (None if not within a year, or
    /// not found within 2000 window starts and ends; the reason says which).
    pub next_open: Option<Timestamp>,
    /// The next instant at which the verdict may change (a window of the app
    /// starts or ends), within a year; the caller sets a timer.
    pub next_change: Option<Timestamp>,
    /// Human text, e.g. `outside the allow window "0 22 * * *" (1h, Europe/Berlin); opens 2026-12-05T22:00:00+01:00`.
    pub reason: String,
}

impl SyncWindow {
    /// Validates a window as written; the error says what is wrong and what is allowed.
    pub fn parse(raw: RawSyncWindow) -> Result<SyncWindow, String> {
        let kind = match raw.kind.as_str() {
            "allow" => WindowKind::Allow,
            "deny" => WindowKind::Deny,
            other => return Err(format!("kind \"{other}\": must be allow or deny")),
        };
        let cron =
            Cron::parse(&raw.schedule).map_err(|e| format!("schedule \"{}\": {e} ({SCHEDULE_HINT})", raw.schedule))?;
        let duration = parse_duration(&raw.duration)
            .map_err(|e| format!("duration \"{}\": {e} ({DURATION_HINT})", raw.duration))?;
        let span = SignedDuration::try_from(duration)
            .map_err(|_| format!("duration \"{}\": too large ({DURATION_HINT})", raw.duration))?;
        let time_zone = match raw.time_zone {
            Some(z) if !z.trim().is_empty() => z.trim().to_string(),
            _ => "UTC".to_string(),
        };
        let tz = lookup_time_zone(&time_zone).ok_or_else(|| {
            format!("timeZone \"{time_zone}\": unknown time zone (an IANA name such as Europe/Berlin or UTC)")
        })?;
        let apps = match raw.apps {
            None => vec!["*".to_string()],
            Some(apps) => {
                if apps.is_empty() {
                    return Err("apps: an empty list matches no app (leave apps out for all apps \
                         of the project, or list names or globs such as web-*)"
                        .to_string());
                }
                if let Some(i) = apps.iter().position(|a| a.trim().is_empty()) {
                    return Err(format!(
                        "apps[{i}]: an empty pattern matches no app (an app name or a glob such as web-*, * matches any run of characters)"
                    ));
                }
                apps
            }
        };
        Ok(SyncWindow {
            kind,
            schedule: raw.schedule,
            duration,
            time_zone,
            apps,
            manual_sync: raw.manual_sync,
            self_heal_outside: raw.self_heal_outside_window,
            cron,
            tz,
            span,
        })
    }

    /// Whether this window's `apps` globs match `app`.
    pub fn applies_to(&self, app: &str) -> bool {
        self.apps.iter().any(|p| glob_match(p, app))
    }

    /// Whether some start `t` of the schedule satisfies `t <= now < t + duration`.
    pub fn active_at(&self, now: Timestamp) -> bool {
        self.active_start(now).is_some()
    }

    /// The first start of the schedule strictly after `t` (searching about
    /// five years ahead; None beyond that or at the end of representable time).
    pub fn next_start_after(&self, t: Timestamp) -> Option<Timestamp> {
        let back = t.checked_sub(SignedDuration::from_hours(48)).unwrap_or(t);
        let off = self.tz.to_offset(t).min(self.tz.to_offset(back));
        let from = off.to_datetime(t);
        let last = from.date().checked_add(SCAN_DAYS.days()).ok()?;
        let (mut date, mut hour, mut minute) = (from.date(), i32::from(from.hour()), {
            let m = i32::from(from.minute());
            if from.second() != 0 || from.subsec_nanosecond() != 0 { m + 1 } else { m }
        });
        // A civil time inside a DST gap resolves later than civil times just
        // after the gap: keep the earliest such start while looking for the
        // first regular one (regular civil times map to instants in order).
        let mut best_gap: Option<Timestamp> = None;
        for _ in 0..MAX_STEPS {
            let Some(c) = self.cron.next_civil(date, hour, minute, last) else {
                return best_gap;
            };
            let (inst, gap) = self.resolve(c)?;
            if inst > t {
                if !gap {
                    return Some(best_gap.map_or(inst, |g| g.min(inst)));
                }
                best_gap = Some(best_gap.map_or(inst, |g| g.min(inst)));
            }
            date = c.date();
            hour = i32::from(c.hour());
            minute = i32::from(c.minute()) + 1;
        }
        best_gap
    }

    /// The latest start of the schedule at or before `t`, not earlier than
    /// `earliest` (None when there is none in that range).
    pub fn last_start_at_or_before(&self, t: Timestamp, earliest: Timestamp) -> Option<Timestamp> {
        let back = t.checked_sub(SignedDuration::from_hours(48)).unwrap_or(t);
        let off = self.tz.to_offset(t).max(self.tz.to_offset(back));
        let from = off.to_datetime(t);
        let first = self.tz.to_datetime(earliest).date().checked_sub(2.days()).ok()?;
        let (mut date, mut hour, mut minute) = (from.date(), i32::from(from.hour()), i32::from(from.minute()));
        let mut best: Option<Timestamp> = None;
        // Once a regular start is found, civil times down to this bound may
        // still hold a DST-gap start that resolves later.
        let mut floor: Option<DateTime> = None;
        for _ in 0..MAX_STEPS {
            let Some(c) = self.cron.prev_civil(date, hour, minute, first) else {
                break;
            };
            if floor.is_some_and(|f| c < f) {
                break;
            }
            let (inst, gap) = self.resolve(c)?;
            if inst <= t {
                best = Some(best.map_or(inst, |b| b.max(inst)));
                if !gap && floor.is_none() {
                    let earlier = inst.checked_sub(SignedDuration::from_hours(48)).unwrap_or(inst);
                    let (a, b) = (self.tz.to_offset(inst), self.tz.to_offset(earlier));
                    if a == b {
                        break;
                    }
                    let spread = (a.seconds() - b.seconds()).abs();
                    floor = Some(c.checked_sub(SignedDuration::from_secs(i64::from(spread))).ok()?);
                }
            }
            date = c.date();
            hour = i32::from(c.hour());
            minute = i32::from(c.minute()) - 1;
        }
        best.filter(|b| *b >= earliest)
    }

    /// The start keeping the window active at `now` (the latest start `s <= now`
    /// with `now < s + duration`), if any.
    fn active_start(&self, now: Timestamp) -> Option<Timestamp> {
        let earliest = now.checked_sub(self.span).ok()?;
        let s = self.last_start_at_or_before(now, earliest)?;
        let end = s.checked_add(self.span).ok()?;
        (now < end).then_some(s)
    }

    /// The end of the active run that contains the occurrence starting at `s0`
    /// (occurrences that overlap or touch merge). None when the run lasts
    /// past `horizon`.
    fn run_end(&self, s0: Timestamp, horizon: Timestamp) -> Option<Timestamp> {
        let covers_day = self.span >= SignedDuration::from_mins(i64::from(self.cron.max_gap));
        let mut s = s0;
        for _ in 0..MAX_STEPS {
            if s > horizon {
                return None;
            }
            if covers_day && let Some(j) = self.jump(s, horizon) {
                s = j;
            }
            let end = s.checked_add(self.span).ok()?;
            match self.next_start_after(s) {
                Some(n) if n <= end => s = n,
                _ => return (end <= horizon).then_some(end),
            }
        }
        None
    }

    /// From start `s`, a later start up to which every start chains (only
    /// called when the duration covers the largest gap between starts of a
    /// day): the last start of the day of `s`, or of the last consecutive
    /// matching day when the duration also covers the gap across midnight;
    /// stops short of a DST change that sets clocks back (it widens the gap).
    fn jump(&self, s: Timestamp, horizon: Timestamp) -> Option<Timestamp> {
        let day = self.tz.to_datetime(s).date();
        if !self.cron.date_matches(day) {
            return None;
        }
        let mut last_day = day;
        if self.span >= SignedDuration::from_mins(i64::from(self.cron.wrap_gap)) {
            let horizon_day = self.tz.to_datetime(horizon).date();
            for _ in 0..=HORIZON_DAYS {
                let Ok(next) = last_day.tomorrow() else { break };
                if next > horizon_day || !self.cron.date_matches(next) {
                    break;
                }
                last_day = next;
            }
        }
        let (h, m) = (self.cron.last_tod / 60, self.cron.last_tod % 60);
        let time = Time::new(i8::try_from(h).ok()?, i8::try_from(m).ok()?, 0, 0).ok()?;
        let (target, _) = self.resolve(last_day.to_datetime(time))?;
        if target <= s {
            return None;
        }
        for tr in self.tz.following(s).take(64) {
            let at = tr.timestamp();
            if at > target {
                break;
            }
            let before = self.tz.to_offset(at.checked_sub(SignedDuration::from_secs(1)).ok()?);
            if tr.offset() < before {
                let just_before = at.checked_sub(SignedDuration::from_nanos(1)).ok()?;
                let p = self.last_start_at_or_before(just_before, s)?;
                return (p > s).then_some(p);
            }
        }
        Some(target)
    }

    /// The instant a civil time resolves to ("compatible"), and whether it
    /// lies in a gap (a DST change skipped it).
    fn resolve(&self, dt: DateTime) -> Option<(Timestamp, bool)> {
        let amb = self.tz.to_ambiguous_timestamp(dt);
        let gap = matches!(amb.offset(), AmbiguousOffset::Gap { .. });
        amb.compatible().ok().map(|t| (t, gap))
    }

    /// `the allow window "0 22 * * *" (1h, Europe/Berlin)`.
    fn describe(&self) -> String {
        let kind = match self.kind {
            WindowKind::Allow => "allow",
            WindowKind::Deny => "deny",
        };
        format!("the {kind} window \"{}\" ({}, {})", self.schedule, format_duration(self.duration), self.time_zone)
    }

    /// An instant as local time of this window's zone, e.g. `2026-12-05T22:00:00+01:00`.
    fn local(&self, t: Timestamp) -> String {
        let offset = self.tz.to_offset(t);
        let dt = offset.to_datetime(t);
        let secs = offset.seconds();
        let sign = if secs < 0 { '-' } else { '+' };
        let abs = secs.unsigned_abs();
        format!("{}{sign}{:02}:{:02}", dt.strftime("%Y-%m-%dT%H:%M:%S"), abs / 3600, abs % 3600 / 60)
    }
}

/// What the windows that apply to `app` say at `now`.
pub fn evaluate(windows: &[SyncWindow], app: &str, now: Timestamp) -> WindowVerdict {
    let matching: Vec<&SyncWindow> = windows.iter().filter(|w| w.applies_to(app)).collect();
    if matching.is_empty() {
        return WindowVerdict {
            sync_open: true,
            self_heal_open: true,
            manual_allowed: true,
            next_open: None,
            next_change: None,
            reason: format!("no sync window applies to app \"{app}\""),
        };
    }
    let horizon = now.checked_add(SignedDuration::from_hours(24 * HORIZON_DAYS)).unwrap_or(Timestamp::MAX);
    let states: Vec<WindowState> = matching.iter().map(|w| WindowState::at(w, now, horizon)).collect();
    let next_change = states.iter().filter_map(|s| s.flip).min();

    let active_denies: Vec<&WindowState> =
        states.iter().filter(|s| s.w.kind == WindowKind::Deny && s.start.is_some()).collect();
    let allows: Vec<&WindowState> = states.iter().filter(|s| s.w.kind == WindowKind::Allow).collect();
    let active_allow = allows.iter().find(|s| s.start.is_some()).copied();

    let closers: Vec<&WindowState> = if !active_denies.is_empty() {
        active_denies.clone()
    } else if !allows.is_empty() && active_allow.is_none() {
        allows.clone()
    } else {
        Vec::new()
    };
    let sync_open = closers.is_empty();
    let manual_allowed = closers.iter().all(|s| s.w.manual_sync);
    let self_heal_open = closers.iter().all(|s| s.w.self_heal_outside);
    let (next_open, open_search) =
        if sync_open { (None, OpenSearch::Done) } else { next_open(&matching, now, horizon) };

    let mut reason = state_reason(&states, &active_denies, active_allow, &allows);
    if !sync_open {
        // The zone of the window that opens it, else of the first closer.
        if let Some(shown) = closers.first().map(|s| s.w) {
            match (next_open, open_search) {
                (Some(t), _) => reason.push_str(&format!("; opens {}", shown.local(t))),
                (None, OpenSearch::Done) => reason.push_str("; does not open within a year"),
                (None, OpenSearch::GaveUp) => reason
                    .push_str(&format!("; no opening found within the next {MAX_OPEN_STEPS} window starts and ends")),
            }
        }
        if manual_allowed {
            reason.push_str("; manual sync allowed");
        }
        if self_heal_open {
            reason.push_str("; self-heal allowed");
        }
    }
    WindowVerdict { sync_open, self_heal_open, manual_allowed, next_open, next_change, reason }
}

/// One window that applies, at the instant evaluated.
struct WindowState<'a> {
    w: &'a SyncWindow,
    /// The start keeping it active now.
    start: Option<Timestamp>,
    /// When it next starts (inactive) or its run ends (active).
    flip: Option<Timestamp>,
}

impl<'a> WindowState<'a> {
    fn at(w: &'a SyncWindow, now: Timestamp, horizon: Timestamp) -> Self {
        let start = w.active_start(now);
        let flip = match start {
            Some(s) => w.run_end(s, horizon),
            None => w.next_start_after(now).filter(|t| *t <= horizon),
        };
        WindowState { w, start, flip }
    }

    /// ` until <local time>` of its flip, or that there is none in sight.
    fn until(&self) -> String {
        match self.flip {
            Some(t) => format!(" until {}", self.w.local(t)),
            None => " for more than a year".to_string(),
        }
    }
}

/// The first part of a verdict's reason: which window decides, and until
/// when (an active deny, else an active allow, else the allows sync is
/// outside of, else the next deny to start).
fn state_reason(
    states: &[WindowState],
    active_denies: &[&WindowState],
    active_allow: Option<&WindowState>,
    allows: &[&WindowState],
) -> String {
    let mut reason = String::new();
    if let Some(first) = active_denies.first() {
        reason.push_str(&format!("inside {}{}", first.w.describe(), first.until()));
        if active_denies.len() > 1 {
            reason.push_str(&format!(" (and {} more active deny windows)", active_denies.len() - 1));
        }
    } else if let Some(a) = active_allow {
        reason.push_str(&format!("inside {}{}", a.w.describe(), a.until()));
    } else if let [only] = allows {
        reason.push_str(&format!("outside {}", only.w.describe()));
    } else if !allows.is_empty() {
        reason.push_str(&format!("outside all {} allow windows", allows.len()));
    } else {
        // Only inactive deny windows apply.
        let next = states.iter().filter_map(|s| s.flip.map(|t| (t, s))).min_by_key(|(t, _)| *t);
        match next {
            Some((t, s)) => {
                reason.push_str(&format!("no deny window is active; {} starts {}", s.w.describe(), s.w.local(t)))
            }
            None => reason.push_str("no deny window is active"),
        }
    }
    reason
}

/// Whether `next_open` searched to the end.
#[derive(Clone, Copy)]
enum OpenSearch {
    Done,
    GaveUp,
}

/// The first instant after `now` at which sync is open, up to `horizon`.
fn next_open(windows: &[&SyncWindow], now: Timestamp, horizon: Timestamp) -> (Option<Timestamp>, OpenSearch) {
    let (found, steps) = find_open(windows, now, horizon);
    let search = if found.is_none() && steps >= MAX_OPEN_STEPS { OpenSearch::GaveUp } else { OpenSearch::Done };
    (found, search)
}

/// `next_open`'s search, and how many steps it took.
fn find_open(windows: &[&SyncWindow], now: Timestamp, horizon: Timestamp) -> (Option<Timestamp>, usize) {
    let denies: Vec<&SyncWindow> = windows.iter().copied().filter(|w| w.kind == WindowKind::Deny).collect();
    let allows: Vec<&SyncWindow> = windows.iter().copied().filter(|w| w.kind == WindowKind::Allow).collect();
    let mut t = now;
    for step in 0..MAX_OPEN_STEPS {
        if t > horizon {
            return (None, step);
        }
        // While deny windows are active, the one whose run lasts longest
        // covers the whole stretch: nothing opens before its end.
        let mut deny_end: Option<Timestamp> = None;
        for d in &denies {
            if let Some(s) = d.active_start(t) {
                let Some(end) = d.run_end(s, horizon) else {
                    return (None, step);
                };
                deny_end = Some(deny_end.map_or(end, |e| e.max(end)));
            }
        }
        if let Some(end) = deny_end {
            t = end;
            continue;
        }
        if allows.is_empty() || allows.iter().any(|a| a.active_at(t)) {
            return ((t > now).then_some(t), step);
        }
        match allows.iter().filter_map(|a| a.next_start_after(t)).min() {
            Some(next) => t = next,
            None => return (None, step),
        }
    }
    (None, MAX_OPEN_STEPS)
}

/// An IANA zone from the system database, else from the copy built into the
/// binary (containers without /usr/share/zoneinfo).
fn lookup_time_zone(name: &str) -> Option<TimeZone> {
    if name == "UTC" {
        return Some(TimeZone::UTC);
    }
    // Fixed offsets and POSIX TZ strings are not IANA names.
    if !name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    jiff::tz::db().get(name).ok().or_else(|| jiff::tz::TimeZoneDatabase::bundled().get(name).ok())
}

/// `*` matches any run of characters (also none); everything else is literal.
fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Go's duration syntax (`1h30m`, `90s`, `1.5h`, `300ms`) plus `d` for days.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty".to_string());
    }
    if s.starts_with('-') {
        return Err("must be positive".to_string());
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let max = MAX_DURATION.as_nanos();
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let int_len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let frac_len = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            frac_part = &r[..frac_len];
            rest = &r[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(format!("expected a number at \"{rest}\""));
        }
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "" => return Err("a number needs a unit (ns, us, ms, s, m, h or d)".to_string()),
            other => {
                return Err(format!("unknown unit \"{other}\" (ns, us, ms, s, m, h or d)"));
            }
        };
        // More than 20 integer digits exceeds 31 days in any unit.
        if int_part.len() > 20 {
            return Err("too large".to_string());
        }
        let int: u128 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| "too large".to_string())? };
        let mut part = int.checked_mul(per).ok_or("too large")?;
        let mut scale = per;
        for digit in frac_part.bytes().take(18) {
            scale /= 10;
            part += u128::from(digit - b'0') * scale;
        }
        total = total.checked_add(part).ok_or("too large")?;
        if total > max {
            return Err("longer than 31 days".to_string());
        }
    }
    if total == 0 {
        return Err("must be greater than 0".to_string());
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| "too large".to_string())?;
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| "too large".to_string())?;
    Ok(Duration::new(secs, nanos))
}

/// `1h`, `1h30m`, `90s` as `1m30s`, `36h`; sub-second rests as milliseconds.
fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let ms = d.subsec_millis();
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    if ms > 0 || out.is_empty() {
        out.push_str(&format!("{ms}ms"));
    }
    out
}

/// A parsed 5-field schedule as bit sets, plus the shape of its times of day.
#[derive(Clone, Debug)]
struct Cron {
    minutes: u64,
    hours: u64,
    /// Bits 1..=31.
    dom: u64,
    /// Bits 1..=12.
    months: u64,
    /// Bits 0..=6, Sunday = 0.
    dow: u64,
    dom_star: bool,
    dow_star: bool,
    /// The last start of a day, in minutes after midnight.
    last_tod: u32,
    /// The largest gap between consecutive starts within a day, in minutes.
    max_gap: u32,
    /// The gap from the last start of a day to the first of the next, in minutes.
    wrap_gap: u32,
}

/// One cron field's name, bounds and value names (index = value - min).
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// The end of `*` and of `a/n` (day-of-week: 6; 7 is only an explicit Sunday).
    star_max: u32,
    names: &'static [&'static str],
}

const MINUTE: Field = Field { name: "minute", min: 0, max: 59, star_max: 59, names: &[] };
const HOUR: Field = Field { name: "hour", min: 0, max: 23, star_max: 23, names: &[] };
const DOM: Field = Field { name: "day-of-month", min: 1, max: 31, star_max: 31, names: &[] };
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    star_max: 12,
    names: &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
};
/// 7 is accepted as Sunday too (folded onto 0).
const DOW: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    star_max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl Cron {
    fn parse(spec: &str) -> Result<Cron, String> {
        let spec = spec.trim();
        let expanded = if let Some(d) = spec.strip_prefix('@') {
            match d.to_ascii_lowercase().as_str() {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                _ => return Err(format!("unknown descriptor \"{spec}\"")),
            }
        } else {
            spec
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!("expected 5 fields, found {}", fields.len()));
        }
        let (minutes, _) = parse_field(fields[0], &MINUTE)?;
        let (hours, _) = parse_field(fields[1], &HOUR)?;
        let (dom, dom_star) = parse_field(fields[2], &DOM)?;
        let (months, _) = parse_field(fields[3], &MONTH)?;
        let (mut dow, dow_star) = parse_field(fields[4], &DOW)?;
        if dow & (1 << 7) != 0 {
            dow = (dow & !(1 << 7)) | 1;
        }
        let mut tods = Vec::new();
        for h in 0..24u32 {
            if hours & (1 << h) != 0 {
                for m in 0..60u32 {
                    if minutes & (1 << m) != 0 {
                        tods.push(h * 60 + m);
                    }
                }
            }
        }
        let (Some(&first), Some(&last)) = (tods.first(), tods.last()) else {
            return Err("matches no time of day".to_string());
        };
        let max_gap = tods.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        let cron = Cron {
            minutes,
            hours,
            dom,
            months,
            dow,
            dom_star,
            dow_star,
            last_tod: last,
            max_gap,
            wrap_gap: 1440 - last + first,
        };
        // With day-of-week "*", day-of-month must occur in a chosen month.
        if dow_star && !dom_star {
            const DAYS: [u32; 13] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
            let possible = (1..=12u32)
                .filter(|m| months & (1 << m) != 0)
                .any(|m| (1..=DAYS[m as usize]).any(|d| dom & (1 << d) != 0));
            if !possible {
                return Err(format!("day-of-month \"{}\" never occurs in month \"{}\"", fields[2], fields[3]));
            }
        }
        Ok(cron)
    }

    fn date_matches(&self, date: Date) -> bool {
        let Ok(month) = u32::try_from(date.month()) else {
            return false;
        };
        if self.months & (1 << month) == 0 {
            return false;
        }
        let (Ok(day), Ok(wd)) = (u32::try_from(date.day()), u32::try_from(date.weekday().to_sunday_zero_offset()))
        else {
            return false;
        };
        let dom = self.dom & (1 << day) != 0;
        let dow = self.dow & (1 << wd) != 0;
        if self.dom_star || self.dow_star { dom && dow } else { dom || dow }
    }

    /// The first matching civil minute at or after (`date`, `hour`, `minute`)
    /// (minute may be 60 and hour 24: they carry), up to `last` inclusive.
    fn next_civil(&self, mut date: Date, hour: i32, minute: i32, last: Date) -> Option<DateTime> {
        let (mut h, mut m) = (hour.max(0) as u32, minute.max(0) as u32);
        for _ in 0..MAX_STEPS {
            if date > last {
                return None;
            }
            let month = u32::try_from(date.month()).ok()?;
            if self.months & (1 << month) == 0 {
                date = date.first_of_month().checked_add(1.month()).ok()?;
                (h, m) = (0, 0);
                continue;
            }
            if self.date_matches(date)
                && let Some((hh, mm)) = self.next_tod(h, m)
            {
                let time = Time::new(i8::try_from(hh).ok()?, i8::try_from(mm).ok()?, 0, 0).ok()?;
                return Some(date.to_datetime(time));
            }
            date = date.tomorrow().ok()?;
            (h, m) = (0, 0);
        }
        None
    }

    /// The last matching civil minute at or before (`date`, `hour`, `minute`)
    /// (minute may be -1: it borrows), down to `first` inclusive.
    fn prev_civil(&self, mut date: Date, hour: i32, minute: i32, first: Date) -> Option<DateTime> {
        let (mut h, mut m) = (hour, minute);
        for _ in 0..MAX_STEPS {
            if date < first {
                return None;
            }
            let month = u32::try_from(date.month()).ok()?;
            if self.months & (1 << month) == 0 {
                date = date.first_of_month().yesterday().ok()?;
                (h, m) = (23, 59);
                continue;
            }
            if self.date_matches(date)
                && let Some((hh, mm)) = self.prev_tod(h, m)
            {
                let time = Time::new(i8::try_from(hh).ok()?, i8::try_from(mm).ok()?, 0, 0).ok()?;
                return Some(date.to_datetime(time));
            }
            date = date.yesterday().ok()?;
            (h, m) = (23, 59);
        }
        None
    }

    fn next_tod(&self, h: u32, m: u32) -> Option<(u32, u32)> {
        if h >= 24 {
            return None;
        }
        if self.hours & (1 << h) != 0
            && let Some(mm) = next_bit(self.minutes, m)
        {
            return Some((h, mm));
        }
        let hh = next_bit(self.hours, h + 1)?;
        Some((hh, next_bit(self.minutes, 0)?))
    }

    fn prev_tod(&self, h: i32, m: i32) -> Option<(u32, u32)> {
        let (mut h, mut m) = (h, m);
        if m < 0 {
            h -= 1;
            m = 59;
        }
        let h = u32::try_from(h).ok()?;
        let m = u32::try_from(m).ok()?;
        if self.hours & (1 << h.min(63)) != 0
            && let Some(mm) = prev_bit(self.minutes, m)
        {
            return Some((h, mm));
        }
        let hh = prev_bit(self.hours, h.checked_sub(1)?)?;
        Some((hh, prev_bit(self.minutes, 59)?))
    }
}

/// The lowest set bit at or above `from`.
fn next_bit(bits: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let b = bits >> from;
    (b != 0).then(|| from + b.trailing_zeros())
}

/// The highest set bit at or below `upto`.
fn prev_bit(bits: u64, upto: u32) -> Option<u32> {
    let mask = if upto >= 63 { u64::MAX } else { (1u64 << (upto + 1)) - 1 };
    let b = bits & mask;
    (b != 0).then(|| 63 - b.leading_zeros())
}

/// One field: a comma list of `*`/`?`, `n`, `a-b`, each optionally `/step`;
/// returns its bits and whether it counts as "*" for the day rule (robfig/cron:
/// a `*` part without a step above 1).
fn parse_field(expr: &str, f: &Field) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for part in expr.split(',') {
        if part.is_empty() {
            return Err(format!("{} \"{expr}\" has an empty list item", f.name));
        }
        let (range, step) = match part.split_once('/') {
            None => (part, None),
            Some((_, s)) if s.contains('/') => {
                return Err(format!("{} \"{part}\" has more than one /", f.name));
            }
            Some((r, s)) => (r, Some(s)),
        };
        let step = match step {
            None => 1,
            Some(s) => {
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("{} step \"{s}\" in \"{part}\" is not a number", f.name));
                }
                let Ok(n) = s.parse::<u32>() else {
                    return Err(format!("{} step {s} in \"{part}\" is out of range (a positive number)", f.name));
                };
                if n == 0 {
                    return Err(format!("{} step 0 in \"{part}\" must be a positive number", f.name));
                }
                n
            }
        };
        let (start, end, part_star) = if range == "*" || range == "?" {
            (f.min, f.star_max, true)
        } else {
            let mut ends = range.split('-');
            let lo = ends.next().unwrap_or("");
            let hi = ends.next();
            if ends.next().is_some() {
                return Err(format!("{} \"{part}\" has more than one -", f.name));
            }
            let lo = field_value(lo, part, f)?;
            let hi = match hi {
                Some(h) => field_value(h, part, f)?,
                // robfig/cron: "a/n" means "a-max/n".
                None if part.contains('/') => f.star_max,
                None => lo,
            };
            if lo > hi {
                return Err(format!("{} range {lo}-{hi} in \"{part}\" starts after it ends", f.name));
            }
            (lo, hi, false)
        };
        if part_star && step <= 1 {
            star = true;
        }
        let mut v = start;
        while v <= end {
            bits |= 1 << v;
            v = match v.checked_add(step) {
                Some(n) => n,
                None => break,
            };
        }
    }
    Ok((bits, star))
}

/// A number or (months, days of the week) a three-letter name, in range.
fn field_value(text: &str, part: &str, f: &Field) -> Result<u32, String> {
    let range = format!("{}-{}", f.min, f.max);
    if text.is_empty() {
        return Err(format!("{} \"{part}\" is missing a number", f.name));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = text.parse().unwrap_or(u64::MAX);
        if n < u64::from(f.min) || n > u64::from(f.max) {
            return Err(format!("{} {text} is out of range {range}", f.name));
        }
        return u32::try_from(n).map_err(|_| format!("{} {text} is out of range {range}", f.name));
    }
    let lower = text.to_ascii_lowercase();
    if let Some(i) = f.names.iter().position(|n| *n == lower) {
        return u32::try_from(i).map(|i| i + f.min).map_err(|_| format!("{} \"{text}\" is not valid", f.name));
    }
    let names = match f.names {
        [] => String::new(),
        [first, .., last] => format!(" or a name {}-{}", first.to_ascii_uppercase(), last.to_ascii_uppercase()),
        [only] => format!(" or {}", only.to_ascii_uppercase()),
    };
    Err(format!("{} \"{text}\" is not a number in {range}{names}", f.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    fn raw(kind: &str, schedule: &str, duration: &str, tz: Option<&str>) -> RawSyncWindow {
        RawSyncWindow {
            kind: kind.to_string(),
            schedule: schedule.to_string(),
            duration: duration.to_string(),
            time_zone: tz.map(str::to_string),
            apps: None,
            manual_sync: false,
            self_heal_outside_window: false,
        }
    }

    fn window(kind: &str, schedule: &str, duration: &str, tz: &str) -> SyncWindow {
        SyncWindow::parse(raw(kind, schedule, duration, Some(tz))).expect("valid window")
    }

    fn schedule_err(schedule: &str) -> String {
        SyncWindow::parse(raw("allow", schedule, "1h", None)).expect_err(schedule)
    }

    /// The starts of a window after `from`, `n` of them, as RFC 3339 UTC.
    fn starts(w: &SyncWindow, from: &str, n: usize) -> Vec<String> {
        let mut t = ts(from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = w.next_start_after(t).expect("a next start");
            out.push(t.to_string());
        }
        out
    }

    #[test]
    fn cron_steps_ranges_lists_and_names() {
        // 2026-12-07 is a Monday.
        let w = window("allow", "*/20 9-10 * * MON-fri", "1m", "UTC");
        assert_eq!(
            starts(&w, "2026-12-05T00:00:00Z", 7),
            [
                "2026-12-07T09:00:00Z",
                "2026-12-07T09:20:00Z",
                "2026-12-07T09:40:00Z",
                "2026-12-07T10:00:00Z",
                "2026-12-07T10:20:00Z",
                "2026-12-07T10:40:00Z",
                "2026-12-08T09:00:00Z",
            ]
        );
        let w = window("allow", "5/20,59 0 1 jan,Mar *", "1m", "UTC");
        assert_eq!(
            starts(&w, "2026-12-05T00:00:00Z", 6),
            [
                "2027-01-01T00:05:00Z",
                "2027-01-01T00:25:00Z",
                "2027-01-01T00:45:00Z",
                "2027-01-01T00:59:00Z",
                "2027-03-01T00:05:00Z",
                "2027-03-01T00:25:00Z",
            ]
        );
    }

    #[test]
    fn weekday_seven_is_sunday_and_ranges_wrap_through_it() {
        // 2026-12-06 is a Sunday.
        let seven = window("allow", "0 8 * * 7", "1h", "UTC");
        let zero = window("allow", "0 8 * * SUN", "1h", "UTC");
        let from = "2026-12-01T00:00:00Z";
        assert_eq!(starts(&seven, from, 2), starts(&zero, from, 2));
        assert_eq!(starts(&seven, from, 1), ["2026-12-06T08:00:00Z"]);
        let weekend = window("allow", "0 8 * * 6-7", "1h", "UTC");
        assert_eq!(starts(&weekend, from, 3), ["2026-12-05T08:00:00Z", "2026-12-06T08:00:00Z", "2026-12-12T08:00:00Z"]);
    }

    #[test]
    fn day_of_month_and_weekday_match_either_when_both_restricted() {
        // The 1st, or any Friday (2026-12-04 and 2026-12-11 are Fridays).
        let either = window("allow", "0 0 1 * FRI", "1h", "UTC");
        assert_eq!(
            starts(&either, "2026-11-30T12:00:00Z", 3),
            ["2026-12-01T00:00:00Z", "2026-12-04T00:00:00Z", "2026-12-11T00:00:00Z"]
        );
        // With "*" in one of them, both must match: Fridays only.
        let both = window("allow", "0 0 * * FRI", "1h", "UTC");
        assert_eq!(starts(&both, "2026-11-30T12:00:00Z", 1), ["2026-12-04T00:00:00Z"]);
        // A stepped "*" counts as restricted (robfig/cron): 1st/3rd/… or Friday.
        let stepped = window("allow", "0 0 */2 * FRI", "1h", "UTC");
        assert_eq!(
            starts(&stepped, "2026-12-01T12:00:00Z", 3),
            ["2026-12-03T00:00:00Z", "2026-12-04T00:00:00Z", "2026-12-05T00:00:00Z"]
        );
    }

    #[test]
    fn descriptors_equal_their_cron_lines() {
        let from = "2026-12-05T13:17:00Z";
        for (descriptor, line) in [
            ("@yearly", "0 0 1 1 *"),
            ("@annually", "0 0 1 1 *"),
            ("@monthly", "0 0 1 * *"),
            ("@weekly", "0 0 * * 0"),
            ("@daily", "0 0 * * *"),
            ("@midnight", "0 0 * * *"),
            ("@hourly", "0 * * * *"),
            ("@Daily", "0 0 * * *"),
        ] {
            let a = window("allow", descriptor, "1m", "UTC");
            let b = window("allow", line, "1m", "UTC");
            assert_eq!(starts(&a, from, 3), starts(&b, from, 3), "{descriptor}");
        }
    }

    #[test]
    fn leap_day_schedule_finds_the_next_leap_year() {
        let w = window("allow", "0 0 29 2 *", "1h", "UTC");
        assert_eq!(starts(&w, "2026-12-05T00:00:00Z", 1), ["2028-02-29T00:00:00Z"]);
    }

    #[test]
    fn schedule_errors_say_what_is_wrong_and_what_is_allowed() {
        let e = schedule_err("61 * * * *");
        assert!(e.starts_with("schedule \"61 * * * *\": minute 61 is out of range 0-59 ("), "{e}");
        assert!(e.contains("minute hour day-of-month month day-of-week"), "{e}");
        assert!(e.contains("@daily"), "{e}");
        for (schedule, wanted) in [
            ("", "expected 5 fields, found 0"),
            ("* * * *", "expected 5 fields, found 4"),
            ("* * * * * *", "expected 5 fields, found 6"),
            ("*/0 * * * *", "minute step 0"),
            ("5-1 * * * *", "minute range 5-1"),
            ("0 24 * * *", "hour 24 is out of range 0-23"),
            ("0 0 0 * *", "day-of-month 0 is out of range 1-31"),
            ("0 0 * 13 *", "month 13 is out of range 1-12"),
            ("0 0 * * 8", "day-of-week 8 is out of range 0-7"),
            ("0 0 * FOO *", "month \"FOO\" is not a number in 1-12 or a name JAN-DEC"),
            ("0 0 * * MONDAY", "day-of-week \"MONDAY\""),
            ("JAN 0 * * *", "minute \"JAN\" is not a number in 0-59"),
            ("99999999999999999999999 * * * *", "out of range 0-59"),
            ("*/99999999999999999999 * * * *", "out of range"),
            ("1-2-3 * * * *", "more than one -"),
            ("*/2/2 * * * *", "more than one /"),
            ("*/x * * * *", "step \"x\""),
            ("1,,2 * * * *", "empty list item"),
            ("- * * * *", "missing a number"),
            ("0 0 31 2 *", "never occurs"),
            ("0 0 30,31 2 *", "never occurs"),
            ("@every 1h", "unknown descriptor \"@every 1h\""),
            ("@", "unknown descriptor"),
            ("é 0 * * *", "minute \"é\""),
            ("0 0 * * 日", "day-of-week \"日\""),
        ] {
            let e = schedule_err(schedule);
            assert!(e.contains(wanted), "{schedule:?}: {e}");
            assert!(e.contains("a 5-field cron"), "{schedule:?}: {e}");
        }
        // Classic cron day rule: the 31st or a Monday is a valid schedule.
        assert!(SyncWindow::parse(raw("allow", "0 0 31 2 MON", "1h", None)).is_ok());
        // A stepped value that overshoots the range is fine ("*/45": 0 and 45).
        assert!(SyncWindow::parse(raw("allow", "*/45 * * * *", "1h", None)).is_ok());
    }

    #[test]
    fn steps_beyond_the_range_and_single_values_with_steps() {
        let w = window("allow", "*/45 0 1 1 *", "1m", "UTC");
        assert_eq!(
            starts(&w, "2026-12-05T00:00:00Z", 3),
            ["2027-01-01T00:00:00Z", "2027-01-01T00:45:00Z", "2028-01-01T00:00:00Z"]
        );
        // "50/5" means 50-59/5 (robfig/cron).
        let w = window("allow", "50/5 0 1 1 *", "1m", "UTC");
        assert_eq!(
            starts(&w, "2026-12-05T00:00:00Z", 3),
            ["2027-01-01T00:50:00Z", "2027-01-01T00:55:00Z", "2028-01-01T00:50:00Z"]
        );
    }

    #[test]
    fn other_field_errors() {
        let err = |r: RawSyncWindow| SyncWindow::parse(r).expect_err("invalid");
        assert_eq!(err(raw("maybe", "0 22 * * *", "1h", None)), "kind \"maybe\": must be allow or deny");
        assert_eq!(
            err(raw("allow", "0 22 * * *", "1h", Some("Mars/Base"))),
            "timeZone \"Mars/Base\": unknown time zone (an IANA name such as Europe/Berlin or UTC)"
        );
        for zone in ["+01:00", "../../etc/passwd", "Local", "Europe/", "💥"] {
            let e = err(raw("allow", "0 22 * * *", "1h", Some(zone)));
            assert!(e.contains("unknown time zone"), "{zone}: {e}");
        }
        for (duration, wanted) in [
            ("", "empty"),
            ("0s", "greater than 0"),
            ("0", "needs a unit"),
            ("-1h", "positive"),
            ("32d", "longer than 31 days"),
            ("744h1s", "longer than 31 days"),
            ("99999999999999999999999999h", "too large"),
            ("1x", "unknown unit \"x\""),
            ("h", "expected a number"),
            ("1h 30m", "unknown unit"),
            ("1.5.5h", "needs a unit"),
            ("1时", "unknown unit"),
        ] {
            let e = err(raw("allow", "0 22 * * *", duration, None));
            assert!(e.starts_with(&format!("duration \"{duration}\": ")), "{e}");
            assert!(e.contains(wanted), "{duration:?}: {e}");
            assert!(e.contains("at most 31 days"), "{duration:?}: {e}");
        }
        let mut r = raw("allow", "0 22 * * *", "1h", None);
        r.apps = Some(vec![]);
        assert!(err(r).contains("matches no app"));
        let mut r = raw("allow", "0 22 * * *", "1h", None);
        r.apps = Some(vec!["web".into(), " ".into()]);
        assert!(err(r).starts_with("apps[1]:"));
    }

    #[test]
    fn durations_in_go_syntax_and_days() {
        for (text, secs) in [
            ("30m", 1800),
            ("1h", 3600),
            ("1h30m", 5400),
            ("90s", 90),
            ("2d", 172_800),
            ("1.5h", 5400),
            ("1d12h", 129_600),
            ("31d", 31 * 86_400),
            ("744h", 31 * 86_400),
        ] {
            let w = window("allow", "0 0 * * *", text, "UTC");
            assert_eq!(w.duration, Duration::from_secs(secs), "{text}");
        }
        let w = window("allow", "0 0 * * *", "1500ms", "UTC");
        assert_eq!(w.duration, Duration::from_millis(1500));
    }

    #[test]
    fn defaults_and_yaml_shape() {
        let yaml = "kind: deny\nschedule: \"0 22 * * *\"\nduration: 1h\ntimeZone: Europe/Berlin\n\
                    apps: [\"web-*\"]\nmanualSync: true\nselfHealOutsideWindow: true\n";
        let r: RawSyncWindow = serde_saphyr::from_str(yaml).expect("yaml");
        let w = SyncWindow::parse(r).expect("valid");
        assert_eq!(w.kind, WindowKind::Deny);
        assert_eq!(w.time_zone, "Europe/Berlin");
        assert_eq!(w.apps, ["web-*"]);
        assert!(w.manual_sync && w.self_heal_outside);
        let r: RawSyncWindow =
            serde_saphyr::from_str("kind: allow\nschedule: '@daily'\nduration: 30m\n").expect("yaml");
        let w = SyncWindow::parse(r).expect("valid");
        assert_eq!(w.time_zone, "UTC");
        assert_eq!(w.apps, ["*"]);
        assert!(!w.manual_sync && !w.self_heal_outside);
        let unknown = serde_saphyr::from_str::<RawSyncWindow>(
            "kind: allow\nschedule: '@daily'\nduration: 30m\napplications: [x]\n",
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn time_zones_resolve_from_the_bundled_database() {
        // The copy built into the binary, used when /usr/share/zoneinfo is missing.
        let db = jiff::tz::TimeZoneDatabase::bundled();
        for name in ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Lord_Howe"] {
            assert!(db.get(name).is_ok(), "{name}");
        }
        let w = window("allow", "0 22 * * *", "1h", "Europe/Berlin");
        assert_eq!(w.next_start_after(ts("2026-12-05T12:00:00Z")), Some(ts("2026-12-05T21:00:00Z")));
    }

    #[test]
    fn active_across_midnight_with_an_exclusive_end() {
        let w = window("deny", "0 22 * * *", "4h", "UTC");
        assert!(!w.active_at(ts("2026-12-05T21:59:59Z")));
        assert!(w.active_at(ts("2026-12-05T22:00:00Z")));
        assert!(w.active_at(ts("2026-12-05T23:59:00Z")));
        assert!(w.active_at(ts("2026-12-06T01:59:59.999Z")));
        assert!(!w.active_at(ts("2026-12-06T02:00:00Z")));
        assert!(!w.active_at(ts("2026-12-06T12:00:00Z")));
        // A Friday-night window stays active into Saturday only.
        let w = window("deny", "0 22 * * FRI", "4h", "UTC");
        assert!(w.active_at(ts("2026-12-05T01:00:00Z"))); // Saturday 01:00
        assert!(!w.active_at(ts("2026-12-06T01:00:00Z"))); // Sunday 01:00
    }

    #[test]
    fn berlin_spring_forward_runs_a_skipped_start_an_hour_later() {
        // 2026-03-29: clocks jump from 02:00 CET to 03:00 CEST; 02:30 does not exist.
        let w = window("allow", "30 2 * * *", "1h", "Europe/Berlin");
        assert_eq!(
            starts(&w, "2026-03-28T00:00:00Z", 3),
            [
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-29T01:30:00Z", // 03:30 CEST (compatible: shifted by the gap)
                "2026-03-30T00:30:00Z", // 02:30 CEST
            ]
        );
        assert!(!w.active_at(ts("2026-03-29T01:29:00Z")));
        assert!(w.active_at(ts("2026-03-29T01:30:00Z")));
        assert!(w.active_at(ts("2026-03-29T02:29:00Z")));
        assert!(!w.active_at(ts("2026-03-29T02:30:00Z")));
        // Looking back from after the jump finds the shifted start too.
        let short = window("allow", "30 2 * * *", "10m", "Europe/Berlin");
        assert!(short.active_at(ts("2026-03-29T01:35:00Z")));
    }

    #[test]
    fn berlin_fall_back_runs_a_repeated_start_once() {
        // 2026-10-25: clocks go back from 03:00 CEST to 02:00 CET; 02:30 happens twice.
        let w = window("allow", "30 2 * * *", "30m", "Europe/Berlin");
        assert_eq!(starts(&w, "2026-10-24T12:00:00Z", 2), ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]);
        assert!(w.active_at(ts("2026-10-25T00:45:00Z")));
        assert!(!w.active_at(ts("2026-10-25T01:45:00Z"))); // the second 02:45
    }

    #[test]
    fn a_half_hour_dst_gap_orders_shifted_starts_correctly() {
        // Lord Howe Island moves clocks from 02:00 to 02:30 on 2026-10-04:
        // 02:15 is skipped and resolves to 02:45, after the real 02:40.
        let tz = TimeZone::get("Australia/Lord_Howe").expect("zone");
        let gap = tz.to_ambiguous_timestamp(jiff::civil::date(2026, 10, 4).at(2, 15, 0, 0));
        assert!(matches!(gap.offset(), AmbiguousOffset::Gap { .. }));
        let w = window("allow", "15,40 2 * * *", "10m", "Australia/Lord_Howe");
        let at = |local: &str| {
            jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M", local)
                .expect("local")
                .to_zoned(tz.clone())
                .expect("zoned")
                .timestamp()
        };
        let after_40 = at("2026-10-04 02:41");
        assert_eq!(w.next_start_after(after_40), Some(at("2026-10-04 02:45")));
        // At 02:50 the start keeping it active is the shifted 02:15 (=02:45).
        assert!(w.active_at(at("2026-10-04 02:50")));
        assert!(!w.active_at(at("2026-10-04 02:56")));
    }

    /// Every start in a few days around DST changes, by trying each civil
    /// minute, against the searches (forward, backward, active).
    #[test]
    fn searches_agree_with_a_minute_by_minute_scan_around_dst_changes() {
        let cases = [
            ("Europe/Berlin", "2026-03-27", "2026-03-31"),
            ("Europe/Berlin", "2026-10-23", "2026-10-27"),
            ("Australia/Lord_Howe", "2026-10-02", "2026-10-06"),
            ("Australia/Lord_Howe", "2026-04-03", "2026-04-07"),
            ("America/New_York", "2026-11-01", "2026-11-02"),
        ];
        let schedules = ["* * * * *", "*/7 1-4 * * *", "15,40 2 * * *", "30 2 * * *", "59 1,2 * * *", "0 3 * * SUN"];
        for (zone, from, to) in cases {
            let tz = TimeZone::get(zone).expect("zone");
            let (from, to): (Date, Date) = (from.parse().expect("date"), to.parse().expect("date"));
            for schedule in schedules {
                for duration in ["10m", "1h"] {
                    let w = window("deny", schedule, duration, zone);
                    let mut all = Vec::new();
                    let mut dt = from.to_datetime(Time::midnight());
                    while dt.date() < to {
                        let matches = w.cron.date_matches(dt.date())
                            && w.cron.hours & (1 << dt.hour()) != 0
                            && w.cron.minutes & (1 << dt.minute()) != 0;
                        if matches {
                            all.push(tz.to_ambiguous_timestamp(dt).compatible().expect("instant"));
                        }
                        dt = dt.checked_add(SignedDuration::from_mins(1)).expect("dt");
                    }
                    all.sort();
                    let end = tz.to_ambiguous_timestamp(to.to_datetime(Time::midnight())).compatible().expect("end");
                    let lo = tz
                        .to_ambiguous_timestamp(from.to_datetime(Time::midnight()))
                        .compatible()
                        .expect("lo")
                        .checked_add(SignedDuration::from_hours(30))
                        .expect("lo");
                    let hi = tz
                        .to_ambiguous_timestamp(to.to_datetime(Time::midnight()))
                        .compatible()
                        .expect("hi")
                        .checked_sub(SignedDuration::from_hours(30))
                        .expect("hi");
                    let mut t = lo;
                    while t < hi {
                        let got = w.next_start_after(t);
                        match all.iter().copied().find(|s| *s > t) {
                            Some(next) => assert_eq!(got, Some(next), "{zone} {schedule} after {t}"),
                            // Beyond the scanned days.
                            None => assert!(got.is_some_and(|g| g > end), "{zone} {schedule} after {t}"),
                        }
                        let active = all.iter().any(|s| *s <= t && t < s.checked_add(w.span).expect("end"));
                        assert_eq!(w.active_at(t), active, "{zone} {schedule} {duration} active at {t}");
                        if active {
                            // The end of the merged run holding t (starts that
                            // overlap or touch chain).
                            let mut e = t;
                            for s in &all {
                                if *s <= e {
                                    e = e.max(s.checked_add(w.span).expect("end"));
                                }
                            }
                            if e < hi {
                                let v = evaluate(std::slice::from_ref(&w), "app", t);
                                assert_eq!(v.next_change, Some(e), "{zone} {schedule} {duration} run end at {t}");
                                assert_eq!(v.next_open, Some(e), "{zone} {schedule} {duration} open at {t}");
                            }
                        }
                        t = t.checked_add(SignedDuration::from_secs(17 * 60 + 13)).expect("t");
                    }
                }
            }
        }
    }

    #[test]
    fn no_windows_means_open() {
        let v = evaluate(&[], "web", ts("2026-12-05T12:00:00Z"));
        assert!(v.sync_open && v.self_heal_open && v.manual_allowed);
        assert_eq!((v.next_open, v.next_change), (None, None));
        assert!(v.reason.contains("no sync window applies"), "{}", v.reason);
        // Windows of other apps do not count.
        let mut r = raw("deny", "* * * * *", "1h", None);
        r.apps = Some(vec!["api-*".into()]);
        let v = evaluate(&[SyncWindow::parse(r).expect("valid")], "web", ts("2026-12-05T12:00:00Z"));
        assert!(v.sync_open);
    }

    #[test]
    fn app_globs() {
        let mut r = raw("deny", "0 0 * * *", "1h", None);
        r.apps = Some(vec!["web-*".into(), "*-prod".into(), "a*b*c".into(), "exact".into(), "ünï*".into()]);
        let w = SyncWindow::parse(r).expect("valid");
        for app in ["web-", "web-frontend", "db-prod", "abc", "aXbYc", "abbbc", "exact", "ünïcode"] {
            assert!(w.applies_to(app), "{app}");
        }
        for app in ["web", "api", "prod", "ab", "acb", "exactly", "Web-x", "", "unicode"] {
            assert!(!w.applies_to(app), "{app}");
        }
        assert!(window("deny", "0 0 * * *", "1h", "UTC").applies_to("anything"));
    }

    #[test]
    fn deny_beats_allow() {
        let windows = [window("allow", "* * * * *", "1h", "UTC"), window("deny", "0 12 * * *", "1h", "UTC")];
        let v = evaluate(&windows, "web", ts("2026-12-05T12:30:00Z"));
        assert!(!v.sync_open && !v.self_heal_open && !v.manual_allowed);
        assert_eq!(v.next_open, Some(ts("2026-12-05T13:00:00Z")));
        assert_eq!(v.next_change, Some(ts("2026-12-05T13:00:00Z")));
        assert!(
            v.reason.starts_with("inside the deny window \"0 12 * * *\" (1h, UTC) until 2026-12-05T13:00:00+00:00"),
            "{}",
            v.reason
        );
        assert!(v.reason.contains("opens 2026-12-05T13:00:00+00:00"), "{}", v.reason);
        let v = evaluate(&windows, "web", ts("2026-12-05T13:00:00Z"));
        assert!(v.sync_open);
        assert!(v.reason.starts_with("inside the allow window"), "{}", v.reason);
    }

    #[test]
    fn allow_window_next_open_and_next_change() {
        let windows = [window("allow", "0 22 * * *", "1h", "Europe/Berlin")];
        let v = evaluate(&windows, "web", ts("2026-12-05T12:00:00Z"));
        assert!(!v.sync_open && !v.self_heal_open && !v.manual_allowed);
        assert_eq!(v.next_open, Some(ts("2026-12-05T21:00:00Z")));
        assert_eq!(v.next_change, Some(ts("2026-12-05T21:00:00Z")));
        assert_eq!(
            v.reason,
            "outside the allow window \"0 22 * * *\" (1h, Europe/Berlin); opens 2026-12-05T22:00:00+01:00"
        );
        let v = evaluate(&windows, "web", ts("2026-12-05T21:30:00Z"));
        assert!(v.sync_open && v.self_heal_open && v.manual_allowed);
        assert_eq!(v.next_open, None);
        assert_eq!(v.next_change, Some(ts("2026-12-05T22:00:00Z")));
        assert!(v.reason.contains("until 2026-12-05T23:00:00+01:00"), "{}", v.reason);
        // Just after it closes, it opens again tomorrow.
        let v = evaluate(&windows, "web", ts("2026-12-05T22:00:00Z"));
        assert_eq!(v.next_open, Some(ts("2026-12-06T21:00:00Z")));
    }

    #[test]
    fn next_open_skips_overlapping_denies_and_waits_for_an_allow() {
        let windows = [
            window("allow", "0 9 * * *", "8h", "UTC"),
            window("deny", "0 12 * * *", "1h", "UTC"),
            window("deny", "30 12 * * *", "2h", "UTC"),
        ];
        let open_at = |now: &str| evaluate(&windows, "web", ts(now)).next_open;
        assert_eq!(open_at("2026-12-05T08:00:00Z"), Some(ts("2026-12-05T09:00:00Z")));
        assert_eq!(open_at("2026-12-05T12:10:00Z"), Some(ts("2026-12-05T14:30:00Z")));
        assert_eq!(open_at("2026-12-05T17:30:00Z"), Some(ts("2026-12-06T09:00:00Z")));
        assert_eq!(open_at("2026-12-05T10:00:00Z"), None); // open now
        let v = evaluate(&windows, "web", ts("2026-12-05T12:10:00Z"));
        assert_eq!(v.next_change, Some(ts("2026-12-05T12:30:00Z")));
        let v = evaluate(&windows, "web", ts("2026-12-05T12:40:00Z"));
        assert!(v.reason.contains("and 1 more active deny window"), "{}", v.reason);
        // A deny that outlasts the allow pushes the opening to the next allow.
        let windows = [window("allow", "0 9 * * *", "2h", "UTC"), window("deny", "0 8 5 12 *", "4h", "UTC")];
        let v = evaluate(&windows, "web", ts("2026-12-05T08:30:00Z"));
        assert_eq!(v.next_open, Some(ts("2026-12-06T09:00:00Z")));
    }

    #[test]
    fn always_on_windows() {
        // Argo CD's documented "* * * * *" / 1h allow window never closes in UTC…
        let always = [window("allow", "* * * * *", "1h", "UTC")];
        let v = evaluate(&always, "web", ts("2026-12-05T12:00:00Z"));
        assert!(v.sync_open);
        assert_eq!(v.next_change, None);
        assert!(v.reason.contains("for more than a year"), "{}", v.reason);
        // …but in Berlin the repeated hour of the fall-back night has no
        // starts of its own (02:00-02:59 start once, as CEST), so it closes
        // for one minute: 02:59 CEST + 1h = 02:59 CET, next start 03:00 CET.
        let berlin = [window("allow", "* * * * *", "1h", "Europe/Berlin")];
        let v = evaluate(&berlin, "web", ts("2026-12-05T12:00:00Z"));
        assert_eq!(v.next_change, Some(ts("2027-10-31T01:59:00Z")));
        let v = evaluate(&berlin, "web", ts("2027-10-31T01:59:30Z"));
        assert!(!v.sync_open);
        assert_eq!(v.next_open, Some(ts("2027-10-31T02:00:00Z")));
        // A deny that is always active never opens.
        let deny = [window("deny", "*/30 * * * *", "30m", "UTC")];
        let v = evaluate(&deny, "web", ts("2026-12-05T12:00:00Z"));
        assert!(!v.sync_open);
        assert_eq!((v.next_open, v.next_change), (None, None));
        assert!(v.reason.contains("does not open within a year"), "{}", v.reason);
    }

    #[test]
    fn allow_windows_masked_by_denies_stay_cheap() {
        // Every hourly allow window lies inside an hourly deny window.
        let windows =
            [window("allow", "@hourly", "90s", "Europe/Berlin"), window("deny", "@hourly", "2m", "Europe/Berlin")];
        let v = evaluate(&windows, "web", ts("2026-12-05T12:00:30Z"));
        assert!(!v.sync_open);
        assert_eq!(v.next_open, None);
        assert_eq!(v.next_change, Some(ts("2026-12-05T12:01:30Z")));
        assert!(v.reason.contains("no opening found within the next 2000"), "{}", v.reason);
    }

    #[test]
    fn manual_sync_and_self_heal_follow_the_closing_windows() {
        let with = |kind: &str, schedule: &str, manual: bool, heal: bool| {
            let mut r = raw(kind, schedule, "2h", None);
            r.manual_sync = manual;
            r.self_heal_outside_window = heal;
            SyncWindow::parse(r).expect("valid")
        };
        let now = ts("2026-12-05T12:30:00Z");
        // One active deny allowing manual sync and self-heal.
        let v = evaluate(&[with("deny", "0 12 * * *", true, true)], "web", now);
        assert!(!v.sync_open && v.manual_allowed && v.self_heal_open);
        assert!(v.reason.contains("manual sync allowed") && v.reason.contains("self-heal allowed"), "{}", v.reason);
        // Every closing window must allow it.
        let v =
            evaluate(&[with("deny", "0 12 * * *", true, true), with("deny", "0 11 * * *", false, true)], "web", now);
        assert!(!v.sync_open && !v.manual_allowed && v.self_heal_open);
        // An inactive deny does not count.
        let v =
            evaluate(&[with("deny", "0 12 * * *", true, false), with("deny", "0 20 * * *", false, false)], "web", now);
        assert!(v.manual_allowed && !v.self_heal_open);
        // Closed by inactive allows: all of them must allow it.
        let allows = [with("allow", "0 2 * * *", true, true), with("allow", "0 4 * * *", true, false)];
        let v = evaluate(&allows, "web", now);
        assert!(!v.sync_open && v.manual_allowed && !v.self_heal_open);
        assert!(v.reason.starts_with("outside all 2 allow windows"), "{}", v.reason);
    }

    #[test]
    fn only_inactive_denies_leave_sync_open() {
        let windows = [window("deny", "0 22 * * *", "1h", "UTC")];
        let v = evaluate(&windows, "web", ts("2026-12-05T12:00:00Z"));
        assert!(v.sync_open && v.manual_allowed && v.self_heal_open);
        assert_eq!(v.next_open, None);
        assert_eq!(v.next_change, Some(ts("2026-12-05T22:00:00Z")));
        assert!(v.reason.contains("no deny window is active"), "{}", v.reason);
    }

    #[test]
    fn odd_inputs_never_panic() {
        let pieces = [
            "",
            " ",
            "*",
            "?",
            "/",
            "-",
            ",",
            "0",
            "7",
            "60",
            "-1",
            "*/0",
            "*/1",
            "5-1",
            "1-60",
            "99999999999999999999",
            "JAN",
            "sun-sat",
            "MON/2",
            "é",
            "💥",
            "@",
            "@yearly",
            "1,",
            ",1",
            "1-",
            "-1-",
            "*/",
            "/5",
            "**",
            "\t",
            "\u{0}",
        ];
        let mut n = 0usize;
        for a in pieces {
            for b in pieces {
                for schedule in
                    [format!("{a} {b} * * *"), format!("0 0 {a} {b} *"), format!("0 0 * {a} {b}"), format!("{a}{b}")]
                {
                    if let Ok(w) = SyncWindow::parse(raw("deny", &schedule, "1h", None)) {
                        n += 1;
                        let _ = w.next_start_after(ts("2026-12-05T00:00:00Z"));
                        let _ = w.active_at(ts("2026-12-05T00:00:00Z"));
                    }
                }
                let _ = SyncWindow::parse(raw("allow", "0 0 * * *", &format!("{a}{b}"), Some(b)));
            }
        }
        assert!(n > 0);
        // The ends of representable time.
        let windows = [
            window("allow", "* * * * *", "31d", "Europe/Berlin"),
            window("deny", "0 0 29 2 *", "1h", "Pacific/Kiritimati"),
        ];
        let near_end = Timestamp::MAX.checked_sub(SignedDuration::from_hours(2)).expect("time");
        for t in [Timestamp::MIN, Timestamp::MAX, near_end] {
            let _ = evaluate(&windows, "web", t);
            let _ = windows[0].next_start_after(t);
        }
    }

    #[test]
    fn evaluate_is_fast_for_fifty_windows() {
        let zones = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"];
        let schedules = ["0 22 * * *", "*/15 9-17 * * MON-FRI", "0 0 1 * *", "30 2 * * SUN", "@hourly", "* * * * *"];
        let mut windows = Vec::new();
        for i in 0..50 {
            let kind = if i % 4 == 0 { "deny" } else { "allow" };
            let duration = ["1h", "30m", "8h", "2d", "90s"][i % 5];
            windows.push(window(kind, schedules[i % schedules.len()], duration, zones[i % zones.len()]));
        }
        let now = ts("2026-12-05T12:00:00Z");
        let _ = evaluate(&windows, "web", now);
        let runs = 20u32;
        let started = std::time::Instant::now();
        for i in 0..runs {
            let t = now.checked_add(SignedDuration::from_mins(i64::from(i) * 97)).expect("time");
            let _ = evaluate(&windows, "web", t);
        }
        let each = started.elapsed() / runs;
        // Debug builds are ~10x slower than release; this guards against
        // minute-by-minute scans, which take seconds.
        assert!(each < Duration::from_millis(50), "{each:?} per evaluate");
    }
}
