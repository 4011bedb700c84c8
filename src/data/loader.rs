//! The batches of one training epoch, prepared on a thread of their own while the current step
//! trains. Shuffling, negatives and augmentation all draw from one stream seeded by (run seed,
//! epoch), in order, so an epoch is the same whether or not the run was interrupted before it.
//! Evaluation batches (in order, no augmentation) are prepared ahead the same way.

use super::Dataset;
use super::augment::Augment;
use crate::error::{Error, Result};
use crate::rng::Rng;
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, sync_channel};

/// The environment variable that sets how many threads prepare batches.
pub const THREADS_VAR: &str = "TRIFECTA_LOADER_THREADS";

/// How many threads prepare batches (augment, normalise): `TRIFECTA_LOADER_THREADS`, else half
/// the cores (at least one). An error names the variable if its value is not a count >= 1.
pub fn threads() -> Result<usize> {
    match std::env::var(THREADS_VAR) {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => {
                crate::backend::cpu::check_threads(THREADS_VAR, n)?;
                Ok(n)
            }
            _ => Err(Error::Config(format!(
                "{THREADS_VAR}: expected a thread count of at least 1, got '{v}'"
            ))),
        },
        Err(_) => Ok(default_threads()),
    }
}

/// Half the cores, at least one.
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// How many threads actually prepare batches: the loader pool's, or the global pool's where
/// the loader's could not be started.
pub fn pool_threads() -> usize {
    pool().map_or_else(rayon::current_num_threads, |p| p.current_num_threads())
}

/// The loader's own rayon pool of [`threads`] threads (None if the threads could not be
/// started: the work then runs on the global pool). On the global pool each batch took
/// every core for a moment, so the thread that queues a step's GPU work could wait for one,
/// and the GPU for it.
fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        // The CLI reports a bad value before any work; a library user gets the default.
        let n = threads().unwrap_or_else(|_| default_threads());
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("trifecta-loader-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// Runs `work` (which may use rayon) on the loader's threads.
fn on_loader<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    match pool() {
        Some(pool) => pool.install(work),
        None => work(),
    }
}

/// One training step's input.
pub struct Batch {
    /// Normalised `(B, H, W, C)` images.
    pub images: Vec<f32>,
    pub positive: Vec<u32>,
    pub negative: Vec<u32>,
}

/// The random stream of epoch `epoch` (1-based) of a run seeded with `seed`.
pub fn epoch_rng(seed: u64, epoch: u64) -> Rng {
    Rng::stream(seed, 1_000_000 + epoch)
}

/// Runs `consume` on the batches of one epoch while a producer thread prepares the next ones
/// (at most two ahead, on the loader's [`threads`]). The first `skip` batches are drawn (the
/// stream moves on as if they were used) but not handed over: an epoch resumed after `skip`
/// steps goes on with the batches it would have had. `consume` also gets the epoch's number
/// of batches, skipped ones included. Returns what `consume` returns.
#[allow(clippy::too_many_arguments)]
pub fn with_epoch_batches<R>(
    data: &Dataset,
    batch_size: usize,
    seed: u64,
    epoch: u64,
    augment: Option<Augment>,
    skip: usize,
    consume: impl FnOnce(usize, &mut dyn Iterator<Item = Batch>) -> R,
) -> R {
    let steps = data.len().div_ceil(batch_size.max(1));
    std::thread::scope(|scope| {
        let (sender, receiver) = sync_channel::<Batch>(2);
        scope.spawn(move || {
            let mut rng = epoch_rng(seed, epoch);
            let mut order: Vec<usize> = (0..data.len()).collect();
            rng.shuffle(&mut order);
            for (i, indices) in order.chunks(batch_size.max(1)).enumerate() {
                let (images, positive) = on_loader(|| match augment.as_ref() {
                    Some(a) => data.batch(indices, Some((a, &mut rng))),
                    None => data.batch(indices, None),
                });
                let negative = super::wrong_labels(&positive, data.classes, &mut rng);
                if i < skip {
                    continue;
                }
                if sender
                    .send(Batch {
                        images,
                        positive,
                        negative,
                    })
                    .is_err()
                {
                    return; // the consumer stopped early (an error): nothing left to do
                }
            }
        });
        let mut batches = ReceiverIter(receiver);
        consume(steps, &mut batches)
    })
}

/// Runs `consume` on `data` in order, in batches of `batch_size` (normalised images, labels),
/// each prepared on another thread while the previous one is consumed.
pub fn with_eval_batches<R>(
    data: &Dataset,
    batch_size: usize,
    consume: impl FnOnce(&mut dyn Iterator<Item = (Vec<f32>, Vec<u32>)>) -> R,
) -> R {
    std::thread::scope(|scope| {
        let (sender, receiver) = sync_channel::<(Vec<f32>, Vec<u32>)>(1);
        scope.spawn(move || {
            let indices: Vec<usize> = (0..data.len()).collect();
            for chunk in indices.chunks(batch_size.max(1)) {
                if sender.send(on_loader(|| data.batch(chunk, None))).is_err() {
                    return; // the consumer stopped early (an error)
                }
            }
        });
        consume(&mut std::iter::from_fn(|| receiver.recv().ok()))
    })
}

/// Batches from another iterator, adding up the time spent waiting for each (the feeder not
/// keeping up with training).
pub struct Waited<'a> {
    inner: &'a mut dyn Iterator<Item = Batch>,
    pub seconds: f64,
}

impl<'a> Waited<'a> {
    pub fn new(inner: &'a mut dyn Iterator<Item = Batch>) -> Self {
        Waited {
            inner,
            seconds: 0.0,
        }
    }
}

impl Iterator for Waited<'_> {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        let start = std::time::Instant::now();
        let batch = self.inner.next();
        self.seconds += start.elapsed().as_secs_f64();
        batch
    }
}

struct ReceiverIter(Receiver<Batch>);

impl Iterator for ReceiverIter {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        self.0.recv().ok()
    }
}
