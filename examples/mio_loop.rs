//! The machine under a non-blocking, readiness-driven event loop on `mio`, written
//! the way the driver guide (`redial::guide`, `docs/driver-guide.md`) says:
//!
//! * one `Poll`; non-blocking connects, whose completion is a writable event
//!   checked with `take_error` and `peer_addr`; reads on readable events;
//! * each socket's `Token` is its attempt's raw id, mapped back with
//!   `AttemptId::from_raw`;
//! * the one machine timer is an `Option<(TimerId, Instant)>`, and the nearest
//!   deadline is the poll's timeout: no fixed tick;
//! * `handle_into` with one reused `Actions` buffer, and a queue of reports: an
//!   action is performed without calling the machine, and what happened is fed
//!   back afterwards, in order;
//! * the prepare step is a real non-blocking exchange: wait for the server's
//!   `HELLO` line, under the machine's prepare timeout.
//!
//! A local server in a thread goes up, down, busy (it says `BUSY` and hangs up, so
//! prepares fail), mute (it never greets, so prepares time out), down and up again.
//! A tiny application asks for the connection every 400 ms (`when_connected`,
//! failing after 4 failed attempts), sends a line on the connection it is given and
//! prints the echo; it reloads the service once (stop, then start) and stops it at
//! the end. Every input fed and every action performed is printed. The run takes
//! about five seconds; it checks the number of connections, that every stop
//! finished and that nothing is left open, and fails loudly if it is not done
//! within 20 s.
//!
//! ```text
//! cargo run --example mio_loop
//! ```

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::mem;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use redial::{
    Action, Actions, AttemptId, Backoff, Config, Input, Issued, Jitter, Machine, State, StopId,
    TimerId, WaiterId,
};

// ----- the script ------------------------------------------------------------------

/// What the server does in each phase.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Listening: greets each client with `HELLO` and echoes its lines.
    Up,
    /// Not listening: connects are refused.
    Down,
    /// Listening, but says `BUSY` and hangs up: the prepare step fails.
    Busy,
    /// Listening, but never greets: the prepare step times out.
    Mute,
}

/// The server's phases and their lengths in ms; the last one lasts until the client is done.
const SCHEDULE: [(Mode, u64); 6] = [
    (Mode::Up, 1500),
    (Mode::Down, 600),
    (Mode::Busy, 800),
    (Mode::Mute, 800),
    (Mode::Down, 400),
    (Mode::Up, 0),
];
/// When the server comes up for the last time.
const FINAL_UP: Duration = Duration::from_millis(1500 + 600 + 800 + 800 + 400);
const REQUEST_EVERY: Duration = Duration::from_millis(400);
/// The application reloads (stop, then start) after its first echo from then on.
const RELOAD_AFTER: Duration = Duration::from_millis(800);
/// The application stops once it is past this (0.8 s after `FINAL_UP`) and has had
/// an echo since `FINAL_UP`.
const STOP_AFTER: Duration = Duration::from_millis(4100 + 800);
/// Connections: the first one, the one after the reload, the one after the outage.
const EXPECTED_CONNECTIONS: u64 = 3;
const DEADLINE: Duration = Duration::from_secs(20);

/// When the run started: the log's clock.
static START: OnceLock<Instant> = OnceLock::new();

/// Prints one line of the log: the time since the start, who, what.
macro_rules! log {
    ($who:literal, $($what:tt)*) => {{
        let ms = START.get_or_init(Instant::now).elapsed().as_millis();
        println!("{ms:>6} ms  {:<6}  {}", $who, format_args!($($what)*))
    }};
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let t0 = *START.get_or_init(Instant::now);
    let listener = StdListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let done = Arc::new(AtomicBool::new(false));
    let server = {
        let done = Arc::clone(&done);
        thread::spawn(move || serve(listener, t0, &done))
    };

    // 100 ms, 200 ms, 400 ms, then 500 ms, each plus up to 50 ms of seeded jitter.
    let policy = Backoff::new(Duration::from_millis(100), 2.0, Duration::from_millis(500))?
        .with_jitter(Jitter::Additive {
            max: Duration::from_millis(50),
        })
        .with_seed(2026);
    let config = Config::new()
        .with_connect_timeout(Some(Duration::from_secs(1)))
        .with_prepare(true)
        .with_prepare_timeout(Some(Duration::from_millis(400)));
    let mut driver = Driver::new(Machine::with_config(policy, config)?, addr, t0)?;
    let mut events = Events::with_capacity(64);

    driver.feed(Input::Start);
    while !driver.app.done() {
        let now = Instant::now();
        let deadline = t0 + DEADLINE;
        if now >= deadline {
            panic!(
                "not done after {DEADLINE:?}: {:?}, {:?}, outstanding {:?}, stops {:?} finished {:?}",
                driver.machine.state(),
                driver.machine.counters(),
                driver.machine.outstanding().collect::<Vec<_>>(),
                driver.app.stops,
                driver.app.finished,
            );
        }
        // Sleep until something is ready or the nearest deadline: the machine's one
        // timer, or the application's next step.
        let wake = driver
            .next_wakeup(now)
            .map_or(deadline, |at| at.min(deadline));
        match driver
            .poll
            .poll(&mut events, Some(wake.saturating_duration_since(now)))
        {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            result => result?,
        }
        // One round: note what happened as reports, then feed them, oldest first.
        for event in events.iter() {
            driver.ready(event);
        }
        driver.fire_timer_if_due(Instant::now());
        driver.feed_queued();
        // The application runs between rounds, when the queue is empty.
        driver.application();
    }

    let machine = &driver.machine;
    let counters = machine.counters();
    let app = &driver.app;
    log!("client", "{:?}, {counters:?}", machine.state());
    log!(
        "app",
        "{} requests: {} echoed, {} failed, {} cancelled, {} lost with their connection",
        app.requests,
        app.echoed,
        app.failed,
        app.cancelled,
        app.lost
    );
    assert_eq!(machine.state(), State::Stopped);
    assert_eq!(app.stops.len(), 2, "a reload and the final stop");
    let mut finished = app.finished.clone();
    finished.sort();
    assert_eq!(finished, app.stops, "every stop finished, once");
    assert_eq!(
        counters.connections, EXPECTED_CONNECTIONS,
        "connections made"
    );
    // What the loop was told agrees with what the machine counted.
    assert_eq!(app.connections, counters.connections, "Connected facts");
    assert_eq!(app.losses, counters.losses, "Lost facts");
    assert!(driver.conns.is_empty(), "no socket left open");
    assert_eq!(machine.outstanding().count(), 0, "nothing outstanding");
    assert!(driver.timer.is_none() && machine.armed_timer().is_none());
    assert_eq!(machine.pending_waiters().len(), 0);
    assert_eq!(
        app.requests,
        app.echoed + app.failed + app.cancelled + app.lost,
        "every request was answered"
    );

    done.store(true, Ordering::SeqCst);
    server.join().expect("the server thread")?;
    log!("client", "done: nothing left open");
    Ok(())
}

// ----- the driver ------------------------------------------------------------------

/// The machine, and everything its actions are performed with.
struct Driver {
    machine: Machine<io::Error>,
    /// One buffer for every input's actions (taken out while they are performed).
    actions: Actions<io::Error>,
    /// Reports not fed yet, oldest first.
    queue: VecDeque<Input<io::Error>>,
    poll: Poll,
    addr: SocketAddr,
    /// Every socket the driver holds, keyed by its attempt (its token is the same number).
    conns: HashMap<AttemptId, Conn>,
    /// The one machine timer and its deadline.
    timer: Option<(TimerId, Instant)>,
    /// The failure of the last `AttemptFailed`, for the `DeliverFailure` after it.
    last_failure: String,
    app: App,
    t0: Instant,
}

/// One socket.
struct Conn {
    stream: TcpStream,
    phase: Phase,
    /// Bytes received and not yet acted on (a greeting can come before `Prepare`).
    input: Vec<u8>,
    /// Bytes to send when the socket is writable.
    output: Vec<u8>,
    /// The requests sent on it, waiting for their echo.
    sent: VecDeque<WaiterId>,
}

/// Where a socket is, from what the driver has reported about it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Connecting; nothing reported yet.
    Connecting,
    /// `connection_made` queued; the machine has not asked `Prepare` yet.
    Made,
    /// Waiting for the greeting.
    Preparing,
    /// `prepare_failed` queued; the machine will ask to close it.
    Rejected,
    /// Handed to the application.
    Open,
}

/// The tiny application: its requests and its script.
#[derive(Default)]
struct App {
    /// When to ask for the connection next, from the start.
    next_request: Duration,
    requests: usize,
    echoed: usize,
    failed: usize,
    cancelled: usize,
    lost: usize,
    /// Connections and losses, as the machine told them (its `Connected` and
    /// `Lost` facts).
    connections: u64,
    losses: u64,
    last_echo: Option<Instant>,
    reloaded: bool,
    final_stop: Option<StopId>,
    stops: Vec<StopId>,
    finished: Vec<StopId>,
}

impl App {
    fn done(&self) -> bool {
        self.final_stop
            .is_some_and(|stop| self.finished.contains(&stop))
    }
}

/// A socket's token is its attempt's raw id: ids are never reused, so neither are tokens.
fn token(attempt: AttemptId) -> Token {
    Token(usize::try_from(attempt.raw()).expect("fewer attempts than usize::MAX"))
}

/// The attempt a token was made from (every token registered came from `token`).
fn attempt_of(token: Token) -> AttemptId {
    AttemptId::from_raw(token.0 as u64)
}

impl Driver {
    fn new(machine: Machine<io::Error>, addr: SocketAddr, t0: Instant) -> io::Result<Driver> {
        Ok(Driver {
            machine,
            actions: Actions::new(),
            queue: VecDeque::new(),
            poll: Poll::new()?,
            addr,
            conns: HashMap::new(),
            timer: None,
            last_failure: String::new(),
            app: App::default(),
            t0,
        })
    }

    // ----- feeding the machine ---------------------------------------------------

    /// Feeds one input, then every report its actions led to, oldest first. Returns
    /// the id the input issued (`stop`, `when_connected`).
    fn feed(&mut self, input: Input<io::Error>) -> Option<Issued> {
        // `actions.drain()` borrows the buffer and `perform` needs `&mut self`: take
        // the buffer out while its actions are performed, and put it back after.
        let mut actions = mem::take(&mut self.actions);
        let issued = self.step(input, &mut actions);
        while let Some(report) = self.queue.pop_front() {
            self.step(report, &mut actions);
        }
        self.actions = actions;
        issued
    }

    /// Feeds the reports one round of polling queued.
    fn feed_queued(&mut self) {
        if let Some(first) = self.queue.pop_front() {
            self.feed(first);
        }
    }

    fn step(
        &mut self,
        input: Input<io::Error>,
        actions: &mut Actions<io::Error>,
    ) -> Option<Issued> {
        log!("client", "<- {}", describe(&input));
        let issued = self
            .machine
            .handle_into(input, actions)
            .unwrap_or_else(|error| panic!("a driver bug: {error}"));
        for action in actions.drain() {
            self.perform(action);
        }
        issued
    }

    // ----- performing actions: the one place they turn into I/O ---------------------

    /// Performs one action. Never calls the machine: what happens is queued as a report.
    fn perform(&mut self, action: Action<io::Error>) {
        match action {
            Action::Connect { attempt } => {
                log!("client", "-> Connect {attempt}");
                if let Err(error) = self.connect(attempt) {
                    self.queue
                        .push_back(Input::ConnectionFailed { attempt, error });
                }
            }
            Action::CancelConnect { attempt } => {
                log!("client", "-> CancelConnect {attempt}");
                if self.phase(attempt) == Some(Phase::Connecting) {
                    self.close(attempt);
                    self.queue.push_back(Input::ConnectCancelled { attempt });
                } else {
                    // It connected or failed first, and that report is queued: the
                    // machine closes an orphan connection with a `Disconnect`.
                    log!(
                        "client",
                        "   {attempt} is not connecting: its outcome is queued"
                    );
                }
            }
            Action::Prepare { attempt } => {
                log!("client", "-> Prepare {attempt}: wait for HELLO");
                match self.conns.get_mut(&attempt) {
                    Some(conn) => {
                        conn.phase = Phase::Preparing;
                        self.read_lines(attempt); // the greeting may be here already
                    }
                    // Lost already (connected, greeted and closed in one round): its
                    // `connection_closed` is queued and makes the prepare moot.
                    None => log!("client", "   {attempt} is gone: its loss is queued"),
                }
            }
            Action::Disconnect { attempt } => {
                log!("client", "-> Disconnect {attempt}");
                if self.close(attempt) {
                    self.queue.push_back(Input::ConnectionClosed { attempt });
                } else {
                    // Lost already: the queued loss is this connection's one report.
                    log!("client", "   {attempt} is gone: its loss is queued");
                }
            }
            Action::ScheduleTimer { timer, kind, delay } => {
                log!("client", "-> ScheduleTimer {timer} {kind:?} in {delay:.0?}");
                assert!(self.timer.is_none(), "the machine arms one timer at a time");
                self.timer = Some((timer, Instant::now() + delay));
            }
            Action::CancelTimer { timer } => {
                log!("client", "-> CancelTimer {timer}");
                if self.timer.is_some_and(|(armed, _)| armed == timer) {
                    self.timer = None;
                } // else it fired, and its report (queued) is stale
            }
            Action::NotifyWaiters { attempt, waiters } => {
                log!("client", "-> NotifyWaiters {attempt} {}", list(&waiters));
                for waiter in waiters {
                    self.send_request(attempt, waiter);
                }
            }
            // Facts: what happened, told by the machine. A loop logs, counts or
            // publishes them; it never works them out from the machine's state.
            Action::AttemptFailed {
                attempt,
                failure,
                consecutive_failures,
            } => {
                log!(
                    "client",
                    "-> AttemptFailed {attempt}: {failure:#} ({consecutive_failures} in a row)"
                );
                self.last_failure = format!("{failure:#}");
            }
            Action::Connected {
                attempt,
                generation,
            } => {
                log!(
                    "client",
                    "-> Connected {attempt} (connection #{generation})"
                );
                self.app.connections = generation;
            }
            Action::Lost {
                attempt,
                kind,
                flap,
            } => {
                // The machine knows how (`kind`); why the socket went away is this
                // loop's own knowledge (it logged it when it reported the loss).
                log!("client", "-> Lost {attempt}: {kind:?}, flap: {flap}");
                self.app.losses += 1;
            }
            Action::RetryScheduled {
                delay,
                consecutive_failures,
            } => {
                log!(
                    "client",
                    "-> RetryScheduled in {delay:.0?} after {consecutive_failures} failures"
                );
            }
            Action::DeliverFailure { waiters, gave_up } => {
                // `gave_up` says whether this is the last word (the machine stops).
                log!(
                    "client",
                    "-> DeliverFailure {} (gave up: {gave_up:?})",
                    list(&waiters)
                );
                log!("app", "{} failed: {}", list(&waiters), self.last_failure);
                self.app.failed += waiters.len();
            }
            Action::CancelWaiters { waiters, .. } => {
                log!("client", "-> CancelWaiters {}", list(&waiters));
                self.app.cancelled += waiters.len();
            }
            Action::FinishStopping { stops } => {
                log!(
                    "client",
                    "-> FinishStopping {}: nothing left open",
                    list(&stops)
                );
                self.app.finished.extend(stops);
            }
            Action::GaveUp {
                consecutive_failures,
                fatal,
            } => {
                // Never here: this policy never gives up, and no failure is fatal.
                log!(
                    "client",
                    "-> GaveUp after {consecutive_failures} failures (fatal: {fatal})"
                );
            }
            Action::Probe { attempt } => {
                // Never here: this loop does not configure liveness probes
                // (`Config::probe`). A loop that does would send its probe on the
                // connection and report `probe_succeeded`/`probe_failed`, and, just
                // before it feeds a probe timer that fired, `connection_active(attempt,
                // quiet_for)` if the connection read something since (`quiet_for`:
                // how long ago the last read was), so that the next probe comes
                // an interval after the last thing received.
                log!("client", "-> Probe {attempt} (not configured)");
            }
        }
    }

    fn connect(&mut self, attempt: AttemptId) -> io::Result<()> {
        let mut stream = TcpStream::connect(self.addr)?;
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.poll
            .registry()
            .register(&mut stream, token(attempt), interest)?;
        let conn = Conn {
            stream,
            phase: Phase::Connecting,
            input: Vec::new(),
            output: Vec::new(),
            sent: VecDeque::new(),
        };
        self.conns.insert(attempt, conn);
        Ok(())
    }

    fn phase(&self, attempt: AttemptId) -> Option<Phase> {
        self.conns.get(&attempt).map(|conn| conn.phase)
    }

    /// Closes a socket; false if it was gone already. Requests waiting for an echo on
    /// it are lost.
    fn close(&mut self, attempt: AttemptId) -> bool {
        let Some(mut conn) = self.conns.remove(&attempt) else {
            return false;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        for waiter in conn.sent {
            self.app.lost += 1;
            log!("app", "{waiter}'s request is lost with {attempt}");
        }
        true // dropping the stream closes it
    }

    /// The connection went away on its own: close it and report it, once.
    fn lost(&mut self, attempt: AttemptId, why: &str) {
        if self.close(attempt) {
            log!("client", "   {attempt}: {why}");
            self.queue.push_back(Input::ConnectionClosed { attempt });
        }
    }

    // ----- readiness: what happened, queued as reports ------------------------------

    /// One readiness event: a connect finished, bytes arrived, the socket closed.
    fn ready(&mut self, event: &Event) {
        let attempt = attempt_of(event.token());
        let Some(conn) = self.conns.get_mut(&attempt) else {
            return; // closed earlier in this round
        };
        if conn.phase == Phase::Connecting {
            match connected(&conn.stream) {
                Ok(false) => return, // not yet: wait for the next writable event
                Ok(true) => {
                    conn.phase = Phase::Made;
                    self.queue.push_back(Input::ConnectionMade { attempt });
                }
                Err(error) => {
                    self.close(attempt);
                    self.queue
                        .push_back(Input::ConnectionFailed { attempt, error });
                    return;
                }
            }
        }
        if event.is_writable() {
            self.flush(attempt);
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read(attempt);
        }
    }

    /// Reads all there is; a loss is reported after the lines that came before it.
    fn read(&mut self, attempt: AttemptId) {
        let Some(conn) = self.conns.get_mut(&attempt) else {
            return;
        };
        let mut buf = [0; 1024];
        let closed = loop {
            match conn.stream.read(&mut buf) {
                Ok(0) => break Some("closed by the server".to_owned()),
                Ok(n) => conn.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break Some(e.to_string()),
            }
        };
        self.read_lines(attempt);
        if let Some(why) = closed {
            self.lost(attempt, &why);
        }
    }

    /// Acts on the complete lines received: the greeting while preparing, echoes when
    /// open. Before `Prepare` they wait in the buffer.
    fn read_lines(&mut self, attempt: AttemptId) {
        while let Some(conn) = self.conns.get_mut(&attempt) {
            let Some(end) = conn.input.iter().position(|&b| b == b'\n') else {
                return;
            };
            let line = String::from_utf8_lossy(&conn.input[..end])
                .trim()
                .to_owned();
            match conn.phase {
                Phase::Preparing if line == "HELLO" => {
                    conn.phase = Phase::Open;
                    self.queue.push_back(Input::PrepareSucceeded { attempt });
                }
                Phase::Preparing => {
                    conn.phase = Phase::Rejected;
                    let error =
                        io::Error::new(ErrorKind::InvalidData, format!("greeting {line:?}"));
                    self.queue
                        .push_back(Input::PrepareFailed { attempt, error });
                }
                Phase::Open => {
                    conn.sent.pop_front();
                    self.app.echoed += 1;
                    self.app.last_echo = Some(Instant::now());
                    log!("app", "echo {line:?} over {attempt}");
                }
                Phase::Connecting | Phase::Made | Phase::Rejected => return,
            }
            conn.input.drain(..=end);
        }
    }

    /// Sends what is buffered, as far as the socket takes it.
    fn flush(&mut self, attempt: AttemptId) {
        let Some(conn) = self.conns.get_mut(&attempt) else {
            return;
        };
        while !conn.output.is_empty() {
            match conn.stream.write(&conn.output) {
                Ok(0) => return self.lost(attempt, "wrote nothing"),
                Ok(n) => {
                    conn.output.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return, // the next writable event
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return self.lost(attempt, &e.to_string()),
            }
        }
    }

    /// The machine's timer, if its deadline has passed: its report is queued.
    fn fire_timer_if_due(&mut self, now: Instant) {
        if let Some((timer, deadline)) = self.timer {
            if deadline <= now {
                self.timer = None;
                self.queue.push_back(Input::TimerFired { timer });
            }
        }
    }

    /// The nearest deadline: the machine's timer, or the application's next step.
    fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        let timer = self.timer.map(|(_, deadline)| deadline);
        let app = if self.app.final_stop.is_some() {
            None
        } else {
            let stop_at = Some(self.t0 + STOP_AFTER).filter(|at| *at > now);
            [Some(self.t0 + self.app.next_request), stop_at]
                .into_iter()
                .flatten()
                .min()
        };
        [timer, app].into_iter().flatten().min()
    }

    // ----- the application -----------------------------------------------------------

    /// Runs between rounds, when no report is queued: a request every
    /// `REQUEST_EVERY`, one reload, and the final stop.
    fn application(&mut self) {
        if self.app.final_stop.is_some() {
            return;
        }
        let now = Instant::now();
        if now >= self.t0 + self.app.next_request {
            self.app.next_request += REQUEST_EVERY;
            self.app.requests += 1;
            self.feed(Input::WhenConnected {
                fail_after_failures: NonZeroU32::new(4),
            });
        }
        let echo_since = |at: Duration| self.app.last_echo.is_some_and(|e| e >= self.t0 + at);
        if !self.app.reloaded && echo_since(RELOAD_AFTER) {
            self.app.reloaded = true;
            log!("app", "reload: stop, then start");
            self.stop();
            self.feed(Input::Start);
        } else if now >= self.t0 + STOP_AFTER && echo_since(FINAL_UP) {
            log!("app", "done: the final stop");
            self.app.final_stop = Some(self.stop());
        }
    }

    fn stop(&mut self) -> StopId {
        let Some(Issued::Stop(stop)) = self.feed(Input::Stop) else {
            unreachable!("stop issues a StopId");
        };
        self.app.stops.push(stop);
        stop
    }

    /// A waiter got the connection: send one line on it; the echo comes back later.
    fn send_request(&mut self, attempt: AttemptId, waiter: WaiterId) {
        let Some(conn) = self.conns.get_mut(&attempt) else {
            // Lost already, and its loss is queued: the request goes with it.
            self.app.lost += 1;
            log!("app", "{waiter} got {attempt}, lost already");
            return;
        };
        conn.output
            .extend_from_slice(format!("ping from {waiter}\n").as_bytes());
        conn.sent.push_back(waiter);
        self.flush(attempt);
    }
}

/// Whether a non-blocking connect has finished: `Ok(false)` while in progress.
fn connected(stream: &TcpStream) -> io::Result<bool> {
    if let Some(error) = stream.take_error()? {
        return Err(error);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        // Not connected yet (`ENOTCONN`; mio's docs also name `EINPROGRESS`, which some
        // platforms return and std cannot name on stable).
        Err(e) if e.kind() == ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// Ids as the log shows them: `waiter#3, waiter#4`.
fn list<T: std::fmt::Display>(ids: &[T]) -> String {
    ids.iter().map(T::to_string).collect::<Vec<_>>().join(", ")
}

/// An input, as the log shows it.
fn describe(input: &Input<io::Error>) -> String {
    let kind = input.kind();
    match input {
        Input::ConnectionMade { attempt }
        | Input::ConnectCancelled { attempt }
        | Input::PrepareSucceeded { attempt }
        | Input::ProbeSucceeded { attempt }
        | Input::ProbeFailed { attempt }
        | Input::ConnectionClosed { attempt } => format!("{kind} {attempt}"),
        Input::ConnectionActive { attempt, quiet_for } => {
            format!("{kind} {attempt} quiet_for={quiet_for:?}")
        }
        Input::ConnectionFailed { attempt, error }
        | Input::PrepareFailed { attempt, error }
        | Input::AttemptFailedFatally { attempt, error } => format!("{kind} {attempt}: {error}"),
        Input::ReconnectNow { reset_backoff } => format!("{kind} reset_backoff={reset_backoff}"),
        Input::Panicked { attempt, panic } => format!("{kind} {attempt}: {panic}"),
        Input::TimerFired { timer } => format!("{kind} {timer}"),
        Input::CancelWaiter { waiter } => format!("{kind} {waiter}"),
        Input::Start | Input::Stop | Input::WhenConnected { .. } => kind.to_string(),
    }
}

// ----- the server --------------------------------------------------------------------

/// The local server, on its own thread and schedule (plain `std`, polling every 5 ms).
fn serve(first: StdListener, t0: Instant, done: &AtomicBool) -> io::Result<()> {
    let addr = first.local_addr()?;
    let mut first = Some(first);
    let mut end = t0;
    for (i, (mode, ms)) in SCHEDULE.into_iter().enumerate() {
        let last = i == SCHEDULE.len() - 1;
        end += Duration::from_millis(ms);
        log!("server", "{mode:?}");
        let listener = match mode {
            Mode::Down => None,
            Mode::Up | Mode::Busy | Mode::Mute => Some(match first.take() {
                Some(listener) => listener,
                None => bind(addr)?,
            }),
        };
        if let Some(listener) = &listener {
            listener.set_nonblocking(true)?;
        }
        let mut clients = Vec::new();
        loop {
            let over = if last {
                done.load(Ordering::SeqCst) || t0.elapsed() > DEADLINE
            } else {
                Instant::now() >= end
            };
            if over {
                break;
            }
            if let Some(listener) = &listener {
                accept(listener, mode, &mut clients);
            }
            clients.retain_mut(|(client, buf)| echo(client, buf, mode));
            thread::sleep(Duration::from_millis(5));
        }
        // Leaving the phase drops the listener and every client: they see EOF.
    }
    Ok(())
}

fn bind(addr: SocketAddr) -> io::Result<StdListener> {
    for _ in 0..100 {
        match StdListener::bind(addr) {
            Err(e) if e.kind() == ErrorKind::AddrInUse => thread::sleep(Duration::from_millis(10)),
            result => return result,
        }
    }
    StdListener::bind(addr)
}

fn accept(listener: &StdListener, mode: Mode, clients: &mut Vec<(StdStream, Vec<u8>)>) {
    while let Ok((mut client, _)) = listener.accept() {
        let said = match mode {
            Mode::Up => "HELLO\n",
            Mode::Busy => "BUSY\n",
            Mode::Down | Mode::Mute => "",
        };
        let _ = client.write_all(said.as_bytes());
        let what = if said.is_empty() {
            "nothing"
        } else {
            said.trim()
        };
        log!("server", "accepted a client, said {what}");
        if mode != Mode::Busy && client.set_nonblocking(true).is_ok() {
            clients.push((client, Vec::new())); // (a busy server hangs up at once)
        }
    }
}

/// Echoes each complete line (when up); false once the client is gone.
fn echo(client: &mut StdStream, buf: &mut Vec<u8>, mode: Mode) -> bool {
    let mut chunk = [0; 1024];
    loop {
        match client.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(_) => return false,
        }
    }
    while let Some(end) = buf.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = buf.drain(..=end).collect();
        if mode == Mode::Up && client.write_all(&line).is_err() {
            return false;
        }
    }
    true
}
