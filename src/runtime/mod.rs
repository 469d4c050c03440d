//! The event loop: one thread running a mio `Poll` that runs tasks. A task
//! (a channel, one day a resolver or an xDS client of its own) owns its
//! sockets, timers and state; the loop hands it I/O readiness, due timers,
//! notifications and commands, one at a time, and knows nothing else of it.
//! Other threads talk to the loop only through a command channel plus a
//! `mio::Waker`.

mod timers;

use crate::clock::{Clock, Rng, SystemClock};
use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Poll, Token};
use std::any::Any;
use std::collections::HashMap;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;
pub(crate) use timers::{TimerKey, Timers};

/// A task's identity on its loop, never reused.
pub(crate) type TaskId = u64;

const WAKER: Token = Token(0);

/// What the loop runs. Every method runs on the loop thread, one at a time;
/// a panic fails the task (`fail`), never the loop.
pub(crate) trait Task: Any {
    /// First steps, right after the task is added.
    fn start(&mut self, cx: &mut LoopContext);
    /// A socket registered with `LoopContext::alloc_token(.., key)` is ready.
    fn io_event(&mut self, key: u64, event: &mio::event::Event, cx: &mut LoopContext);
    /// `LoopHandle::notify(.., key)` was called (a waker fired).
    fn notified(&mut self, key: u64, cx: &mut LoopContext);
    /// A timer the task armed is due.
    fn timer(&mut self, key: TimerKey, cx: &mut LoopContext);
    /// After every command, event or timer the loop ran on this task.
    fn after_run(&mut self, _cx: &mut LoopContext) {}
    /// Something inside the task panicked, with this message.
    fn fail(&mut self, message: String, cx: &mut LoopContext);
    /// The loop is shutting down (or the owner closes the task).
    fn close(&mut self, cx: &mut LoopContext);
    /// The task is done: the loop forgets it.
    fn is_finished(&self) -> bool;
    /// For commands addressed to a concrete task type (`LoopHandle::run_on`).
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

type MakeTask = Box<dyn FnOnce() -> Box<dyn Task> + Send>;
type TaskCommand = Box<dyn FnOnce(&mut dyn Task, &mut LoopContext) + Send>;

/// Work for the loop thread.
pub(crate) enum Command {
    Add(TaskId, MakeTask),
    Run(TaskId, TaskCommand),
    /// A `LoopHandle::notify` (no allocation: wakers fire often).
    Notify(TaskId, u64),
    Shutdown,
}

/// Something that finishes work on its own threads (a channel's completion
/// dispatcher): joined when the runtime drops, after the loop has stopped.
pub(crate) trait JoinOnDrop: Send + Sync {
    /// Lets its threads finish what they have and joins them.
    fn close_and_join(&self);
}

struct HandleInner {
    tx: Sender<Command>,
    waker: mio::Waker,
    thread: OnceLock<ThreadId>,
    next_task: std::sync::atomic::AtomicU64,
    /// Joined when the runtime drops (channels' completion dispatchers).
    joiners: Mutex<Vec<Weak<dyn JoinOnDrop>>>,
}

/// A cloneable way to reach a loop from any thread.
#[derive(Clone)]
pub(crate) struct LoopHandle(Arc<HandleInner>);

impl LoopHandle {
    /// Sends a command and wakes the loop. False when the loop is gone.
    pub(crate) fn send(&self, cmd: Command) -> bool {
        if self.0.tx.send(cmd).is_err() {
            return false;
        }
        let _ = self.0.waker.wake();
        true
    }

    /// Runs `f` on task `task` if it is a `T` (and still there). False when
    /// the loop is gone.
    pub(crate) fn run_on<T: Task>(
        &self,
        task: TaskId,
        f: impl FnOnce(&mut T, &mut LoopContext) + Send + 'static,
    ) -> bool {
        self.send(Command::Run(
            task,
            Box::new(move |t, cx| {
                if let Some(t) = t.as_any_mut().downcast_mut::<T>() {
                    f(t, cx)
                }
            }),
        ))
    }

    /// Adds a task, made on the loop thread by `make`, and starts it.
    pub(crate) fn add(&self, task: TaskId, make: MakeTask) -> bool {
        self.send(Command::Add(task, make))
    }

    /// Has the loop call `Task::notified(key)` on `task`.
    pub(crate) fn notify(&self, task: TaskId, key: u64) {
        self.send(Command::Notify(task, key));
    }

    pub(crate) fn on_loop_thread(&self) -> bool {
        self.0.thread.get() == Some(&std::thread::current().id())
    }

    /// Has the runtime join `joiner` when it drops (unless it is gone).
    pub(crate) fn join_on_drop(&self, joiner: Weak<dyn JoinOnDrop>) {
        let mut list = self.0.joiners.lock().unwrap_or_else(|p| p.into_inner());
        // Forget dropped ones so the list does not grow forever.
        list.retain(|d| d.strong_count() > 0);
        list.push(joiner);
    }

    pub(crate) fn next_task_id(&self) -> TaskId {
        self.0
            .next_task
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

/// What a runtime is built with.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// The loop's clock (a `ManualClock` in tests).
    pub clock: Arc<dyn Clock>,
    /// Seed for the loop's random source (jitter, shuffles); `None` = entropy.
    pub seed: Option<u64>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            clock: Arc::new(SystemClock),
            seed: None,
        }
    }
}

/// One event-loop thread shared by any number of channels.
pub struct Runtime {
    handle: LoopHandle,
    thread: Option<JoinHandle<()>>,
}

impl Runtime {
    /// Starts an event-loop thread with the system clock. Dropping the
    /// runtime stops it (close its channels first).
    pub fn new() -> io::Result<Runtime> {
        Self::with_config(RuntimeConfig::default())
    }

    /// Starts an event-loop thread with `config` (a manual clock, a fixed seed).
    pub fn with_config(config: RuntimeConfig) -> io::Result<Runtime> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let handle = LoopHandle(Arc::new(HandleInner {
            tx,
            waker,
            thread: OnceLock::new(),
            next_task: std::sync::atomic::AtomicU64::new(1),
            joiners: Mutex::new(Vec::new()),
        }));
        if config.clock.is_manual() {
            let h = handle.clone();
            config.clock.subscribe(Arc::new(move || {
                let _ = h.0.waker.wake();
            }));
        }
        let env = LoopContext {
            registry: poll.registry().try_clone()?,
            clock: config.clock,
            rng: config.seed.map(Rng::new).unwrap_or_else(Rng::from_entropy),
            timers: Timers::default(),
            tokens: HashMap::new(),
            next_token: 1,
            handle: handle.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("switchyard-loop".into())
            .spawn(move || run(poll, rx, env))?;
        let _ = handle.0.thread.set(thread.thread().id());
        Ok(Runtime {
            handle,
            thread: Some(thread),
        })
    }

    pub(crate) fn handle(&self) -> &LoopHandle {
        &self.handle
    }
}

impl Drop for Runtime {
    /// Closes every task (channel) still on this loop and joins its thread,
    /// then waits for the started calls' completions (every call was
    /// completed when its channel closed).
    fn drop(&mut self) {
        self.handle.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            if !self.handle.on_loop_thread() {
                let _ = t.join();
                let list = std::mem::take(
                    &mut *self
                        .handle
                        .0
                        .joiners
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()),
                );
                for d in list.iter().filter_map(Weak::upgrade) {
                    d.close_and_join();
                }
            }
        }
    }
}

/// What the loop lends to a task (and, through it, to policies and
/// connectors) while it runs: the registry, clock, random source, timers.
pub(crate) struct LoopContext {
    pub(crate) registry: mio::Registry,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rng: Rng,
    pub(crate) timers: Timers,
    /// mio token → (task, the task's key for that socket).
    pub(crate) tokens: HashMap<Token, (TaskId, u64)>,
    next_token: usize,
    pub(crate) handle: LoopHandle,
}

impl LoopContext {
    /// A loop environment with no loop thread, for unit tests of loop-side
    /// code. Keep the returned `Poll` alive as long as the `LoopContext`.
    #[cfg(test)]
    pub(crate) fn for_test() -> (LoopContext, Poll) {
        let poll = Poll::new().unwrap();
        let (tx, _rx) = crossbeam_channel::unbounded();
        let handle = LoopHandle(Arc::new(HandleInner {
            tx,
            waker: mio::Waker::new(poll.registry(), WAKER).unwrap(),
            thread: OnceLock::new(),
            next_task: std::sync::atomic::AtomicU64::new(1),
            joiners: Mutex::new(Vec::new()),
        }));
        let env = LoopContext {
            registry: poll.registry().try_clone().unwrap(),
            clock: Arc::new(SystemClock),
            rng: Rng::new(1),
            timers: Timers::default(),
            tokens: HashMap::new(),
            next_token: 1,
            handle,
        };
        (env, poll)
    }

    pub(crate) fn alloc_token(&mut self, task: TaskId, key: u64) -> Token {
        let t = Token(self.next_token);
        self.next_token += 1;
        self.tokens.insert(t, (task, key));
        t
    }
}

pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

fn run(mut poll: Poll, rx: Receiver<Command>, mut cx: LoopContext) {
    let mut tasks: HashMap<TaskId, Box<dyn Task>> = HashMap::new();
    let mut events = Events::with_capacity(256);
    loop {
        let timeout = cx.timers.next_deadline().map(|at| {
            let now = cx.clock.now();
            if at <= now {
                Duration::ZERO
            } else if cx.clock.is_manual() {
                // Only an `advance` (which wakes us) can make it due.
                Duration::from_secs(3600)
            } else {
                at - now
            }
        });
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        for ev in events.iter() {
            if ev.token() == WAKER {
                continue;
            }
            if let Some(&(task, key)) = cx.tokens.get(&ev.token()) {
                guarded(&mut tasks, task, &mut cx, |t, cx| t.io_event(key, ev, cx));
            }
        }
        while let Ok(cmd) = rx.try_recv() {
            // Timers already due run before the command: whoever moved a
            // manual clock and then sent a command (`Channel::sync`) sees
            // those timers fired when it is answered.
            run_due_timers(&mut tasks, &mut cx);
            match cmd {
                Command::Add(id, make) => match catch_unwind(AssertUnwindSafe(make)) {
                    Ok(task) => {
                        tasks.insert(id, task);
                        guarded(&mut tasks, id, &mut cx, |t, cx| t.start(cx));
                    }
                    Err(p) => log::error!(
                        target: crate::trace::CHANNEL,
                        "task {id} could not be made: {}",
                        panic_message(&*p)
                    ),
                },
                Command::Run(id, f) => guarded(&mut tasks, id, &mut cx, f),
                Command::Notify(id, key) => {
                    guarded(&mut tasks, id, &mut cx, |t, cx| t.notified(key, cx))
                }
                Command::Shutdown => {
                    for (_, mut task) in tasks.drain() {
                        let _ = catch_unwind(AssertUnwindSafe(|| task.close(&mut cx)));
                    }
                    return;
                }
            }
        }
        run_due_timers(&mut tasks, &mut cx);
    }
}

fn run_due_timers(tasks: &mut HashMap<TaskId, Box<dyn Task>>, cx: &mut LoopContext) {
    if cx.timers.next_deadline().is_none() {
        return;
    }
    let now = cx.clock.now();
    while let Some((task, key)) = cx.timers.pop_due(now) {
        guarded(tasks, task, cx, |t, cx| t.timer(key, cx));
    }
}

/// Runs `f` on a task; a panic fails that task, never the loop.
fn guarded(
    tasks: &mut HashMap<TaskId, Box<dyn Task>>,
    id: TaskId,
    cx: &mut LoopContext,
    f: impl FnOnce(&mut dyn Task, &mut LoopContext),
) {
    let Some(task) = tasks.get_mut(&id) else {
        return;
    };
    let run = || {
        f(&mut **task, cx);
        task.after_run(cx);
    };
    if let Err(p) = catch_unwind(AssertUnwindSafe(run)) {
        let msg = panic_message(&*p);
        let _ = catch_unwind(AssertUnwindSafe(|| {
            task.fail(format!("internal panic: {msg}"), cx)
        }));
    }
    if task.is_finished() {
        tasks.remove(&id);
    }
}
