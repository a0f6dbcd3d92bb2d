//! [`Net`]: scripted in-memory connections for a [`ClientService`](crate::driver::ClientService).

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::string::String;
use std::sync::{Arc, Mutex, MutexGuard};
use std::vec::Vec;

/// The error of [`Net`]'s connections and prepare hook: a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetError {
    message: String,
}

impl NetError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> NetError {
        NetError {
            message: message.into(),
        }
    }

    /// Its message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NetError {}

/// What one connection attempt does; queued with [`Net::push_connect`], taken in
/// order by each call of the connector. With nothing queued an attempt is
/// [`Hang`](ConnectOutcome::Hang).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectOutcome {
    /// It connects when first polled.
    Succeed,
    /// It fails with a [`NetError`] with this message when first polled.
    Fail(String),
    /// It stays pending until the test resolves it ([`Net::succeed`],
    /// [`Net::fail`], [`Net::panic`]) or the service drops it.
    Hang,
    /// It panics when first polled.
    Panic,
    /// The connector closure itself panics when called (no attempt future is made).
    PanicInConnector,
}

/// What one prepare step does; queued with [`Net::push_prepare`], taken in order by
/// each call of the prepare hook. With nothing queued it is
/// [`Hang`](PrepareOutcome::Hang).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepareOutcome {
    /// It accepts the connection when first polled.
    Succeed,
    /// It rejects the connection with a [`NetError`] with this message when first polled.
    Fail(String),
    /// It stays pending until the test resolves it ([`Net::prepare_succeed`],
    /// [`Net::prepare_fail`], [`Net::prepare_panic`]) or the service drops it.
    Hang,
    /// It panics when first polled.
    Panic,
    /// The prepare closure itself panics when called (no prepare future is made).
    PanicInHook,
}

/// Where one connection attempt is; see [`Net::attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptStatus {
    /// In flight, undecided: the test can resolve it.
    Pending,
    /// Decided (scripted or resolved by the test), but not polled since: the service
    /// has not seen the outcome yet.
    Resolving,
    /// It connected: connection number = attempt number.
    Connected,
    /// It failed.
    Failed,
    /// It panicked when polled.
    Panicked,
    /// The connector closure panicked when called for it.
    ConnectorPanicked,
    /// The service dropped it before seeing its outcome (cancelled it).
    Cancelled,
}

/// Where one connection is; see [`Net::connection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnStatus {
    /// Its driver future is alive (maybe already told to end, but not polled since).
    Open,
    /// Its driver future ended after [`Net::lose`]: the service saw it lost.
    Lost,
    /// Its driver future panicked after [`Net::crash`].
    Crashed,
    /// The service dropped its driver future while it was running (closed it).
    Closed,
}

/// Where one connection's prepare step is; see [`Net::prepare_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrepareStatus {
    /// Pending, undecided: the test can resolve it.
    Pending,
    /// Decided, but not polled since.
    Resolving,
    /// It accepted the connection.
    Succeeded,
    /// It rejected the connection.
    Failed,
    /// It panicked when polled.
    Panicked,
    /// The prepare closure panicked when called for it.
    HookPanicked,
    /// The service dropped it before seeing its outcome.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Succeed,
    Fail(String),
    Panic,
}

struct Attempt {
    status: AttemptStatus,
    decision: Option<Decision>,
    waker: Option<Waker>,
}

struct Conn {
    status: ConnStatus,
    /// Told to end (`Some(false)`: lost) or to panic (`Some(true)`) when next polled.
    doom: Option<bool>,
    waker: Option<Waker>,
    clones: usize,
}

struct Prepare {
    status: PrepareStatus,
    decision: Option<Decision>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct State {
    connects: VecDeque<ConnectOutcome>,
    prepares: VecDeque<PrepareOutcome>,
    attempts: Vec<Attempt>,
    conns: BTreeMap<usize, Conn>,
    /// By connection number (the latest step of each).
    prepare_steps: BTreeMap<usize, Prepare>,
    /// Prepare hook calls ever.
    prepare_calls: usize,
    panic_on_clone: BTreeSet<usize>,
}

/// A scripted in-memory network for a [`ClientService`](crate::driver::ClientService):
/// hands out a [connector](Net::connector) and a [prepare hook](Net::prepare_hook)
/// whose outcomes the test decides, queued in advance or live, and records what the
/// service did with them.
///
/// * **Attempts** are numbered 0, 1, 2, … in the order the connector is called
///   (for one service on one `Net`, the same numbers as the service's
///   [`AttemptId`](crate::AttemptId)s). Each takes the next queued
///   [`ConnectOutcome`]; with none queued it hangs until the test resolves it with
///   [`succeed`](Net::succeed), [`fail`](Net::fail) or [`panic`](Net::panic). An
///   attempt the service drops unresolved is recorded as
///   [`Cancelled`](AttemptStatus::Cancelled).
/// * **Connections** have the number of the attempt that made them. Each is a
///   [`NetHandle`] and a [`NetDriver`] future that ends when the test says the
///   connection is [lost](Net::lose), panics when it says it [crashes](Net::crash),
///   and records when the service drops it ([`Closed`](ConnStatus::Closed)).
/// * **Prepare steps** are known by the connection they prepare (the service
///   prepares each connection once; a later step for the same connection replaces
///   the record of the earlier one), and take the next queued [`PrepareOutcome`]
///   (or hang until resolved live).
///
/// Everything is deterministic: outcomes are delivered when the service polls the
/// future, never on their own. Clones share the same network.
///
/// ```
/// use redial::testing::{ConnectOutcome, Net};
///
/// let net = Net::new();
/// net.push_connect(ConnectOutcome::Fail("refused".into()));
/// let mut connect = net.connector();
/// let first = connect(); // attempt 0: fails when polled
/// let second = connect(); // attempt 1: nothing queued, so it hangs
/// assert_eq!(net.pending_attempts(), vec![1]);
/// drop(second); // as a service cancelling it
/// assert_eq!(net.cancelled_attempts(), vec![1]);
/// # drop(first);
/// ```
#[derive(Clone, Default)]
pub struct Net {
    shared: Arc<Mutex<State>>,
}

impl fmt::Debug for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Net")
            .field("attempts", &state.attempts.len())
            .field("connections", &state.conns.len())
            .field("queued_connects", &state.connects.len())
            .field("queued_prepares", &state.prepares.len())
            .finish_non_exhaustive()
    }
}

fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    // Nothing panics while the lock is held, but a poisoned lock stays usable.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

impl Net {
    /// A network with nothing queued.
    pub fn new() -> Net {
        Net::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }

    // ----- scripting ------------------------------------------------------------

    /// Queues the outcome of the next attempt still unscripted.
    pub fn push_connect(&self, outcome: ConnectOutcome) {
        self.lock().connects.push_back(outcome);
    }

    /// Queues the outcomes of the next attempts, in order.
    pub fn push_connects(&self, outcomes: impl IntoIterator<Item = ConnectOutcome>) {
        self.lock().connects.extend(outcomes);
    }

    /// Queues the outcome of the next prepare step still unscripted.
    pub fn push_prepare(&self, outcome: PrepareOutcome) {
        self.lock().prepares.push_back(outcome);
    }

    /// Queues the outcomes of the next prepare steps, in order.
    pub fn push_prepares(&self, outcomes: impl IntoIterator<Item = PrepareOutcome>) {
        self.lock().prepares.extend(outcomes);
    }

    /// Makes every [`Clone`] of connection `conn`'s handle panic (`true`) or not.
    /// Works before the connection exists (the service clones the handle as soon as
    /// the attempt succeeds).
    pub fn set_panic_on_clone(&self, conn: usize, panic: bool) {
        let mut state = self.lock();
        if panic {
            state.panic_on_clone.insert(conn);
        } else {
            state.panic_on_clone.remove(&conn);
        }
    }

    // ----- the closures for the builder -----------------------------------------

    /// The connector for [`ClientService::builder`](crate::driver::ClientService::builder):
    /// each call is a new attempt.
    ///
    /// # Panics
    ///
    /// When called for an attempt scripted [`ConnectOutcome::PanicInConnector`].
    pub fn connector(&self) -> impl FnMut() -> NetAttempt + Send + Sync + 'static {
        let net = self.clone();
        move || net.connect()
    }

    /// The prepare hook for [`Builder::prepare`](crate::driver::Builder::prepare):
    /// each call is the prepare step of the handle's connection.
    ///
    /// # Panics
    ///
    /// When called for a step scripted [`PrepareOutcome::PanicInHook`].
    pub fn prepare_hook(&self) -> impl FnMut(NetHandle) -> NetPrepare + Send + Sync + 'static {
        let net = self.clone();
        move |handle| net.start_prepare(handle.conn)
    }

    fn connect(&self) -> NetAttempt {
        let mut state = self.lock();
        let attempt = state.attempts.len();
        let (status, decision) = match state.connects.pop_front() {
            None | Some(ConnectOutcome::Hang) => (AttemptStatus::Pending, None),
            Some(ConnectOutcome::Succeed) => (AttemptStatus::Resolving, Some(Decision::Succeed)),
            Some(ConnectOutcome::Fail(m)) => (AttemptStatus::Resolving, Some(Decision::Fail(m))),
            Some(ConnectOutcome::Panic) => (AttemptStatus::Resolving, Some(Decision::Panic)),
            Some(ConnectOutcome::PanicInConnector) => {
                state.attempts.push(Attempt {
                    status: AttemptStatus::ConnectorPanicked,
                    decision: None,
                    waker: None,
                });
                drop(state);
                panic!(
                    "redial::testing::Net: the connector panics for attempt {attempt} (scripted)"
                );
            }
        };
        state.attempts.push(Attempt {
            status,
            decision,
            waker: None,
        });
        NetAttempt {
            net: self.clone(),
            attempt,
            done: false,
        }
    }

    fn start_prepare(&self, conn: usize) -> NetPrepare {
        let mut state = self.lock();
        state.prepare_calls += 1;
        let (status, decision) = match state.prepares.pop_front() {
            None | Some(PrepareOutcome::Hang) => (PrepareStatus::Pending, None),
            Some(PrepareOutcome::Succeed) => (PrepareStatus::Resolving, Some(Decision::Succeed)),
            Some(PrepareOutcome::Fail(m)) => (PrepareStatus::Resolving, Some(Decision::Fail(m))),
            Some(PrepareOutcome::Panic) => (PrepareStatus::Resolving, Some(Decision::Panic)),
            Some(PrepareOutcome::PanicInHook) => {
                state.prepare_steps.insert(
                    conn,
                    Prepare {
                        status: PrepareStatus::HookPanicked,
                        decision: None,
                        waker: None,
                    },
                );
                drop(state);
                panic!("redial::testing::Net: the prepare hook panics for connection {conn} (scripted)");
            }
        };
        state.prepare_steps.insert(
            conn,
            Prepare {
                status,
                decision,
                waker: None,
            },
        );
        NetPrepare {
            net: self.clone(),
            conn,
            done: false,
        }
    }

    // ----- live control ---------------------------------------------------------

    fn decide_attempt(&self, attempt: usize, decision: Decision) -> bool {
        let waker = {
            let mut state = self.lock();
            match state.attempts.get_mut(attempt) {
                Some(a) if a.status == AttemptStatus::Pending => {
                    a.status = AttemptStatus::Resolving;
                    a.decision = Some(decision);
                    a.waker.take()
                }
                _ => return false,
            }
        };
        wake(waker);
        true
    }

    /// Makes pending attempt `attempt` connect (when the service next polls it).
    /// Returns whether it was pending.
    pub fn succeed(&self, attempt: usize) -> bool {
        self.decide_attempt(attempt, Decision::Succeed)
    }

    /// Makes pending attempt `attempt` fail with a [`NetError`] with this message.
    /// Returns whether it was pending.
    pub fn fail(&self, attempt: usize, message: impl Into<String>) -> bool {
        self.decide_attempt(attempt, Decision::Fail(message.into()))
    }

    /// Makes pending attempt `attempt` panic when next polled. Returns whether it
    /// was pending.
    pub fn panic(&self, attempt: usize) -> bool {
        self.decide_attempt(attempt, Decision::Panic)
    }

    fn doom(&self, conn: usize, crash: bool) -> bool {
        let waker = {
            let mut state = self.lock();
            match state.conns.get_mut(&conn) {
                Some(c) if c.status == ConnStatus::Open && c.doom.is_none() => {
                    c.doom = Some(crash);
                    c.waker.take()
                }
                _ => return false,
            }
        };
        wake(waker);
        true
    }

    /// Loses connection `conn`: its driver future ends when next polled. Returns
    /// whether it was open (and not already told to end).
    pub fn lose(&self, conn: usize) -> bool {
        self.doom(conn, false)
    }

    /// Crashes connection `conn`: its driver future panics when next polled.
    /// Returns whether it was open (and not already told to end).
    pub fn crash(&self, conn: usize) -> bool {
        self.doom(conn, true)
    }

    fn decide_prepare(&self, conn: usize, decision: Decision) -> bool {
        let waker = {
            let mut state = self.lock();
            match state.prepare_steps.get_mut(&conn) {
                Some(p) if p.status == PrepareStatus::Pending => {
                    p.status = PrepareStatus::Resolving;
                    p.decision = Some(decision);
                    p.waker.take()
                }
                _ => return false,
            }
        };
        wake(waker);
        true
    }

    /// Makes connection `conn`'s pending prepare step accept it. Returns whether
    /// it was pending.
    pub fn prepare_succeed(&self, conn: usize) -> bool {
        self.decide_prepare(conn, Decision::Succeed)
    }

    /// Makes connection `conn`'s pending prepare step reject it with a
    /// [`NetError`] with this message. Returns whether it was pending.
    pub fn prepare_fail(&self, conn: usize, message: impl Into<String>) -> bool {
        self.decide_prepare(conn, Decision::Fail(message.into()))
    }

    /// Makes connection `conn`'s pending prepare step panic when next polled.
    /// Returns whether it was pending.
    pub fn prepare_panic(&self, conn: usize) -> bool {
        self.decide_prepare(conn, Decision::Panic)
    }

    // ----- queries --------------------------------------------------------------

    /// Attempts ever made (connector calls, including those that panicked).
    pub fn attempts(&self) -> usize {
        self.lock().attempts.len()
    }

    /// Where attempt `attempt` is (`None`: never made).
    pub fn attempt(&self, attempt: usize) -> Option<AttemptStatus> {
        self.lock().attempts.get(attempt).map(|a| a.status)
    }

    fn attempts_where(&self, status: AttemptStatus) -> Vec<usize> {
        let state = self.lock();
        (0..state.attempts.len())
            .filter(|&i| state.attempts[i].status == status)
            .collect()
    }

    /// The attempts in flight and undecided, in order: those the test can resolve.
    pub fn pending_attempts(&self) -> Vec<usize> {
        self.attempts_where(AttemptStatus::Pending)
    }

    /// The attempts the service dropped before seeing their outcome, in order.
    pub fn cancelled_attempts(&self) -> Vec<usize> {
        self.attempts_where(AttemptStatus::Cancelled)
    }

    /// Connections ever made (attempts that connected).
    pub fn connections(&self) -> usize {
        self.lock().conns.len()
    }

    /// Where connection `conn` is (`None`: never made).
    pub fn connection(&self, conn: usize) -> Option<ConnStatus> {
        self.lock().conns.get(&conn).map(|c| c.status)
    }

    fn conns_where(&self, status: ConnStatus) -> Vec<usize> {
        let state = self.lock();
        state
            .conns
            .iter()
            .filter(|(_, c)| c.status == status)
            .map(|(n, _)| *n)
            .collect()
    }

    /// The connections whose driver future is alive, in order.
    pub fn open(&self) -> Vec<usize> {
        self.conns_where(ConnStatus::Open)
    }

    /// The connections the service closed (dropped their running driver future).
    pub fn closed(&self) -> Vec<usize> {
        self.conns_where(ConnStatus::Closed)
    }

    /// The connections lost (their driver future ended after [`Net::lose`]).
    pub fn lost(&self) -> Vec<usize> {
        self.conns_where(ConnStatus::Lost)
    }

    /// The connections whose driver future panicked after [`Net::crash`].
    pub fn crashed(&self) -> Vec<usize> {
        self.conns_where(ConnStatus::Crashed)
    }

    /// How many times connection `conn`'s handle was cloned (successfully or not).
    pub fn clones(&self, conn: usize) -> usize {
        self.lock().conns.get(&conn).map_or(0, |c| c.clones)
    }

    /// Prepare steps ever started (prepare hook calls, including those that panicked).
    pub fn prepares(&self) -> usize {
        self.lock().prepare_calls
    }

    /// Where connection `conn`'s prepare step is (`None`: never started).
    pub fn prepare_status(&self, conn: usize) -> Option<PrepareStatus> {
        self.lock().prepare_steps.get(&conn).map(|p| p.status)
    }

    /// The connections whose prepare step is pending and undecided, in order.
    pub fn pending_prepares(&self) -> Vec<usize> {
        let state = self.lock();
        state
            .prepare_steps
            .iter()
            .filter(|(_, p)| p.status == PrepareStatus::Pending)
            .map(|(n, _)| *n)
            .collect()
    }
}

/// A connection attempt, as [`Net::connector`] returns it: resolves with the
/// connection (a `(handle, driver)` pair) or a [`NetError`], as scripted.
/// Dropping it unresolved records it [`Cancelled`](AttemptStatus::Cancelled).
#[must_use = "an attempt does nothing unless polled"]
pub struct NetAttempt {
    net: Net,
    attempt: usize,
    done: bool,
}

impl fmt::Debug for NetAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetAttempt")
            .field("attempt", &self.attempt)
            .field("done", &self.done)
            .finish()
    }
}

impl NetAttempt {
    /// Its attempt number.
    pub fn number(&self) -> usize {
        self.attempt
    }
}

impl Future for NetAttempt {
    type Output = Result<(NetHandle, NetDriver), NetError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(!this.done, "NetAttempt polled after it resolved");
        let mut guard = this.net.lock();
        let state = &mut *guard;
        let n = this.attempt;
        let entry = &mut state.attempts[n];
        let Some(decision) = entry.decision.take() else {
            let old = entry.waker.replace(cx.waker().clone());
            drop(guard);
            drop(old);
            return Poll::Pending;
        };
        this.done = true;
        let old = entry.waker.take();
        let result = match decision {
            Decision::Succeed => {
                entry.status = AttemptStatus::Connected;
                state.conns.insert(
                    n,
                    Conn {
                        status: ConnStatus::Open,
                        doom: None,
                        waker: None,
                        clones: 0,
                    },
                );
                Ok((
                    NetHandle {
                        net: this.net.clone(),
                        conn: n,
                    },
                    NetDriver {
                        net: this.net.clone(),
                        conn: n,
                        done: false,
                    },
                ))
            }
            Decision::Fail(message) => {
                entry.status = AttemptStatus::Failed;
                Err(NetError::new(message))
            }
            Decision::Panic => {
                entry.status = AttemptStatus::Panicked;
                drop(guard);
                drop(old);
                panic!("redial::testing::Net: attempt {n} panics (scripted)");
            }
        };
        drop(guard);
        drop(old);
        Poll::Ready(result)
    }
}

impl Drop for NetAttempt {
    fn drop(&mut self) {
        if !self.done {
            let mut state = self.net.lock();
            let entry = &mut state.attempts[self.attempt];
            entry.status = AttemptStatus::Cancelled;
            entry.decision = None;
            let old = entry.waker.take();
            drop(state);
            drop(old);
        }
    }
}

/// A connection's handle: what waiters receive. Carries the connection's number.
///
/// Its [`Clone`] panics if the test said so ([`Net::set_panic_on_clone`]).
pub struct NetHandle {
    net: Net,
    conn: usize,
}

impl NetHandle {
    /// The connection's number (that of the attempt that made it).
    pub fn conn(&self) -> usize {
        self.conn
    }

    /// Whether the connection's driver future is alive.
    pub fn is_open(&self) -> bool {
        self.net.connection(self.conn) == Some(ConnStatus::Open)
    }
}

impl Clone for NetHandle {
    fn clone(&self) -> Self {
        let panic = {
            let mut state = self.net.lock();
            if let Some(c) = state.conns.get_mut(&self.conn) {
                c.clones += 1;
            }
            state.panic_on_clone.contains(&self.conn)
        };
        assert!(
            !panic,
            "redial::testing::Net: the handle of connection {} panics when cloned (scripted)",
            self.conn
        );
        NetHandle {
            net: self.net.clone(),
            conn: self.conn,
        }
    }
}

impl fmt::Debug for NetHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("NetHandle").field(&self.conn).finish()
    }
}

impl PartialEq for NetHandle {
    /// The same connection of the same [`Net`].
    fn eq(&self, other: &Self) -> bool {
        self.conn == other.conn && Arc::ptr_eq(&self.net.shared, &other.net.shared)
    }
}

impl Eq for NetHandle {}

/// A connection's driver future: ends when the test [loses](Net::lose) the
/// connection, panics when it [crashes](Net::crash) it. Dropping it while it runs
/// records the connection [`Closed`](ConnStatus::Closed).
#[must_use = "a connection's driver does nothing unless polled"]
pub struct NetDriver {
    net: Net,
    conn: usize,
    done: bool,
}

impl fmt::Debug for NetDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetDriver")
            .field("conn", &self.conn)
            .field("done", &self.done)
            .finish()
    }
}

impl Future for NetDriver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(());
        }
        let mut state = this.net.lock();
        let Some(conn) = state.conns.get_mut(&this.conn) else {
            return Poll::Pending; // unreachable: made with its entry
        };
        match conn.doom {
            None => {
                let old = conn.waker.replace(cx.waker().clone());
                drop(state);
                drop(old);
                Poll::Pending
            }
            Some(crash) => {
                this.done = true;
                conn.status = if crash {
                    ConnStatus::Crashed
                } else {
                    ConnStatus::Lost
                };
                let old = conn.waker.take();
                drop(state);
                drop(old);
                assert!(
                    !crash,
                    "redial::testing::Net: connection {} crashes (scripted)",
                    this.conn
                );
                Poll::Ready(())
            }
        }
    }
}

impl Drop for NetDriver {
    fn drop(&mut self) {
        if !self.done {
            let mut state = self.net.lock();
            let old = state.conns.get_mut(&self.conn).and_then(|c| {
                c.status = ConnStatus::Closed;
                c.waker.take()
            });
            drop(state);
            drop(old);
        }
    }
}

/// A prepare step, as [`Net::prepare_hook`] returns it: accepts or rejects the
/// connection, as scripted. Dropping it unresolved records it
/// [`Cancelled`](PrepareStatus::Cancelled).
#[must_use = "a prepare step does nothing unless polled"]
pub struct NetPrepare {
    net: Net,
    conn: usize,
    done: bool,
}

impl fmt::Debug for NetPrepare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetPrepare")
            .field("conn", &self.conn)
            .field("done", &self.done)
            .finish()
    }
}

impl Future for NetPrepare {
    type Output = Result<(), NetError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(!this.done, "NetPrepare polled after it resolved");
        let mut state = this.net.lock();
        let Some(entry) = state.prepare_steps.get_mut(&this.conn) else {
            return Poll::Pending; // unreachable: made with its entry
        };
        let Some(decision) = entry.decision.take() else {
            let old = entry.waker.replace(cx.waker().clone());
            drop(state);
            drop(old);
            return Poll::Pending;
        };
        this.done = true;
        let old = entry.waker.take();
        let result = match decision {
            Decision::Succeed => {
                entry.status = PrepareStatus::Succeeded;
                Ok(())
            }
            Decision::Fail(message) => {
                entry.status = PrepareStatus::Failed;
                Err(NetError::new(message))
            }
            Decision::Panic => {
                entry.status = PrepareStatus::Panicked;
                drop(state);
                drop(old);
                panic!(
                    "redial::testing::Net: the prepare step of connection {} panics (scripted)",
                    this.conn
                );
            }
        };
        drop(state);
        drop(old);
        Poll::Ready(result)
    }
}

impl Drop for NetPrepare {
    fn drop(&mut self) {
        if !self.done {
            let mut state = self.net.lock();
            let old = state.prepare_steps.get_mut(&self.conn).and_then(|p| {
                p.status = PrepareStatus::Cancelled;
                p.decision = None;
                p.waker.take()
            });
            drop(state);
            drop(old);
        }
    }
}
