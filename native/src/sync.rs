//! Group commit for the audit log (`fsync="always"`), on a thread of its own that never
//! needs the interpreter lock.
//!
//! `_log.AuditLog` writes a batch, then waits here until its bytes are fsynced. The
//! syncer thread runs fsyncs back to back while anything written is unsynced; each one
//! covers every byte written before it began, so the writers that queued during one
//! fsync share the next. In Python the thread that started the next fsync first had to
//! win the interpreter lock from the threads signing and writing; between fsyncs the
//! disk sat idle about half of the time (measured: 8 writer threads, fsyncs busy 51 %).
//!
//! Writer *processes* of one file share fsyncs through the side file `<log>.synced`
//! exactly as `_log._SharedSync` does (the Python class is the reference, and stays
//! the path without this module): under the side file's `flock`, a writer skips its
//! fsync when the side file already counts its bytes as synced, else fsyncs and stores
//! how far that fsync reached (here: the end of this process's own lines, below which
//! every byte was whole before the fsync began). A side file that fails is dropped and
//! the syncer fsyncs alone, as the Python class does.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::worker::OnExit;

const SIDE_LEN: usize = 24; // st_dev, st_ino of the log, bytes synced: three u64, little-endian

struct State {
    written: u64,         // bytes of the log known written (whole lines)
    synced: u64,          // ... and known on stable storage
    written_records: u64, // records of this process written ...
    synced_records: u64,  // ... and synced (for the gathering below)
    error: Option<i32>,
    stop: bool,
    exited: bool, // the thread has ended (after syncing what was written before stop)
    fsyncs: u64,
    fsync_time: Duration,  // spent in this process's fsyncs ...
    gather_time: Duration, // ... and gathering before them
}

struct Side {
    fd: i32,
    dev: u64,
    ino: u64,
    // the log again, through an open file description of its own: its flock excludes
    // this process's committer too, so the size read under it is whole (see `settled`)
    probe: Option<i32>,
}

pub struct Syncer {
    fd: i32,
    state: Mutex<State>,
    side: Mutex<Option<Side>>,
    work: Condvar,
    done: Condvar,
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // a poisoned lock still guards consistent numbers: nothing here panics mid-update
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Side {
    /// How far the log is whole, as `_log.AuditLog._settled_size` learns it without
    /// waiting: its size read under its flock when the flock is free (no writer of any
    /// process is between a write and its cut-back), else `written_end`, where this
    /// process's own lines end. Every byte below it was in the file before the fsync
    /// that follows began, so that fsync covers the other processes' lines too.
    fn settled(&self, written_end: u64) -> u64 {
        let Some(probe) = self.probe else {
            return written_end;
        };
        if unsafe { libc::flock(probe, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return written_end;
        }
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let size = if unsafe { libc::fstat(probe, &mut st) } == 0
            && (st.st_dev as u64, st.st_ino as u64) == (self.dev, self.ino)
        {
            st.st_size as u64
        } else {
            0
        };
        unsafe { libc::flock(probe, libc::LOCK_UN) };
        written_end.max(size)
    }

    fn close(&self) {
        unsafe { libc::close(self.fd) };
        if let Some(probe) = self.probe {
            unsafe { libc::close(probe) };
        }
    }

    fn synced(&self) -> Result<u64, i32> {
        let mut raw = [0u8; SIDE_LEN];
        let n = unsafe { libc::pread(self.fd, raw.as_mut_ptr().cast(), SIDE_LEN, 0) };
        if n < 0 {
            return Err(errno());
        }
        if n as usize != SIDE_LEN {
            return Ok(0);
        }
        let word = |i: usize| u64::from_le_bytes(raw[8 * i..8 * i + 8].try_into().unwrap());
        Ok(if (word(0), word(1)) == (self.dev, self.ino) {
            word(2)
        } else {
            0
        })
    }

    fn store(&self, synced: u64) -> Result<(), i32> {
        let mut raw = [0u8; SIDE_LEN];
        raw[..8].copy_from_slice(&self.dev.to_le_bytes());
        raw[8..16].copy_from_slice(&self.ino.to_le_bytes());
        raw[16..].copy_from_slice(&synced.to_le_bytes());
        let n = unsafe { libc::pwrite(self.fd, raw.as_ptr().cast(), SIDE_LEN, 0) };
        if n as usize == SIDE_LEN {
            Ok(())
        } else {
            Err(errno())
        }
    }
}

enum SideOutcome {
    Synced(bool),   // the target is synced (true: by an fsync of this process)
    LogFailed(i32), // the log's fsync failed
    SideFailed,     // the side file failed before any fsync: sync alone
}

impl Syncer {
    pub fn new(fd: i32, side_fd: Option<i32>, probe: Option<i32>, dev: u64, ino: u64) -> Self {
        Syncer {
            fd,
            state: Mutex::new(State {
                written: 0,
                synced: 0,
                written_records: 0,
                synced_records: 0,
                error: None,
                stop: false,
                exited: false,
                fsyncs: 0,
                fsync_time: Duration::ZERO,
                gather_time: Duration::ZERO,
            }),
            side: Mutex::new(side_fd.map(|fd| Side {
                fd,
                dev,
                ino,
                probe,
            })),
            work: Condvar::new(),
            done: Condvar::new(),
        }
    }

    /// Blocks until the log's bytes below `end` are fsynced; the errno of a failed
    /// fsync (then and ever after).
    pub fn wait(&self, end: u64) -> Result<(), i32> {
        let mut state = lock(&self.state);
        if end > state.written {
            state.written = end;
            self.work.notify_one();
        }
        loop {
            if let Some(e) = state.error {
                return Err(e);
            }
            if state.synced >= end {
                return Ok(());
            }
            if state.exited {
                return Err(libc::ECANCELED);
            }
            state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The log's bytes below `end` are written (whole lines): the next fsync covers
    /// them.
    pub fn mark_written(&self, end: u64, records: u64) {
        let mut state = lock(&self.state);
        state.written_records += records;
        if end > state.written || records > 0 {
            // never lower: a gathering syncer counts records, and bytes only grow
            state.written = state.written.max(end);
            self.work.notify_one();
        }
    }

    /// (fsyncs run by this process, seconds spent in them, seconds spent gathering)
    pub fn stats(&self) -> (u64, f64, f64) {
        let state = lock(&self.state);
        (
            state.fsyncs,
            state.fsync_time.as_secs_f64(),
            state.gather_time.as_secs_f64(),
        )
    }

    pub fn stop(&self) {
        lock(&self.state).stop = true;
        self.work.notify_all();
        self.done.notify_all();
    }

    /// The syncer thread's loop: fsync while written bytes are unsynced; after `stop`,
    /// once what was written is synced (or an fsync failed), it ends.
    ///
    /// Gathering: when an fsync covered several records, their writers are about to
    /// append again, and the next fsync waits (at most as long as that fsync took)
    /// until as many more records are written. Without it, concurrent writers split
    /// into two groups that alternate between fsyncs, each append waiting for two
    /// (measured with 8 writer threads: 3.9 records per fsync; with it ~7); a single
    /// writer (one record per fsync) never waits. PostgreSQL's `commit_delay` with
    /// `commit_siblings` is the same idea.
    pub fn run(&self) {
        let _exit = OnExit(|| {
            lock(&self.state).exited = true;
            self.done.notify_all();
        });
        let mut gather: Option<(u64, Duration)> = None;
        loop {
            let (target, target_records) = {
                let mut state = lock(&self.state);
                while state.written <= state.synced && !state.stop && state.error.is_none() {
                    state = self.work.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                if state.error.is_some() || state.written <= state.synced {
                    return;
                }
                if let Some((want, limit)) = gather.take() {
                    let began = Instant::now();
                    let deadline = began + limit;
                    while state.written_records < want && !state.stop {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        state = self
                            .work
                            .wait_timeout(state, left)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    state.gather_time += began.elapsed();
                }
                (state.written, state.written_records)
            };
            let started = Instant::now();
            let result = self.sync_through(target);
            let took = started.elapsed();
            let mut state = lock(&self.state);
            match result {
                Ok(fsynced) => {
                    state.synced = state.synced.max(target);
                    state.fsyncs += u64::from(fsynced);
                    state.fsync_time += took;
                    let covered = target_records - state.synced_records;
                    state.synced_records = target_records;
                    if covered >= 2 {
                        gather = Some((state.written_records + covered, took));
                    }
                }
                Err(e) => state.error = Some(e),
            }
            self.done.notify_all();
        }
    }

    /// Ok(whether this process ran an fsync) once the bytes below `target` are synced.
    fn sync_through(&self, target: u64) -> Result<bool, i32> {
        let mut side = lock(&self.side);
        if let Some(s) = side.as_ref() {
            match self.shared_sync(s, target) {
                SideOutcome::Synced(ours) => return Ok(ours),
                SideOutcome::LogFailed(e) => return Err(e),
                SideOutcome::SideFailed => {
                    s.close();
                    *side = None;
                }
            }
        }
        drop(side);
        self.fsync().map(|()| true)
    }

    fn shared_sync(&self, side: &Side, target: u64) -> SideOutcome {
        if unsafe { libc::flock(side.fd, libc::LOCK_EX) } != 0 {
            return SideOutcome::SideFailed;
        }
        let outcome = match side.synced() {
            Err(_) => SideOutcome::SideFailed,
            Ok(already) if already >= target => SideOutcome::Synced(false),
            Ok(already) => {
                let claim = side.settled(target);
                match self.fsync() {
                    Err(e) => SideOutcome::LogFailed(e),
                    // the fsync succeeded: a side file that fails now only shares less
                    Ok(()) => {
                        let _ = side.store(claim.max(already));
                        SideOutcome::Synced(true)
                    }
                }
            }
        };
        unsafe { libc::flock(side.fd, libc::LOCK_UN) };
        outcome
    }

    fn fsync(&self) -> Result<(), i32> {
        loop {
            if unsafe { libc::fsync(self.fd) } == 0 {
                return Ok(());
            }
            let e = errno();
            if e != libc::EINTR {
                return Err(e);
            }
        }
    }

    pub fn close_side(&self) {
        if let Some(s) = lock(&self.side).take() {
            s.close();
        }
    }
}
