//! Thread-per-core connection handling: the accept loops hand each
//! connection to one of N worker threads, each running its own
//! single-threaded tokio runtime with its own upstream connection pools.
//! A connection, its upstream connections and every wakeup between them
//! stay on one thread: no cross-thread wakeups per request, which is what
//! dominated the proxy's CPU time on a work-stealing runtime.
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("failed to start worker thread {index}")]
    Start {
        index: usize,
        #[source]
        source: std::io::Error,
    },
}

pub struct Workers {
    senders: Mutex<Vec<mpsc::UnboundedSender<Task>>>,
    count: usize,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `count` worker threads; they run until [`Workers::close`].
    pub fn start(count: usize) -> Result<Self, WorkerError> {
        let count = count.max(1);
        let mut senders = Vec::with_capacity(count);
        for index in 0..count {
            let (tx, rx) = mpsc::unbounded_channel::<Task>();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| WorkerError::Start { index, source })?;
            std::thread::Builder::new()
                .name(format!("faultline-worker-{index}"))
                .spawn(move || runtime.block_on(run_worker(index, rx)))
                .map_err(|source| WorkerError::Start { index, source })?;
            senders.push(tx);
        }
        Ok(Workers {
            senders: Mutex::new(senders),
            count,
            next: AtomicUsize::new(0),
        })
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Runs `make(worker index)` on the next worker (round robin). After
    /// [`Workers::close`] the task is dropped, closing its connection.
    pub fn dispatch<F>(&self, make: impl FnOnce(usize) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.count;
        if let Ok(senders) = self.senders.lock()
            && let Some(sender) = senders.get(index)
        {
            // A send error means the worker is gone: the task (and its
            // connection) is dropped, which closes it.
            let _ = sender.send(Box::pin(make(index)));
        }
    }

    /// Stops the workers once their queues are empty; their runtimes drop
    /// whatever tasks remain (idle upstream connections).
    pub fn close(&self) {
        if let Ok(mut senders) = self.senders.lock() {
            senders.clear();
        }
    }
}

async fn run_worker(index: usize, mut tasks: mpsc::UnboundedReceiver<Task>) {
    while let Some(task) = tasks.recv().await {
        tokio::spawn(task);
    }
    tracing::debug!(index, "worker stopped");
}
