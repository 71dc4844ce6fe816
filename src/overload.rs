//! Bounds under load: how many reviews are decided at once and how many
//! wait ([`Gate`]), how many TLS handshakes may be pending and how many
//! connections may be open ([`Connections`]).
//!
//! The apiserver is told apart from everybody else only by its client
//! certificate (`--client-ca`): its connections have a pool of their own,
//! and other callers never take a review seat (they are answered 401
//! before their body is read into memory). Without `--client-ca` nobody
//! can be told apart, so the bounds keep gitgate alive — bounded memory,
//! bounded work, fast 429s — but cannot keep a flood from crowding out
//! the apiserver.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Why a review got no seat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overloaded {
    /// Every seat is taken and the queue is full: refused at once.
    QueueFull,
    /// It waited in the queue for the whole queue timeout.
    QueueTimeout,
}

impl Overloaded {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Overloaded::QueueFull => "queue_full",
            Overloaded::QueueTimeout => "queue_timeout",
        }
    }
}

/// At most `max_in_flight` reviews are read and decided at once; up to
/// `max_queue` more wait for a seat, first come first served, each for at
/// most `queue_timeout`; the rest are refused at once.
pub struct Gate {
    seats: Arc<Semaphore>,
    max_in_flight: usize,
    waiting: AtomicUsize,
    max_queue: usize,
    queue_timeout: Duration,
}

/// A seat: the review holds it until it is answered.
pub struct Seat {
    _permit: OwnedSemaphorePermit,
}

impl Gate {
    pub fn new(max_in_flight: usize, max_queue: usize, queue_timeout: Duration) -> Self {
        let max_in_flight = max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        Gate {
            seats: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            waiting: AtomicUsize::new(0),
            max_queue,
            queue_timeout,
        }
    }

    /// A seat now, or after waiting in the queue, or why not.
    pub async fn enter(&self) -> Result<Seat, Overloaded> {
        if let Ok(permit) = self.seats.clone().try_acquire_owned() {
            return Ok(Seat { _permit: permit });
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Overloaded::QueueFull);
        }
        let _queued = Queued(&self.waiting);
        match tokio::time::timeout(self.queue_timeout, self.seats.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Seat { _permit: permit }),
            // The semaphore is never closed; a timeout is the only way here.
            _ => Err(Overloaded::QueueTimeout),
        }
    }

    /// Reviews holding a seat now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight.saturating_sub(self.seats.available_permits())
    }

    /// Reviews waiting for a seat now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

/// Leaves the queue when the wait ends, whichever way.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Connection bounds of the HTTPS server.
///
/// Pending TLS handshakes are bounded; when a new connection finds every
/// handshake slot taken, the *oldest* pending handshake is cut off, so a
/// client that opens connections and never finishes a handshake (TLS
/// slowloris) cannot keep the apiserver from connecting: an honest
/// handshake takes a millisecond, far less than the time an attacker needs
/// to push it out. Established connections are counted in two pools: the
/// reserved one for clients whose certificate chained to `--client-ca`
/// (and named one of `--client-name`, when given), the open one for
/// everybody else; a connection finding its pool full is closed.
pub struct Connections {
    handshakes: Mutex<BTreeMap<u64, oneshot::Sender<()>>>,
    next: AtomicU64,
    max_handshakes: usize,
    reserved: Arc<Semaphore>,
    open: Arc<Semaphore>,
}

/// A pending handshake's slot: `evicted` resolves when a newer connection
/// pushed it out.
pub struct HandshakeSlot {
    id: u64,
    owner: Arc<Connections>,
    pub evicted: oneshot::Receiver<()>,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.owner.handshakes.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

/// Which pool an established connection counts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// A client certificate from `--client-ca` (the apiserver).
    Reserved,
    /// Everybody else.
    Open,
}

impl Pool {
    pub fn label(self) -> &'static str {
        match self {
            Pool::Reserved => "reserved",
            Pool::Open => "open",
        }
    }
}

/// An established connection's place in its pool, held for its life.
pub struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
}

impl Connections {
    /// `max_connections` established connections in each pool.
    pub fn new(max_handshakes: usize, max_connections: usize) -> Self {
        let max_connections = max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Connections {
            handshakes: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
            max_handshakes: max_handshakes.max(1),
            reserved: Arc::new(Semaphore::new(max_connections)),
            open: Arc::new(Semaphore::new(max_connections)),
        }
    }

    /// A slot for a new handshake, and whether an older one was pushed out
    /// to make room for it.
    pub fn handshake(self: &Arc<Self>) -> (HandshakeSlot, bool) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut pending = self.handshakes.lock().unwrap_or_else(|e| e.into_inner());
        let mut evicted = false;
        while pending.len() >= self.max_handshakes {
            match pending.pop_first() {
                Some((_, oldest)) => {
                    let _ = oldest.send(());
                    evicted = true;
                }
                None => break,
            }
        }
        pending.insert(id, tx);
        (HandshakeSlot { id, owner: self.clone(), evicted: rx }, evicted)
    }

    /// Handshakes pending now.
    pub fn pending_handshakes(&self) -> usize {
        self.handshakes.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// A place in `pool`, or `None` when it is full.
    pub fn admit(&self, pool: Pool) -> Option<ConnectionSlot> {
        let sem = match pool {
            Pool::Reserved => &self.reserved,
            Pool::Open => &self.open,
        };
        sem.clone().try_acquire_owned().ok().map(|permit| ConnectionSlot { _permit: permit })
    }
}

/// At most one log line a second from a site any client can trigger (a
/// refused caller, a failed handshake): a flood must not turn into a flood
/// of log writes — each a blocking write on a worker thread — while the
/// metrics still count every one.
#[derive(Default)]
pub struct LogLimit {
    /// Seconds since `origin` at the last line written, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
    origin: std::sync::OnceLock<std::time::Instant>,
}

impl LogLimit {
    pub const fn new() -> Self {
        LogLimit { last: AtomicU64::new(0), suppressed: AtomicU64::new(0), origin: std::sync::OnceLock::new() }
    }

    /// `Some(n)` when a line may be written now (`n` lines were held back
    /// since the last one), `None` when this one is held back.
    pub fn allow(&self) -> Option<u64> {
        let origin = *self.origin.get_or_init(std::time::Instant::now);
        let now = origin.elapsed().as_secs() + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != now && self.last.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_gate_seats_queues_then_refuses() {
        let gate = Arc::new(Gate::new(2, 1, Duration::from_millis(200)));
        let a = gate.enter().await.unwrap();
        let _b = gate.enter().await.unwrap();
        assert_eq!(gate.in_flight(), 2);
        // the third waits; the fourth finds the queue full
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter().await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(gate.queued(), 1);
        assert_eq!(gate.enter().await.err(), Some(Overloaded::QueueFull));
        // a seat frees: the waiting one gets it
        drop(a);
        assert_eq!(waiting.await.unwrap(), Ok(()));
        assert_eq!(gate.queued(), 0);
        // nobody leaves: a waiter gives up after the queue timeout
        let _c = gate.enter().await.unwrap();
        let started = std::time::Instant::now();
        assert_eq!(gate.enter().await.err(), Some(Overloaded::QueueTimeout));
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(gate.queued(), 0, "a waiter that gave up leaves the queue");
    }

    #[tokio::test]
    async fn a_new_handshake_pushes_out_the_oldest_pending_one() {
        let conns = Arc::new(Connections::new(2, 10));
        let (mut first, evicted) = conns.handshake();
        assert!(!evicted);
        let (mut second, _) = conns.handshake();
        let (mut third, evicted) = conns.handshake();
        assert!(evicted, "the pool was full");
        assert!(first.evicted.try_recv().is_ok(), "the oldest is cut off");
        assert!(second.evicted.try_recv().is_err());
        assert!(third.evicted.try_recv().is_err());
        assert_eq!(conns.pending_handshakes(), 2);
        drop(second);
        drop(third);
        assert_eq!(conns.pending_handshakes(), 0, "a finished handshake frees its slot");
        drop(first);
    }

    #[test]
    fn a_log_line_a_second_and_the_rest_counted() {
        let limit = LogLimit::new();
        assert_eq!(limit.allow(), Some(0));
        for _ in 0..1000 {
            assert_eq!(limit.allow(), None, "held back within the second");
        }
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(limit.allow(), Some(1000), "the next line says how many were held back");
    }

    #[test]
    fn each_pool_has_its_own_connections() {
        let conns = Connections::new(4, 1);
        let open = conns.admit(Pool::Open).unwrap();
        assert!(conns.admit(Pool::Open).is_none(), "the open pool is full");
        let reserved = conns.admit(Pool::Reserved);
        assert!(reserved.is_some(), "a full open pool leaves the reserved one alone");
        drop(open);
        assert!(conns.admit(Pool::Open).is_some());
    }
}
