//! The machine driven by a hand-written event loop with nothing but `std`: no async
//! runtime, one thread for the client, one for a toy server.
//!
//! The server listens on 127.0.0.1, greets each client with `hello`, goes down after
//! a second, and comes back on the same port a little later. The client keeps one
//! connection alive through that, runs a prepare step (read the greeting) on every
//! new connection, serves three requests through `when_connected`, then stops.
//! Every action the machine asks for is printed as it is handled.
//!
//! ```text
//! cargo run --example custom_loop
//! ```

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use redial::{Action, AttemptId, Backoff, Config, Jitter, Machine, State, TimerId, WaiterId};

/// How long the server stays up, then down.
const UP: Duration = Duration::from_millis(1000);
const DOWN: Duration = Duration::from_millis(1200);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = thread::spawn(move || serve(listener, addr));

    // Backoff 100 ms · 2ⁿ capped at 2 s, plus up to 50 ms of jitter; seeded, so the
    // run is reproducible.
    let policy = Backoff::new(Duration::from_millis(100), 2.0, Duration::from_secs(2))?
        .with_jitter(Jitter::Additive {
            max: Duration::from_millis(50),
        })
        .with_seed(2026);
    let config = Config::new().with_prepare(true);
    let mut machine: Machine<io::Error, Backoff> = Machine::with_config(policy, config)?;
    let mut event_loop = EventLoop::new(addr);

    // Requests are issued on a schedule; each is served on whatever connection is up.
    let mut requests = VecDeque::from([
        Duration::ZERO,
        Duration::from_millis(1500), // while the server is down: it waits
        Duration::from_millis(2800),
    ]);
    let total = requests.len();

    println!("client: start");
    let actions = machine.start();
    event_loop.queue.extend(actions);

    let mut stop_sent = false;
    loop {
        // 1. Perform every pending action; each may report back at once.
        while let Some(action) = event_loop.queue.pop_front() {
            event_loop.perform(&mut machine, action)?;
        }
        if event_loop.finished {
            break;
        }

        // 2. Issue requests that are due; stop once all were served.
        let now = event_loop.started.elapsed();
        while requests.front().is_some_and(|at| *at <= now) {
            requests.pop_front();
            let (waiter, actions) = machine.when_connected(None);
            println!("client: request {waiter} issued ({:?})", machine.state());
            event_loop.queue.extend(actions);
        }
        if event_loop.served == total && !stop_sent {
            stop_sent = true;
            let (stop, actions) = machine.stop();
            println!("client: {stop} requested");
            event_loop.queue.extend(actions);
            continue;
        }

        // 3. Wait for something to happen: a timer, or the connection going away.
        event_loop.wait(&mut machine)?;
    }
    assert_eq!(machine.state(), State::Stopped);
    let counters = machine.counters();
    println!(
        "client: stopped cleanly after {} attempts, {} failures, {} connections, {} losses",
        counters.attempts, counters.failures, counters.connections, counters.losses
    );
    server.join().expect("server thread")?;
    Ok(())
}

/// Everything the driver keeps: the actions to perform, the armed timers, the open
/// connection.
struct EventLoop {
    addr: SocketAddr,
    started: Instant,
    queue: VecDeque<Action<io::Error>>,
    timers: Vec<(Instant, TimerId)>,
    connection: Option<(AttemptId, TcpStream)>,
    /// The last failed attempt's failure, as text (`io::Error` is not `Clone`).
    last_failure: Option<String>,
    served: usize,
    finished: bool,
}

impl EventLoop {
    fn new(addr: SocketAddr) -> Self {
        EventLoop {
            addr,
            started: Instant::now(),
            queue: VecDeque::new(),
            timers: Vec::new(),
            connection: None,
            last_failure: None,
            served: 0,
            finished: false,
        }
    }

    fn log(&self, what: std::fmt::Arguments<'_>) {
        println!("{:>6} ms  {what}", self.started.elapsed().as_millis());
    }

    /// The one place actions turn into I/O.
    fn perform(
        &mut self,
        machine: &mut Machine<io::Error, Backoff>,
        action: Action<io::Error>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let reports = match action {
            Action::Connect { attempt } => {
                // Loopback connects finish at once; a bigger loop would use a
                // non-blocking socket and report from its poller.
                match TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)) {
                    Ok(stream) => {
                        self.log(format_args!("Connect {attempt}: connected"));
                        self.connection = Some((attempt, stream));
                        machine.connection_made(attempt)?
                    }
                    Err(e) => {
                        self.log(format_args!("Connect {attempt}: {e}"));
                        machine.connection_failed(attempt, e)?
                    }
                }
            }
            Action::CancelConnect { attempt } => {
                // Never emitted here (connects are synchronous), handled for completeness.
                self.log(format_args!("CancelConnect {attempt}"));
                machine.connect_cancelled(attempt)?
            }
            Action::Prepare { attempt } => {
                let greeting = self.read_greeting();
                self.log(format_args!("Prepare {attempt}: {greeting:?}"));
                match greeting {
                    Ok(_) => machine.prepare_succeeded(attempt)?,
                    Err(e) => machine.prepare_failed(attempt, e)?,
                }
            }
            Action::Disconnect { attempt } => {
                self.log(format_args!("Disconnect {attempt}"));
                if self.connection.as_ref().is_some_and(|(a, _)| *a == attempt) {
                    self.connection = None; // dropping the stream closes it
                }
                machine.client_disconnected(attempt)?
            }
            // Only with `Config::probe`, which this loop does not set.
            Action::Probe { .. } => redial::Actions::new(),
            Action::ScheduleTimer { timer, kind, delay } => {
                self.log(format_args!(
                    "ScheduleTimer {timer} ({kind:?}) in {delay:?}"
                ));
                self.timers.push((Instant::now() + delay, timer));
                return Ok(());
            }
            Action::CancelTimer { timer } => {
                self.log(format_args!("CancelTimer {timer}"));
                self.timers.retain(|(_, t)| *t != timer);
                return Ok(());
            }
            Action::NotifyWaiters { attempt, waiters } => {
                for waiter in waiters {
                    self.serve_request(attempt, waiter)?;
                }
                return Ok(());
            }
            Action::AttemptFailed { attempt, failure } => {
                // Every failed attempt, waited on or not: the place to log it.
                self.log(format_args!("AttemptFailed {attempt}: {failure:#}"));
                self.last_failure = Some(format!("{failure:#}"));
                return Ok(());
            }
            Action::DeliverFailure { waiters } => {
                // The failure of the AttemptFailed just before this action.
                let failure = self.last_failure.as_deref().unwrap_or_default();
                self.log(format_args!("DeliverFailure {waiters:?}: {failure}"));
                return Ok(());
            }
            Action::CancelWaiters { waiters } => {
                self.log(format_args!("CancelWaiters {waiters:?}"));
                return Ok(());
            }
            Action::FinishStopping { stops } => {
                self.log(format_args!(
                    "FinishStopping {stops:?}: nothing is left open"
                ));
                self.finished = true;
                return Ok(());
            }
            Action::GaveUp {
                failed_attempts, ..
            } => {
                self.log(format_args!("GaveUp after {failed_attempts} failures"));
                self.finished = true;
                return Ok(());
            }
        };
        self.queue.extend(reports);
        Ok(())
    }

    fn read_greeting(&mut self) -> io::Result<String> {
        let (_, stream) = self.connection.as_mut().ok_or(ErrorKind::NotConnected)?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        let mut line = String::new();
        BufReader::new(stream.try_clone()?).read_line(&mut line)?;
        if line.trim() == "hello" {
            Ok(line.trim().to_owned())
        } else {
            Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("bad greeting {line:?}"),
            ))
        }
    }

    fn serve_request(&mut self, attempt: AttemptId, waiter: WaiterId) -> io::Result<()> {
        let (_, stream) = self.connection.as_mut().ok_or(ErrorKind::NotConnected)?;
        writeln!(stream, "request {waiter}")?;
        self.served += 1;
        self.log(format_args!(
            "NotifyWaiters: {waiter} served over {attempt}"
        ));
        Ok(())
    }

    /// Sleeps until the next timer, watching the connection for EOF meanwhile.
    fn wait(
        &mut self,
        machine: &mut Machine<io::Error, Backoff>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let now = Instant::now();
        if let Some(index) = (0..self.timers.len()).find(|&i| self.timers[i].0 <= now) {
            let (_, timer) = self.timers.swap_remove(index);
            self.log(format_args!("timer {timer} fired"));
            let actions = machine.timer_fired(timer)?;
            self.queue.extend(actions);
            return Ok(());
        }
        let tick = Duration::from_millis(20);
        match &mut self.connection {
            Some((attempt, stream)) => {
                let attempt = *attempt;
                stream.set_read_timeout(Some(tick))?;
                let mut buf = [0u8; 64];
                match stream.read(&mut buf) {
                    Ok(0) => {
                        self.log(format_args!("{attempt}: the server closed the connection"));
                        self.connection = None;
                        let actions = machine.client_disconnected(attempt)?;
                        self.queue.extend(actions);
                    }
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => {
                        self.log(format_args!("{attempt}: {e}"));
                        self.connection = None;
                        let actions = machine.client_disconnected(attempt)?;
                        self.queue.extend(actions);
                    }
                }
            }
            None => thread::sleep(tick),
        }
        Ok(())
    }
}

/// The toy server: up, down, up again on the same port.
fn serve(listener: TcpListener, addr: SocketAddr) -> io::Result<()> {
    let started = Instant::now();
    let log = |what: &str| println!("{:>6} ms  server: {what}", started.elapsed().as_millis());
    log("up");
    let (mut conn, _) = listener.accept()?;
    conn.write_all(b"hello\n")?;
    thread::sleep(UP);
    drop(conn);
    drop(listener);
    log("down");
    thread::sleep(DOWN);

    let listener = TcpListener::bind(addr)?;
    log("up again");
    let (mut conn, _) = listener.accept()?;
    conn.write_all(b"hello\n")?;
    // Read requests until the client closes the connection.
    let mut lines = BufReader::new(conn.try_clone()?).lines();
    while let Some(Ok(line)) = lines.next() {
        log(&format!("got {line:?}"));
    }
    log("client closed the connection; done");
    Ok(())
}
