//! The audit log's append path on a thread that never needs the interpreter lock.
//!
//! `_log.AuditLog.append` canonicalises a record (Python) and hands its bytes here;
//! the calling thread then waits, without the interpreter lock, until the record is
//! written (and, with a syncer, fsynced). The committer thread takes every queued
//! record as one batch: under the log's `flock` it checks that no other writer
//! appended, chains, signs and writes the batch (`audit::write_batch`), and tells
//! the syncer how far the file is written. With 8 writer threads in Python each append
//! used to hand the interpreter lock on four or five times (queue, io lock, flock,
//! write, fsync); now once.
//!
//! Python stays the reference and keeps every rare case: a batch that needs a
//! checkpoint, or finds lines of another writer in the file, is *handed back*: one
//! waiting appender returns to Python, pauses the committer, takes the queue and
//! commits it with `_log.AuditLog._commit` (catch-up, checkpoint), then resumes the
//! committer with the chain as it left it. Checkpoints on a timer, key rotation and
//! closing pause it the same way. Python's Merkle tree takes the leaf hashes written
//! here whenever it pauses the committer.
//!
//! Invariants (as `_log`'s): a record's append returns only after its line is in the
//! file (and synced when there is a syncer); the chain state here (`index`, `prev`,
//! `end`) is the file's as of this writer's last write while the committer runs, and
//! Python's while it is paused; a failed write or a failure Python reports fails
//! every waiting and later append (fail closed).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::audit::{self, RecordKey, Written};
use crate::sync::Syncer;

/// Why appends fail once the committer failed.
#[derive(Clone, Copy)]
pub enum Failure {
    /// A system call on the log failed (errno).
    Os(i32),
    /// Python failed the log (its own commit raised); it holds the reason.
    Python,
}

/// What a waiting appender is told.
pub enum Outcome {
    /// The record is written (and synced, with a syncer).
    Done,
    /// Python must commit the queue (`pause(take=True)`); then wait again.
    HandBack,
    Failed(Failure),
    /// The committer was closed before the record was written.
    Closed,
}

pub struct Chain {
    pub index: u64,
    pub prev: [u8; 32],
    pub end: u64,
    pub sealed: u64,
}

struct State {
    chain: Chain,
    queue: VecDeque<(u64, Vec<u8>)>,
    next_seq: u64,
    written_seq: u64, // every record numbered below this is in the file ...
    written_end: u64, // ... which ends here
    new_hashes: Vec<u8>,
    unsealed_since: Option<Instant>,
    key: Option<(Arc<RecordKey>, String)>, // and its key id; None: every batch handed back
    busy: bool,
    paused: bool,
    hand_back: bool, // the queue's first batch waits for Python
    handed_to: bool, // ... and an appender has been sent to do it
    failure: Option<Failure>,
    stop: bool,
    exited: bool,
}

pub struct Committer {
    fd: i32,
    every: u64,
    syncer: Option<Arc<Syncer>>,
    state: Mutex<State>,
    work: Condvar, // the committer waits here
    done: Condvar, // appenders and pausers wait here
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn wait<'a>(cv: &Condvar, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
    cv.wait(guard).unwrap_or_else(|e| e.into_inner())
}

/// What Python gets when it pauses the committer: the chain as the file holds it,
/// the leaf hashes written since the last pause, and (`take`) the queued records.
pub struct Paused {
    pub chain: Chain,
    pub new_hashes: Vec<u8>,
    pub bodies: Vec<Vec<u8>>,
    pub last_seq: Option<u64>,
}

impl Committer {
    pub fn new(
        fd: i32,
        key: Arc<RecordKey>,
        key_id: String,
        every: u64,
        chain: Chain,
        syncer: Option<Arc<Syncer>>,
    ) -> Self {
        let end = chain.end;
        Committer {
            fd,
            every,
            syncer,
            state: Mutex::new(State {
                chain,
                queue: VecDeque::new(),
                next_seq: 0,
                written_seq: 0,
                written_end: end,
                new_hashes: Vec::new(),
                unsealed_since: None,
                key: Some((key, key_id)),
                busy: false,
                paused: false,
                hand_back: false,
                handed_to: false,
                failure: None,
                stop: false,
                exited: false,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
        }
    }

    /// Queues `body` and waits for it: see `Outcome`. The record's number comes back
    /// for a later `wait` after a hand-back.
    pub fn append(&self, body: Vec<u8>) -> (u64, Outcome) {
        let mut state = lock(&self.state);
        if let Some(f) = state.failure {
            return (0, Outcome::Failed(f));
        }
        if state.stop {
            return (0, Outcome::Closed);
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        state.queue.push_back((seq, body));
        self.work.notify_one();
        (seq, self.wait_locked(state, seq))
    }

    pub fn wait(&self, seq: u64) -> Outcome {
        let state = lock(&self.state);
        self.wait_locked(state, seq)
    }

    fn wait_locked(&self, mut state: MutexGuard<'_, State>, seq: u64) -> Outcome {
        let end = loop {
            if let Some(f) = state.failure {
                return Outcome::Failed(f);
            }
            if state.written_seq > seq {
                break state.written_end;
            }
            if state.hand_back && !state.handed_to {
                state.handed_to = true;
                return Outcome::HandBack;
            }
            if state.exited {
                return Outcome::Closed;
            }
            state = wait(&self.done, state);
        };
        drop(state);
        match &self.syncer {
            None => Outcome::Done,
            Some(syncer) => match syncer.wait(end) {
                Ok(()) => Outcome::Done,
                Err(e) => Outcome::Failed(Failure::Os(e)),
            },
        }
    }

    /// The committer thread's loop.
    pub fn run(&self) {
        // However the loop ends (a panic included), waiters stop waiting.
        struct Exit<'a>(&'a Committer);
        impl Drop for Exit<'_> {
            fn drop(&mut self) {
                lock(&self.0.state).exited = true;
                self.0.done.notify_all();
            }
        }
        let _exit = Exit(self);
        let mut state = lock(&self.state);
        loop {
            if state.failure.is_some() || state.stop {
                break; // records still queued are not written: their appends fail
            }
            if state.paused || state.hand_back || state.queue.is_empty() {
                state = wait(&self.work, state);
                continue;
            }
            let count = state.queue.len() as u64;
            let (key, key_id) = match &state.key {
                Some(key) if state.chain.index + count - state.chain.sealed < self.every => {
                    key.clone()
                }
                _ => {
                    // a checkpoint is due (Python writes it), or no native key
                    state.hand_back = true;
                    self.done.notify_all();
                    continue;
                }
            };
            let batch: Vec<(u64, Vec<u8>)> = state.queue.drain(..).collect();
            let (index, prev, end) = (state.chain.index, state.chain.prev, state.chain.end);
            state.busy = true;
            drop(state);

            let bodies: Vec<&[u8]> = batch.iter().map(|(_, b)| &b[..]).collect();
            let written = audit::write_batch(
                self.fd, end, &key, "ed25519", &key_id, index, &prev, &bodies,
            );

            state = lock(&self.state);
            state.busy = false;
            match written {
                Written::Done(n, hashes) => {
                    let last = batch.last().map_or(0, |(seq, _)| *seq);
                    state.chain.index += count;
                    state
                        .chain
                        .prev
                        .copy_from_slice(&hashes[hashes.len() - 32..]);
                    state.chain.end += n as u64;
                    state.new_hashes.extend_from_slice(&hashes);
                    state.written_seq = state.written_seq.max(last + 1);
                    state.written_end = state.chain.end;
                    if state.unsealed_since.is_none() {
                        state.unsealed_since = Some(Instant::now());
                    }
                    if let Some(syncer) = &self.syncer {
                        syncer.mark_written(state.chain.end, count);
                    }
                }
                Written::Moved => {
                    // another writer appended: Python takes its lines in first
                    for item in batch.into_iter().rev() {
                        state.queue.push_front(item);
                    }
                    state.hand_back = true;
                }
                Written::Failed(e) => state.failure = Some(Failure::Os(e)),
            }
            self.done.notify_all();
        }
    }

    /// Stops the committer between batches and returns the chain as the file holds
    /// it; with `take`, also the queued records, which Python commits before `resume`.
    pub fn pause(&self, take: bool) -> Paused {
        let mut state = lock(&self.state);
        state.paused = true;
        while state.busy {
            state = wait(&self.done, state);
        }
        let mut bodies = Vec::new();
        let mut last_seq = None;
        if take {
            for (seq, body) in state.queue.drain(..) {
                last_seq = Some(seq);
                bodies.push(body);
            }
            state.hand_back = false;
            state.handed_to = false;
        }
        Paused {
            chain: Chain {
                index: state.chain.index,
                prev: state.chain.prev,
                end: state.chain.end,
                sealed: state.chain.sealed,
            },
            new_hashes: std::mem::take(&mut state.new_hashes),
            bodies,
            last_seq,
        }
    }

    /// Continues from the chain Python leaves (it may have written, and read other
    /// writers' lines); `written_through`: the last record of a taken queue, now in
    /// the file.
    pub fn resume(&self, chain: Chain, written_through: Option<u64>) {
        let mut state = lock(&self.state);
        if chain.sealed >= chain.index {
            state.unsealed_since = None;
        }
        let end = chain.end;
        state.chain = chain;
        if let Some(seq) = written_through {
            state.written_seq = state.written_seq.max(seq + 1);
        }
        state.written_end = end;
        // a hand-back no appender has taken yet is retried with the new chain
        if !state.handed_to {
            state.hand_back = false;
        }
        state.paused = false;
        if let Some(syncer) = &self.syncer {
            syncer.mark_written(end, 0);
        }
        self.work.notify_one();
        self.done.notify_all();
    }

    /// Fails every waiting and later append (Python failed the log).
    pub fn fail(&self) {
        let mut state = lock(&self.state);
        state.failure.get_or_insert(Failure::Python);
        state.paused = false;
        self.work.notify_one();
        self.done.notify_all();
    }

    /// Ends the thread between batches; appends not yet written fail as closed.
    pub fn stop(&self) {
        let mut state = lock(&self.state);
        state.stop = true;
        state.paused = false;
        self.work.notify_one();
        self.done.notify_all();
    }

    /// Signs with `key` from now on (None: every batch is handed back to Python);
    /// call while paused.
    pub fn set_key(&self, key: Option<(Arc<RecordKey>, String)>) {
        lock(&self.state).key = key;
    }

    /// Seconds since the oldest record written here that no checkpoint covers yet.
    pub fn unsealed_age(&self) -> Option<f64> {
        lock(&self.state)
            .unsealed_since
            .map(|t| t.elapsed().as_secs_f64())
    }

    /// The tree size as far as this writer has written or read.
    pub fn size(&self) -> u64 {
        lock(&self.state).chain.index
    }
}
