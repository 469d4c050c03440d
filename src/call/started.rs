//! Started calls (`Channel::unary_start`): the event loop picks for them,
//! polls their HTTP/2 streams and times their deadlines and retry backoffs;
//! their completions run on the channel's dispatch thread.

use super::course::{attempt_metadata, After, Course, Flight, Hedged, Landed, Next};
use super::{check_metadata, check_method, expired, not_managed, settings, CallOptions};
use crate::balancer::picker::{DoneInfo, PickInfo};
use crate::balancer::subconn::SubConnId;
use crate::channel::{Channel, ChannelShared};
use crate::channel::{ChannelCore, ChannelId, Completions, StartedCalls, CALL_TIMER, CALL_WAKE};
use crate::error::Error;
use crate::publish::Coalesce;
use crate::reader::{Pick, PickError, Reader};
use crate::runtime::{JoinOnDrop, LoopContext, LoopHandle, TimerKey};
use crate::snapshot::ReaderCounts;
use crate::status::DEADLINE_MESSAGE;
use crate::status::{Code, Status};
use crate::transport::{self, code, CallError, CallFuture, UnaryResponse};
use crossbeam_channel::Sender;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a started call ends: its result, handed to the completion closure.
pub type CallResult = Result<UnaryResponse, Status>;

type OnDone = Box<dyn FnOnce(CallResult) + Send>;
type Job = Box<dyn FnOnce() + Send>;

const RUNNING: u8 = 0;
const DONE: u8 = 1;
const CANCELLED: u8 = 2;

/// What a started call's handle and its loop-side task share.
struct CallShared {
    id: u64,
    /// RUNNING until the loop finishes the call (DONE) or the caller
    /// cancels it first (CANCELLED): whoever moves it decides the outcome.
    state: AtomicU8,
    handle: LoopHandle,
    channel: ChannelId,
}

impl CallShared {
    fn cancel(&self) -> bool {
        if self
            .state
            .compare_exchange(RUNNING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        // The loop resets the stream (RST_STREAM CANCEL) and completes the
        // call; if the loop is gone, so is the task, whose drop completes it.
        let id = self.id;
        self.handle
            .run_on(self.channel, move |core: &mut ChannelCore, env| {
                core.started_calls(Calls::default).cancel(id, env)
            });
        true
    }
}

/// A started call (`Channel::unary_start`). Dropping it does not cancel the
/// call.
#[derive(Clone)]
pub struct CallHandle(Arc<CallShared>);

impl CallHandle {
    /// The call's id on its channel (never reused): `Channel::cancel_call`
    /// takes it.
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// Cancels the call: true if it was still running, and its completion
    /// then gets CANCELLED (its stream, if any, is reset with
    /// RST_STREAM(CANCEL), and the policy hears of it); false if it had
    /// already finished. Any thread, never blocks.
    pub fn cancel(&self) -> bool {
        self.0.cancel()
    }
}

impl std::fmt::Debug for CallHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CallHandle({})", self.0.id)
    }
}

/// A channel's completion dispatch: one thread, started with the first
/// started call, that runs completion closures in the order calls end; and
/// the calls still running, by id, for `Channel::cancel_call`.
pub(crate) struct Dispatch {
    state: Mutex<DispatchState>,
    /// Set by the dispatch thread as it ends, after its last completion:
    /// what a closer waits for when another one joins the thread.
    ended: Arc<Ended>,
    live: Mutex<HashMap<u64, Arc<CallShared>>>,
    next_id: AtomicU64,
    /// The channel's count of whole started calls (channelz's): each from
    /// its start to its delivered outcome, whatever thread that runs on.
    counts: std::sync::OnceLock<ReaderCounts>,
}

#[derive(Default)]
struct DispatchState {
    tx: Option<Sender<Job>>,
    /// Until a closer takes it to join.
    thread: Option<JoinHandle<()>>,
    /// The dispatch thread, once started.
    thread_id: Option<std::thread::ThreadId>,
    closed: bool,
}

#[derive(Default)]
struct Ended {
    done: Mutex<bool>,
    cv: Condvar,
}

/// Marks the dispatch thread ended when it lets go of this, however it ends.
struct EndsOnDrop(Arc<Ended>);

impl Drop for EndsOnDrop {
    fn drop(&mut self) {
        *lock(&self.0.done) = true;
        self.0.cv.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these; a poisoned lock's data is intact.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Dispatch {
    pub(crate) fn new() -> Dispatch {
        Dispatch {
            state: Mutex::new(DispatchState::default()),
            ended: Arc::default(),
            live: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            counts: std::sync::OnceLock::new(),
        }
    }

    /// Where finished calls go; starts the thread the first time.
    fn sender(&self) -> Result<Sender<Job>, Error> {
        let mut st = lock(&self.state);
        if st.closed {
            return Err(Error::Closed);
        }
        if let Some(tx) = &st.tx {
            return Ok(tx.clone());
        }
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        // A thread that failed to start before "ended" too.
        *lock(&self.ended.done) = false;
        let ended = EndsOnDrop(self.ended.clone());
        let thread = std::thread::Builder::new()
            .name("switchyard-calls".into())
            .spawn(move || {
                let _ended = ended;
                // Ends once every sender is gone: the channel's and those of
                // calls still running (each completes before it lets go).
                for job in rx {
                    if let Err(p) = catch_unwind(AssertUnwindSafe(job)) {
                        eprintln!(
                            "switchyard: a call's completion panicked: {}",
                            crate::runtime::panic_message(&*p)
                        );
                    }
                }
            })
            .map_err(|e| Error::Io(format!("cannot start the completion thread: {e}")))?;
        st.tx = Some(tx.clone());
        st.thread_id = Some(thread.thread().id());
        st.thread = Some(thread);
        Ok(tx)
    }

    fn cancel(&self, id: u64) -> bool {
        let call = lock(&self.live).get(&id).cloned();
        call.is_some_and(|c| c.cancel())
    }
}

impl JoinOnDrop for Dispatch {
    /// Takes no more calls and waits until every completion has run (the
    /// loop must have completed or dropped the channel's calls, or be about
    /// to): every caller, also one that finds another closer (a second
    /// `close`, the runtime dropping) already joining. On the dispatch
    /// thread itself (a completion closing its own channel) it does not
    /// wait: the thread ends on its own.
    fn close_and_join(&self) {
        let (thread, id) = {
            let mut st = lock(&self.state);
            st.closed = true;
            st.tx = None;
            (st.thread.take(), st.thread_id)
        };
        if id.is_none_or(|id| id == std::thread::current().id()) {
            // Never started, or this is it.
            return;
        }
        match thread {
            Some(t) => {
                let _ = t.join();
            }
            None => {
                let mut done = lock(&self.ended.done);
                while !*done {
                    done = self.ended.cv.wait(done).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }
}

impl Completions for Dispatch {
    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}

/// Delivers a started call's result, exactly once: to the dispatch thread,
/// as CANCELLED if the caller cancelled first. Dropped undelivered (its
/// command never reached the loop, the loop went away), it delivers "the
/// channel is closed".
struct Completion {
    call: Arc<CallShared>,
    on_done: Option<OnDone>,
    tx: Option<Sender<Job>>,
    dispatch: Arc<Dispatch>,
}

impl Completion {
    fn deliver(mut self, result: CallResult) {
        self.send(result);
    }

    fn send(&mut self, result: CallResult) {
        let Some(on_done) = self.on_done.take() else {
            return;
        };
        let result = if self.call.state.swap(DONE, Ordering::AcqRel) == CANCELLED {
            Err(Status::new(Code::Cancelled, "call cancelled"))
        } else {
            result
        };
        if let Some(counts) = self.dispatch.counts.get() {
            counts.call_ended(result.is_ok());
        }
        lock(&self.dispatch.live).remove(&self.call.id);
        let job: Job = Box::new(move || on_done(result));
        match self.tx.take() {
            Some(tx) => {
                // The dispatch thread only stops once every sender is gone,
                // and this is one: the send fails only if it panicked away.
                if let Err(e) = tx.send(job) {
                    let _ = catch_unwind(AssertUnwindSafe(e.into_inner()));
                }
            }
            None => {
                let _ = catch_unwind(AssertUnwindSafe(job));
            }
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.send(Err(closed_status()));
    }
}

fn closed_status() -> Status {
    PickError::Closed.status()
}

/// A started call on its way to the loop.
pub(crate) struct NewCall {
    id: u64,
    method: String,
    request: Vec<u8>,
    metadata: Vec<(String, String)>,
    hash: Option<u64>,
    deadline: Option<Instant>,
    wait_for_ready: bool,
    max_response: Option<usize>,
    /// Its course so far: its retry policy and the channel's tokens.
    course: Course,
    completion: Completion,
    /// What the caller asked for (the settings above are these with the
    /// method config's), and which method table gave the settings: for
    /// taking them anew if the service config changes before anything is
    /// sent (the channel resolving while the first pick waits).
    given_deadline: Option<Instant>,
    given_wait_for_ready: Option<bool>,
    methods_generation: u64,
    sent: bool,
}

impl Channel {
    /// Starts one unary call and returns at once; `on_done` hears how it
    /// ended, exactly once, on this channel's dispatch thread (one per
    /// channel; completions run one at a time, in the order calls end: a
    /// closure that blocks delays the ones after it, never a call's
    /// deadline). The call costs no thread while it waits: the event loop
    /// picks for it (a queued pick waits for the channel's next picker),
    /// drives its HTTP/2 stream, retries it as `Reader::unary` does (once
    /// transparently; by the method's retry policy, its backoff a loop
    /// timer), or hedges it (its attempts side by side, the next one's
    /// delay a loop timer), and ends it at its deadline.
    ///
    /// Closing the channel (or dropping it, or its `Runtime`) completes every
    /// call still running with CANCELLED "the channel is closed" and returns
    /// once every `on_done` has returned (unless called from inside one).
    ///
    /// Errors (then `on_done` never runs): `InvalidArgument` for a method
    /// or metadata that cannot be sent ([`check_method`],
    /// [`check_metadata`]) or a channel whose transports
    /// belong to the host, `Closed`, `Io` if the dispatch thread cannot start.
    pub fn unary_start(
        &self,
        method: &str,
        request: &[u8],
        options: &CallOptions<'_>,
        on_done: impl FnOnce(CallResult) + Send + 'static,
    ) -> Result<CallHandle, Error> {
        self.unary_start_noting_id(method, request, options, |_| {}, on_done)
    }

    /// [`Channel::unary_start`], with `on_id` run on this thread with the
    /// call's id before the call can complete: `on_done` may run on another
    /// thread before `unary_start` returns, so a caller that must record the
    /// id where `on_done` looks for it (the C ABI's `call_id_out`) records it
    /// here. `on_id` runs only for a call that is started (`Ok`).
    pub fn unary_start_noting_id(
        &self,
        method: &str,
        request: &[u8],
        options: &CallOptions<'_>,
        on_id: impl FnOnce(u64),
        on_done: impl FnOnce(CallResult) + Send + 'static,
    ) -> Result<CallHandle, Error> {
        let shared = self.shared();
        if !shared.managed {
            return Err(Error::InvalidArgument(not_managed().into()));
        }
        check_method(method)
            .and_then(|()| check_metadata(options.metadata))
            .map_err(Error::InvalidArgument)?;
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let dispatch = self.completions(|| Arc::new(Dispatch::new()));
        let tx = dispatch.sender()?;
        // A `close` that raced the check above may have found no dispatch
        // to join (it was made just now): then the call must not start, or
        // its `on_done` would run after `close` returned. Read as part of a
        // write (the latest value): either this sees the close, or the
        // close, coming after it, sees the dispatch and waits for `tx`.
        if self.shared().closed.fetch_or(false, Ordering::AcqRel) {
            return Err(Error::Closed);
        }
        // Applied here, on the caller's thread, so the method's timeout
        // counts from now; a request too large completes like any failed
        // call (below), with RESOURCE_EXHAUSTED.
        let methods_generation = self.shared().methods.generation();
        let set = settings(
            &self.method_configs(),
            self.shared().retry_disabled,
            method,
            request.len(),
            options,
        );
        let (deadline, wait_for_ready, max_response, course, refused) = match set {
            Ok(s) => (
                s.deadline,
                s.wait_for_ready,
                s.max_response,
                s.course(),
                None,
            ),
            Err(status) => (
                options.deadline,
                options.wait_for_ready.unwrap_or(false),
                None,
                Course::default(),
                Some(status),
            ),
        };
        let id = dispatch.next_id.fetch_add(1, Ordering::Relaxed);
        // Nothing below fails: the call is started, and may complete as
        // soon as it is handed on.
        dispatch
            .counts
            .get_or_init(|| ReaderCounts::new(&shared.call_stats))
            .call_started();
        let call = Arc::new(CallShared {
            id,
            state: AtomicU8::new(RUNNING),
            handle: shared.handle.clone(),
            channel: shared.id,
        });
        lock(&dispatch.live).insert(id, call.clone());
        // Told once cancellable: a cancel by this id from another thread,
        // as soon as the caller has it, finds the call.
        on_id(id);
        let new = NewCall {
            id,
            method: method.to_string(),
            request: request.to_vec(),
            metadata: options.metadata.to_vec(),
            hash: options.hash,
            deadline,
            wait_for_ready,
            max_response,
            course,
            completion: Completion {
                call: call.clone(),
                on_done: Some(Box::new(on_done)),
                tx: Some(tx),
                dispatch: dispatch.clone(),
            },
            given_deadline: options.deadline,
            given_wait_for_ready: options.wait_for_ready,
            methods_generation,
            sent: false,
        };
        if let Some(status) = refused {
            // Nothing picked or sent: completed on the dispatch thread,
            // like any call.
            new.completion.deliver(Err(status));
            return Ok(CallHandle(call));
        }
        // Accepted from here on: if the command never runs (the channel
        // closed meanwhile, the loop is gone), dropping it completes the call.
        let channel = shared.clone();
        shared
            .handle
            .run_on(shared.id, move |core: &mut ChannelCore, env| {
                core.started_calls(Calls::default).start(new, &channel, env)
            });
        Ok(CallHandle(call))
    }

    /// Cancels the started call `id` (see [`CallHandle::cancel`]): true if
    /// it was still running, false if it already finished (or never was).
    pub fn cancel_call(&self, id: u64) -> bool {
        self.completions(|| Arc::new(Dispatch::new())).cancel(id)
    }
}

/// Wakes the loop to poll one call's stream; at most one wake-up is in
/// flight per call (reopened just before each poll: a wake that finds one
/// pending is seen by that poll, `publish::Coalesce`).
struct CallWaker {
    handle: LoopHandle,
    channel: ChannelId,
    id: u64,
    scheduled: Coalesce,
}

impl Wake for CallWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if self.scheduled.request() {
            self.handle.notify(self.channel, CALL_WAKE | self.id);
        }
    }
}

enum TaskState {
    /// Waiting for a picker newer than `tried` (the slot generation its
    /// last pick saw).
    Queued { tried: Option<u64> },
    /// An attempt in flight.
    Sending {
        pick: Pick,
        stream: CallFuture,
        started: Instant,
    },
    /// Waiting out a retry's backoff: its loop timer, `None` when the
    /// deadline comes first.
    Backoff { timer: Option<u64> },
    /// A hedged call's attempts in flight (none, between a failure and the
    /// next attempt), when the next may go, and that time's loop timer.
    Hedging {
        flights: Vec<Flight>,
        next_at: Option<Instant>,
        timer: Option<(u64, Instant)>,
    },
}

/// The bit of a `CALL_TIMER` id that marks a retry's backoff timer or a
/// hedged call's next attempt (the rest is the call's id); without it the
/// timer is the call's deadline.
const BACKOFF_TIMER: u64 = 1 << 62;

struct Task {
    call: NewCall,
    course: Course,
    state: TaskState,
    /// The deadline's loop timer.
    timer: Option<u64>,
    waker: Arc<CallWaker>,
}

/// A channel's started calls, on the loop.
#[derive(Default)]
pub(crate) struct Calls {
    tasks: HashMap<u64, Task>,
    /// Picks for the calls; dropped whenever no call is left, so that it
    /// keeps no old picker (and its subchannels' user data) alive.
    reader: Option<Reader>,
    /// The slot generation `after_run` last saw.
    seen: u64,
    /// The started calls' counters (`crate::snapshot`), owned by the loop.
    counts: Option<ReaderCounts>,
}

impl Calls {
    pub(crate) fn start(
        &mut self,
        call: NewCall,
        shared: &Arc<ChannelShared>,
        env: &mut LoopContext,
    ) {
        let mut call = call;
        let id = call.id;
        if let Some(status) = expired(call.deadline) {
            // Completed like any call: on the completion thread, once.
            call.completion.deliver(Err(status));
            return;
        }
        let timer = call.deadline.map(|at| {
            env.timers
                .schedule(at, shared.id, TimerKey::new(CALL_TIMER, id))
        });
        let waker = Arc::new(CallWaker {
            handle: env.handle.clone(),
            channel: shared.id,
            id,
            scheduled: Coalesce::new(),
        });
        let task = Task {
            course: std::mem::take(&mut call.course),
            call,
            state: TaskState::Queued { tried: None },
            timer,
            waker,
        };
        self.advance(task, shared, env);
    }

    /// The call's stream made progress.
    fn wake_call(&mut self, id: u64, shared: &Arc<ChannelShared>, env: &mut LoopContext) {
        if let Some(task) = self.tasks.remove(&id) {
            task.waker.scheduled.serve();
            self.advance(task, shared, env);
        }
    }

    /// After anything ran on the channel: a new picker re-tries the queued
    /// calls (each picker at most once per call).
    fn picker_published(&mut self, shared: &Arc<ChannelShared>, env: &mut LoopContext) {
        if self.tasks.is_empty() {
            self.reader = None;
            return;
        }
        let generation = shared.slot.generation();
        if generation == self.seen {
            return;
        }
        self.seen = generation;
        if let Some(r) = self.reader.as_mut() {
            // Let go of the old picker even if no call picks now.
            r.refresh();
        }
        let mut queued: Vec<u64> = self
            .tasks
            .iter()
            .filter(|(_, t)| matches!(t.state, TaskState::Queued { tried } if tried != Some(generation)))
            .map(|(id, _)| *id)
            .collect();
        // In the order they started (ids count up), as grpc-java's delayed
        // transport drains its pending calls.
        queued.sort_unstable();
        for id in queued {
            if let Some(task) = self.tasks.remove(&id) {
                self.advance(task, shared, env);
            }
        }
    }

    /// The call's deadline passed, or its retry's backoff is over.
    fn call_timer(&mut self, id: u64, shared: &Arc<ChannelShared>, env: &mut LoopContext) {
        if id & BACKOFF_TIMER != 0 {
            let id = id & !BACKOFF_TIMER;
            if let Some(mut task) = self.tasks.remove(&id) {
                match &mut task.state {
                    TaskState::Backoff { .. } => task.state = TaskState::Queued { tried: None },
                    TaskState::Hedging { timer, .. } => *timer = None,
                    _ => {}
                }
                self.advance(task, shared, env);
            }
            return;
        }
        if let Some(mut task) = self.tasks.remove(&id) {
            task.timer = None;
            let status = match &task.state {
                TaskState::Queued { .. } => task.course.deadline_waiting(),
                TaskState::Sending { .. } => Status::new(Code::DeadlineExceeded, DEADLINE_MESSAGE),
                TaskState::Backoff { .. } => task.course.deadline_retrying(),
                TaskState::Hedging { .. } => Status::new(Code::DeadlineExceeded, DEADLINE_MESSAGE),
            };
            self.end(task, code::DEADLINE_EXCEEDED, status, env);
        }
    }

    /// The caller cancelled the call (its completion says CANCELLED).
    pub(crate) fn cancel(&mut self, id: u64, env: &mut LoopContext) {
        if let Some(task) = self.tasks.remove(&id) {
            let status = Status::new(Code::Cancelled, "call cancelled");
            self.end(task, code::CANCELLED, status, env);
        }
    }

    /// The channel closes: every call ends with CANCELLED "the channel is
    /// closed".
    fn close_all(&mut self, env: &mut LoopContext) {
        let ids: Vec<u64> = self.tasks.keys().copied().collect();
        for id in ids {
            if let Some(task) = self.tasks.remove(&id) {
                self.end(task, code::CANCELLED, closed_status(), env);
            }
        }
        self.reader = None;
    }

    /// Ends a call from outside its course (deadline, cancel, close): an
    /// attempt in flight is dropped, which resets its stream with
    /// RST_STREAM(CANCEL), and the policy hears the attempt failed.
    fn end(&mut self, mut task: Task, code: u32, status: Status, env: &mut LoopContext) {
        match std::mem::replace(&mut task.state, TaskState::Queued { tried: None }) {
            TaskState::Sending { pick, started, .. } => {
                self.count_ended(pick.subconn().id(), false);
                // Committed: the call is over whatever its retry policy says.
                let mut error = CallError::new(code, status.message());
                error.committed = true;
                let _ = task
                    .course
                    .attempt_ended(pick, Err(error), started.elapsed(), |p, i| {
                        self.finish(p, i)
                    });
            }
            TaskState::Backoff { timer: Some(t) } => env.timers.cancel(t),
            TaskState::Hedging { flights, timer, .. } => {
                if let Some((t, _)) = timer {
                    env.timers.cancel(t);
                }
                self.cancel_flights(flights, status.code(), status.message());
            }
            _ => {}
        }
        self.complete(task, Err(status), env);
    }

    /// Ends a hedged call's attempts still in flight: each stream is reset
    /// (dropping it sends RST_STREAM CANCEL) and the policy hears it failed.
    fn cancel_flights(&mut self, flights: Vec<Flight>, code: Code, why: &str) {
        for f in flights {
            self.count_ended(f.pick.subconn().id(), false);
            f.cancel(code, why, |p, i| self.finish(p, i));
        }
    }

    fn complete(&mut self, task: Task, result: CallResult, env: &mut LoopContext) {
        if let Some(id) = task.timer {
            env.timers.cancel(id);
        }
        task.call.completion.deliver(result);
    }

    fn count_ended(&self, sc: SubConnId, ok: bool) {
        if let Some(c) = &self.counts {
            c.ended(sc, ok);
        }
    }

    /// The call's settings from the method table in force now (see
    /// `NewCall::methods_generation`), its deadline timer moved with them.
    fn resettle(
        &mut self,
        task: &mut Task,
        shared: &Arc<ChannelShared>,
        env: &mut LoopContext,
    ) -> Result<(), Status> {
        let c = &mut task.call;
        c.methods_generation = shared.methods.generation();
        let options = CallOptions {
            deadline: c.given_deadline,
            wait_for_ready: c.given_wait_for_ready,
            metadata: &c.metadata,
            hash: c.hash,
        };
        let set = settings(
            &shared.methods.load(),
            shared.retry_disabled,
            &c.method,
            c.request.len(),
            &options,
        )?;
        if let Some(status) = expired(set.deadline) {
            return Err(status);
        }
        if let Some(t) = task.timer.take() {
            env.timers.cancel(t);
        }
        task.timer = set.deadline.map(|at| {
            env.timers
                .schedule(at, shared.id, TimerKey::new(CALL_TIMER, c.id))
        });
        (c.deadline, c.wait_for_ready, c.max_response) =
            (set.deadline, set.wait_for_ready, set.max_response);
        task.course = set.course();
        Ok(())
    }

    fn finish(&mut self, pick: Pick, info: &DoneInfo<'_>) {
        match self.reader.as_mut() {
            Some(r) => r.finish(pick, info),
            None => pick.done(info),
        }
    }

    /// Runs the call's course as far as it goes without waiting; keeps the
    /// task if it waits (for a picker, its stream or a retry's backoff).
    fn advance(&mut self, mut task: Task, shared: &Arc<ChannelShared>, env: &mut LoopContext) {
        // Bounded: each turn either waits (returns), ends the call, or
        // moves Queued -> Sending -> Queued at most twice (one transparent
        // retry, one lost connection per picker); a policy's retry waits.
        loop {
            let mut backoff = None;
            match &mut task.state {
                TaskState::Queued { tried } => {
                    let generation = shared.slot.generation();
                    if *tried == Some(generation) {
                        break;
                    }
                    *tried = Some(generation);
                    if !task.call.sent
                        && shared.methods.generation() != task.call.methods_generation
                    {
                        // The service config came (or changed) while the
                        // call waited unsent: it takes its method's
                        // settings (wait-for-ready among them) before this
                        // pick's outcome is judged, as gRPC's calls started
                        // before the first resolution do.
                        if let Err(status) = self.resettle(&mut task, shared, env) {
                            return self.complete(task, Err(status), env);
                        }
                    }
                    let next = match self.pick_for(&task.call, &mut task.course, shared) {
                        Ok(next) => next,
                        Err(e) => task.course.pick_failed(e, task.call.wait_for_ready),
                    };
                    let hedged = task.course.hedging();
                    match next {
                        Next::Send(pick, _)
                            if !task.call.sent
                                && shared.methods.generation() != task.call.methods_generation =>
                        {
                            // The service config came (or changed) while the
                            // first pick waited: the call takes its method's
                            // settings from it before anything is sent, as
                            // gRPC-Go's calls read them once resolved (as
                            // `Reader::unary` does). The pick goes back.
                            self.finish(pick, &DoneInfo::OK);
                            match self.resettle(&mut task, shared, env) {
                                Ok(()) => {
                                    task.state = TaskState::Queued { tried: None };
                                    continue;
                                }
                                Err(status) => return self.complete(task, Err(status), env),
                            }
                        }
                        Next::Send(pick, handle) => {
                            task.call.sent = true;
                            // Counted once it goes out (a queued pick is not).
                            let previous = task.course.sending();
                            let timeout = task
                                .call
                                .deadline
                                .map(|d| d.saturating_duration_since(Instant::now()));
                            let sc = pick.subconn().id();
                            let counts = self
                                .counts
                                .get_or_insert_with(|| ReaderCounts::new(&shared.call_stats));
                            counts.started(sc);
                            let c = &task.call;
                            let started = Instant::now();
                            let headers = hedged.then(|| Arc::new(AtomicBool::new(false)));
                            match transport::start(
                                &handle,
                                &c.method,
                                &c.request,
                                &attempt_metadata(&c.metadata, previous),
                                timeout,
                                c.max_response,
                                headers.clone(),
                            ) {
                                Ok(stream) if hedged => {
                                    let next_at = task.course.next_hedge().map(|d| started + d);
                                    let headers = headers.unwrap_or_default();
                                    task.state = TaskState::Hedging {
                                        flights: vec![Flight::new(pick, stream, headers)],
                                        next_at,
                                        timer: None,
                                    };
                                }
                                Ok(stream) => {
                                    task.state = TaskState::Sending {
                                        pick,
                                        stream,
                                        started,
                                    }
                                }
                                Err(e) if hedged => {
                                    self.count_ended(sc, false);
                                    let ended = task.course.hedge_ended(
                                        pick,
                                        Err(e),
                                        Duration::ZERO,
                                        |p, i| self.finish(p, i),
                                    );
                                    let next_at = match ended {
                                        Hedged::Done(r) => return self.complete(task, r, env),
                                        Hedged::Next(d) => d.map(|d| started + d),
                                    };
                                    task.state = TaskState::Hedging {
                                        flights: Vec::new(),
                                        next_at,
                                        timer: None,
                                    };
                                }
                                Err(e) => {
                                    self.count_ended(sc, false);
                                    match task.course.attempt_ended(
                                        pick,
                                        Err(e),
                                        Duration::ZERO,
                                        |p, i| self.finish(p, i),
                                    ) {
                                        After::Again => {}
                                        After::Backoff(d) => backoff = Some(d),
                                        After::Done(r) => return self.complete(task, r, env),
                                    }
                                }
                            }
                        }
                        Next::Wait => {}
                        Next::Backoff(d) => backoff = Some(d),
                        Next::Done(r) => return self.complete(task, r, env),
                    }
                }
                TaskState::Sending { stream, .. } => {
                    let waker = Waker::from(task.waker.clone());
                    let Poll::Ready(result) =
                        stream.as_mut().poll(&mut Context::from_waker(&waker))
                    else {
                        break;
                    };
                    let TaskState::Sending { pick, started, .. } =
                        std::mem::replace(&mut task.state, TaskState::Queued { tried: None })
                    else {
                        unreachable!("matched Sending above")
                    };
                    self.count_ended(pick.subconn().id(), result.is_ok());
                    let ended =
                        task.course
                            .attempt_ended(pick, result, started.elapsed(), |p, i| {
                                self.finish(p, i)
                            });
                    match ended {
                        After::Again => {}
                        After::Backoff(d) => backoff = Some(d),
                        After::Done(r) => return self.complete(task, r, env),
                    }
                }
                TaskState::Backoff { .. } => break,
                TaskState::Hedging { .. } => {
                    return self.advance_hedged(task, shared, env);
                }
            }
            if let Some(d) = backoff {
                // A backoff that outlasts the deadline waits for the
                // deadline's timer alone.
                let at = Instant::now() + d;
                let timer = task.call.deadline.is_none_or(|dl| at < dl).then(|| {
                    let key = TimerKey::new(CALL_TIMER, task.call.id | BACKOFF_TIMER);
                    env.timers.schedule(at, shared.id, key)
                });
                task.state = TaskState::Backoff { timer };
                break;
            }
        }
        self.tasks.insert(task.call.id, task);
    }
}

impl Calls {
    /// A pick for `call` from the calls' reader (made on first use), handed
    /// to its `course`.
    fn pick_for(
        &mut self,
        call: &NewCall,
        course: &mut Course,
        shared: &Arc<ChannelShared>,
    ) -> Result<Next, PickError> {
        let reader = self
            .reader
            .get_or_insert_with(|| Reader::new(shared.clone()));
        let info = PickInfo {
            method: &call.method,
            hash: call.hash,
            metadata: &call.metadata,
        };
        let pick = reader.try_pick(&info)?;
        Ok(course.picked(pick, |p, i| reader.finish(p, i)))
    }

    /// Runs a hedged call as far as it goes without waiting (gRFC A6, as
    /// `call/hedged.rs` runs a blocking one): its attempts' outcomes, the
    /// next attempt when due, and the timer for the one after; keeps the
    /// task unless the call is over.
    fn advance_hedged(
        &mut self,
        mut task: Task,
        shared: &Arc<ChannelShared>,
        env: &mut LoopContext,
    ) {
        // Bounded: each turn ends an attempt, or sends one (at most
        // maxAttempts, plus one transparent replacement), or waits.
        loop {
            let TaskState::Hedging {
                flights, next_at, ..
            } = &mut task.state
            else {
                return self.advance(task, shared, env);
            };
            // Attempts that ended.
            let waker = Waker::from(task.waker.clone());
            let mut cx = Context::from_waker(&waker);
            let landed = Flight::poll_landed(flights, &mut cx);
            if let Poll::Ready(Landed::Committed) = landed {
                // As in `hedged.rs`: the others cancelled, no more hedges.
                task.course.hedges_committed();
                *next_at = None;
                let others = Flight::commit(flights);
                self.cancel_flights(
                    others,
                    Code::Cancelled,
                    "another hedged attempt committed the call",
                );
                continue;
            }
            if let Poll::Ready(Landed::Ended(i, result)) = landed {
                let f = flights.swap_remove(i);
                self.count_ended(f.pick.subconn().id(), result.is_ok());
                let latency = f.started.elapsed();
                match task
                    .course
                    .hedge_ended(f.pick, result, latency, |p, i| self.finish(p, i))
                {
                    Hedged::Done(r) => return self.end_hedged(task, r, env),
                    Hedged::Next(Some(d)) => {
                        // As in `hedged.rs`: `d` overrides the schedule.
                        *next_at = Some(Instant::now() + d);
                    }
                    Hedged::Next(None) => *next_at = None,
                }
                continue;
            }
            let now = Instant::now();
            if next_at.is_some_and(|t| t <= now) {
                *next_at = None;
                // A hedge does not wait for a pick: with none now, its turn
                // comes again a hedging delay later.
                let next = match self.pick_for(&task.call, &mut task.course, shared) {
                    Ok(next) => next,
                    // As in `hedged.rs`: a drop ends the call at once.
                    Err(PickError::Dropped(s)) => return self.end_hedged(task, Err(s), env),
                    Err(_) => Next::Wait,
                };
                let Next::Send(pick, handle) = next else {
                    *next_at = task.course.hedge_repick().map(|d| now + d);
                    continue;
                };
                let previous = task.course.sending();
                let sc = pick.subconn().id();
                self.counts
                    .get_or_insert_with(|| ReaderCounts::new(&shared.call_stats))
                    .started(sc);
                let c = &task.call;
                let timeout = c.deadline.map(|d| d.saturating_duration_since(now));
                let metadata = attempt_metadata(&c.metadata, previous);
                let headers = Arc::new(AtomicBool::new(false));
                match transport::start(
                    &handle,
                    &c.method,
                    &c.request,
                    &metadata,
                    timeout,
                    c.max_response,
                    Some(headers.clone()),
                ) {
                    Ok(stream) => {
                        flights.push(Flight::new(pick, stream, headers));
                        *next_at = task.course.next_hedge().map(|d| now + d);
                    }
                    Err(e) => {
                        self.count_ended(sc, false);
                        match task
                            .course
                            .hedge_ended(pick, Err(e), Duration::ZERO, |p, i| self.finish(p, i))
                        {
                            Hedged::Done(r) => return self.end_hedged(task, r, env),
                            Hedged::Next(d) => *next_at = d.map(|d| now + d),
                        }
                    }
                }
                continue;
            }
            if flights.is_empty() && next_at.is_none() {
                let failed = Err(task.course.last_failure());
                return self.end_hedged(task, failed, env);
            }
            break;
        }
        // The next attempt's timer, where it moved (the deadline's own
        // timer ends the call first otherwise).
        if let TaskState::Hedging { next_at, timer, .. } = &mut task.state {
            let want = next_at.filter(|at| task.call.deadline.is_none_or(|dl| *at < dl));
            if timer.map(|(_, at)| at) != want {
                if let Some((t, _)) = timer.take() {
                    env.timers.cancel(t);
                }
                if let Some(at) = want {
                    let key = TimerKey::new(CALL_TIMER, task.call.id | BACKOFF_TIMER);
                    *timer = Some((env.timers.schedule(at, shared.id, key), at));
                }
            }
        }
        self.tasks.insert(task.call.id, task);
    }

    /// A hedged call is over with `result`: its other attempts are
    /// cancelled, its timer too.
    fn end_hedged(&mut self, mut task: Task, result: CallResult, env: &mut LoopContext) {
        if let TaskState::Hedging { flights, timer, .. } =
            std::mem::replace(&mut task.state, TaskState::Queued { tried: None })
        {
            if let Some((t, _)) = timer {
                env.timers.cancel(t);
            }
            self.cancel_flights(
                flights,
                Code::Cancelled,
                "another hedged attempt ended the call",
            );
        }
        self.complete(task, result, env);
    }
}

impl StartedCalls for Calls {
    fn active(&self) -> bool {
        !self.tasks.is_empty()
    }

    fn after_run(&mut self, shared: &Arc<ChannelShared>, cx: &mut LoopContext) {
        self.picker_published(shared, cx);
    }
    fn wake(&mut self, id: u64, shared: &Arc<ChannelShared>, cx: &mut LoopContext) {
        self.wake_call(id, shared, cx);
    }
    fn timer(&mut self, id: u64, shared: &Arc<ChannelShared>, cx: &mut LoopContext) {
        self.call_timer(id, shared, cx);
    }
    fn close(&mut self, cx: &mut LoopContext) {
        self.close_all(cx);
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}
