//! The committer thread: group commit of queued appends into the tail segment.
//!
//! Loop: wait for an append; collect more for up to `group_window` or `group_max_records`
//! records; write them with one vectored write per segment they go to (normally one); fsync
//! once; publish the new length to the reader; acknowledge each append. Rotation happens
//! between appends when the next one would take the tail past `segment_bytes`. With fsync, the
//! tail is kept zero-filled ahead of its data (`preallocate_bytes`), so a group's write is an
//! overwrite and its `fdatasync` journals nothing; the padding is cut when the segment is
//! sealed and when the committer stops.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use super::error::io_copy;
use super::format::{segment_header, sync_dir, SEGMENT_HEADER_LEN};
use super::records::Frame;
use super::state::{Appended, Counters, SegMeta, Shared};
use super::{Position, SpoolError};

/// A message to the committer.
pub(super) enum Msg {
    /// Store this.
    Append(Pending),
    /// Write what is queued, then exit.
    Stop,
}

/// One accepted append and whom to tell.
pub(super) struct Pending {
    pub frame: Frame,
    pub ack: Ack,
}

/// Where an append's outcome goes.
pub(super) enum Ack {
    /// An async appender.
    Async(tokio::sync::oneshot::Sender<Result<Appended, SpoolError>>),
    /// A blocking appender.
    Blocking(crossbeam_channel::Sender<Result<Appended, SpoolError>>),
}

impl Ack {
    fn send(self, outcome: Result<Appended, SpoolError>) {
        // An appender that went away (dropped future) does not care.
        match self {
            Self::Async(tx) => {
                let _ = tx.send(outcome);
            }
            Self::Blocking(tx) => {
                let _ = tx.send(outcome);
            }
        }
    }
}

/// Groups of at least this many bytes are not worth zeros ahead: a journal commit costs about
/// 0.1 ms per `fdatasync`, while writing and syncing 1 MiB of zeros costs a few ms of the
/// device, so preallocation pays off for groups of single events (a few kB: 20–200 of them
/// per stretch) and not for groups of batches (`/v1/events` ×100 makes groups of 100 kB and
/// more). Measured in benches/README ("the spool's synced writes as overwrites").
pub(super) const PREALLOCATE_BELOW: u64 = 32 * 1024;

/// Owns the tail segment's file handle.
pub(super) struct Committer {
    shared: Arc<Shared>,
    rx: Receiver<Msg>,
    /// Tail segment id.
    id: u64,
    file: File,
    /// Published (and, with fsync, durable) length of the tail. The file position is always
    /// here (every write is at the end of the data; a failed one is repaired to it).
    len: u64,
    /// The file holds zeros from `len` up to here (preallocated; `len` when none).
    zeroed: u64,
}

impl Committer {
    pub fn new(
        shared: Arc<Shared>,
        rx: Receiver<Msg>,
        id: u64,
        file: File,
        len: u64,
        zeroed: u64,
    ) -> Self {
        Self {
            shared,
            rx,
            id,
            file,
            len,
            zeroed: zeroed.max(len),
        }
    }

    /// Runs until [`Msg::Stop`], writing everything queued before it.
    pub fn run(mut self) {
        let window = self.shared.config.group_window;
        let max_records = self.shared.config.group_max_records;
        let mut stopping = false;
        while !stopping {
            let first = match self.rx.recv() {
                Ok(Msg::Append(p)) => p,
                Ok(Msg::Stop) | Err(_) => break,
            };
            let mut records = first.frame.count as usize;
            let mut group = vec![first];
            let deadline = Instant::now() + window;
            while records < max_records {
                let msg = match self.rx.try_recv() {
                    Ok(m) => m,
                    Err(TryRecvError::Disconnected) => {
                        stopping = true;
                        break;
                    }
                    // No window: write at once; the next group forms while this one is synced.
                    Err(TryRecvError::Empty) if window.is_zero() => break,
                    Err(TryRecvError::Empty) => match self.rx.recv_deadline(deadline) {
                        Ok(m) => m,
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            stopping = true;
                            break;
                        }
                    },
                };
                match msg {
                    Msg::Append(p) => {
                        records += p.frame.count as usize;
                        group.push(p);
                    }
                    Msg::Stop => {
                        stopping = true;
                        break;
                    }
                }
            }
            self.write_group(group);
        }
        // `closed` is set before `Stop` is sent and appends are queued under the same lock, so
        // nothing should be left; fail anything that is, rather than leave it waiting.
        while let Ok(msg) = self.rx.try_recv() {
            if let Msg::Append(p) = msg {
                self.fail(std::iter::once(p), |_| SpoolError::Closed);
            }
        }
        // A closed spool leaves no padding behind (recovery would accept it; tidier without).
        if let Err(e) = self.cut_padding(self.shared.fsync()) {
            tracing::warn!(error = %e, segment = self.id, "spool: could not cut the tail's zeros");
        }
    }

    /// Cuts the tail's preallocated zeros off the file.
    fn cut_padding(&mut self, sync: bool) -> io::Result<()> {
        if self.zeroed > self.len {
            self.file.set_len(self.len)?;
            self.zeroed = self.len;
            if sync {
                self.file.sync_data()?;
            }
        }
        Ok(())
    }

    /// With fsync and preallocation on: makes sure the file holds zeros up to `need`, writing
    /// the next stretch (of `preallocate_bytes`, never past the segment size unless `need` is)
    /// and syncing it, so that the group written next is an overwrite. Not for a group of
    /// [`PREALLOCATE_BELOW`] bytes or more: that one extends the file (see there).
    fn preallocate(&mut self, need: u64, group_bytes: u64) -> io::Result<()> {
        let step = self.shared.config.preallocate_bytes;
        if step == 0 || !self.shared.fsync() || need <= self.zeroed {
            return Ok(());
        }
        if group_bytes >= PREALLOCATE_BELOW {
            return Ok(());
        }
        let target = need
            .max(self.zeroed + step)
            .min(self.shared.config.segment_bytes.max(need));
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut at = self.zeroed.max(self.len);
        while at < target {
            let n = (target - at).min(ZEROS.len() as u64);
            self.file.write_all_at(&ZEROS[..n as usize], at)?;
            at += n;
        }
        self.file.sync_data()?;
        Counters::add(&self.shared.counters.zero_fills, 1);
        self.zeroed = target;
        Ok(())
    }

    /// Writes, syncs, publishes and acknowledges one group.
    fn write_group(&mut self, group: Vec<Pending>) {
        Counters::add(&self.shared.counters.commit_groups, 1);
        let segment_bytes = self.shared.config.segment_bytes;
        let mut queue = group.into_iter().peekable();
        while let Some(next_len) = queue.peek().map(|p| p.frame.len()) {
            let failed = self.shared.lock().failed.clone();
            if let Some(reason) = failed {
                self.fail(queue, |_| SpoolError::Failed(reason.clone()));
                return;
            }
            if self.len > SEGMENT_HEADER_LEN && self.len + next_len > segment_bytes {
                if let Err(e) = self.rotate() {
                    let path = self.shared.segment_path(self.id + 1);
                    tracing::error!(
                        error = %e,
                        path = %path.display(),
                        "spool: could not start a new segment"
                    );
                    self.fail(queue, |_| io_copy(&path, &e));
                    return;
                }
            }
            let mut run = Vec::new();
            let mut run_bytes = 0u64;
            while let Some(p) = queue.peek() {
                let len = p.frame.len();
                if !run.is_empty() && self.len + run_bytes + len > segment_bytes {
                    break;
                }
                run_bytes += len;
                run.extend(queue.next());
            }
            let started = Instant::now();
            if let Err(e) = self.write_run(&run) {
                let path = self.shared.segment_path(self.id);
                tracing::error!(
                    error = %e,
                    path = %path.display(),
                    "spool: write failed; appends refused"
                );
                self.fail(run.into_iter().chain(queue), |_| io_copy(&path, &e));
                self.repair();
                return;
            }
            if let Some(observe) = self.shared.on_commit.get() {
                observe(started.elapsed());
            }
            self.publish(run, run_bytes);
        }
    }

    /// Writes a run of frames at the end of the tail with one vectored write, then syncs.
    fn write_run(&mut self, run: &[Pending]) -> io::Result<()> {
        let bytes: u64 = run.iter().map(|p| p.frame.len()).sum();
        self.preallocate(self.len + bytes, bytes)?;
        let mut slices: Vec<IoSlice<'_>> = run.iter().map(|p| IoSlice::new(&p.frame.buf)).collect();
        write_all_vectored(&mut self.file, &mut slices)?;
        if self.shared.fsync() {
            self.file.sync_data()?;
            Counters::add(&self.shared.counters.fsyncs, 1);
        }
        Ok(())
    }

    /// Makes a written run visible to the reader and acknowledges it.
    fn publish(&mut self, run: Vec<Pending>, run_bytes: u64) {
        let base = self.len;
        self.len += run_bytes;
        // A large group may have written past the zeros (extending the file).
        self.zeroed = self.zeroed.max(self.len);
        let records: u64 = run.iter().map(|p| u64::from(p.frame.count)).sum();
        {
            let mut st = self.shared.lock();
            if let Some(m) = st.segments.get_mut(&self.id) {
                m.end = self.len;
                m.file_len = self.len;
            }
            st.disk_bytes += run_bytes;
            st.pending_bytes = st.pending_bytes.saturating_sub(run_bytes);
            st.unconsumed_records += records;
            if st.oldest_unconsumed_ms.is_none() {
                st.oldest_unconsumed_ms = run.first().map(|p| p.frame.appended_at_ms);
            }
        }
        self.shared.readable.notify_all();
        Counters::add(&self.shared.counters.appended_records, records);
        let mut offset = base;
        for p in run {
            let start = Position::new(self.id, offset);
            offset += p.frame.len();
            let end = Position::new(self.id, offset);
            p.ack.send(Ok(Appended {
                start,
                end,
                records: p.frame.count,
            }));
        }
    }

    /// Fails appends, releasing their reserved bytes.
    fn fail(
        &self,
        pendings: impl IntoIterator<Item = Pending>,
        error: impl Fn(&Pending) -> SpoolError,
    ) {
        let pendings: Vec<Pending> = pendings.into_iter().collect();
        let bytes: u64 = pendings.iter().map(|p| p.frame.len()).sum();
        {
            let mut st = self.shared.lock();
            st.pending_bytes = st.pending_bytes.saturating_sub(bytes);
        }
        for p in pendings {
            let e = error(&p);
            p.ack.send(Err(e));
        }
    }

    /// After a failed write: cut the tail back to its published length. If that fails too, the
    /// spool refuses all further appends.
    fn repair(&mut self) {
        let len = self.len;
        let fsync = self.shared.fsync();
        let file = &mut self.file;
        let res = file
            .set_len(len)
            .and_then(|()| file.seek(SeekFrom::Start(len)).map(drop))
            .and_then(|()| if fsync { file.sync_data() } else { Ok(()) });
        self.zeroed = len;
        if let Err(e) = res {
            let path = self.shared.segment_path(self.id);
            let reason = format!("could not cut {} back to {len} bytes: {e}", path.display());
            tracing::error!(%reason, "spool: refusing further appends");
            self.shared.lock().failed = Some(reason);
        }
    }

    /// Starts the next segment and makes it the tail.
    fn rotate(&mut self) -> io::Result<()> {
        // The sealed segment ends at its data. Not synced: if the cut is lost in a crash,
        // recovery reads the zeros as unused space.
        if let Err(e) = self.cut_padding(false) {
            tracing::warn!(error = %e, segment = self.id, "spool: could not cut a sealed segment's zeros");
        }
        let id = self.id + 1;
        let path = self.shared.segment_path(id);
        let fsync = self.shared.fsync();
        let created = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?;
            f.write_all(&segment_header())?;
            if fsync {
                f.sync_all()?;
                sync_dir(&self.shared.dir).map_err(|e| io::Error::other(e.to_string()))?;
                Counters::add(&self.shared.counters.fsyncs, 2);
            }
            Ok::<File, io::Error>(f)
        })();
        let file = match created {
            Ok(f) => f,
            Err(e) => {
                // Best effort: a half-made file would be found (and repaired) at the next open.
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        {
            let mut st = self.shared.lock();
            st.segments.insert(
                id,
                SegMeta {
                    end: SEGMENT_HEADER_LEN,
                    file_len: SEGMENT_HEADER_LEN,
                },
            );
            st.disk_bytes += SEGMENT_HEADER_LEN;
        }
        self.id = id;
        self.file = file;
        self.len = SEGMENT_HEADER_LEN;
        self.zeroed = SEGMENT_HEADER_LEN;
        // The old tail is now sealed: a reader waiting at its end can move on.
        self.shared.readable.notify_all();
        Ok(())
    }
}

/// `write_all` for vectored writes (`Write::write_all_vectored` is unstable).
fn write_all_vectored(w: &mut impl Write, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write whole buffer",
                ))
            }
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
