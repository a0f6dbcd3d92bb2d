//! The service's one task: performs the machine's I/O actions and reports outcomes.
//!
//! It holds at most one attempt future, one connection (its driver future and, while
//! preparing, the prepare future) and one timer. On every wake-up it first performs
//! queued work, in the order the machine emitted it, then polls what it holds, and
//! reports each outcome back to the machine with the id the machine gave.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::boxed::Box;
use std::collections::VecDeque;
use std::sync::Arc;

use super::service::{Shared, Work};
use super::{event, Runtime};
use crate::actions::Action;
use crate::ids::{AttemptId, TimerId};
use crate::machine::State;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// One attempt: the connection, split into its handle and its boxed driver.
pub(crate) type Attempt<H, E> = BoxFuture<Result<(H, BoxFuture<()>), E>>;
/// The connector.
pub(crate) type ConnectFn<H, E> = Box<dyn FnMut() -> Attempt<H, E> + Send>;
pub(crate) type PrepareFn<H, E> = Box<dyn FnMut(H) -> BoxFuture<Result<(), E>> + Send>;

/// Inputs handled per poll before yielding to the executor, so that a tight retry
/// loop (zero delay, connector failing at once) cannot starve other tasks.
const BUDGET: u32 = 64;

struct Conn<H, E> {
    attempt: AttemptId,
    handle: H,
    driver: BoxFuture<()>,
    prepare: Option<BoxFuture<Result<(), E>>>,
}

pub(crate) struct Task<R: Runtime, H, E> {
    runtime: R,
    shared: Arc<Shared<H, E>>,
    connect: ConnectFn<H, E>,
    prepare: Option<PrepareFn<H, E>>,
    attempt: Option<(AttemptId, Attempt<H, E>)>,
    conn: Option<Conn<H, E>>,
    timer: Option<(TimerId, Pin<Box<R::Sleep>>)>,
}

impl<R: Runtime, H: Clone, E> Task<R, H, E> {
    pub(crate) fn new(
        runtime: R,
        shared: Arc<Shared<H, E>>,
        connect: ConnectFn<H, E>,
        prepare: Option<PrepareFn<H, E>>,
    ) -> Self {
        Task {
            runtime,
            shared,
            connect,
            prepare,
            attempt: None,
            conn: None,
            timer: None,
        }
    }

    /// Performs one queued action (outside the lock: it may run user code or drop
    /// user futures), then reports its outcome, if it has one.
    fn perform(&mut self, work: Work<E>) {
        let action = match work {
            Work::Act(action) => action,
            Work::Fire(timer) => return self.report(|m| m.timer_fired(timer)),
            Work::Close(attempt) => {
                // Already reported lost by `disconnect`; it may also have ended on
                // its own since (then it is gone already).
                if matches!(&self.conn, Some(c) if c.attempt == attempt) {
                    drop(self.conn.take());
                }
                let mut inner = self.shared.lock();
                inner.busy = false;
                // Kept until now for the waiters answered before the disconnect.
                if matches!(&inner.handle, Some((a, _)) if *a == attempt) {
                    inner.handle = None;
                }
                return;
            }
            Work::Fail(..) => return self.not_busy(),
        };
        match action {
            Action::Connect { attempt } => {
                self.attempt = Some((attempt, (self.connect)()));
                self.not_busy();
            }
            Action::CancelConnect { attempt } => {
                if matches!(&self.attempt, Some((a, _)) if *a == attempt) {
                    drop(self.attempt.take());
                    self.report(|m| m.connect_cancelled(attempt));
                } else {
                    // Already reported (made or failed): nothing to cancel.
                    self.not_busy();
                }
            }
            Action::Prepare { attempt } => {
                match (&mut self.conn, &mut self.prepare) {
                    (Some(conn), Some(prepare)) if conn.attempt == attempt => {
                        conn.prepare = Some(prepare(conn.handle.clone()));
                    }
                    _ => debug_assert!(false, "driver bug: nothing to prepare for {attempt}"),
                }
                self.not_busy();
            }
            Action::Disconnect { attempt } => {
                if matches!(&self.conn, Some(c) if c.attempt == attempt) {
                    self.close_and_report(attempt);
                } else {
                    // Already lost and reported.
                    self.not_busy();
                }
            }
            Action::ScheduleTimer { timer, delay, .. } => {
                if delay.is_zero() {
                    // No trip through the runtime's timer (Tokio's rounds up to 1 ms):
                    // fire it once the rest of this batch is done.
                    self.timer = None;
                    let mut inner = self.shared.lock();
                    inner.busy = false;
                    inner.queue.push_back(Work::Fire(timer));
                } else {
                    self.timer = Some((timer, Box::pin(self.runtime.sleep(delay))));
                    self.not_busy();
                }
            }
            Action::CancelTimer { timer } => {
                if matches!(&self.timer, Some((t, _)) if *t == timer) {
                    self.timer = None;
                }
                self.not_busy();
            }
            // Waiters, stops and GaveUp are handled under the lock.
            _ => self.not_busy(),
        }
    }

    fn not_busy(&self) {
        self.shared.lock().busy = false;
    }

    /// Reports one outcome to the machine and dispatches its actions.
    fn report(
        &self,
        input: impl FnOnce(
            &mut crate::Machine<E, super::service::DynPolicy>,
        ) -> Result<crate::Actions<E>, crate::InputError>,
    ) {
        let mut inner = self.shared.lock();
        inner.busy = false;
        inner.feed(input);
    }

    /// Closes the current connection (drops its driver and prepare futures) and
    /// reports it gone.
    fn close_and_report(&mut self, attempt: AttemptId) {
        drop(self.conn.take());
        let mut inner = self.shared.lock();
        inner.busy = false;
        if matches!(&inner.handle, Some((a, _)) if *a == attempt) {
            inner.handle = None;
        }
        if inner.machine.state() == State::Connected && inner.machine.connection() == Some(attempt)
        {
            event!(warn, attempt = %attempt, "connection lost");
        }
        inner.feed(|m| m.client_disconnected(attempt));
    }

    /// Polls what the task holds; returns whether anything happened.
    fn poll_sources(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some((attempt, future)) = &mut self.attempt {
            if let Poll::Ready(result) = future.as_mut().poll(cx) {
                let attempt = *attempt;
                self.attempt = None;
                match result {
                    Ok((handle, driver)) => {
                        self.conn = Some(Conn {
                            attempt,
                            handle: handle.clone(),
                            driver,
                            prepare: None,
                        });
                        let mut inner = self.shared.lock();
                        inner.handle = Some((attempt, handle));
                        inner.feed(|m| m.connection_made(attempt));
                        if inner.machine.state() == State::Connected {
                            event!(info, attempt = %attempt, "connected");
                        }
                    }
                    Err(error) => {
                        event!(debug, attempt = %attempt, "connection attempt failed");
                        self.report(|m| m.connection_failed(attempt, error));
                    }
                }
                return true;
            }
        }
        if let Some(conn) = &mut self.conn {
            let attempt = conn.attempt;
            if let Some(prepare) = &mut conn.prepare {
                if let Poll::Ready(result) = prepare.as_mut().poll(cx) {
                    conn.prepare = None;
                    match result {
                        Ok(()) => {
                            let mut inner = self.shared.lock();
                            inner.feed(|m| m.prepare_succeeded(attempt));
                            if inner.machine.state() == State::Connected {
                                event!(info, attempt = %attempt, "connected");
                            }
                        }
                        Err(error) => {
                            event!(debug, attempt = %attempt, "prepare failed");
                            self.report(|m| m.prepare_failed(attempt, error));
                        }
                    }
                    return true;
                }
            }
            if conn.driver.as_mut().poll(cx).is_ready() {
                self.close_and_report(attempt);
                return true;
            }
        }
        if let Some((timer, sleep)) = &mut self.timer {
            if sleep.as_mut().poll(cx).is_ready() {
                let timer = *timer;
                self.timer = None;
                self.report(|m| m.timer_fired(timer));
                return true;
            }
        }
        false
    }
}

// The task never pins its fields in place (every future it holds is boxed).
impl<R: Runtime, H, E> Unpin for Task<R, H, E> {}

impl<R: Runtime, H: Clone, E> Future for Task<R, H, E> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut budget = BUDGET;
        loop {
            let work = {
                let mut inner = this.shared.lock();
                match &inner.task {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => inner.task = Some(cx.waker().clone()),
                }
                let mut next = None;
                while let Some(work) = inner.queue.pop_front() {
                    // Waiters and stops queued behind I/O are answered here, in order.
                    if let Some(work) = inner.perform_instant(work) {
                        inner.busy = true;
                        next = Some(work);
                        break;
                    }
                }
                next
            };
            let progressed = match work {
                Some(work) => {
                    this.perform(work);
                    true
                }
                None => this.poll_sources(cx),
            };
            if progressed {
                budget -= 1;
                if budget == 0 {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                continue;
            }
            let mut inner = this.shared.lock();
            if !inner.queue.is_empty() {
                continue;
            }
            if inner.shutdown
                && inner.machine.state() == State::Stopped
                && this.attempt.is_none()
                && this.conn.is_none()
            {
                return Poll::Ready(());
            }
            if this.attempt.is_none() && this.timer.is_none() && inner.queue.capacity() > 0 {
                // Idle (connected, or stopped): no work is coming until something
                // changes, so do not keep the queue's block (4 × 64 B) meanwhile.
                inner.queue = VecDeque::new();
            }
            return Poll::Pending;
        }
    }
}

impl<R: Runtime, H, E> Drop for Task<R, H, E> {
    fn drop(&mut self) {
        // Close what is still open (only if the runtime drops the task early), then
        // answer whatever is pending: the service is gone.
        self.attempt = None;
        self.conn = None;
        self.timer = None;
        let mut inner = self.shared.lock();
        inner.end();
    }
}
