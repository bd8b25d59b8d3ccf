//! The audit log's append path on threads that never need the interpreter lock.
//!
//! `_log.AuditLog.append` canonicalises a record (Python) and hands its bytes here.
//! Without the interpreter lock, the calling thread then
//!
//! 1. *sequences* the record under this object's mutex: gives it the next index and
//!    chains it to the record before it (leaf data and leaf hash, a few µs);
//! 2. signs it and renders its line outside the mutex, so the appending threads sign
//!    on both cores at once (an Ed25519 signature is most of a record's cost);
//! 3. waits until the committer thread has written it (and, with a syncer, until it
//!    is fsynced).
//!
//! The committer thread writes the signed lines in index order, as many as are ready,
//! with one `write(2)` under the log's `flock` (`audit::write_lines`), and tells the
//! syncer how far the file is written. If other writers (processes) appended records
//! meanwhile, it takes them in under the lock as `_log._catch_up` does (`foreign.rs`)
//! and chains and signs the batch again after them.
//!
//! Python stays the reference and keeps every rare case. A batch that needs a
//! checkpoint, or finds a line in the file that only Python takes in (another writer's
//! checkpoint, or anything that does not chain), is *handed back*: one
//! waiting appender returns to Python, pauses the committer and takes every record not
//! yet written (`pause(take=True)`; their signatures, made for a chain position that
//! may no longer hold, are dropped), commits them with `_log.AuditLog._commit`
//! (catch-up, checkpoint), and resumes the committer with the chain as it left it.
//! Checkpoints on a timer, key rotation and closing pause it the same way. Python's
//! Merkle tree takes the leaf hashes written here whenever it pauses the committer.
//!
//! Invariants:
//! * `chain` is the file as this writer last wrote or read it (tree size `index`,
//!   newest leaf hash `prev`, size `end`); `entries[i]` is record `chain.index + i`,
//!   chained to `entries[i - 1]` (or to `chain.prev`); numbers (`seq`) rise with the
//!   index, so "every record below `written_seq` is written" holds;
//! * an entry's line, once set, was signed for exactly that position and key; when the
//!   position or key may have changed (another writer, Python's commit, rotation), all
//!   entries go back to `unsequenced` (`epoch` moves on, so a signature still being made
//!   for the old position is dropped) and are chained again;
//! * while Python has the committer paused, only Python writes; a failed write or a
//!   failure Python reports fails every waiting and later append (fail closed).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::audit::{self, Leaf, RecordKey, Written};
use crate::sync::Syncer;
use crate::worker::OnExit;

const ALG: &str = "ed25519"; // the only algorithm RecordKey signs

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
    /// Python must commit the records not yet written (`pause(take=True)`); then wait.
    HandBack,
    Failed(Failure),
    /// The committer was closed before the record was written.
    Closed,
}

#[derive(Clone, Copy)]
pub struct Chain {
    pub index: u64,
    pub prev: [u8; 32],
    pub end: u64,
    pub sealed: u64,
}

struct Entry {
    seq: u64,
    body: Vec<u8>,
    leaf: Leaf,
    line: Option<Vec<u8>>,
    // signed by the committer thread (an entry chained again after a hand-back, or
    // while no appender thread is signing it)
    by_committer: bool,
}

type Key = (Arc<RecordKey>, String); // and its key id

struct State {
    chain: Chain,
    entries: VecDeque<Entry>,
    unsequenced: VecDeque<(u64, Vec<u8>)>, // waiting to be chained, in number order
    epoch: u64,
    sequencing: bool, // false while Python holds the records (a hand-back or a pause)
    next_seq: u64,
    written_seq: u64, // every record numbered below this is in the file (chain.end)
    new_hashes: Vec<u8>,
    unsealed_since: Option<Instant>,
    key: Option<Key>, // None: every batch is handed back
    busy: bool,
    paused: bool,
    hand_back: bool, // records wait for Python
    handed_to: bool, // ... and an appender has been sent to do it
    failure: Option<Failure>,
    stop: bool,
    exited: bool,
}

impl State {
    fn next_prev(&self) -> [u8; 32] {
        self.entries.back().map_or(self.chain.prev, |e| e.leaf.hash)
    }

    /// Chains `body` after the newest entry; its index.
    fn sequence(&mut self, key_id: &str, seq: u64, body: Vec<u8>, by_committer: bool) -> u64 {
        let index = self.chain.index + self.entries.len() as u64;
        let leaf = audit::leaf(ALG, key_id, index, &self.next_prev(), &body);
        self.entries.push_back(Entry {
            seq,
            body,
            leaf,
            line: None,
            by_committer,
        });
        index
    }

    /// Every entry back to `unsequenced` (before the records that came later): their
    /// position is no longer known to hold.
    fn unchain(&mut self) {
        self.epoch += 1;
        while let Some(entry) = self.entries.pop_back() {
            self.unsequenced.push_front((entry.seq, entry.body));
        }
    }

    /// Chains the records waiting in `unsequenced`, for the committer to sign.
    fn sequence_waiting(&mut self) {
        let Some((_, key_id)) = self.key.clone() else {
            return;
        };
        while let Some((seq, body)) = self.unsequenced.pop_front() {
            self.sequence(&key_id, seq, body, true);
        }
    }
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
    // a poisoned lock still guards consistent state: nothing panics mid-update
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn wait<'a>(cv: &Condvar, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
    cv.wait(guard).unwrap_or_else(|e| e.into_inner())
}

/// What Python gets when it pauses the committer: the chain as the file holds it,
/// the leaf hashes written since the last pause, and (`take`) the records not yet
/// written, in order, with the number of the last one.
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
        Committer {
            fd,
            every,
            syncer,
            state: Mutex::new(State {
                chain,
                entries: VecDeque::new(),
                unsequenced: VecDeque::new(),
                epoch: 0,
                sequencing: true,
                next_seq: 0,
                written_seq: 0,
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

    /// Chains, signs and queues `body`, then waits for it: see `Outcome`. The
    /// record's number comes back for a later `wait` after a hand-back.
    pub fn append(&self, body: Vec<u8>) -> (u64, Outcome) {
        let mut state = lock(&self.state);
        if let Some(f) = state.failure {
            return (0, Outcome::Failed(f));
        }
        if state.stop || state.exited {
            return (0, Outcome::Closed);
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        let key = match &state.key {
            Some(key) if state.sequencing && state.unsequenced.is_empty() => key.clone(),
            _ => {
                // Python holds the chain, or records wait to be chained before this one
                state.unsequenced.push_back((seq, body));
                self.work.notify_one();
                return (seq, self.wait_locked(state, seq));
            }
        };
        let index = state.sequence(&key.1, seq, body, false);
        let epoch = state.epoch;
        let (leaf, body) = {
            let entry = &state.entries[(index - state.chain.index) as usize];
            // copies (~2 KB) so the signature is made without the mutex
            (entry.leaf.clone(), entry.body.clone())
        };
        drop(state);
        let mut line = Vec::with_capacity(body.len() + 400);
        audit::sign_line(&mut line, &key.0, ALG, &key.1, &leaf, &body);
        let mut state = lock(&self.state);
        if state.epoch == epoch {
            // still at that position (entries leave only once written, or all at once
            // with the epoch moving on)
            let at = (index - state.chain.index) as usize;
            state.entries[at].line = Some(line);
            self.work.notify_one();
        }
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
                break state.chain.end;
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
        let _exit = OnExit(|| {
            lock(&self.state).exited = true;
            self.done.notify_all();
        });
        let mut state = lock(&self.state);
        loop {
            if state.failure.is_some() || state.stop {
                break; // records not yet written stay so: their appends fail
            }
            if state.paused || state.hand_back {
                state = wait(&self.work, state);
                continue;
            }
            let Some(key) = state.key.clone() else {
                // no native key (rotated to one Python signs): every record to Python
                if state.unsequenced.is_empty() && state.entries.is_empty() {
                    state = wait(&self.work, state);
                } else {
                    state.hand_back = true;
                    self.done.notify_all();
                }
                continue;
            };
            if state.sequencing {
                state.sequence_waiting();
            }
            // the records chained for the committer to sign, at the front
            let unsigned: Vec<usize> = state
                .entries
                .iter()
                .enumerate()
                .take_while(|(_, e)| e.line.is_some() || e.by_committer)
                .filter(|(_, e)| e.line.is_none())
                .map(|(i, _)| i)
                .collect();
            if !unsigned.is_empty() {
                self.sign_here(state, &key, &unsigned);
                state = lock(&self.state);
                continue;
            }
            let ready = state
                .entries
                .iter()
                .take_while(|e| e.line.is_some())
                .count();
            if ready == 0 {
                state = wait(&self.work, state);
                continue;
            }
            if state.chain.index + ready as u64 - state.chain.sealed >= self.every {
                state.hand_back = true; // a checkpoint is due: Python writes it
                self.done.notify_all();
                continue;
            }
            let mut lines = Vec::new();
            let mut bodies = Vec::with_capacity(ready); // to chain again after others' lines
            for entry in state.entries.iter().take(ready) {
                lines.extend_from_slice(entry.line.as_deref().unwrap_or_default());
                bodies.push(entry.body.clone());
            }
            let chain = state.chain;
            state.busy = true;
            drop(state);

            let count = ready as u64;
            let written = audit::write_lines(
                self.fd,
                chain.end,
                chain.index,
                &chain.prev,
                &lines,
                |index, prev| {
                    // another writer appended records: this batch comes after them
                    // (unless a checkpoint is due by then: Python writes it)
                    if index + count - chain.sealed >= self.every {
                        return None;
                    }
                    let slices: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
                    Some(audit::commit(&key.0, ALG, &key.1, index, prev, &slices))
                },
            );

            state = lock(&self.state);
            state.busy = false;
            match written {
                Written::Done {
                    bytes,
                    caught_up,
                    rechained,
                } => {
                    let mut last = 0;
                    for _ in 0..ready {
                        let entry = state.entries.pop_front().expect("ready entries");
                        if caught_up.is_none() {
                            state.new_hashes.extend_from_slice(&entry.leaf.hash);
                            state.chain.prev = entry.leaf.hash;
                        }
                        last = entry.seq;
                    }
                    match (caught_up, rechained) {
                        (Some(others), Some(ours)) => {
                            state.new_hashes.extend_from_slice(&others.hashes);
                            state.new_hashes.extend_from_slice(&ours);
                            state.chain.prev.copy_from_slice(&ours[ours.len() - 32..]);
                            state.chain.index = others.index + count;
                            state.chain.end = others.end + bytes as u64;
                            // the records chained since were chained to the old position
                            state.unchain();
                        }
                        _ => {
                            state.chain.index += count;
                            state.chain.end += bytes as u64;
                        }
                    }
                    state.written_seq = state.written_seq.max(last + 1);
                    if state.unsealed_since.is_none() {
                        state.unsealed_since = Some(Instant::now());
                    }
                    if let Some(syncer) = &self.syncer {
                        syncer.mark_written(state.chain.end, count);
                    }
                }
                Written::Moved => {
                    // another writer appended what Python takes in (or a checkpoint is
                    // due after its records): Python commits this batch
                    state.unchain();
                    state.sequencing = false;
                    state.hand_back = true;
                }
                Written::Failed(e) => state.failure = Some(Failure::Os(e)),
            }
            self.done.notify_all();
        }
    }

    /// Signs the entries at `positions` (chained for the committer) outside the mutex.
    fn sign_here(&self, state: MutexGuard<'_, State>, key: &Key, positions: &[usize]) {
        let epoch = state.epoch;
        let jobs: Vec<(usize, Leaf, Vec<u8>)> = positions
            .iter()
            .map(|&i| {
                let e = &state.entries[i];
                (i, e.leaf.clone(), e.body.clone())
            })
            .collect();
        drop(state);
        let lines: Vec<(usize, Vec<u8>)> = jobs
            .into_iter()
            .map(|(i, leaf, body)| {
                let mut line = Vec::with_capacity(body.len() + 400);
                audit::sign_line(&mut line, &key.0, ALG, &key.1, &leaf, &body);
                (i, line)
            })
            .collect();
        let mut state = lock(&self.state);
        if state.epoch == epoch {
            for (i, line) in lines {
                state.entries[i].line = Some(line);
            }
        }
    }

    /// Stops the committer between batches and returns the chain as the file holds
    /// it; with `take`, also every record not yet written, which Python commits
    /// before `resume` (and nothing is chained meanwhile).
    pub fn pause(&self, take: bool) -> Paused {
        let mut state = lock(&self.state);
        state.paused = true;
        while state.busy {
            state = wait(&self.done, state);
        }
        let mut bodies = Vec::new();
        let mut last_seq = None;
        if take {
            state.unchain();
            state.sequencing = false;
            for (seq, body) in state.unsequenced.drain(..) {
                last_seq = Some(seq);
                bodies.push(body);
            }
            state.hand_back = false;
            state.handed_to = false;
        }
        Paused {
            chain: state.chain,
            new_hashes: std::mem::take(&mut state.new_hashes),
            bodies,
            last_seq,
        }
    }

    /// Continues from the chain Python leaves (it may have written records and
    /// checkpoints, and read other writers' lines); `written_through`: the last record
    /// Python took, now in the file.
    pub fn resume(&self, chain: Chain, written_through: Option<u64>) {
        let mut state = lock(&self.state);
        if (chain.index, chain.prev) != (state.chain.index, state.chain.prev) {
            state.unchain(); // chained to a position that no longer holds
        }
        if chain.sealed >= chain.index {
            state.unsealed_since = None;
        }
        state.chain = chain;
        if let Some(seq) = written_through {
            state.written_seq = state.written_seq.max(seq + 1);
        }
        state.sequencing = true;
        // a hand-back no appender has taken yet is retried with the new chain
        if !state.handed_to {
            state.hand_back = false;
        }
        state.paused = false;
        if let Some(syncer) = &self.syncer {
            syncer.mark_written(chain.end, 0);
        }
        self.work.notify_one();
        self.done.notify_all();
    }

    /// Signs with `key` from now on (None: every record is handed back to Python);
    /// call while paused. Records chained for the old key are chained again.
    pub fn set_key(&self, key: Option<Key>) {
        let mut state = lock(&self.state);
        state.unchain();
        state.key = key;
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
