//! The event loop: one thread running a mio `Poll` that owns every channel's
//! policy, subchannels, timers and connections. Other threads talk to it only
//! through a command channel plus a `mio::Waker`; it talks back only by
//! publishing picker tables and channel states.

use crate::balancer::TimerToken;
use crate::call::Dispatch;
use crate::channel::ChannelCore;
use crate::clock::{Clock, Rng, SystemClock};
use crate::balancer::subconn::SubConnId;
use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Poll, Token};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

pub(crate) type ChannelId = u64;

const WAKER: Token = Token(0);

type MakeChannel = Box<dyn FnOnce() -> ChannelCore + Send>;
type ChannelTask = Box<dyn FnOnce(&mut ChannelCore, &mut Env) + Send>;

/// Work for the loop thread.
pub(crate) enum Command {
    AddChannel(ChannelId, MakeChannel),
    Channel(ChannelId, ChannelTask),
    /// A connector's `Notifier` fired (no allocation: wakers fire often).
    Notify(ChannelId, u64),
    /// A started call's stream woke it (likewise).
    Call(ChannelId, u64),
    Shutdown,
}

struct HandleInner {
    tx: Sender<Command>,
    waker: mio::Waker,
    thread: OnceLock<ThreadId>,
    next_channel: std::sync::atomic::AtomicU64,
    /// Channels' completion dispatchers, joined when the runtime drops.
    dispatchers: Mutex<Vec<Weak<Dispatch>>>,
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

    pub(crate) fn run(
        &self,
        channel: ChannelId,
        f: impl FnOnce(&mut ChannelCore, &mut Env) + Send + 'static,
    ) -> bool {
        self.send(Command::Channel(channel, Box::new(f)))
    }

    pub(crate) fn notify(&self, channel: ChannelId, key: u64) {
        self.send(Command::Notify(channel, key));
    }

    pub(crate) fn on_loop_thread(&self) -> bool {
        self.0.thread.get() == Some(&std::thread::current().id())
    }

    pub(crate) fn register_dispatch(&self, dispatch: &Arc<Dispatch>) {
        let mut list = self.0.dispatchers.lock().unwrap_or_else(|p| p.into_inner());
        // Forget dropped channels' dispatchers so the list does not grow forever.
        list.retain(|d| d.strong_count() > 0);
        list.push(Arc::downgrade(dispatch));
    }

    pub(crate) fn next_channel_id(&self) -> ChannelId {
        self.0
            .next_channel
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
            next_channel: std::sync::atomic::AtomicU64::new(1),
            dispatchers: Mutex::new(Vec::new()),
        }));
        if config.clock.is_manual() {
            let h = handle.clone();
            config.clock.subscribe(Arc::new(move || {
                let _ = h.0.waker.wake();
            }));
        }
        let env = Env {
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
    /// Closes every channel still on this loop and joins its thread, then
    /// waits for the started calls' completions (every call was completed
    /// when its channel closed).
    fn drop(&mut self) {
        self.handle.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            if !self.handle.on_loop_thread() {
                let _ = t.join();
                let list = std::mem::take(
                    &mut *self
                        .handle
                        .0
                        .dispatchers
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

/// What the loop lends to channels, policies and connectors while they run.
pub(crate) struct Env {
    pub(crate) registry: mio::Registry,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rng: Rng,
    pub(crate) timers: Timers,
    /// mio token → (channel, connector key).
    pub(crate) tokens: HashMap<Token, (ChannelId, u64)>,
    next_token: usize,
    pub(crate) handle: LoopHandle,
}

impl Env {
    /// A loop environment with no loop thread, for unit tests of loop-side
    /// code. Keep the returned `Poll` alive as long as the `Env`.
    #[cfg(test)]
    pub(crate) fn for_test() -> (Env, Poll) {
        let poll = Poll::new().unwrap();
        let (tx, _rx) = crossbeam_channel::unbounded();
        let handle = LoopHandle(Arc::new(HandleInner {
            tx,
            waker: mio::Waker::new(poll.registry(), WAKER).unwrap(),
            thread: OnceLock::new(),
            next_channel: std::sync::atomic::AtomicU64::new(1),
            dispatchers: Mutex::new(Vec::new()),
        }));
        let env = Env {
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

    pub(crate) fn alloc_token(&mut self, channel: ChannelId, key: u64) -> Token {
        let t = Token(self.next_token);
        self.next_token += 1;
        self.tokens.insert(t, (channel, key));
        t
    }
}

/// Who a timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimerKind {
    Balancer(TimerToken),
    Backoff(SubConnId),
    ConnectDeadline(SubConnId),
    Connector(u64),
    /// A DNS target's next lookup (retry or rate-limited re-resolution).
    Resolve,
    /// A started call's deadline.
    Call(u64),
}

/// A min-heap of deadlines; cancelled entries are skipped lazily.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    live: HashMap<u64, (ChannelId, TimerKind)>,
    next: u64,
}

impl Timers {
    pub(crate) fn schedule(&mut self, at: Instant, channel: ChannelId, kind: TimerKind) -> u64 {
        self.next += 1;
        self.heap.push(Reverse((at, self.next)));
        self.live.insert(self.next, (channel, kind));
        self.next
    }

    pub(crate) fn cancel(&mut self, id: u64) {
        self.live.remove(&id);
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if self.live.contains_key(&id) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    fn pop_due(&mut self, now: Instant) -> Option<(ChannelId, TimerKind)> {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if at > now {
                return None;
            }
            self.heap.pop();
            if let Some(t) = self.live.remove(&id) {
                return Some(t);
            }
        }
        None
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

fn run(mut poll: Poll, rx: Receiver<Command>, mut env: Env) {
    let mut channels: HashMap<ChannelId, ChannelCore> = HashMap::new();
    let mut events = Events::with_capacity(256);
    loop {
        let timeout = env.timers.next_deadline().map(|at| {
            let now = env.clock.now();
            if at <= now {
                Duration::ZERO
            } else if env.clock.is_manual() {
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
            if let Some(&(ch, key)) = env.tokens.get(&ev.token()) {
                guarded(&mut channels, ch, &mut env, |core, env| {
                    core.io_event(key, ev, env)
                });
            }
        }
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                Command::AddChannel(id, make) => {
                    channels.insert(id, make());
                    guarded(&mut channels, id, &mut env, |core, env| core.start(env));
                }
                Command::Channel(id, f) => guarded(&mut channels, id, &mut env, f),
                Command::Notify(id, key) => guarded(&mut channels, id, &mut env, |core, env| {
                    core.notified(key, env)
                }),
                Command::Call(id, call) => guarded(&mut channels, id, &mut env, |core, env| {
                    core.poll_call(call, env)
                }),
                Command::Shutdown => {
                    for (_, mut core) in channels.drain() {
                        let _ = catch_unwind(AssertUnwindSafe(|| core.close(&mut env)));
                    }
                    return;
                }
            }
        }
        let now = env.clock.now();
        while let Some((ch, kind)) = env.timers.pop_due(now) {
            guarded(&mut channels, ch, &mut env, |core, env| {
                core.timer(kind, env)
            });
        }
    }
}

/// Runs `f` on a channel; a panic fails that channel, never the loop.
fn guarded(
    channels: &mut HashMap<ChannelId, ChannelCore>,
    id: ChannelId,
    env: &mut Env,
    f: impl FnOnce(&mut ChannelCore, &mut Env),
) {
    let Some(core) = channels.get_mut(&id) else {
        return;
    };
    let run = || {
        f(core, env);
        // Started calls queued for a picker pick from the one just published.
        core.after_run(env);
    };
    if let Err(p) = catch_unwind(AssertUnwindSafe(run)) {
        let msg = panic_message(&*p);
        let _ = catch_unwind(AssertUnwindSafe(|| {
            core.fail(format!("internal panic: {msg}"), env)
        }));
    }
    if core.is_finished() {
        channels.remove(&id);
    }
}
