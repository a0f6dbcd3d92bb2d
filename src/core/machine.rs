//! The sans-IO reconnecting-client state machine.
//!
//! Every input goes through two steps, each one `match`:
//!
//! 1. `Machine::classify` resolves identities: is this report about the current
//!    attempt, about one the machine is still waiting to see gone, or stale
//!    ([D1](crate::contract#d1-identity))? Bad input is rejected here, before
//!    anything changes.
//! 2. `Machine::transition` is the [transition table](crate::contract#transitions)
//!    of the behaviour contract: one arm per `(state, event)` row.
//!
//! The labels D1–D8 in this file are the
//! [differences from Twisted](crate::contract#differences-from-twisted).

use alloc::boxed::Box;
use core::marker::PhantomData;
use core::num::NonZeroU32;
use core::time::Duration;

use smallvec::SmallVec;

use crate::actions::{Action, Actions, Failure, GiveUp, LossKind, StopList, TimerKind, WaiterList};
use crate::error::{ConfigError, InputError, Rejection};
use crate::ids::{AttemptId, StopId, TimerId, WaiterId};
use crate::input::Input;
use crate::policy::{Backoff, RetryPolicy};
use crate::waiters::Waiters;

// The state has a module of its own (errors name it without importing the
// machine); `redial::machine::State` stays a path to it.
pub use crate::state::State;

/// Opt-in behaviour [beyond Twisted](crate::contract#beyond-twisted). The default
/// behaves as Twisted.
///
/// Build one with [`Config::new`] (the default, usable in a `const`) and the
/// chainable `with_*` setters; the fields stay readable and assignable. New
/// opt-ins may be added in minor releases (the struct is `#[non_exhaustive]`), so
/// it cannot be built with a struct literal outside this crate.
///
/// ```
/// use core::time::Duration;
/// use redial::Config;
///
/// const CONFIG: Config = Config::new()
///     .with_prepare(true)
///     .with_connect_timeout(Some(Duration::from_secs(5)))
///     .with_reset_backoff_after(Some(Duration::from_secs(30)));
/// assert!(CONFIG.prepare);
/// assert_eq!(CONFIG.prepare_timeout, None);
/// assert!(CONFIG.validate().is_ok());
/// assert_eq!(Config::new(), Config::default());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Run a prepare step on each new connection before anyone is told it exists
    /// (`Action::Prepare`). Its failure means "retry".
    pub prepare: bool,
    /// Cancel an attempt that takes longer than this; counts as a failed attempt
    /// ([`Failure::ConnectTimeout`]).
    pub connect_timeout: Option<Duration>,
    /// Close a connection whose prepare step takes longer than this; counts as a
    /// failed attempt ([`Failure::PrepareTimeout`]). Needs `prepare`.
    pub prepare_timeout: Option<Duration>,
    /// Reset the failure counter only once a connection has stayed up this long,
    /// instead of as soon as it is connected, so a peer that accepts and drops at
    /// once cannot cause a tight loop.
    pub reset_backoff_after: Option<Duration>,
    /// Give up, without asking the retry policy, once this many consecutive failed
    /// attempts were fatal ([`Machine::attempt_failed_fatally`]: an error retrying will not
    /// fix). 1, the default: at the first fatal failure. Below it a fatal failure
    /// is an ordinary failed attempt (the policy is asked, the machine retries).
    pub give_up_after_fatal: NonZeroU32,
    /// Probe the established connection every `interval`, and count it dead if a
    /// probe is not answered within `timeout` ([`Action::Probe`]): a connection can
    /// look up for minutes after the peer vanished. With
    /// [`reset_backoff_after`](Config::reset_backoff_after) too, the connection
    /// becomes healthy once the probe intervals completed since it connected add
    /// up to that delay, each for what it was armed for (see [`ProbeConfig`]).
    pub probe: Option<ProbeConfig>,
}

/// Liveness probes of the established connection ([`Config::probe`]).
///
/// While `Connected`, the one machine timer is the probe interval, then the probe
/// timeout: every `interval` the machine asks the driver to probe the connection
/// ([`Action::Probe`]) and arms the probe timeout; a success
/// ([`Machine::probe_succeeded`]) disarms it and arms the next interval; a failure
/// ([`Machine::probe_failed`]) or the timeout means the connection is dead: it is
/// closed (`Disconnect`) and counted as lost, and the machine retries or gives up
/// as for any loss.
///
/// Anything the connection receives is liveness too
/// ([`Machine::connection_active`], told how long ago the last of it came): the
/// next probe is due `interval` after the last thing received (the machine arms
/// the rest of an interval instead of probing), and it answers an outstanding
/// probe. A peer that stops answering is so found dead `interval + timeout`
/// after the last thing it sent.
///
/// With [`Config::reset_backoff_after`] = `d` as well, no healthy timer is armed:
/// the connection becomes healthy (the failure count is reset to 0, and its loss is
/// no longer a flap) when the probe intervals that fired since it connected add
/// up to `d`, each for what it was armed for, just before the next probe is
/// asked. With whole intervals that is when the interval fires for the `k`-th
/// time, where `k` is the smallest number with `k · interval ≥ d`:
/// `⌈d / interval⌉` intervals, plus the time the probes in between took to
/// answer, later than `d` when `interval` does not divide it (`d` = 25 s,
/// `interval` = 10 s: at the third interval, 30 s and two probe round trips after
/// connecting). A rest of an interval armed after inbound activity counts for
/// its length.
///
/// ```
/// use core::time::Duration;
/// use redial::{Config, ProbeConfig};
///
/// let probe = ProbeConfig::new(Duration::from_secs(30), Duration::from_secs(5));
/// let config = Config::new().with_probe(Some(probe));
/// assert!(config.validate().is_ok());
/// let zero = ProbeConfig::new(Duration::ZERO, Duration::from_secs(5));
/// assert!(Config::new().with_probe(Some(zero)).validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProbeConfig {
    /// How long the connection stays unprobed: from connecting, and from each
    /// answered probe, to the next probe. Longer than zero.
    pub interval: Duration,
    /// How long a probe may take before the connection counts as dead. Longer
    /// than zero.
    pub timeout: Duration,
}

impl ProbeConfig {
    /// Probe every `interval`, giving each probe `timeout` to answer.
    pub const fn new(interval: Duration, timeout: Duration) -> ProbeConfig {
        ProbeConfig { interval, timeout }
    }
}

impl Default for Config {
    /// [`Config::new`]: Twisted's behaviour, no opt-in.
    fn default() -> Self {
        Config::new()
    }
}

impl Config {
    /// No opt-in: Twisted's behaviour (the same as [`Config::default`]).
    pub const fn new() -> Config {
        Config {
            prepare: false,
            connect_timeout: None,
            prepare_timeout: None,
            reset_backoff_after: None,
            give_up_after_fatal: NonZeroU32::MIN,
            probe: None,
        }
    }

    /// Sets [`prepare`](Config::prepare): run a prepare step on each new connection.
    #[must_use]
    pub const fn with_prepare(self, prepare: bool) -> Config {
        Config { prepare, ..self }
    }

    /// Sets [`connect_timeout`](Config::connect_timeout) (`None`: no timeout).
    #[must_use]
    pub const fn with_connect_timeout(self, timeout: Option<Duration>) -> Config {
        Config {
            connect_timeout: timeout,
            ..self
        }
    }

    /// Sets [`prepare_timeout`](Config::prepare_timeout) (`None`: no timeout). Needs
    /// [`prepare`](Config::prepare).
    #[must_use]
    pub const fn with_prepare_timeout(self, timeout: Option<Duration>) -> Config {
        Config {
            prepare_timeout: timeout,
            ..self
        }
    }

    /// Sets [`reset_backoff_after`](Config::reset_backoff_after) (`None`: reset the
    /// failure counter as soon as a connection is up, as Twisted does).
    #[must_use]
    pub const fn with_reset_backoff_after(self, delay: Option<Duration>) -> Config {
        Config {
            reset_backoff_after: delay,
            ..self
        }
    }

    /// Sets [`give_up_after_fatal`](Config::give_up_after_fatal): give up once this
    /// many consecutive failures were fatal (1, the default: at the first).
    #[must_use]
    pub const fn with_give_up_after_fatal(self, n: NonZeroU32) -> Config {
        Config {
            give_up_after_fatal: n,
            ..self
        }
    }

    /// Sets [`probe`](Config::probe) (`None`: no liveness probes, as Twisted).
    #[must_use]
    pub const fn with_probe(self, probe: Option<ProbeConfig>) -> Config {
        Config { probe, ..self }
    }

    /// Checks the configuration; [`Machine::with_config`] calls this.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let zero = |d: Option<Duration>| d == Some(Duration::ZERO);
        if zero(self.connect_timeout) {
            return Err(ConfigError::ZeroTimeout {
                which: "connect timeout",
            });
        }
        if zero(self.prepare_timeout) {
            return Err(ConfigError::ZeroTimeout {
                which: "prepare timeout",
            });
        }
        if zero(self.reset_backoff_after) {
            return Err(ConfigError::ZeroTimeout {
                which: "healthy-after delay",
            });
        }
        if let Some(probe) = self.probe {
            if probe.interval.is_zero() {
                return Err(ConfigError::ZeroTimeout {
                    which: "probe interval",
                });
            }
            if probe.timeout.is_zero() {
                return Err(ConfigError::ZeroTimeout {
                    which: "probe timeout",
                });
            }
        }
        if self.prepare_timeout.is_some() && !self.prepare {
            return Err(ConfigError::PrepareTimeoutWithoutPrepare);
        }
        Ok(())
    }
}

/// Running totals a user can read ([counters](crate::contract#counters)). They only grow.
///
/// New totals may be added in minor releases (the struct is `#[non_exhaustive]`):
/// read the fields, compare whole values, or start from [`Counters::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Counters {
    /// Attempts started (`Connect` actions).
    pub attempts: u64,
    /// Failed attempts (one per [`Action::AttemptFailed`]): attempt failed,
    /// prepare failed, timed out, lost while preparing, user code panicked.
    pub failures: u64,
    /// Times the machine became `Connected`.
    pub connections: u64,
    /// Established connections lost (reported with `connection_closed` while
    /// `Connected`; a connection closed by a stop is not lost).
    pub losses: u64,
    /// Losses of connections that never became healthy: with
    /// [`Config::reset_backoff_after`] set, a connection lost while its healthy
    /// timer was still armed (before it had stayed up that long), so that the loss
    /// counts toward the backoff instead of resetting it. Always 0 without
    /// `reset_backoff_after`: then a connection is healthy as soon as it is up.
    /// Every flap is also counted in [`losses`](Counters::losses).
    pub flaps: u64,
}

impl Counters {
    /// All zero (the same as [`Counters::default`]).
    pub const fn new() -> Counters {
        Counters {
            attempts: 0,
            failures: 0,
            connections: 0,
            losses: 0,
            flaps: 0,
        }
    }
}

/// What one [`Machine::handle`] call produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<E> {
    /// The actions, in order.
    pub actions: Actions<E>,
    /// The new waiter's id, for [`Input::WhenConnected`].
    pub waiter: Option<WaiterId>,
    /// The new stop request's id, for [`Input::Stop`].
    pub stop: Option<StopId>,
}

/// The id an input issued: [`Input::Stop`] issues a [`StopId`],
/// [`Input::WhenConnected`] a [`WaiterId`]; other inputs issue none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Issued {
    /// From `when_connected`.
    Waiter(WaiterId),
    /// From `stop`.
    Stop(StopId),
}

/// Where the machine is, with what each state owns: the one source of
/// [`Machine::state`], of the current attempt or connection, and of the armed
/// timer (there is at most one, and it belongs to the state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Now {
    Init,
    /// An attempt in flight, or the prepare step of its connection.
    Connecting(Attempt),
    /// Between attempts: the retry timer is armed.
    Waiting {
        retry: TimerId,
    },
    /// The connection is up (and prepared).
    Connected(Connection),
    /// Stop requested; waiting for what is still open to go away.
    Disconnecting,
    /// As `Disconnecting`, but `start` was called meanwhile.
    Restarting,
    Stopped,
}

/// The attempt of `Connecting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attempt {
    attempt: AttemptId,
    /// Its connection is made and its prepare step runs.
    preparing: bool,
    /// The connect timeout (attempting) or the prepare timeout (preparing), if
    /// configured.
    timeout: Option<TimerId>,
}

/// The connection of `Connected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Connection {
    attempt: AttemptId,
    health: Health,
    /// With [`Config::probe`]: where the probe cycle is (its timer is the
    /// connection's one timer, and health is then counted in probe intervals).
    probe: Option<Probe>,
}

/// Whether the connection has stayed up long enough to reset the failure count
/// ([`Config::reset_backoff_after`]); a connection lost before is a flap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Healthy,
    /// Healthy when this timer fires (no probes).
    AtTimer(TimerId),
    /// Healthy once completed probe intervals add up to this much more.
    AfterIntervals(Duration),
}

/// The probe cycle of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// The interval timer is armed: a probe is due when it fires.
    Idle(Interval),
    /// The interval timer is armed, and the connection received something since
    /// it was, the last of it this long before the latest report
    /// ([`Machine::connection_active`]): when it fires, the rest of an interval
    /// from that activity is armed instead of a probe (a probe if none is left).
    Active(Interval, Duration),
    /// A probe is outstanding: its timeout is armed.
    Outstanding(TimerId),
}

/// An armed probe interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Interval {
    timer: TimerId,
    /// What it was armed for: the probe interval, or the rest of one after
    /// inbound activity. Kept only while the connection's health is counted in
    /// intervals ([`Health::AfterIntervals`]); the probe interval otherwise.
    length: Duration,
}

/// What an input means once its ids are resolved: the rows of the transition table.
enum Event<E> {
    Start,
    /// A new stop request, with its id.
    Stop(StopId),
    /// A new waiter, with its id and threshold.
    WhenConnected(WaiterId, Option<NonZeroU32>),
    /// The pending waiter at this index of the queue withdrawn (found by classify;
    /// nothing changes before the transition).
    CancelWaiter(usize),
    /// Connect now instead of waiting; `true`: reset the failure count too.
    ReconnectNow(bool),
    /// The current attempt produced its connection.
    Made,
    /// The current attempt, or its prepare step, failed; `close`: its connection is
    /// still open and must be closed (D2); `fatal`: retrying will not fix it.
    AttemptFailed {
        failure: Failure<E>,
        close: bool,
        fatal: bool,
    },
    /// The current connection passed its prepare step.
    Prepared,
    /// The current attempt's connect timeout fired.
    ConnectTimedOut,
    /// The current connection's prepare timeout fired.
    PrepareTimedOut,
    /// The current, established connection was lost.
    Lost,
    /// The connection's healthy timer fired.
    HealthyDue,
    /// The connection's probe interval fired: a probe is due.
    ProbeDue,
    /// The outstanding probe of the connection was answered.
    ProbeSucceeded,
    /// The outstanding probe of the connection failed: it is dead.
    ProbeFailed,
    /// The outstanding probe's timeout fired: the connection is dead.
    ProbeTimedOut,
    /// The current, established connection received something, the last of it
    /// this long ago.
    Active(Duration),
    /// The retry timer fired.
    RetryDue,
    /// Something the machine was waiting to see gone (a cancelled attempt, a
    /// closing connection) is gone.
    Gone(AttemptId),
    /// A stale "connection made": close that orphan connection (D1).
    Orphan(AttemptId),
    /// A stale report: nothing to do (D1).
    Stale,
}

/// The reconnecting-client state machine. See the [crate docs](crate) for the run loop.
///
/// `E` is the error type of failed attempts and prepare steps; the machine moves it
/// into the [`Action::AttemptFailed`] that reports it and never clones it. `P` is
/// the [`RetryPolicy`].
///
/// A machine without options is at most 128 bytes (with [`Backoff`]); options,
/// and the lists of waiters, stops and attempts still to see gone, are kept out of
/// line, allocated when first needed (see [`Machine::shrink_to_fit`]).
#[derive(Debug, Clone)]
pub struct Machine<E, P = Backoff> {
    /// The state, with what it owns: stored compact (see [`Stored`]), read and
    /// written as a [`Now`].
    now: Stored,
    policy: P,
    /// The options and what only they need; `None` for a machine without options
    /// (until a total outgrows 32 bits).
    extra: Option<Options>,
    /// The lists that are empty most of the time; `None` whenever they all are.
    lists: Option<Box<Lists>>,
    consecutive_failures: u32,
    /// Consecutive failed attempts that were fatal (`attempt_failed_fatally`).
    fatal_streak: u32,
    /// The machine gave up (`Some(fatal)`: how), and nothing started the service
    /// since: the next start begins a fresh schedule (`consecutive_failures` 0), and
    /// waiters that come meanwhile learn it. `consecutive_failures` keeps the count
    /// it gave up at until then (see [`Machine::gave_up`]).
    gave_up: Option<bool>,
    /// The totals and id counters ([`ATTEMPTS`] …), low 32 bits; the high 32 bits
    /// are in `extra`, from the first time one wraps. The attempt count is the
    /// attempt id counter, the failure count what waiter thresholds count against.
    tallies: [u32; TALLIES],
    _error: PhantomData<fn() -> E>,
}

/// Equal when in the same state with the same options, policy, totals and
/// lists (an empty list kept allocated equals none).
impl<E: PartialEq, P: PartialEq> PartialEq for Machine<E, P> {
    fn eq(&self, other: &Self) -> bool {
        let lists_eq = match (self.lists.as_deref(), other.lists.as_deref()) {
            (Some(a), Some(b)) => a == b,
            (Some(lists), None) | (None, Some(lists)) => lists.is_empty(),
            (None, None) => true,
        };
        lists_eq
            && self.now == other.now
            && self.policy == other.policy
            && self.extra == other.extra
            && self.consecutive_failures == other.consecutive_failures
            && self.fatal_streak == other.fatal_streak
            && self.gave_up == other.gave_up
            && self.tallies == other.tallies
    }
}

/// [`Machine::tallies`] indices: attempts started (and attempt ids issued),
/// failed attempts, connections, losses, then the timer, waiter and stop ids issued.
const ATTEMPTS: usize = 0;
const FAILURES: usize = 1;
const CONNECTIONS: usize = 2;
const LOSSES: usize = 3;
const TIMERS: usize = 4;
const WAITERS: usize = 5;
const STOPS: usize = 6;
const TALLIES: usize = 7;

/// A machine's [`Extra`]: its own block, or one shared by many machines (read
/// only: the first change copies it), so that a driver whose services all start
/// with the same options (its default healthy delay) allocates nothing for them.
#[derive(Debug, Clone)]
enum Options {
    Shared(&'static Extra),
    Own(Box<Extra>),
}

impl Options {
    #[inline(always)]
    fn get(&self) -> &Extra {
        match self {
            Options::Shared(extra) => extra,
            Options::Own(extra) => extra,
        }
    }

    /// The machine's own block, copied from the shared one first if need be.
    fn make_mut(&mut self) -> &mut Extra {
        if let Options::Shared(shared) = *self {
            *self = Options::Own(Box::new(shared.clone()));
        }
        match self {
            Options::Own(extra) => extra,
            Options::Shared(_) => unreachable!("copied just above"),
        }
    }
}

/// Equal when what they hold is (shared or not).
impl PartialEq for Options {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// What a machine needs only with options (or past 2³² of something): 104 bytes
/// for the options most services set (a healthy delay), unless shared (see
/// [`Machine::with_shared_options`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Extra {
    pub(crate) config: Config,
    /// [`Counters::flaps`]: never counted without `reset_backoff_after`.
    flaps: u64,
    /// What only probes, or 2³² of something, need.
    rarer: Option<Box<Rarer>>,
}

impl Extra {
    /// The block for these options (`static` if shared by many machines).
    pub(crate) const fn new(config: Config) -> Extra {
        Extra {
            config,
            flaps: 0,
            rarer: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
struct Rarer {
    /// Connected with [`Health::AfterIntervals`]: the time it still needs (zero
    /// otherwise).
    health_left: Duration,
    /// Connected with [`Health::AfterIntervals`], a probe interval armed for
    /// less than the probe interval (the rest of one after inbound activity):
    /// what it was armed for (zero otherwise).
    interval_left: Duration,
    /// [`Probe::Active`]: how long before the latest report the connection
    /// last received something (zero otherwise).
    quiet_for: Duration,
    /// The high 32 bits of [`Machine::tallies`].
    high: [u32; TALLIES],
}

/// The machine's lists, out of line: all empty in a quiet machine.
#[derive(Debug, Clone, PartialEq, Default)]
struct Lists {
    /// Attempts asked to cancel, not yet reported gone.
    cancelled: SmallVec<[AttemptId; 2]>,
    /// Connections asked to close, not yet reported closed.
    closing: SmallVec<[AttemptId; 2]>,
    /// Pending waiters in registration order; withdrawing any of them costs
    /// O(log n) amortised (see `src/core/waiters.rs`).
    waiters: Waiters,
    /// Pending stop requests in call order.
    stops: StopList,
}

impl Lists {
    fn is_empty(&self) -> bool {
        self.cancelled.is_empty()
            && self.closing.is_empty()
            && self.waiters.is_empty()
            && self.stops.is_empty()
    }
}

/// [`Now`] as the machine stores it. The attempt a state names is always the
/// latest one issued (a new attempt replaces the current one), and the timer it
/// owns, if armed, the latest timer issued (arming one replaces the state's
/// timer, which is disarmed first): so neither id is stored, only which the state
/// has. The time [`Health::AfterIntervals`] still needs is in [`Extra`] (probes
/// are an option).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Init,
    Connecting {
        preparing: bool,
        timed: bool,
    },
    Waiting,
    Connected {
        health: StoredHealth,
        probe: StoredProbe,
    },
    Disconnecting,
    Restarting,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoredHealth {
    Healthy,
    AtTimer,
    AfterIntervals,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoredProbe {
    Off,
    Idle,
    Active,
    Outstanding,
}

/// The options of a machine that has none.
const NO_OPTIONS: &Config = &Config::new();

/// Only with the `std` feature, as `Backoff: Default` (a randomly seeded jitter).
/// Without `std`, build the machine with [`Machine::new`] and a policy seeded per
/// device, e.g. `Machine::new(Backoff::twisted(device_seed))` (see [`Backoff`]).
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
impl<E> Default for Machine<E, Backoff> {
    /// A machine with Twisted's default backoff, randomly seeded (see
    /// `Backoff::default`), and no opt-ins.
    fn default() -> Self {
        Machine::new(Backoff::default())
    }
}

impl<E, P: RetryPolicy> Machine<E, P> {
    /// A machine in `Init` with this retry policy and the default [`Config`] (Twisted's behaviour).
    pub fn new(policy: P) -> Self {
        Machine {
            now: Stored::Init,
            policy,
            extra: None,
            lists: None,
            consecutive_failures: 0,
            fatal_streak: 0,
            gave_up: None,
            tallies: [0; TALLIES],
            _error: PhantomData,
        }
    }

    /// A machine in `Init` with the opt-ins of `options`, a block shared with other
    /// machines: nothing is allocated for them until the machine changes something
    /// kept there (a flap counted, a total past 2³², a probe's health).
    #[cfg_attr(not(feature = "driver"), allow(dead_code))]
    pub(crate) fn with_shared_options(
        policy: P,
        options: &'static Extra,
    ) -> Result<Self, ConfigError> {
        options.config.validate()?;
        let mut machine = Machine::new(policy);
        if options.config != Config::new() {
            machine.extra = Some(Options::Shared(options));
        }
        Ok(machine)
    }

    /// A machine in `Init` with this retry policy and these opt-ins.
    pub fn with_config(policy: P, config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut machine = Machine::new(policy);
        if config != Config::new() {
            machine.extra_mut().config = config;
        }
        Ok(machine)
    }

    // ----- inputs as methods ---------------------------------------------------------

    /// Feeds one input. Bad input returns an [`InputError`] and changes nothing.
    ///
    /// # Panics
    ///
    /// Only if the retry policy panics, and then all or nothing: a policy that
    /// panics leaves the machine as it was before the input (the policy is asked
    /// before the transition changes anything; only what the policy itself changed
    /// before panicking stays changed), and the panic propagates to the caller.
    /// The input methods ([`Machine::connection_failed`], …) behave the same way.
    pub fn handle(&mut self, input: Input<E>) -> Result<Step<E>, InputError> {
        let mut actions = Actions::new();
        let issued = self.handle_into(input, &mut actions)?;
        Ok(Step {
            actions,
            waiter: match issued {
                Some(Issued::Waiter(waiter)) => Some(waiter),
                _ => None,
            },
            stop: match issued {
                Some(Issued::Stop(stop)) => Some(stop),
                _ => None,
            },
        })
    }

    /// Feeds one input and appends its actions to `out`, a buffer the driver owns and
    /// reuses: the fastest way to drive the machine, since no action list is moved.
    /// Returns the id the input issued (for `Stop` and `WhenConnected`).
    ///
    /// Bad input returns an [`InputError`], appends nothing and changes nothing.
    ///
    /// # Panics
    ///
    /// Only if the retry policy panics, and then all or nothing: a policy that
    /// panics leaves the machine as it was before the input and appends nothing to
    /// `out` (the policy is asked before the transition changes anything; only what
    /// the policy itself changed before panicking stays changed); the panic
    /// propagates to the caller.
    ///
    /// ```
    /// use redial::{Action, Actions, Backoff, Input, Machine};
    ///
    /// let mut machine: Machine<&str> = Machine::new(Backoff::twisted(1));
    /// let mut out = Actions::new();
    /// machine.handle_into(Input::Start, &mut out).unwrap();
    /// for action in out.drain() {
    ///     assert!(matches!(action, Action::Connect { .. }));
    /// }
    /// assert!(out.is_empty()); // ready for the next input, no allocation
    /// ```
    pub fn handle_into(
        &mut self,
        input: Input<E>,
        out: &mut Actions<E>,
    ) -> Result<Option<Issued>, InputError> {
        let kind = input.kind();
        let (event, issued) = self.classify(input).map_err(|reason| InputError {
            state: self.state(),
            input: kind,
            reason,
        })?;
        self.transition(event, out);
        Ok(issued)
    }

    /// Starts the service (a no-op unless `Init`, `Stopped` or `Disconnecting`).
    ///
    /// The count of consecutive failures ([`Machine::consecutive_failures`], what the
    /// retry policy is asked about) depends on why the service stopped:
    ///
    /// * after the retry policy **gave up** ([`Action::GaveUp`]), the first start
    ///   begins a fresh schedule: the count is reset to 0, so the next failure asks
    ///   the policy for 1 again (a policy that gives up after 3 failures allows 3
    ///   more), whatever stops came in between;
    /// * after an ordinary [`stop`](Machine::stop), the count carries over, as in
    ///   Twisted: a service stopped and started while failing keeps backing off
    ///   where it was (a connection, or a healthy period with
    ///   [`Config::reset_backoff_after`], resets it as usual).
    ///
    /// ```
    /// use core::time::Duration;
    /// use redial::{Action, Machine, RetryPolicy};
    ///
    /// let policy = (|n: u32| Duration::from_secs(u64::from(n))).give_up_after(2);
    /// let mut m: Machine<&str, _> = Machine::new(policy);
    /// let connect = |actions: &[Action<&str>]| match actions[0] {
    ///     Action::Connect { attempt } => attempt,
    ///     _ => unreachable!(),
    /// };
    /// let a = connect(&m.start());
    /// m.connection_failed(a, "refused").unwrap(); // 1: retry in 1 s
    /// let (timer, _) = m.armed_timer().unwrap();
    /// let a = connect(&m.timer_fired(timer).unwrap());
    /// let actions = m.connection_failed(a, "refused").unwrap(); // 2: give up
    /// assert!(matches!(actions.last(), Some(Action::GaveUp { consecutive_failures: 2, .. })));
    /// assert_eq!(m.consecutive_failures(), 2);
    /// // A fresh schedule: the next failure asks the policy for 1 again.
    /// let a = connect(&m.start());
    /// assert_eq!(m.consecutive_failures(), 0);
    /// m.connection_failed(a, "refused").unwrap();
    /// assert_eq!(m.consecutive_failures(), 1);
    /// // An ordinary stop and start carries the count over.
    /// let _ = m.stop();
    /// let _ = m.start();
    /// assert_eq!(m.consecutive_failures(), 1);
    /// ```
    pub fn start(&mut self) -> Actions<E> {
        let mut out = Actions::new();
        self.transition(Event::Start, &mut out);
        out
    }

    /// Asks the service to stop. The returned [`StopId`] is finished by
    /// [`Action::FinishStopping`] once nothing is left open (maybe in these actions).
    pub fn stop(&mut self) -> (StopId, Actions<E>) {
        let mut out = Actions::new();
        let stop = self.issue_stop();
        self.transition(Event::Stop(stop), &mut out);
        (stop, out)
    }

    /// Asks for the connection. The returned [`WaiterId`] is answered exactly once
    /// (maybe in these actions) unless it is withdrawn with [`Machine::cancel_waiter`].
    pub fn when_connected(
        &mut self,
        fail_after_failures: Option<NonZeroU32>,
    ) -> (WaiterId, Actions<E>) {
        let mut out = Actions::new();
        let waiter = self.issue_waiter();
        self.transition(Event::WhenConnected(waiter, fail_after_failures), &mut out);
        (waiter, out)
    }

    /// Connects now instead of waiting out the retry delay: for a network change
    /// (an interface came up, the address changed) or an operator's command, so
    /// that an attempt that failed fast does not wait out a long backoff. Never an
    /// error, and issues no id. With `reset_backoff`, the count of consecutive
    /// failures ([`Machine::consecutive_failures`]) is also reset to 0, so the backoff
    /// starts over (the next failure asks the policy for 1).
    ///
    /// What it does in each state:
    ///
    /// * **Waiting**: cancels the retry timer, resets the count if asked, and
    ///   connects at once (`CancelTimer`, `Connect`, and the connect timeout's
    ///   `ScheduleTimer` if configured): the machine is `Connecting`;
    /// * **Connecting** (an attempt or its prepare step is running): nothing but
    ///   the reset, if asked; the attempt in flight goes on;
    /// * **Connected**: nothing but the reset, if asked. An armed healthy timer
    ///   ([`Config::reset_backoff_after`]) stays armed: the reset changes the
    ///   count, not the connection's health, so a loss before that timer fires is
    ///   still a flap (and counts from the reset value);
    /// * **Init**, **Stopped**, **Disconnecting**, **Restarting**: nothing at all,
    ///   not even the reset: it never starts a service ([`Machine::start`] does)
    ///   and never cuts a stop short.
    ///
    /// ```
    /// use core::time::Duration;
    /// use redial::{Action, Machine};
    ///
    /// let policy = |n: u32| Duration::from_secs(60 * u64::from(n));
    /// let mut m: Machine<&str, _> = Machine::new(policy);
    /// let _ = m.start();
    /// m.connection_failed(m.current_attempt().unwrap(), "unreachable").unwrap();
    /// // The network came back: no need to wait a minute.
    /// let actions = m.reconnect_now(true);
    /// assert!(matches!(actions[..], [Action::CancelTimer { .. }, Action::Connect { .. }]));
    /// assert_eq!(m.consecutive_failures(), 0);
    /// ```
    pub fn reconnect_now(&mut self, reset_backoff: bool) -> Actions<E> {
        let mut out = Actions::new();
        self.transition(Event::ReconnectNow(reset_backoff), &mut out);
        out
    }

    /// Withdraws a waiter: it is forgotten and never answered. Withdrawing one already
    /// answered is stale and does nothing. Costs O(log n) amortised for n pending
    /// waiters, whichever one it is (the oldest or the newest: O(1)), and allocates
    /// nothing.
    pub fn cancel_waiter(&mut self, waiter: WaiterId) -> Result<Actions<E>, InputError> {
        self.report(Input::CancelWaiter { waiter })
    }

    /// The attempt produced a connection.
    pub fn connection_made(&mut self, attempt: AttemptId) -> Result<Actions<E>, InputError> {
        self.report(Input::ConnectionMade { attempt })
    }

    /// The attempt failed with `error`.
    pub fn connection_failed(
        &mut self,
        attempt: AttemptId,
        error: E,
    ) -> Result<Actions<E>, InputError> {
        self.report(Input::ConnectionFailed { attempt, error })
    }

    /// An attempt the machine asked to cancel is gone without a connection.
    pub fn connect_cancelled(&mut self, attempt: AttemptId) -> Result<Actions<E>, InputError> {
        self.report(Input::ConnectCancelled { attempt })
    }

    /// The prepare step accepted the connection.
    pub fn prepare_succeeded(&mut self, attempt: AttemptId) -> Result<Actions<E>, InputError> {
        self.report(Input::PrepareSucceeded { attempt })
    }

    /// The prepare step rejected the connection with `error`.
    pub fn prepare_failed(
        &mut self,
        attempt: AttemptId,
        error: E,
    ) -> Result<Actions<E>, InputError> {
        self.report(Input::PrepareFailed { attempt, error })
    }

    /// The current attempt, or the prepare step of the connection being prepared,
    /// failed with `error`, and retrying will not fix it (a wrong password, a name
    /// that does not resolve, a certificate the client rejects). The driver decides
    /// which errors are fatal; the machine acts:
    ///
    /// * for an attempt in flight it is a failed attempt, as
    ///   [`connection_failed`](Machine::connection_failed)
    ///   ([`Failure::Connect`]); for a connection being prepared, as
    ///   [`prepare_failed`](Machine::prepare_failed) ([`Failure::Prepare`], and the
    ///   connection is closed);
    /// * consecutive fatal failures are counted ([`Machine::fatal_streak`]); any
    ///   other failed attempt, a connection, and the first start after giving up
    ///   reset the count. Once it reaches [`Config::give_up_after_fatal`] (1 by
    ///   default: at once) the machine gives up **without asking the retry
    ///   policy**: `AttemptFailed`, `DeliverFailure` to every pending waiter, then
    ///   `GaveUp { fatal: true }`, and it is `Stopped`. Below it, it is an ordinary
    ///   failed attempt: the policy is asked, and retries (or gives up, `fatal:
    ///   false`);
    /// * for an attempt the machine asked to cancel it means that attempt is gone;
    ///   for a connection it asked to close, or one it no longer tracks, it is
    ///   stale; for an established connection it is bad input
    ///   ([`Rejection::AlreadyConnected`]: report its loss with
    ///   `connection_closed`).
    ///
    /// ```
    /// use core::time::Duration;
    /// use redial::{Action, Failure, Machine, State};
    ///
    /// let mut m: Machine<&str, _> = Machine::new(|n: u32| Duration::from_secs(n.into()));
    /// let _ = m.start();
    /// let attempt = m.current_attempt().unwrap();
    /// let actions = m.attempt_failed_fatally(attempt, "bad password").unwrap();
    /// assert_eq!(
    ///     actions[..],
    ///     [
    ///         Action::AttemptFailed {
    ///             attempt,
    ///             failure: Failure::Connect("bad password"),
    ///             consecutive_failures: 1,
    ///         },
    ///         Action::GaveUp { consecutive_failures: 1, fatal: true },
    ///     ]
    /// );
    /// assert_eq!(m.state(), State::Stopped);
    /// ```
    pub fn attempt_failed_fatally(
        &mut self,
        attempt: AttemptId,
        error: E,
    ) -> Result<Actions<E>, InputError> {
        self.report(Input::AttemptFailedFatally { attempt, error })
    }

    /// User code run for the current attempt or the connection being prepared
    /// panicked, and what it ran is gone: a failed attempt ([`Failure::Panicked`]); a
    /// connection being prepared is closed (`Disconnect`). See [`Input::Panicked`].
    pub fn panicked(
        &mut self,
        attempt: AttemptId,
        panic: crate::actions::Panic,
    ) -> Result<Actions<E>, InputError> {
        self.report(Input::Panicked { attempt, panic })
    }

    /// The outstanding probe of the connection ([`Action::Probe`]) was answered:
    /// the machine disarms the probe timeout and arms the next interval. A probe
    /// report about a connection the machine is closing, or an old one, is stale;
    /// about the current connection with no probe outstanding (or not yet
    /// established) it is bad input ([`Rejection::NotProbing`]).
    pub fn probe_succeeded(&mut self, attempt: AttemptId) -> Result<Actions<E>, InputError> {
        self.report(Input::ProbeSucceeded { attempt })
    }

    /// The outstanding probe of the connection failed: it is dead. The retry policy
    /// is asked first, then the connection is closed (`Disconnect`: it is
    /// outstanding until reported closed), counted as lost (and as a flap if it
    /// was not yet healthy), and the machine retries or gives up as for any loss.
    /// Stale and bad forms as for [`Machine::probe_succeeded`].
    pub fn probe_failed(&mut self, attempt: AttemptId) -> Result<Actions<E>, InputError> {
        self.report(Input::ProbeFailed { attempt })
    }

    /// The established connection received something (a byte, a message) since
    /// the driver last said so, the last of it `quiet_for` ago: it is alive, and
    /// not idle. With [`Config::probe`], the next probe is due `interval` after
    /// that last inbound activity:
    ///
    /// * with the interval armed, it is noted: when the interval fires, the rest
    ///   of an interval from that activity (`interval - quiet_for`) is armed
    ///   instead of a probe, or, if nothing is left of it (quiet for a whole
    ///   interval or more), the probe is asked then as usual. The rest is counted
    ///   from the latest report: report it just before you feed the interval that
    ///   fired, and the probe runs exactly `interval` after the last inbound
    ///   activity; a report earlier in the interval makes the rest longer by
    ///   that much (the probe comes later, never sooner);
    /// * with a probe outstanding, it is answered as by
    ///   [`probe_succeeded`](Machine::probe_succeeded), and the rest of an
    ///   interval from that activity is armed; nothing left: a new probe now
    ///   (`Probe`, and its timeout re-armed).
    ///
    /// A rest of an interval counts toward the healthy delay for what it was
    /// armed for. Without probes it changes nothing. Never an error for the
    /// current connection; stale for one being prepared, closing or old; bad
    /// input for an attempt not yet made ([`Rejection::NotMade`]).
    ///
    /// A driver may report it whenever it sees inbound traffic, or, cheaper, only
    /// just before it feeds a probe timer that fired (if the connection received
    /// something since it last reported).
    ///
    /// ```
    /// use core::time::Duration;
    /// use redial::{Action, Backoff, Config, Machine, ProbeConfig, TimerKind};
    ///
    /// let probe = ProbeConfig::new(Duration::from_secs(10), Duration::from_secs(2));
    /// let config = Config::new().with_probe(Some(probe));
    /// let mut m: Machine<&str> = Machine::with_config(Backoff::twisted(1), config).unwrap();
    /// let _ = m.start();
    /// let attempt = m.current_attempt().unwrap();
    /// m.connection_made(attempt).unwrap();
    /// let (interval, _) = m.armed_timer().unwrap();
    /// // Something arrived 3 s before the interval fired: no probe now, the next
    /// // one is due 10 s after that arrival, in 7 s.
    /// let quiet_for = Duration::from_secs(3);
    /// assert!(m.connection_active(attempt, quiet_for).unwrap().is_empty());
    /// let actions = m.timer_fired(interval).unwrap();
    /// assert!(matches!(
    ///     actions[..],
    ///     [Action::ScheduleTimer { kind: TimerKind::ProbeInterval, delay, .. }]
    ///         if delay == Duration::from_secs(7)
    /// ));
    /// ```
    pub fn connection_active(
        &mut self,
        attempt: AttemptId,
        quiet_for: Duration,
    ) -> Result<Actions<E>, InputError> {
        self.report(Input::ConnectionActive { attempt, quiet_for })
    }

    /// The connection is closed (lost, or closed because the machine asked).
    pub fn connection_closed(&mut self, attempt: AttemptId) -> Result<Actions<E>, InputError> {
        self.report(Input::ConnectionClosed { attempt })
    }

    /// A timer fired. For the retry timer this is Twisted's `reconnect`.
    #[doc(alias = "reconnect")]
    pub fn timer_fired(&mut self, timer: TimerId) -> Result<Actions<E>, InputError> {
        self.report(Input::TimerFired { timer })
    }

    #[inline]
    fn report(&mut self, input: Input<E>) -> Result<Actions<E>, InputError> {
        let mut out = Actions::new();
        self.handle_into(input, &mut out)?;
        Ok(out)
    }

    // ----- reading -------------------------------------------------------------------

    /// The current state.
    pub fn state(&self) -> State {
        match self.now() {
            Now::Init => State::Init,
            Now::Connecting(_) => State::Connecting,
            Now::Waiting { .. } => State::Waiting,
            Now::Connected(_) => State::Connected,
            Now::Disconnecting => State::Disconnecting,
            Now::Restarting => State::Restarting,
            Now::Stopped => State::Stopped,
        }
    }

    /// Consecutive failures so far (what the retry policy was last asked about).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Consecutive failed attempts that were fatal ([`Machine::attempt_failed_fatally`]);
    /// the machine gives up when this reaches [`Config::give_up_after_fatal`].
    pub fn fatal_streak(&self) -> u32 {
        self.fatal_streak
    }

    /// Running totals.
    pub fn counters(&self) -> Counters {
        Counters {
            attempts: self.tally(ATTEMPTS),
            failures: self.tally(FAILURES),
            connections: self.tally(CONNECTIONS),
            losses: self.tally(LOSSES),
            flaps: self.extra.as_ref().map_or(0, |extra| extra.get().flaps),
        }
    }

    /// The opt-ins this machine runs with.
    pub fn config(&self) -> &Config {
        self.extra
            .as_ref()
            .map_or(NO_OPTIONS, |extra| &extra.get().config)
    }

    /// The retry policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// Frees the memory of the machine's lists (pending waiters and stops,
    /// attempts and connections still to see gone) if they are all empty. The
    /// machine keeps them once allocated, so that a steady reconnect cycle with
    /// waiters allocates nothing; a driver that holds many idle machines calls
    /// this once one is connected. Changes nothing else.
    ///
    /// ```
    /// use redial::{Backoff, Machine};
    ///
    /// let mut machine: Machine<&str> = Machine::new(Backoff::twisted(1));
    /// let _ = machine.when_connected(None);
    /// let before = machine.clone();
    /// machine.shrink_to_fit();
    /// assert_eq!(machine, before); // the waiter is still pending
    /// ```
    pub fn shrink_to_fit(&mut self) {
        if self.lists.as_ref().is_some_and(|lists| lists.is_empty()) {
            self.lists = None;
        }
    }

    /// The current attempt or connection, if any.
    pub fn current_attempt(&self) -> Option<AttemptId> {
        match self.now() {
            Now::Connecting(current) => Some(current.attempt),
            Now::Connected(connection) => Some(connection.attempt),
            Now::Init
            | Now::Waiting { .. }
            | Now::Disconnecting
            | Now::Restarting
            | Now::Stopped => None,
        }
    }

    /// The current connection, if the machine is `Connected`.
    pub fn connection(&self) -> Option<AttemptId> {
        match self.now() {
            Now::Connected(connection) => Some(connection.attempt),
            _ => None,
        }
    }

    /// The armed timer, if any (at most one is armed at a time: the one the
    /// state owns).
    pub fn armed_timer(&self) -> Option<(TimerId, TimerKind)> {
        // Read from the stored state: the armed timer is the latest issued.
        let kind = match self.now {
            Stored::Connecting {
                timed: true,
                preparing,
            } => {
                if preparing {
                    TimerKind::PrepareTimeout
                } else {
                    TimerKind::ConnectTimeout
                }
            }
            Stored::Waiting => TimerKind::Retry,
            Stored::Connected { health, probe } => match (probe, health) {
                (StoredProbe::Idle | StoredProbe::Active, _) => TimerKind::ProbeInterval,
                (StoredProbe::Outstanding, _) => TimerKind::ProbeTimeout,
                (StoredProbe::Off, StoredHealth::AtTimer) => TimerKind::Healthy,
                (StoredProbe::Off, StoredHealth::Healthy | StoredHealth::AfterIntervals) => {
                    return None
                }
            },
            Stored::Connecting { timed: false, .. }
            | Stored::Init
            | Stored::Disconnecting
            | Stored::Restarting
            | Stored::Stopped => return None,
        };
        Some((self.latest_timer(), kind))
    }

    /// Pending waiters, in registration order.
    pub fn pending_waiters(&self) -> impl ExactSizeIterator<Item = WaiterId> + '_ {
        self.lists
            .as_deref()
            .map_or(Waiters::NONE, |lists| &lists.waiters)
            .iter()
    }

    /// Pending stop requests, in call order.
    pub fn pending_stops(&self) -> &[StopId] {
        self.lists.as_deref().map_or(&[], |lists| &lists.stops)
    }

    /// Attempts asked to cancel and connections asked to close that have not been
    /// reported gone yet. A stop finishes only when this is empty and nothing is
    /// current ([D7](crate::contract#d7-a-finished-stop-means-nothing-is-left)).
    pub fn outstanding(&self) -> impl Iterator<Item = AttemptId> + '_ {
        let (cancelled, closing): (&[AttemptId], &[AttemptId]) = match self.lists.as_deref() {
            Some(lists) => (&lists.cancelled, &lists.closing),
            None => (&[], &[]),
        };
        cancelled.iter().chain(closing).copied()
    }

    // ----- step 1: identities --------------------------------------------------------

    /// Resolves the ids an input names. Commands (`start`, `stop`, `when_connected`)
    /// are always accepted and get their new id here, the one change this step makes;
    /// reports are only read, so a rejected report changes nothing.
    fn classify(&mut self, input: Input<E>) -> Result<(Event<E>, Option<Issued>), Rejection> {
        let event = match input {
            Input::Start => Event::Start,
            Input::Stop => {
                let stop = self.issue_stop();
                return Ok((Event::Stop(stop), Some(Issued::Stop(stop))));
            }
            Input::WhenConnected {
                fail_after_failures,
            } => {
                let waiter = self.issue_waiter();
                let event = Event::WhenConnected(waiter, fail_after_failures);
                return Ok((event, Some(Issued::Waiter(waiter))));
            }
            Input::CancelWaiter { waiter } => {
                if waiter.raw() >= self.tally(WAITERS) {
                    return Err(Rejection::UnknownWaiter(waiter));
                }
                match self
                    .lists
                    .as_ref()
                    .and_then(|lists| lists.waiters.find(waiter))
                {
                    Some(index) => Event::CancelWaiter(index),
                    None => Event::Stale,
                }
            }
            Input::ReconnectNow { reset_backoff } => Event::ReconnectNow(reset_backoff),
            Input::TimerFired { timer } => {
                if timer.raw() >= self.tally(TIMERS) {
                    return Err(Rejection::UnknownTimer(timer));
                }
                // Only the state's own armed timer means anything; any other is stale.
                match self.armed_timer() {
                    Some((armed, kind)) if armed == timer => match kind {
                        TimerKind::Retry => Event::RetryDue,
                        TimerKind::ConnectTimeout => Event::ConnectTimedOut,
                        TimerKind::PrepareTimeout => Event::PrepareTimedOut,
                        TimerKind::Healthy => Event::HealthyDue,
                        TimerKind::ProbeInterval => Event::ProbeDue,
                        TimerKind::ProbeTimeout => Event::ProbeTimedOut,
                    },
                    _ => Event::Stale,
                }
            }
            Input::ConnectionMade { attempt } => match self.whose(attempt)? {
                Whose::Attempting => Event::Made,
                Whose::Preparing | Whose::Connected { .. } => {
                    return Err(Rejection::AlreadyMade(attempt))
                }
                Whose::Closing => Event::Stale,
                Whose::Cancelled | Whose::Old => Event::Orphan(attempt),
            },
            Input::ConnectionFailed { attempt, error } => match self.whose(attempt)? {
                Whose::Attempting => Event::AttemptFailed {
                    failure: Failure::Connect(error),
                    close: false,
                    fatal: false,
                },
                Whose::Preparing | Whose::Connected { .. } => {
                    return Err(Rejection::AlreadyConnected(attempt))
                }
                Whose::Cancelled => Event::Gone(attempt),
                Whose::Closing | Whose::Old => Event::Stale,
            },
            Input::ConnectCancelled { attempt } => match self.whose(attempt)? {
                Whose::Attempting | Whose::Preparing | Whose::Connected { .. } => {
                    return Err(Rejection::NotCancelled(attempt))
                }
                Whose::Cancelled => Event::Gone(attempt),
                Whose::Closing | Whose::Old => Event::Stale,
            },
            Input::PrepareSucceeded { attempt } => match self.whose(attempt)? {
                Whose::Preparing => Event::Prepared,
                Whose::Attempting => return Err(Rejection::NotMade(attempt)),
                Whose::Connected { .. } => return Err(Rejection::NotPreparing(attempt)),
                Whose::Cancelled | Whose::Closing | Whose::Old => Event::Stale,
            },
            Input::PrepareFailed { attempt, error } => match self.whose(attempt)? {
                Whose::Preparing => Event::AttemptFailed {
                    failure: Failure::Prepare(error),
                    close: true,
                    fatal: false,
                },
                Whose::Attempting => return Err(Rejection::NotMade(attempt)),
                Whose::Connected { .. } => return Err(Rejection::NotPreparing(attempt)),
                Whose::Cancelled | Whose::Closing | Whose::Old => Event::Stale,
            },
            Input::AttemptFailedFatally { attempt, error } => match self.whose(attempt)? {
                Whose::Attempting => Event::AttemptFailed {
                    failure: Failure::Connect(error),
                    close: false,
                    fatal: true,
                },
                Whose::Preparing => Event::AttemptFailed {
                    failure: Failure::Prepare(error),
                    close: true,
                    fatal: true,
                },
                Whose::Connected { .. } => return Err(Rejection::AlreadyConnected(attempt)),
                Whose::Cancelled => Event::Gone(attempt),
                Whose::Closing | Whose::Old => Event::Stale,
            },
            Input::Panicked { attempt, panic } => match self.whose(attempt)? {
                Whose::Attempting => Event::AttemptFailed {
                    failure: Failure::Panicked(panic),
                    close: false,
                    fatal: false,
                },
                Whose::Preparing => Event::AttemptFailed {
                    failure: Failure::Panicked(panic),
                    close: true,
                    fatal: false,
                },
                Whose::Connected { .. } => return Err(Rejection::AlreadyConnected(attempt)),
                Whose::Cancelled => Event::Gone(attempt),
                Whose::Closing | Whose::Old => Event::Stale,
            },
            // Between probes (anything received answered the last one before it
            // did), a probe's success is news to no one; its failure still means
            // the connection is dead.
            Input::ProbeSucceeded { attempt } => match self.whose(attempt)? {
                Whose::Connected {
                    probe: ProbePhase::Outstanding,
                } => Event::ProbeSucceeded,
                Whose::Connected {
                    probe: ProbePhase::Between,
                } => Event::Stale,
                Whose::Attempting
                | Whose::Preparing
                | Whose::Connected {
                    probe: ProbePhase::Off,
                } => return Err(Rejection::NotProbing(attempt)),
                Whose::Cancelled | Whose::Closing | Whose::Old => Event::Stale,
            },
            Input::ProbeFailed { attempt } => match self.whose(attempt)? {
                Whose::Connected {
                    probe: ProbePhase::Outstanding | ProbePhase::Between,
                } => Event::ProbeFailed,
                Whose::Attempting
                | Whose::Preparing
                | Whose::Connected {
                    probe: ProbePhase::Off,
                } => return Err(Rejection::NotProbing(attempt)),
                Whose::Cancelled | Whose::Closing | Whose::Old => Event::Stale,
            },
            Input::ConnectionActive { attempt, quiet_for } => match self.whose(attempt)? {
                Whose::Connected { .. } => Event::Active(quiet_for),
                Whose::Attempting => return Err(Rejection::NotMade(attempt)),
                // Being prepared: its prepare step is what answers for it.
                Whose::Preparing | Whose::Cancelled | Whose::Closing | Whose::Old => Event::Stale,
            },
            Input::ConnectionClosed { attempt } => match self.whose(attempt)? {
                Whose::Attempting => return Err(Rejection::NotMade(attempt)),
                Whose::Preparing => Event::AttemptFailed {
                    failure: Failure::LostWhilePreparing,
                    close: false,
                    fatal: false,
                },
                Whose::Connected { .. } => Event::Lost,
                Whose::Closing => Event::Gone(attempt),
                Whose::Cancelled | Whose::Old => Event::Stale,
            },
        };
        Ok((event, None))
    }

    fn whose(&self, attempt: AttemptId) -> Result<Whose, Rejection> {
        if attempt.raw() >= self.tally(ATTEMPTS) {
            return Err(Rejection::UnknownAttempt(attempt));
        }
        // The current attempt, if any, is the latest issued.
        let current = attempt == self.latest_attempt();
        Ok(match self.now {
            Stored::Connecting {
                preparing: true, ..
            } if current => Whose::Preparing,
            Stored::Connecting { .. } if current => Whose::Attempting,
            Stored::Connected { probe, .. } if current => Whose::Connected {
                probe: match probe {
                    StoredProbe::Off => ProbePhase::Off,
                    StoredProbe::Idle | StoredProbe::Active => ProbePhase::Between,
                    StoredProbe::Outstanding => ProbePhase::Outstanding,
                },
            },
            _ if self
                .lists
                .as_ref()
                .is_some_and(|l| l.cancelled.contains(&attempt)) =>
            {
                Whose::Cancelled
            }
            _ if self
                .lists
                .as_ref()
                .is_some_and(|l| l.closing.contains(&attempt)) =>
            {
                Whose::Closing
            }
            _ => Whose::Old,
        })
    }

    // ----- step 2: the transition table (docs/contract.md, Transitions) -------------

    /// One arm per `(state, event)` row: what happens in state S on input I is
    /// found here, and only here. The state's own data (the attempt, the
    /// connection, their timer) comes with it.
    fn transition(&mut self, event: Event<E>, out: &mut Actions<E>) {
        use Now::*;
        match (self.now(), event) {
            // Identity bookkeeping, the same in every state (D1, D7).
            (_, Event::Stale) => {}
            (_, Event::Orphan(attempt)) => {
                let lists = self.lists_mut();
                lists.cancelled.retain(|a| *a != attempt);
                lists.closing.push(attempt);
                out.push(Action::Disconnect { attempt });
            }
            (_, Event::CancelWaiter(index)) => self.lists_mut().waiters.withdraw(index),

            // start
            (Init | Stopped, Event::Start) => {
                self.fresh_schedule_after_giving_up();
                self.connect(out);
            }
            (Disconnecting, Event::Start) => {
                self.fresh_schedule_after_giving_up();
                self.set_now(Restarting);
            }
            (Connecting(_) | Waiting { .. } | Connected(_) | Restarting, Event::Start) => {}

            // stop
            (Init | Stopped, Event::Stop(stop)) => {
                self.lists_mut().stops.push(stop);
                if self.nothing_outstanding() {
                    self.set_now(Stopped);
                    self.cancel_waiters(out);
                    self.finish_stops(out);
                } else {
                    // Only after giving up with a rejected connection still closing (D7).
                    self.set_now(Disconnecting);
                }
            }
            (Connecting(_) | Connected(_), Event::Stop(stop)) => {
                self.lists_mut().stops.push(stop);
                self.abandon_current(out);
                self.set_now(Disconnecting);
            }
            (Waiting { retry }, Event::Stop(stop)) => {
                self.lists_mut().stops.push(stop);
                if self.nothing_outstanding() {
                    self.set_now(Stopped);
                    self.cancel_waiters(out);
                    out.push(Action::CancelTimer { timer: retry });
                    self.finish_stops(out);
                } else {
                    out.push(Action::CancelTimer { timer: retry });
                    self.set_now(Disconnecting);
                }
            }
            (Disconnecting | Restarting, Event::Stop(stop)) => {
                self.lists_mut().stops.push(stop);
                self.set_now(Disconnecting);
            }

            // reconnect_now: only Waiting connects; a running attempt or connection
            // keeps going; it never starts a service or cuts a stop short.
            (Waiting { retry }, Event::ReconnectNow(reset_backoff)) => {
                out.push(Action::CancelTimer { timer: retry });
                if reset_backoff {
                    self.consecutive_failures = 0;
                }
                self.connect(out);
            }
            (Connecting(_) | Connected(_), Event::ReconnectNow(reset_backoff)) => {
                if reset_backoff {
                    self.consecutive_failures = 0;
                }
            }
            (Init | Disconnecting | Restarting | Stopped, Event::ReconnectNow(_)) => {}

            // when_connected
            (Connected(connection), Event::WhenConnected(waiter, _)) => {
                out.push(Action::NotifyWaiters {
                    attempt: connection.attempt,
                    waiters: WaiterList::one(waiter),
                });
            }
            (Stopped, Event::WhenConnected(waiter, _)) => {
                out.push(Action::CancelWaiters {
                    waiters: WaiterList::one(waiter),
                    gave_up: self.gave_up(),
                });
            }
            (
                Init | Connecting(_) | Waiting { .. } | Disconnecting | Restarting,
                Event::WhenConnected(waiter, n),
            ) => {
                let fail_at = n.map(|n| self.tally(FAILURES) + u64::from(n.get()));
                self.lists_mut().waiters.push(waiter, fail_at);
            }

            // Connecting: the attempt and its prepare step
            (Connecting(current), Event::Made) => {
                self.disarm_timeout(current, out);
                if self.config().prepare {
                    out.push(Action::Prepare {
                        attempt: current.attempt,
                    });
                    let timeout = self
                        .config()
                        .prepare_timeout
                        .map(|delay| self.arm(TimerKind::PrepareTimeout, delay, out));
                    self.set_now(Connecting(Attempt {
                        attempt: current.attempt,
                        preparing: true,
                        timeout,
                    }));
                } else {
                    self.connected(current.attempt, out);
                }
            }
            (Connecting(current), Event::Prepared) => {
                self.disarm_timeout(current, out);
                self.connected(current.attempt, out);
            }
            // A failure or a loss asks the retry policy first, before anything
            // changes: a policy that panics leaves the machine as it was.
            (
                Connecting(current),
                Event::AttemptFailed {
                    failure,
                    close,
                    fatal,
                },
            ) => {
                // Fatal failures in a row: at the threshold, give up without
                // asking the policy.
                let streak = if fatal {
                    self.fatal_streak.saturating_add(1)
                } else {
                    0
                };
                let give_up_fatally = fatal && streak >= self.config().give_up_after_fatal.get();
                let next = if give_up_fatally {
                    None
                } else {
                    self.ask_policy()
                };
                self.fatal_streak = streak;
                self.disarm_timeout(current, out);
                if close {
                    // D2: a connection rejected by prepare is closed.
                    self.lists_mut().closing.push(current.attempt);
                    out.push(Action::Disconnect {
                        attempt: current.attempt,
                    });
                }
                self.failed(current.attempt, failure, next, give_up_fatally, out);
            }
            (Connecting(current), Event::ConnectTimedOut) => {
                let next = self.ask_policy();
                self.fatal_streak = 0;
                self.lists_mut().cancelled.push(current.attempt);
                out.push(Action::CancelConnect {
                    attempt: current.attempt,
                });
                self.failed(current.attempt, Failure::ConnectTimeout, next, false, out);
            }
            (Connecting(current), Event::PrepareTimedOut) => {
                let next = self.ask_policy();
                self.fatal_streak = 0;
                self.lists_mut().closing.push(current.attempt);
                out.push(Action::Disconnect {
                    attempt: current.attempt,
                });
                self.failed(current.attempt, Failure::PrepareTimeout, next, false, out);
            }

            // Connected: a loss asks the retry policy first, before anything changes.
            (Connected(connection), Event::Lost) => {
                let next = self.ask_policy();
                self.lose(connection, LossKind::Closed, next, out);
            }
            (Connected(connection), Event::HealthyDue) => {
                self.consecutive_failures = 0;
                self.set_now(Connected(Connection {
                    health: Health::Healthy,
                    ..connection
                }));
            }
            // Connected, probing: the one timer is the interval, then the probe timeout.
            (Connected(connection), Event::ProbeDue) => {
                let (fired, quiet_for) = match connection.probe {
                    Some(Probe::Idle(interval)) => (interval.length, None),
                    Some(Probe::Active(interval, quiet_for)) => (interval.length, Some(quiet_for)),
                    // classify() yields ProbeDue only with the interval armed.
                    Some(Probe::Outstanding(_)) | None => (self.probe_config().interval, None),
                };
                // One more interval completed (this long): healthy once they add
                // up to the healthy delay.
                let health = match connection.health {
                    Health::AfterIntervals(left) => match left.saturating_sub(fired) {
                        left if left.is_zero() => {
                            self.consecutive_failures = 0;
                            Health::Healthy
                        }
                        left => Health::AfterIntervals(left),
                    },
                    health @ (Health::Healthy | Health::AtTimer(_)) => health,
                };
                let connection = Connection {
                    health,
                    ..connection
                };
                match quiet_for {
                    // Not idle: it received something during the interval, which
                    // answers for it. The next probe is due an interval after that.
                    Some(quiet_for) => self.next_probe(connection, quiet_for, out),
                    None => self.probe_now(connection, out),
                }
            }
            // Something received: liveness. While idle it is noted (when the
            // interval fires, the rest of an interval from it is armed instead of a
            // probe); an outstanding probe is answered, and the next one is due an
            // interval after that activity.
            (Connected(connection), Event::Active(quiet_for)) => match connection.probe {
                Some(Probe::Idle(interval) | Probe::Active(interval, _)) => {
                    self.set_now(Connected(Connection {
                        probe: Some(Probe::Active(interval, quiet_for)),
                        ..connection
                    }));
                }
                Some(Probe::Outstanding(_)) => {
                    self.disarm_connection(connection, out);
                    self.next_probe(connection, quiet_for, out);
                }
                None => {}
            },
            (Connected(connection), Event::ProbeSucceeded) => {
                self.probe_answered(connection, out);
            }
            // The connection is dead: ask the policy first, then close it.
            (Connected(connection), Event::ProbeFailed) => {
                let next = self.ask_policy();
                self.lose(connection, LossKind::ProbeFailed, next, out);
            }
            (Connected(connection), Event::ProbeTimedOut) => {
                let next = self.ask_policy();
                // The probe timeout fired: nothing left to disarm.
                let fired = Connection {
                    probe: None,
                    ..connection
                };
                self.lose(fired, LossKind::ProbeTimedOut, next, out);
            }

            // Waiting
            (Waiting { .. }, Event::RetryDue) => self.connect(out),

            // something the machine was waiting to see gone is gone
            (_, Event::Gone(attempt)) => {
                if let Some(lists) = &mut self.lists {
                    lists.cancelled.retain(|a| *a != attempt);
                    lists.closing.retain(|a| *a != attempt);
                }
                if self.nothing_outstanding() {
                    match self.now() {
                        Disconnecting => {
                            self.set_now(Stopped);
                            self.cancel_waiters(out);
                            self.finish_stops(out);
                        }
                        Restarting => {
                            self.connect(out);
                            self.finish_stops(out);
                        }
                        Init | Connecting(_) | Waiting { .. } | Connected(_) | Stopped => {}
                    }
                }
            }

            // classify() never yields these: an event about the current attempt or
            // connection needs one, and a timer event needs that state's timer armed.
            (
                Init | Waiting { .. } | Connected(_) | Disconnecting | Restarting | Stopped,
                Event::Made
                | Event::Prepared
                | Event::AttemptFailed { .. }
                | Event::ConnectTimedOut
                | Event::PrepareTimedOut,
            )
            | (
                Init | Connecting(_) | Waiting { .. } | Disconnecting | Restarting | Stopped,
                Event::Lost
                | Event::Active(_)
                | Event::HealthyDue
                | Event::ProbeDue
                | Event::ProbeSucceeded
                | Event::ProbeFailed
                | Event::ProbeTimedOut,
            )
            | (
                Init | Connecting(_) | Connected(_) | Disconnecting | Restarting | Stopped,
                Event::RetryDue,
            ) => {}
        }
    }

    // ----- the pieces the table is made of -------------------------------------------

    /// A new attempt: the machine is `Connecting`.
    fn connect(&mut self, out: &mut Actions<E>) {
        let attempt = AttemptId::from_raw(self.bump(ATTEMPTS));
        out.push(Action::Connect { attempt });
        let timeout = self
            .config()
            .connect_timeout
            .map(|delay| self.arm(TimerKind::ConnectTimeout, delay, out));
        self.set_now(Now::Connecting(Attempt {
            attempt,
            preparing: false,
            timeout,
        }));
    }

    /// The connection is up (and prepared): `Connected`, with its health and probe
    /// timers; told, and handed to every waiter.
    fn connected(&mut self, attempt: AttemptId, out: &mut Actions<E>) {
        self.bump(CONNECTIONS);
        self.fatal_streak = 0;
        let (health, probe) = match (self.config().probe, self.config().reset_backoff_after) {
            // The one timer is the probe's; health is counted in its intervals.
            (Some(probe), healthy_after) => {
                let timer = self.arm(TimerKind::ProbeInterval, probe.interval, out);
                let health = healthy_after.map_or(Health::Healthy, Health::AfterIntervals);
                let length = probe.interval;
                (health, Some(Probe::Idle(Interval { timer, length })))
            }
            (None, Some(delay)) => {
                let timer = self.arm(TimerKind::Healthy, delay, out);
                (Health::AtTimer(timer), None)
            }
            (None, None) => (Health::Healthy, None),
        };
        if health == Health::Healthy {
            self.consecutive_failures = 0;
        }
        self.set_now(Now::Connected(Connection {
            attempt,
            health,
            probe,
        }));
        out.push(Action::Connected {
            attempt,
            generation: self.tally(CONNECTIONS),
        });
        if self.has_waiters() {
            let waiters = self.lists_mut().waiters.take_all();
            out.push(Action::NotifyWaiters { attempt, waiters });
        }
    }

    /// What the retry policy says after one more failure. Called before a transition
    /// changes anything, so that a panicking policy leaves the machine untouched.
    fn ask_policy(&mut self) -> Option<Duration> {
        self.policy
            .next_delay(self.consecutive_failures.saturating_add(1))
    }

    /// The current attempt failed (its cleanup is done): count it, retry after
    /// `next` or give up (`None`; `fatal`: on fatal failures), and tell the
    /// failure (`AttemptFailed`), then deliver it to the waiters it fails
    /// (`DeliverFailure`), then tell the retry or the give-up.
    fn failed(
        &mut self,
        attempt: AttemptId,
        failure: Failure<E>,
        next: Option<Duration>,
        fatal: bool,
        out: &mut Actions<E>,
    ) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.bump(FAILURES);
        self.retry_or_stop(next, out);
        out.push(Action::AttemptFailed {
            attempt,
            failure,
            consecutive_failures: self.consecutive_failures,
        });
        let gave_up = next.is_none().then_some(GiveUp {
            consecutive_failures: self.consecutive_failures,
            fatal,
        });
        let failures = self.tally(FAILURES);
        let waiters: WaiterList = match &mut self.lists {
            Some(lists) if gave_up.is_some() => lists.waiters.take_all(),
            Some(lists) => lists.waiters.take_due(failures),
            None => WaiterList::new(),
        };
        if !waiters.is_empty() {
            out.push(Action::DeliverFailure { waiters, gave_up });
        }
        self.tell_retry_or_give_up(next, fatal, out);
    }

    /// The one loss path: the established `connection` is lost (`kind` says how).
    /// Disarm its timer, close it if a probe found it dead, count the loss (a
    /// flap if it was not yet healthy), retry after `next` or give up, and tell
    /// the loss, then the retry or the give-up.
    fn lose(
        &mut self,
        connection: Connection,
        kind: LossKind,
        next: Option<Duration>,
        out: &mut Actions<E>,
    ) {
        let attempt = connection.attempt;
        // Lost before it stayed up long enough to count as healthy.
        let flap = connection.health != Health::Healthy;
        self.disarm_connection(connection, out);
        if kind != LossKind::Closed {
            self.lists_mut().closing.push(attempt);
            out.push(Action::Disconnect { attempt });
        }
        self.bump(LOSSES);
        if flap {
            self.extra_mut().flaps += 1;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.retry_or_stop(next, out);
        out.push(Action::Lost {
            attempt,
            kind,
            flap,
        });
        self.tell_retry_or_give_up(next, false, out);
    }

    /// `Waiting` with the retry timer armed after `next`, or `Stopped` (`None`).
    fn retry_or_stop(&mut self, next: Option<Duration>, out: &mut Actions<E>) {
        let now = match next {
            Some(delay) => Now::Waiting {
                retry: self.arm(TimerKind::Retry, delay, out),
            },
            None => Now::Stopped,
        };
        self.set_now(now);
    }

    /// The last fact of a failure or a loss: `RetryScheduled` after `next`, or
    /// `GaveUp` (`next` is `None`; `fatal`: on fatal failures, else the policy).
    fn tell_retry_or_give_up(&mut self, next: Option<Duration>, fatal: bool, out: &mut Actions<E>) {
        match next {
            Some(delay) => out.push(Action::RetryScheduled {
                delay,
                consecutive_failures: self.consecutive_failures,
            }),
            None => {
                let gave_up = GiveUp {
                    consecutive_failures: self.consecutive_failures,
                    fatal,
                };
                self.gave_up = Some(fatal);
                out.push(Action::GaveUp {
                    consecutive_failures: gave_up.consecutive_failures,
                    fatal: gave_up.fatal,
                });
            }
        }
    }

    /// How the machine gave up, if it did and nothing started it since: the count
    /// it gave up at is still `consecutive_failures` (nothing changes it until the
    /// next start, which forgets both).
    fn gave_up(&self) -> Option<GiveUp> {
        self.gave_up.map(|fatal| GiveUp {
            consecutive_failures: self.consecutive_failures,
            fatal,
        })
    }

    /// A start after the policy gave up begins a fresh schedule; after an ordinary
    /// stop the count carries over (Twisted).
    fn fresh_schedule_after_giving_up(&mut self) {
        if self.gave_up.take().is_some() {
            self.consecutive_failures = 0;
            self.fatal_streak = 0;
        }
    }

    /// Lets go of the current attempt or connection: cancel or close it, and disarm
    /// its timer. It stays outstanding until reported gone.
    fn abandon_current(&mut self, out: &mut Actions<E>) {
        match self.now() {
            Now::Connecting(current) if !current.preparing => {
                self.lists_mut().cancelled.push(current.attempt);
                out.push(Action::CancelConnect {
                    attempt: current.attempt,
                });
                self.disarm_timeout(current, out);
            }
            Now::Connecting(current) => {
                self.lists_mut().closing.push(current.attempt);
                out.push(Action::Disconnect {
                    attempt: current.attempt,
                });
                self.disarm_timeout(current, out);
            }
            Now::Connected(connection) => {
                self.lists_mut().closing.push(connection.attempt);
                out.push(Action::Disconnect {
                    attempt: connection.attempt,
                });
                self.disarm_connection(connection, out);
            }
            Now::Init
            | Now::Waiting { .. }
            | Now::Disconnecting
            | Now::Restarting
            | Now::Stopped => {}
        }
    }

    /// The outstanding probe of `connection` was answered: disarm its timeout and
    /// arm the next interval.
    fn probe_answered(&mut self, connection: Connection, out: &mut Actions<E>) {
        self.disarm_connection(connection, out);
        self.next_probe(connection, Duration::ZERO, out);
    }

    /// The connection (its timer disarmed or fired) last received something
    /// `quiet_for` ago: the next probe is due an interval after that. Arms the
    /// rest of that interval, or probes now if nothing is left of it.
    fn next_probe(&mut self, connection: Connection, quiet_for: Duration, out: &mut Actions<E>) {
        let length = self.probe_config().interval.saturating_sub(quiet_for);
        if length.is_zero() {
            self.probe_now(connection, out);
            return;
        }
        let timer = self.arm(TimerKind::ProbeInterval, length, out);
        self.set_now(Now::Connected(Connection {
            probe: Some(Probe::Idle(Interval { timer, length })),
            ..connection
        }));
    }

    /// Asks for a probe of the connection (its timer disarmed or fired) and arms
    /// its timeout.
    fn probe_now(&mut self, connection: Connection, out: &mut Actions<E>) {
        out.push(Action::Probe {
            attempt: connection.attempt,
        });
        let timeout = self.arm(TimerKind::ProbeTimeout, self.probe_config().timeout, out);
        self.set_now(Now::Connected(Connection {
            probe: Some(Probe::Outstanding(timeout)),
            ..connection
        }));
    }

    /// The probe configuration; only called while probing, which needs one.
    fn probe_config(&self) -> ProbeConfig {
        // A connection has a probe cycle only with `Config::probe` set, so this
        // default is never used; it keeps the machine free of panics.
        self.config()
            .probe
            .unwrap_or(ProbeConfig::new(Duration::MAX, Duration::MAX))
    }

    fn arm(&mut self, kind: TimerKind, delay: Duration, out: &mut Actions<E>) -> TimerId {
        let timer = TimerId::from_raw(self.bump(TIMERS));
        out.push(Action::ScheduleTimer { timer, kind, delay });
        timer
    }

    /// Disarms the attempt's connect or prepare timeout, if armed.
    fn disarm_timeout(&mut self, current: Attempt, out: &mut Actions<E>) {
        if let Some(timer) = current.timeout {
            out.push(Action::CancelTimer { timer });
        }
    }

    /// Disarms the connection's timer (healthy, probe interval or probe timeout),
    /// if armed.
    fn disarm_connection(&mut self, connection: Connection, out: &mut Actions<E>) {
        let timer = match (connection.probe, connection.health) {
            (Some(Probe::Idle(Interval { timer, .. })), _)
            | (Some(Probe::Active(Interval { timer, .. }, _)), _)
            | (Some(Probe::Outstanding(timer)), _) => Some(timer),
            (None, Health::AtTimer(timer)) => Some(timer),
            (None, Health::Healthy | Health::AfterIntervals(_)) => None,
        };
        if let Some(timer) = timer {
            out.push(Action::CancelTimer { timer });
        }
    }

    fn cancel_waiters(&mut self, out: &mut Actions<E>) {
        if self.has_waiters() {
            let waiters = self.lists_mut().waiters.take_all();
            out.push(Action::CancelWaiters {
                waiters,
                gave_up: self.gave_up(),
            });
        }
    }

    fn finish_stops(&mut self, out: &mut Actions<E>) {
        if let Some(lists) = self.lists.as_mut().filter(|l| !l.stops.is_empty()) {
            out.push(Action::FinishStopping {
                stops: core::mem::take(&mut lists.stops),
            });
        }
    }

    fn nothing_outstanding(&self) -> bool {
        self.lists
            .as_ref()
            .is_none_or(|l| l.cancelled.is_empty() && l.closing.is_empty())
    }

    fn issue_stop(&mut self) -> StopId {
        StopId::from_raw(self.bump(STOPS))
    }

    fn issue_waiter(&mut self) -> WaiterId {
        WaiterId::from_raw(self.bump(WAITERS))
    }

    // ----- storage: the compact state, totals and lists -------------------------------

    /// The state, with the ids it owns (see [`Stored`]).
    #[inline(always)]
    fn now(&self) -> Now {
        match self.now {
            Stored::Init => Now::Init,
            Stored::Connecting { preparing, timed } => Now::Connecting(Attempt {
                attempt: self.latest_attempt(),
                preparing,
                timeout: timed.then(|| self.latest_timer()),
            }),
            Stored::Waiting => Now::Waiting {
                retry: self.latest_timer(),
            },
            Stored::Connected { health, probe } => self.connected_now(health, probe),
            Stored::Disconnecting => Now::Disconnecting,
            Stored::Restarting => Now::Restarting,
            Stored::Stopped => Now::Stopped,
        }
    }

    /// The latest attempt issued (the current one, in a state that has one).
    #[inline(always)]
    fn latest_attempt(&self) -> AttemptId {
        AttemptId::from_raw(self.tally(ATTEMPTS).wrapping_sub(1))
    }

    /// The latest timer issued (the armed one, in a state that has one).
    #[inline(always)]
    fn latest_timer(&self) -> TimerId {
        TimerId::from_raw(self.tally(TIMERS).wrapping_sub(1))
    }

    #[inline]
    fn connected_now(&self, health: StoredHealth, probe: StoredProbe) -> Now {
        let (attempt, timer) = (self.latest_attempt(), self.latest_timer());
        Now::Connected(Connection {
            attempt,
            health: match health {
                StoredHealth::Healthy => Health::Healthy,
                StoredHealth::AtTimer => Health::AtTimer(timer),
                StoredHealth::AfterIntervals => {
                    Health::AfterIntervals(self.rarer().map_or(Duration::ZERO, |r| r.health_left))
                }
            },
            probe: match probe {
                StoredProbe::Off => None,
                StoredProbe::Idle => Some(Probe::Idle(self.interval_now(timer))),
                StoredProbe::Active => Some(Probe::Active(
                    self.interval_now(timer),
                    self.rarer().map_or(Duration::ZERO, |r| r.quiet_for),
                )),
                StoredProbe::Outstanding => Some(Probe::Outstanding(timer)),
            },
        })
    }

    /// Moves to `now`, whose attempt (if any) is the latest issued, and whose timer
    /// (if any) the latest issued.
    #[inline(always)]
    fn set_now(&mut self, now: Now) {
        let latest_attempt = self.latest_attempt();
        let latest_timer = self.latest_timer();
        let mut health_left = Duration::ZERO;
        let mut interval_left = Duration::ZERO;
        let mut quiet_for = Duration::ZERO;
        self.now = match now {
            Now::Init => Stored::Init,
            Now::Connecting(current) => {
                debug_assert_eq!(current.attempt, latest_attempt);
                debug_assert!(current.timeout.is_none_or(|t| t == latest_timer));
                Stored::Connecting {
                    preparing: current.preparing,
                    timed: current.timeout.is_some(),
                }
            }
            Now::Waiting { retry } => {
                debug_assert_eq!(retry, latest_timer);
                Stored::Waiting
            }
            Now::Connected(connection) => {
                debug_assert_eq!(connection.attempt, latest_attempt);
                let health = match connection.health {
                    Health::Healthy => StoredHealth::Healthy,
                    Health::AtTimer(timer) => {
                        debug_assert_eq!(timer, latest_timer);
                        StoredHealth::AtTimer
                    }
                    Health::AfterIntervals(left) => {
                        health_left = left;
                        StoredHealth::AfterIntervals
                    }
                };
                let probe = match connection.probe {
                    None => StoredProbe::Off,
                    Some(Probe::Idle(interval)) => {
                        debug_assert_eq!(interval.timer, latest_timer);
                        interval_left = self.interval_left(interval, health);
                        StoredProbe::Idle
                    }
                    Some(Probe::Active(interval, quiet)) => {
                        debug_assert_eq!(interval.timer, latest_timer);
                        interval_left = self.interval_left(interval, health);
                        quiet_for = quiet;
                        StoredProbe::Active
                    }
                    Some(Probe::Outstanding(timer)) => {
                        debug_assert_eq!(timer, latest_timer);
                        StoredProbe::Outstanding
                    }
                };
                Stored::Connected { health, probe }
            }
            Now::Disconnecting => Stored::Disconnecting,
            Now::Restarting => Stored::Restarting,
            Now::Stopped => Stored::Stopped,
        };
        let _ = (latest_attempt, latest_timer);
        // Kept only while it means something, so that equal machines compare equal.
        let keep = |rarer: &mut Rarer| {
            rarer.health_left = health_left;
            rarer.interval_left = interval_left;
            rarer.quiet_for = quiet_for;
        };
        if !(health_left.is_zero() && interval_left.is_zero() && quiet_for.is_zero()) {
            keep(self.rarer_mut());
        } else if let Some(Options::Own(extra)) = &mut self.extra {
            if let Some(rarer) = &mut extra.rarer {
                keep(rarer);
            }
        }
    }

    /// The armed probe interval `timer`, as stored.
    fn interval_now(&self, timer: TimerId) -> Interval {
        let left = self.rarer().map_or(Duration::ZERO, |r| r.interval_left);
        Interval {
            timer,
            length: if left.is_zero() {
                self.probe_config().interval
            } else {
                left
            },
        }
    }

    /// What to store of `interval`'s length: only a rest of an interval, only
    /// while health is counted in intervals (zero otherwise).
    fn interval_left(&self, interval: Interval, health: StoredHealth) -> Duration {
        if health == StoredHealth::AfterIntervals && interval.length < self.probe_config().interval
        {
            interval.length
        } else {
            Duration::ZERO
        }
    }

    /// A total or id counter, all 64 bits.
    #[inline(always)]
    fn tally(&self, which: usize) -> u64 {
        let high = self.rarer().map_or(0, |rarer| rarer.high[which]);
        (u64::from(high) << 32) | u64::from(self.tallies[which])
    }

    /// Counts one more; returns the count before (the id it issues, for ids).
    #[inline(always)]
    fn bump(&mut self, which: usize) -> u64 {
        let before = self.tally(which);
        match self.tallies[which].checked_add(1) {
            Some(low) => self.tallies[which] = low,
            None => {
                self.tallies[which] = 0;
                let rarer = self.rarer_mut();
                rarer.high[which] = rarer.high[which].wrapping_add(1);
            }
        }
        before
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra
            .get_or_insert_with(|| Options::Own(Box::new(Extra::new(Config::new()))))
            .make_mut()
    }

    #[inline(always)]
    fn rarer(&self) -> Option<&Rarer> {
        // A shared block has none (it is never written).
        match &self.extra {
            Some(Options::Own(extra)) => extra.rarer.as_deref(),
            Some(Options::Shared(_)) | None => None,
        }
    }

    fn rarer_mut(&mut self) -> &mut Rarer {
        self.extra_mut().rarer.get_or_insert_with(Box::default)
    }

    #[inline]
    fn lists_mut(&mut self) -> &mut Lists {
        self.lists.get_or_insert_with(Box::default)
    }

    #[inline]
    fn has_waiters(&self) -> bool {
        self.lists.as_ref().is_some_and(|l| !l.waiters.is_empty())
    }
}

/// Where the established connection's probes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbePhase {
    /// No probes (`Config::probe` is not set).
    Off,
    /// Between two probes: the interval is armed.
    Between,
    /// A probe is outstanding: its timeout is armed.
    Outstanding,
}

/// Who an attempt id names, as seen by the machine now.
enum Whose {
    /// The attempt in flight.
    Attempting,
    /// The connection being prepared.
    Preparing,
    /// The established connection, and where its probes are.
    Connected {
        probe: ProbePhase,
    },
    Cancelled,
    Closing,
    /// Issued, but nothing the machine still tracks: stale.
    Old,
}

#[cfg(test)]
mod storage {
    use super::*;

    /// The lists are kept once allocated (a steady cycle allocates nothing), and
    /// `shrink_to_fit` frees them only when they are all empty.
    #[test]
    fn shrink_to_fit_frees_the_lists_only_once_they_are_empty() {
        let mut m: Machine<&str> = Machine::new(Backoff::twisted(1));
        assert!(m.lists.is_none());
        let (waiter, _) = m.when_connected(None);
        m.shrink_to_fit();
        assert!(m.lists.is_some(), "a waiter is pending");
        let _ = m.cancel_waiter(waiter).unwrap();
        assert!(m.lists.is_some(), "kept once allocated");
        m.shrink_to_fit();
        assert!(m.lists.is_none());
    }

    /// Totals and ids are kept as 32-bit low words with the high words out of
    /// line: they carry past 2³² (reached here by starting the low words there).
    #[test]
    fn totals_and_ids_carry_past_32_bits() {
        let policy = Backoff::new(Duration::from_secs(1), 1.0, Duration::from_secs(1)).unwrap();
        let mut m: Machine<&str> = Machine::new(policy);
        m.tallies = [u32::MAX; TALLIES];
        let first = AttemptId::from_raw(u64::from(u32::MAX));
        assert!(matches!(m.start()[0], Action::Connect { attempt } if attempt == first));
        let _ = m.connection_failed(first, "refused").unwrap();
        let (retry, _) = m.armed_timer().unwrap();
        assert_eq!(retry, TimerId::from_raw(u64::from(u32::MAX)));
        let next = AttemptId::from_raw(1 << 32);
        let out = m.timer_fired(retry).unwrap();
        assert!(matches!(out[0], Action::Connect { attempt } if attempt == next));
        assert_eq!(m.current_attempt(), Some(next));
        let _ = m.connection_made(next).unwrap();
        assert_eq!(m.connection(), Some(next));
        let counters = m.counters();
        assert_eq!(counters.attempts, (1 << 32) + 1);
        assert_eq!(counters.failures, (1 << 32));
        assert_eq!(counters.connections, (1 << 32));
        // An id from before the wrap is known, one never issued is not.
        assert!(m.connection_closed(first).unwrap().is_empty());
        let unknown = AttemptId::from_raw((1 << 32) + 1);
        assert!(m.connection_closed(unknown).is_err());
    }

    static HEALTHY_AFTER_5S: Extra =
        Extra::new(Config::new().with_reset_backoff_after(Some(Duration::from_secs(5))));

    /// Shared options read as the machine's own, and the first change (a flap
    /// counted) copies them: the shared block is never written.
    #[test]
    fn shared_options_are_copied_on_the_first_change() {
        let policy = || Backoff::new(Duration::from_secs(1), 1.0, Duration::from_secs(1)).unwrap();
        let mut shared: Machine<&str> =
            Machine::with_shared_options(policy(), &HEALTHY_AFTER_5S).unwrap();
        let mut own: Machine<&str> =
            Machine::with_config(policy(), HEALTHY_AFTER_5S.config).unwrap();
        assert!(matches!(shared.extra, Some(Options::Shared(_))));
        assert_eq!(shared, own);
        assert_eq!(*shared.config(), HEALTHY_AFTER_5S.config);
        for m in [&mut shared, &mut own] {
            let _ = m.start();
            let attempt = m.current_attempt().unwrap();
            let _ = m.connection_made(attempt).unwrap();
            // Closed before the healthy delay: a flap.
            let _ = m.connection_closed(attempt).unwrap();
        }
        assert!(matches!(shared.extra, Some(Options::Own(_))));
        assert_eq!(shared.counters().flaps, 1);
        assert_eq!(shared, own);
        assert_eq!(HEALTHY_AFTER_5S.flaps, 0);
        // Default options are no block at all.
        static NONE: Extra = Extra::new(Config::new());
        let plain: Machine<&str> = Machine::with_shared_options(policy(), &NONE).unwrap();
        assert!(plain.extra.is_none());
    }
}
