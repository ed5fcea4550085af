//! A fixed pool of worker threads, each owning one state (a logged-in PKCS#11 session), fed by
//! a bounded queue with admission control.
//!
//! - The async side never blocks: [`WorkerPool::run`] `try_send`s a job (queue full →
//!   [`Error::Throttled`]) and awaits a oneshot reply until the deadline
//!   ([`Error::DeadlineExceeded`]).
//! - A worker drops a job whose deadline passed while it waited in the queue, before it touches
//!   the HSM, and answers `DeadlineExceeded`.
//! - A panicking job does not take its worker down; the caller gets [`Error::Internal`].
//!
//! The pool is generic over the per-worker state so that its admission logic is unit-tested
//! without an HSM.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::error::{Error, Result};

/// Runs a job on the worker's state and returns how to hand its result to the caller.
type JobFn<S> = Box<dyn FnOnce(Result<&mut S>) -> Deliver + Send>;
/// Sends a finished job's result to its caller (wakes the caller's task).
type Deliver = Box<dyn FnOnce() + Send>;

/// Most results a worker holds back before handing them over. Replying to a batch at once
/// wakes the (often parked) async runtime once instead of once per job: a wake-up is a syscall
/// and an inter-processor interrupt, paid on the HSM worker, the bottleneck under load. A worker
/// also hands its results over as soon as it holds as many as there are jobs left in the queue,
/// so that the callers can submit more before it runs dry; an idle queue gives a batch of one,
/// so latency at low load is unchanged.
const MAX_BATCH: usize = 32;
/// Only fast jobs are batched: after a job slower than this (a network HSM) results go out at
/// once, so batching adds at most `MAX_BATCH × FAST_JOB` (1.6 ms) to a reply, and only when
/// at least as many jobs are queued behind it.
const FAST_JOB: Duration = Duration::from_micros(50);

struct Job<S> {
    deadline: Instant,
    run: JobFn<S>,
}

/// A value with the time it waited in the queue and the time the worker spent on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timed<T> {
    /// The job's result.
    pub value: T,
    /// Time between submission and a worker picking the job up.
    pub queued: Duration,
    /// Time the worker spent running the job.
    pub busy: Duration,
}

/// Counters for health and metrics.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Jobs refused because the queue was full.
    pub throttled: AtomicU64,
    /// Jobs dropped because their deadline passed (in the queue or while awaited).
    pub expired: AtomicU64,
}

/// The pool. Dropping it closes the queue and joins the workers.
pub struct WorkerPool<S> {
    sender: Option<Sender<Job<S>>>,
    threads: Vec<JoinHandle<()>>,
    capacity: usize,
    stats: Arc<PoolStats>,
}

impl<S: 'static> std::fmt::Debug for WorkerPool<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("workers", &self.threads.len())
            .field("capacity", &self.capacity)
            .field("queued", &self.queued())
            .finish()
    }
}

impl<S: 'static> WorkerPool<S> {
    /// Starts `workers` threads named `{name}-{i}`; each builds its state with `init(i)` on its
    /// own thread. Returns once every worker is ready, or the first init error.
    pub fn start<F>(name: &str, workers: usize, capacity: usize, init: F) -> Result<Self>
    where
        F: Fn(usize) -> Result<S> + Send + Sync + 'static,
    {
        let (sender, receiver) = crossbeam_channel::bounded::<Job<S>>(capacity);
        let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<()>>(workers);
        let init = Arc::new(init);
        let stats = Arc::new(PoolStats::default());
        let mut threads = Vec::with_capacity(workers);
        for index in 0..workers {
            let receiver = receiver.clone();
            let init = Arc::clone(&init);
            let ready = ready_tx.clone();
            let stats = Arc::clone(&stats);
            let handle = std::thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || match init(index) {
                    Ok(state) => {
                        let _ = ready.send(Ok(()));
                        drop(ready);
                        worker_loop(state, &receiver, &stats);
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                })
                .map_err(|e| Error::Internal(format!("cannot spawn HSM worker: {e}")))?;
            threads.push(handle);
        }
        drop(ready_tx);
        let mut pool = Self {
            sender: Some(sender),
            threads,
            capacity,
            stats,
        };
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e), // drop(pool) joins the others
                Err(_) => return Err(Error::Internal("HSM worker died during start".into())),
            }
        }
        pool.threads.shrink_to_fit();
        Ok(pool)
    }

    /// Runs `job` on a worker's state. Refused at once when the queue is full or the deadline
    /// has passed; gives up waiting at the deadline.
    pub async fn run<T, F>(&self, deadline: Instant, job: F) -> Result<Timed<T>>
    where
        T: Send + 'static,
        F: FnOnce(&mut S) -> Result<T> + Send + 'static,
    {
        self.run_with(deadline, (), move |state, ()| job(state))
            .await
    }

    /// Like [`run`](Self::run), with `inputs` lent to the job and handed back with its answer,
    /// so that they are dropped on the caller's thread: a plaintext is zeroized and large
    /// buffers are freed there, not on an HSM worker (the bottleneck under load; memory freed
    /// on a thread other than the one that allocated it also costs an allocator lock). When the
    /// caller has stopped waiting, the worker drops them.
    pub async fn run_with<I, T, F>(&self, deadline: Instant, inputs: I, job: F) -> Result<Timed<T>>
    where
        I: Send + 'static,
        T: Send + 'static,
        F: FnOnce(&mut S, &I) -> Result<T> + Send + 'static,
    {
        let submitted = Instant::now();
        if submitted >= deadline {
            self.stats.expired.fetch_add(1, Ordering::Relaxed);
            return Err(Error::DeadlineExceeded);
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let run: JobFn<S> = Box::new(move |state| {
            let started = Instant::now();
            let result = state.and_then(|state| job(state, &inputs));
            let busy = started.elapsed();
            let result = result.map(|value| Timed {
                value,
                queued: started.saturating_duration_since(submitted),
                busy,
            });
            Box::new(move || {
                let _ = reply.send((result, inputs));
            })
        });
        let sender = self
            .sender
            .as_ref()
            .ok_or_else(|| Error::HsmUnavailable("worker pool stopped".into()))?;
        match sender.try_send(Job { deadline, run }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                return Err(Error::Throttled);
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(Error::HsmUnavailable("worker pool stopped".into()));
            }
        }
        match tokio::time::timeout_at(deadline.into(), answer).await {
            Ok(Ok((result, inputs))) => {
                drop(inputs);
                result
            }
            Ok(Err(_)) => Err(Error::Internal("HSM worker dropped the job".into())),
            Err(_) => {
                self.stats.expired.fetch_add(1, Ordering::Relaxed);
                Err(Error::DeadlineExceeded)
            }
        }
    }

    /// Jobs waiting for a worker.
    pub fn queued(&self) -> usize {
        self.sender.as_ref().map_or(0, Sender::len)
    }

    /// Queue capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.threads.len()
    }

    /// Counters.
    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }
}

fn worker_loop<S>(mut state: S, receiver: &Receiver<Job<S>>, stats: &PoolStats) {
    let mut replies: Vec<Deliver> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = receiver.recv() {
        let mut next = Some(first);
        while let Some(job) = next.take() {
            let started = Instant::now();
            if started >= job.deadline {
                stats.expired.fetch_add(1, Ordering::Relaxed);
                replies.push((job.run)(Err(Error::DeadlineExceeded)));
            } else {
                let run = job.run;
                let state = &mut state;
                // A panic drops the job's reply sender, so the caller sees `Internal`.
                match std::panic::catch_unwind(AssertUnwindSafe(move || run(Ok(state)))) {
                    Ok(deliver) => replies.push(deliver),
                    Err(_) => tracing::error!("HSM worker job panicked"),
                }
            }
            if replies.len() >= MAX_BATCH.min(receiver.len()) || started.elapsed() > FAST_JOB {
                replies.drain(..).for_each(|deliver| deliver());
            }
            next = receiver.try_recv().ok();
        }
        replies.drain(..).for_each(|deliver| deliver());
    }
}

impl<S> Drop for WorkerPool<S> {
    fn drop(&mut self) {
        self.sender = None; // closes the queue: workers finish what is queued, then exit
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn runs_jobs_on_worker_state() {
        let pool = WorkerPool::start("t", 2, 8, |i| Ok(i * 100)).unwrap();
        let got = pool.run(far(), |s: &mut usize| Ok(*s + 1)).await.unwrap();
        assert!(got.value == 1 || got.value == 101);
        assert_eq!(pool.workers(), 2);
    }

    #[tokio::test]
    async fn init_error_is_reported() {
        let r = WorkerPool::<()>::start("t", 3, 8, |i| {
            if i == 1 {
                Err(Error::PinIncorrect)
            } else {
                Ok(())
            }
        });
        assert_eq!(r.err(), Some(Error::PinIncorrect));
    }

    /// Occupies the pool's only worker until the returned barrier is passed.
    async fn block_worker(
        pool: &Arc<WorkerPool<u32>>,
    ) -> (Arc<Barrier>, tokio::task::JoinHandle<Result<Timed<()>>>) {
        let gate = Arc::new(Barrier::new(2));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let g = Arc::clone(&gate);
        let p = Arc::clone(pool);
        let busy = tokio::spawn(async move {
            p.run(far(), move |_| {
                let _ = started_tx.send(());
                g.wait();
                Ok(())
            })
            .await
        });
        started_rx.await.unwrap();
        (gate, busy)
    }

    #[tokio::test]
    async fn full_queue_throttles_and_recovers() {
        let pool = Arc::new(WorkerPool::start("t", 1, 1, |_| Ok(0u32)).unwrap());
        let (gate, busy) = block_worker(&pool).await;
        let p = Arc::clone(&pool);
        let queued = tokio::spawn(async move { p.run(far(), |_| Ok(7)).await });
        while pool.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            pool.run(far(), |_| Ok(0)).await.err(),
            Some(Error::Throttled)
        );
        assert_eq!(pool.stats().throttled.load(Ordering::Relaxed), 1);
        gate.wait();
        busy.await.unwrap().unwrap();
        assert_eq!(queued.await.unwrap().unwrap().value, 7);
        assert_eq!(pool.run(far(), |_| Ok(8)).await.unwrap().value, 8);
    }

    #[tokio::test]
    async fn expired_work_never_runs() {
        let pool = Arc::new(WorkerPool::start("t", 1, 4, |_| Ok(0u32)).unwrap());
        assert_eq!(
            pool.run(Instant::now(), |_| Ok(())).await.err(),
            Some(Error::DeadlineExceeded)
        );
        let (gate, busy) = block_worker(&pool).await;
        // Queued behind the blocked worker with a short deadline: the caller gives up at the
        // deadline, and the worker later drops the job without running it.
        let short = Instant::now() + Duration::from_millis(30);
        let r = pool
            .run(short, |s: &mut u32| {
                *s += 1;
                Ok(())
            })
            .await;
        assert_eq!(r.err(), Some(Error::DeadlineExceeded));
        gate.wait();
        busy.await.unwrap().unwrap();
        assert_eq!(pool.run(far(), |s| Ok(*s)).await.unwrap().value, 0);
        assert!(pool.stats().expired.load(Ordering::Relaxed) >= 2);
    }

    #[tokio::test]
    async fn inputs_come_back_to_the_caller_thread() {
        /// Records the thread that drops it.
        struct Witness(std::sync::mpsc::Sender<String>);
        impl Drop for Witness {
            fn drop(&mut self) {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                let _ = self.0.send(name);
            }
        }
        let pool = WorkerPool::start("pool-worker", 1, 4, |_| Ok(())).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let got = pool
            .run_with(far(), Witness(tx), |_, w: &Witness| {
                Ok(w.0.send("job".into()).is_ok())
            })
            .await
            .unwrap();
        assert!(got.value);
        assert_eq!(rx.recv().unwrap(), "job");
        let dropped_on = rx.recv().unwrap();
        assert!(
            !dropped_on.starts_with("pool-worker"),
            "dropped on {dropped_on}"
        );
    }

    #[tokio::test]
    async fn panicking_job_keeps_worker() {
        let pool = WorkerPool::start("t", 1, 4, |_| Ok(())).unwrap();
        let r: Result<Timed<()>> = pool.run(far(), |_| panic!("boom")).await;
        assert!(matches!(r, Err(Error::Internal(_))));
        assert_eq!(pool.run(far(), |_| Ok(3)).await.unwrap().value, 3);
    }
}
