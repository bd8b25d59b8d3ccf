//! The audit log's background threads: one named thread per loop, joined without the
//! interpreter lock, and the guard that tells waiters a loop ended (a panic included).

use std::sync::Mutex;
use std::thread::JoinHandle;

use pyo3::prelude::*;

/// A thread running one loop until told to stop.
pub struct Worker(Mutex<Option<JoinHandle<()>>>);

impl Worker {
    pub fn spawn(name: &str, run: impl FnOnce() + Send + 'static) -> std::io::Result<Self> {
        let thread = std::thread::Builder::new().name(name.into()).spawn(run)?;
        Ok(Worker(Mutex::new(Some(thread))))
    }

    /// Waits for the thread to end (the caller has told it to stop); once.
    pub fn join(&self, py: Python<'_>) {
        let thread = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            py.detach(|| {
                let _ = thread.join();
            });
        }
    }
}

/// Runs its closure when dropped: however a loop ends, its waiters hear of it.
pub struct OnExit<F: FnMut()>(pub F);

impl<F: FnMut()> Drop for OnExit<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}
