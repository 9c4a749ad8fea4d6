//! Behaviour of the whole spool on real files in temporary directories.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::format::{CursorState, CURSOR_FILE};
use super::*;

/// Small segments so that tests rotate: 1008 bytes of records per segment, which is 8 records
/// of 100 payload bytes (120 bytes each).
fn small() -> SpoolConfig {
    SpoolConfig {
        segment_bytes: 1024,
        max_bytes: 1 << 20,
        ..SpoolConfig::default()
    }
}

/// Hand a batch out as soon as anything is there.
fn now(max_records: usize) -> BatchLimits {
    BatchLimits {
        max_records,
        max_bytes: usize::MAX,
        max_age: Duration::ZERO,
    }
}

/// A 100-byte payload that starts with `r<i>`.
fn rec(i: usize) -> Vec<u8> {
    let mut p = format!("r{i}:").into_bytes();
    p.resize(100, b'.');
    p
}

fn payloads(b: &Batch) -> Vec<Vec<u8>> {
    b.iter().map(|r| r.payload.to_vec()).collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Reads and commits everything available.
fn drain(reader: &mut SpoolReader) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(b) = reader.next_batch(&now(1000), Duration::ZERO).unwrap() {
        out.extend(payloads(&b));
        reader.commit(b.end()).unwrap();
    }
    out
}

fn append_n(spool: &Spool, range: std::ops::Range<usize>) -> Vec<Appended> {
    range
        .map(|i| spool.append_blocking(Records::one(&rec(i))).unwrap())
        .collect()
}

fn flip_byte(path: &Path, at: u64) {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x40]).unwrap();
}

#[test]
fn append_read_commit_round_trip() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let a = spool.append_blocking(Records::one(b"one")).unwrap();
    assert_eq!(a.start, Position::new(1, 16));
    assert_eq!(a.end, Position::new(1, 16 + 20 + 3));
    assert_eq!(a.records, 1);
    let many: Records = ["two", "three", "four"].into_iter().collect();
    let b = spool.append_blocking(many).unwrap();
    assert_eq!((b.start, b.records), (a.end, 3));

    let mut reader = spool.reader().unwrap();
    let batch = reader
        .next_batch(&now(100), Duration::ZERO)
        .unwrap()
        .unwrap();
    assert_eq!(payloads(&batch), [&b"one"[..], b"two", b"three", b"four"]);
    assert_eq!(batch.start(), a.start);
    assert_eq!(batch.end(), b.end);
    assert_eq!(batch.id(), a.start.to_u128());
    assert!(!batch.is_replay());
    assert_eq!(batch.payload_bytes(), 3 + 3 + 5 + 4);
    assert!(batch.iter().all(|r| r.appended_at_ms > 0));
    assert!(batch.dedup_token().starts_with("veil-spool-"));
    assert!(batch
        .dedup_token()
        .ends_with(&format!("-1.16-1.{}", b.end.offset)));
    assert_eq!(spool.stats().unconsumed_records, 4);
    reader.commit(batch.end()).unwrap();
    assert!(reader
        .next_batch(&now(100), Duration::ZERO)
        .unwrap()
        .is_none());

    let stats = spool.stats();
    assert_eq!(stats.unconsumed_records, 0);
    assert_eq!(stats.unconsumed_bytes, 0);
    assert_eq!(stats.oldest_unconsumed_ms, None);
    assert_eq!(stats.appended_records, 4);
    assert_eq!(stats.segments, 1);
    assert_eq!(stats.disk_bytes, b.end.offset);
    assert_eq!(stats.fsyncs, stats.commit_groups);
    drop(reader);
    drop(spool);

    // Committed records are not read again.
    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    assert_eq!(
        spool.recovery(),
        &RecoveryReport {
            segments: 1,
            ..RecoveryReport::default()
        }
    );
    assert!(drain(&mut spool.reader().unwrap()).is_empty());
}

#[test]
fn empty_append_is_a_no_op() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let a = spool.append_blocking(Records::new()).unwrap();
    assert_eq!(
        (a.start, a.end, a.records),
        (Position::new(1, 16), Position::new(1, 16), 0)
    );
    assert_eq!(spool.stats().commit_groups, 0);
}

#[test]
fn group_commit_shares_fsyncs_between_threads() {
    let dir = TempDir::new().unwrap();
    let cfg = SpoolConfig {
        group_window: Duration::from_millis(5),
        ..SpoolConfig::default()
    };
    let spool = Spool::open(dir.path(), cfg).unwrap();
    let (threads, per_thread) = (16, 25);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let spool = spool.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    spool
                        .append_blocking(Records::one(format!("{t}/{i}").as_bytes()))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let stats = spool.stats();
    let appends = (threads * per_thread) as u64;
    assert_eq!(stats.appended_records, appends);
    assert!(
        stats.commit_groups * 4 <= appends,
        "{} groups for {appends} appends",
        stats.commit_groups
    );
    assert_eq!(stats.fsyncs, stats.commit_groups);

    // Each thread's appends are stored in its order.
    let all = drain(&mut spool.reader().unwrap());
    assert_eq!(all.len(), threads * per_thread);
    for t in 0..threads {
        let mine: Vec<String> = all
            .iter()
            .map(|p| String::from_utf8(p.clone()).unwrap())
            .filter(|s| s.starts_with(&format!("{t}/")))
            .collect();
        let expected: Vec<String> = (0..per_thread).map(|i| format!("{t}/{i}")).collect();
        assert_eq!(mine, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_appends_are_grouped() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let spool = spool.clone();
            tokio::spawn(async move { spool.append(Records::one(format!("{i}").as_bytes())).await })
        })
        .collect();
    let mut starts = Vec::new();
    for t in tasks {
        starts.push(t.await.unwrap().unwrap().start);
    }
    starts.sort();
    starts.dedup();
    assert_eq!(starts.len(), 200);
    let groups = spool.stats().commit_groups;
    assert!(groups <= 50, "{groups} groups for 200 concurrent appends");
    tokio::task::spawn_blocking(move || spool.close())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn append_does_not_block_the_runtime() {
    let dir = TempDir::new().unwrap();
    let cfg = SpoolConfig {
        group_window: Duration::from_millis(200),
        ..SpoolConfig::default()
    };
    let spool = Spool::open(dir.path(), cfg).unwrap();
    let started = Instant::now();
    let (appended, ticked) = tokio::join!(
        async {
            spool.append(Records::one(b"x")).await.unwrap();
            started.elapsed()
        },
        async {
            // Runs again only if the runtime is free while the append waits.
            tokio::task::yield_now().await;
            started.elapsed()
        }
    );
    // On a single-threaded runtime the timer could only fire while the append was waiting.
    assert!(
        ticked < appended,
        "timer at {ticked:?}, append at {appended:?}"
    );
    assert!(appended >= Duration::from_millis(150));
}

#[test]
fn reopen_replays_uncommitted_batches_with_the_same_bounds() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    append_n(&spool, 0..10);
    let instance = spool.instance_id();
    let mut reader = spool.reader().unwrap();
    let a = reader.next_batch(&now(3), Duration::ZERO).unwrap().unwrap();
    reader.commit(a.end()).unwrap();
    let b = reader.next_batch(&now(3), Duration::ZERO).unwrap().unwrap();
    let c = reader.next_batch(&now(2), Duration::ZERO).unwrap().unwrap();
    assert_eq!(payloads(&b), vec![rec(3), rec(4), rec(5)]);
    assert_eq!(payloads(&c), vec![rec(6), rec(7)]);
    drop(reader);
    drop(spool); // "crash": b and c were handed out, maybe inserted, never committed

    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    assert_eq!(spool.instance_id(), instance);
    let rep = spool.recovery();
    assert_eq!(
        (
            rep.replayable_records,
            rep.replayed_batches,
            rep.corrupt_regions
        ),
        (7, 2, 0)
    );
    assert_eq!(spool.stats().unconsumed_records, 7);
    let mut reader = spool.reader().unwrap();
    // Other limits now: replayed batches keep their old bounds anyway.
    let b2 = reader
        .next_batch(&now(100), Duration::ZERO)
        .unwrap()
        .unwrap();
    assert!(b2.is_replay());
    assert_eq!(
        (b2.start(), b2.end(), b2.id(), b2.dedup_token()),
        (b.start(), b.end(), b.id(), b.dedup_token())
    );
    assert_eq!(payloads(&b2), payloads(&b));
    let c2 = reader
        .next_batch(&now(100), Duration::ZERO)
        .unwrap()
        .unwrap();
    assert!(c2.is_replay());
    assert_eq!(
        (c2.start(), c2.end(), c2.dedup_token()),
        (c.start(), c.end(), c.dedup_token())
    );
    let d = reader
        .next_batch(&now(100), Duration::ZERO)
        .unwrap()
        .unwrap();
    assert!(!d.is_replay());
    assert_eq!(d.start(), c.end());
    assert_eq!(payloads(&d), vec![rec(8), rec(9)]);
    // Committing the last batch commits the ones before it.
    reader.commit(d.end()).unwrap();
    assert_eq!(reader.outstanding(), 0);
    drop(reader);
    drop(spool);

    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    assert_eq!(spool.recovery().replayable_records, 0);
    assert!(drain(&mut spool.reader().unwrap()).is_empty());
}

#[test]
fn without_persisted_bounds_the_start_is_still_stable() {
    let dir = TempDir::new().unwrap();
    let cfg = SpoolConfig {
        persist_batch_bounds: false,
        ..SpoolConfig::default()
    };
    let spool = Spool::open(dir.path(), cfg.clone()).unwrap();
    append_n(&spool, 0..6);
    let mut reader = spool.reader().unwrap();
    let a = reader.next_batch(&now(2), Duration::ZERO).unwrap().unwrap();
    reader.commit(a.end()).unwrap();
    let b = reader.next_batch(&now(2), Duration::ZERO).unwrap().unwrap();
    drop((reader, spool));

    let spool = Spool::open(dir.path(), cfg).unwrap();
    assert_eq!(spool.recovery().replayed_batches, 0);
    let mut reader = spool.reader().unwrap();
    let b2 = reader
        .next_batch(&now(100), Duration::ZERO)
        .unwrap()
        .unwrap();
    assert_eq!(b2.start(), b.start());
    assert!(!b2.is_replay());
    assert_eq!(payloads(&b2), vec![rec(2), rec(3), rec(4), rec(5)]);
}

#[test]
fn a_new_reader_in_the_same_process_replays_outstanding_batches() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    append_n(&spool, 0..4);
    let mut reader = spool.reader().unwrap();
    assert!(matches!(spool.reader(), Err(SpoolError::ReaderTaken)));
    let a = reader.next_batch(&now(3), Duration::ZERO).unwrap().unwrap();
    drop(reader);
    let mut reader = spool.reader().unwrap();
    let again = reader.next_batch(&now(1), Duration::ZERO).unwrap().unwrap();
    assert!(again.is_replay());
    assert_eq!((again.start(), again.end()), (a.start(), a.end()));
    assert_eq!(drain(&mut reader), vec![rec(3)]);
}

#[test]
fn commit_must_name_an_outstanding_batch_end() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    append_n(&spool, 0..3);
    let mut reader = spool.reader().unwrap();
    let b = reader.next_batch(&now(2), Duration::ZERO).unwrap().unwrap();
    let wrong = Position::new(b.end().segment, b.end().offset + 1);
    assert!(matches!(reader.commit(wrong), Err(SpoolError::InvalidCommit(p)) if p == wrong));
    assert!(matches!(
        reader.commit(b.start()),
        Err(SpoolError::InvalidCommit(_))
    ));
    reader.commit(b.end()).unwrap();
    // Already committed.
    assert!(matches!(
        reader.commit(b.end()),
        Err(SpoolError::InvalidCommit(_))
    ));
    assert_eq!(reader.committed(), b.end());
}

#[test]
fn batch_limits_records_bytes_and_age() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    append_n(&spool, 0..7);
    let mut reader = spool.reader().unwrap();
    // 100-byte payloads, at most 250 bytes: two per batch.
    let by_bytes = BatchLimits {
        max_bytes: 250,
        ..now(100)
    };
    let b = reader
        .next_batch(&by_bytes, Duration::ZERO)
        .unwrap()
        .unwrap();
    assert_eq!(b.len(), 2);
    let b = reader.next_batch(&now(3), Duration::ZERO).unwrap().unwrap();
    assert_eq!(payloads(&b), vec![rec(2), rec(3), rec(4)]);
    // A record larger than max_bytes still makes a batch of one.
    let tiny = BatchLimits {
        max_bytes: 10,
        ..now(100)
    };
    let b = reader.next_batch(&tiny, Duration::ZERO).unwrap().unwrap();
    assert_eq!(payloads(&b), vec![rec(5)]);

    // Not full and young: held back (and kept) until max_age.
    let patient = BatchLimits {
        max_records: 100,
        max_bytes: usize::MAX,
        max_age: Duration::from_millis(300),
    };
    let b = reader.next_batch(&patient, Duration::ZERO).unwrap();
    assert!(b.is_none());
    assert_eq!(reader.buffered(), 1);
    let t = Instant::now();
    let b = reader
        .next_batch(&patient, Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(payloads(&b), vec![rec(6)]);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(b.oldest_appended_at_ms().is_some());
    reader.commit(b.end()).unwrap();
}

#[test]
fn next_batch_waits_for_new_data_and_times_out() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let mut reader = spool.reader().unwrap();
    let t = Instant::now();
    assert!(reader
        .next_batch(&now(10), Duration::from_millis(50))
        .unwrap()
        .is_none());
    assert!(t.elapsed() >= Duration::from_millis(50));

    let writer = {
        let spool = spool.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            spool.append_blocking(Records::one(b"late")).unwrap();
        })
    };
    let t = Instant::now();
    let b = reader
        .next_batch(&now(10), Duration::from_secs(20))
        .unwrap()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(payloads(&b), vec![b"late".to_vec()]);
    writer.join().unwrap();
}

#[test]
fn torn_tail_is_cut_counted_and_survived() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    append_n(&spool, 0..3);
    drop(spool);
    let seg = segment_files(dir.path()).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    assert_eq!(len, 16 + 3 * 120);
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 10)
        .unwrap();

    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let rep = spool.recovery().clone();
    assert_eq!(
        (
            rep.corrupt_regions,
            rep.torn_tail_bytes,
            rep.replayable_records
        ),
        (1, 110, 2)
    );
    assert_eq!(fs::metadata(&seg).unwrap().len(), 16 + 2 * 120);
    let stats = spool.stats();
    assert_eq!((stats.corrupt_regions, stats.corrupt_bytes), (1, 110));
    // New appends follow the valid data.
    let a = spool.append_blocking(Records::one(&rec(3))).unwrap();
    assert_eq!(a.start, Position::new(1, 16 + 2 * 120));
    let mut reader = spool.reader().unwrap();
    assert_eq!(drain(&mut reader), vec![rec(0), rec(1), rec(3)]);
    drop((reader, spool));

    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    assert_eq!(spool.recovery().corrupt_regions, 0);
}

#[test]
fn torn_multi_record_append_is_dropped_whole() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    spool.append_blocking(Records::one(b"before")).unwrap();
    let three: Records = ["a", "b", "c"].into_iter().collect();
    let a = spool.append_blocking(three).unwrap();
    drop(spool);
    let seg = segment_files(dir.path()).pop().unwrap();
    // Cut into the last record: "a" and "b" are intact but their append is not.
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(a.end.offset - 5)
        .unwrap();

    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    assert_eq!(
        spool.recovery().torn_tail_bytes,
        a.end.offset - 5 - a.start.offset
    );
    assert_eq!(spool.recovery().replayable_records, 1);
    assert_eq!(
        drain(&mut spool.reader().unwrap()),
        vec![b"before".to_vec()]
    );
}

#[test]
fn flipped_byte_in_the_tail_is_detected() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let appended = append_n(&spool, 0..4);
    drop(spool);
    let seg = segment_files(dir.path()).pop().unwrap();
    flip_byte(&seg, appended[1].start.offset + 20 + 50);

    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let rep = spool.recovery().clone();
    assert_eq!(
        (
            rep.corrupt_regions,
            rep.torn_tail_bytes,
            rep.replayable_records
        ),
        (1, 3 * 120, 1)
    );
    spool.append_blocking(Records::one(b"after")).unwrap();
    assert_eq!(
        drain(&mut spool.reader().unwrap()),
        vec![rec(0), b"after".to_vec()]
    );
}

#[test]
fn damage_in_a_sealed_segment_skips_to_the_next_segment() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(dir.path(), small()).unwrap();
    let appended = append_n(&spool, 0..20);
    assert_eq!(appended[7].start.segment, 1);
    assert_eq!(appended[8].start, Position::new(2, 16));
    drop(spool);
    let first = &segment_files(dir.path())[0];
    let len = fs::metadata(first).unwrap().len();
    flip_byte(first, appended[2].start.offset + 5); // inside r2's header (length field)

    let spool = Spool::open(dir.path(), small()).unwrap();
    let rep = spool.recovery().clone();
    assert_eq!(
        (rep.corrupt_regions, rep.skipped_bytes, rep.torn_tail_bytes),
        (1, 6 * 120, 0)
    );
    assert_eq!(rep.replayable_records, 2 + 12);
    assert_eq!(
        fs::metadata(first).unwrap().len(),
        len,
        "sealed segments are not modified"
    );
    let mut reader = spool.reader().unwrap();
    let expected: Vec<Vec<u8>> = [0, 1].into_iter().chain(8..20).map(rec).collect();
    assert_eq!(drain(&mut reader), expected);
    assert!(!first.exists(), "consumed damaged segment deleted");
}

#[test]
fn damage_found_while_reading_is_skipped_and_counted() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(dir.path(), small()).unwrap();
    let appended = append_n(&spool, 0..12);
    // Damage after open: only the reader can notice.
    let first = segment_files(dir.path())[0].clone();
    flip_byte(&first, appended[5].start.offset + 20 + 1);
    let mut reader = spool.reader().unwrap();
    let expected: Vec<Vec<u8>> = (0..5).chain(8..12).map(rec).collect();
    assert_eq!(drain(&mut reader), expected);
    let stats = spool.stats();
    assert_eq!((stats.corrupt_regions, stats.corrupt_bytes), (1, 3 * 120));
    assert_eq!(stats.unconsumed_records, 0);
}

#[test]
fn damaged_cursor_replays_everything() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    append_n(&spool, 0..5);
    let old_instance = spool.instance_id();
    let mut reader = spool.reader().unwrap();
    let b = reader.next_batch(&now(3), Duration::ZERO).unwrap().unwrap();
    reader.commit(b.end()).unwrap();
    drop((reader, spool));
    fs::write(dir.path().join(CURSOR_FILE), b"garbage").unwrap();

    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let rep = spool.recovery().clone();
    assert!(rep.cursor_reset);
    assert_eq!((rep.corrupt_regions, rep.replayable_records), (1, 5));
    assert_ne!(
        spool.instance_id(),
        old_instance,
        "new tokens: no false dedup"
    );
    assert_eq!(
        drain(&mut spool.reader().unwrap()),
        (0..5).map(rec).collect::<Vec<_>>()
    );
}

#[test]
fn cursor_inside_a_record_moves_back_to_its_start() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let appended = append_n(&spool, 0..3);
    let instance = spool.instance_id();
    drop(spool);
    let inside = Position::new(1, appended[1].start.offset + 7);
    let state = CursorState {
        instance,
        committed: inside,
        leases: vec![],
    };
    fs::write(dir.path().join(CURSOR_FILE), state.encode()).unwrap();

    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    assert_eq!(spool.recovery().replayable_records, 2);
    assert_eq!(drain(&mut spool.reader().unwrap()), vec![rec(1), rec(2)]);
}

#[test]
fn full_spool_refuses_and_recovers_after_commit() {
    let dir = TempDir::new().unwrap();
    let cfg = SpoolConfig {
        max_bytes: 2048,
        ..small()
    };
    let spool = Spool::open(dir.path(), cfg).unwrap();
    let mut accepted = 0;
    let err = loop {
        match spool.append_blocking(Records::one(&rec(accepted))) {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, SpoolError::Full), "{err}");
    assert!(err.is_retryable());
    assert_eq!(accepted, 16);
    let stats = spool.stats();
    assert!(stats.disk_bytes <= 2048);
    assert_eq!(stats.full_rejections, 1);
    assert_eq!(stats.pending_bytes, 0);

    let too_large = spool.append_blocking(Records::one(&[0u8; 1000]));
    assert!(matches!(
        too_large,
        Err(SpoolError::TooLarge {
            bytes: 1020,
            limit: 1008
        })
    ));

    let mut reader = spool.reader().unwrap();
    assert_eq!(drain(&mut reader).len(), 16);
    assert!(spool.stats().disk_bytes < 1024);
    for i in 16..24 {
        spool.append_blocking(Records::one(&rec(i))).unwrap();
    }
    assert_eq!(drain(&mut reader), (16..24).map(rec).collect::<Vec<_>>());
}

#[test]
fn segments_rotate_and_consumed_ones_are_deleted() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(dir.path(), small()).unwrap();
    let appended = append_n(&spool, 0..20);
    assert_eq!(segment_files(dir.path()).len(), 3);
    let stats = spool.stats();
    assert_eq!(stats.segments, 3);
    let files = segment_files(dir.path());
    let sizes: Vec<u64> = files
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .collect();
    // Sealed segments end at their data; the tail is zero-filled ahead of it (to the segment
    // size here), and those zeros are not data.
    let tail_data = appended[19].end.offset;
    assert_eq!(sizes[2], 1024, "the tail is preallocated");
    assert_eq!(stats.disk_bytes, sizes[0] + sizes[1] + tail_data);
    assert_eq!(stats.unconsumed_bytes, 20 * 120);

    let mut reader = spool.reader().unwrap();
    let b = reader
        .next_batch(&now(10), Duration::ZERO)
        .unwrap()
        .unwrap();
    assert_eq!(
        (b.start(), b.end()),
        (Position::new(1, 16), Position::new(2, 16 + 2 * 120))
    );
    reader.commit(b.end()).unwrap();
    assert_eq!(segment_files(dir.path()).len(), 2);
    assert_eq!(spool.stats().segments, 2);
    assert_eq!(spool.stats().unconsumed_records, 10);
    // Exactly at the end of segment 2: deleted with this commit.
    let b = reader.next_batch(&now(6), Duration::ZERO).unwrap().unwrap();
    assert_eq!(b.end(), Position::new(2, 16 + 8 * 120));
    reader.commit(b.end()).unwrap();
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(drain(&mut reader), (16..20).map(rec).collect::<Vec<_>>());
    let stats = spool.stats();
    assert_eq!(
        (
            stats.segments,
            stats.unconsumed_bytes,
            stats.unconsumed_records
        ),
        (1, 0, 0)
    );
    assert_eq!(stats.disk_bytes, tail_data);
    assert_eq!(
        fs::metadata(&segment_files(dir.path())[0]).unwrap().len(),
        1024
    );
}

#[test]
fn durability_none_writes_without_fsync() {
    let dir = TempDir::new().unwrap();
    let cfg = SpoolConfig {
        durability: Durability::None,
        ..small()
    };
    let spool = Spool::open(dir.path(), cfg.clone()).unwrap();
    append_n(&spool, 0..20);
    let stats = spool.stats();
    assert_eq!(stats.fsyncs, 0);
    assert!(stats.commit_groups > 0);
    let mut reader = spool.reader().unwrap();
    let b = reader.next_batch(&now(5), Duration::ZERO).unwrap().unwrap();
    reader.commit(b.end()).unwrap();
    drop((reader, spool));

    let spool = Spool::open(dir.path(), cfg).unwrap();
    assert_eq!(
        drain(&mut spool.reader().unwrap()),
        (5..20).map(rec).collect::<Vec<_>>()
    );
    assert_eq!("none".parse::<Durability>().unwrap(), Durability::None);
    assert_eq!("fsync".parse::<Durability>().unwrap(), Durability::Fsync);
    assert!("sometimes".parse::<Durability>().is_err());
}

#[test]
fn close_flushes_accepted_appends_then_refuses() {
    let dir = TempDir::new().unwrap();
    let cfg = SpoolConfig {
        group_window: Duration::from_millis(20),
        ..SpoolConfig::default()
    };
    let spool = Spool::open(dir.path(), cfg.clone()).unwrap();
    let go = Arc::new(AtomicBool::new(true));
    let acked = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let (spool, go, acked) = (spool.clone(), go.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut ok = 0;
                let mut i = 0;
                while go.load(Ordering::Relaxed) {
                    match spool.append_blocking(Records::one(format!("{t}/{i}").as_bytes())) {
                        Ok(_) => {
                            ok += 1;
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(SpoolError::Closed) => break,
                        Err(e) => panic!("{e}"),
                    }
                    i += 1;
                }
                ok
            })
        })
        .collect();
    // Close while the writers are busy: once appends are being acknowledged.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.load(Ordering::Relaxed) < 8 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    spool.close().unwrap();
    spool.close().unwrap(); // idempotent
    go.store(false, Ordering::Relaxed);
    let acknowledged: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(acknowledged > 0);
    assert!(matches!(
        spool.append_blocking(Records::one(b"late")),
        Err(SpoolError::Closed)
    ));
    assert!(spool.is_closed());
    assert_eq!(spool.stats().pending_bytes, 0);

    // After close the reader drains without waiting.
    let mut reader = spool.reader().unwrap();
    let patient = BatchLimits {
        max_age: Duration::from_secs(60),
        ..BatchLimits::default()
    };
    let t = Instant::now();
    let mut read = 0;
    while let Some(b) = reader
        .next_batch(&patient, Duration::from_secs(60))
        .unwrap()
    {
        read += b.len();
    }
    assert!(t.elapsed() < Duration::from_secs(30));
    assert_eq!(read, acknowledged);
    drop((reader, spool));

    // Every acknowledged append is on disk.
    let spool = Spool::open(dir.path(), cfg).unwrap();
    assert_eq!(spool.recovery().replayable_records, acknowledged as u64);
}

#[test]
fn stats_track_unconsumed_records_and_age() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    assert_eq!(spool.stats().oldest_unconsumed_age(), None);
    let first = spool.append_blocking(Records::one(b"a")).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    spool.append_blocking(Records::one(b"bb")).unwrap();
    let stats = spool.stats();
    assert_eq!(stats.unconsumed_records, 2);
    assert_eq!(stats.unconsumed_bytes, 21 + 22);
    let oldest = stats.oldest_unconsumed_ms.unwrap();
    assert!(stats.oldest_unconsumed_age().unwrap() >= Duration::from_millis(20));

    let mut reader = spool.reader().unwrap();
    let b = reader.next_batch(&now(1), Duration::ZERO).unwrap().unwrap();
    assert_eq!(b.start(), first.start);
    assert_eq!(b.oldest_appended_at_ms(), Some(oldest));
    reader.commit(b.end()).unwrap();
    let stats = spool.stats();
    assert_eq!((stats.unconsumed_records, stats.unconsumed_bytes), (1, 22));
    assert!(stats.oldest_unconsumed_ms.unwrap() >= oldest + 20);
    drain(&mut reader);
    assert_eq!(spool.stats().oldest_unconsumed_ms, None);
}

#[test]
fn a_directory_opens_once_per_process() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    assert!(matches!(
        Spool::open(dir.path(), SpoolConfig::default()),
        Err(SpoolError::AlreadyOpen(_))
    ));
    let reader = spool.reader().unwrap();
    drop(spool);
    // The reader still uses the directory.
    assert!(matches!(
        Spool::open(dir.path(), SpoolConfig::default()),
        Err(SpoolError::AlreadyOpen(_))
    ));
    drop(reader);
    Spool::open(dir.path(), SpoolConfig::default()).unwrap();
}

#[test]
fn config_is_validated() {
    SpoolConfig::default().validate().unwrap();
    let bad = [
        SpoolConfig {
            segment_bytes: 100,
            ..SpoolConfig::default()
        },
        SpoolConfig {
            max_bytes: 100 << 20,
            ..SpoolConfig::default()
        },
        SpoolConfig {
            group_max_records: 0,
            ..SpoolConfig::default()
        },
        SpoolConfig {
            group_window: Duration::from_secs(2),
            ..SpoolConfig::default()
        },
        SpoolConfig {
            max_pending_bytes: 0,
            ..SpoolConfig::default()
        },
    ];
    for cfg in bad {
        assert!(
            matches!(cfg.validate(), Err(SpoolError::Config(_))),
            "{cfg:?}"
        );
        let dir = TempDir::new().unwrap();
        assert!(Spool::open(dir.path(), cfg).is_err());
    }
    assert_eq!(SpoolConfig::default().max_append_bytes(), (64 << 20) - 16);
}

#[test]
fn concurrent_appends_and_reads_with_rotation() {
    let dir = TempDir::new().unwrap();
    let cfg = SpoolConfig {
        segment_bytes: 4096,
        max_bytes: 64 << 10,
        ..SpoolConfig::default()
    };
    let spool = Spool::open(dir.path(), cfg).unwrap();
    let mut reader = spool.reader().unwrap();
    let consumer = std::thread::spawn(move || {
        let limits = BatchLimits {
            max_records: 37,
            max_bytes: 2000,
            max_age: Duration::from_millis(3),
        };
        let mut got = Vec::new();
        loop {
            match reader
                .next_batch(&limits, Duration::from_millis(20))
                .unwrap()
            {
                Some(b) => {
                    got.extend(
                        b.iter()
                            .map(|r| String::from_utf8(r.payload.to_vec()).unwrap()),
                    );
                    reader.commit(b.end()).unwrap();
                }
                None if reader.buffered() == 0 && got.len() == 4 * 500 => return got,
                None => {}
            }
        }
    });
    let producers: Vec<_> = (0..4)
        .map(|t| {
            let spool = spool.clone();
            std::thread::spawn(move || {
                let mut i = 0;
                while i < 500 {
                    let mut batch = Records::new();
                    for _ in 0..5 {
                        batch.push(format!("{t}/{i:04}").as_bytes());
                        i += 1;
                    }
                    match spool.append_blocking(batch) {
                        Ok(_) => {}
                        Err(SpoolError::Full) => {
                            i -= 5;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let got = consumer.join().unwrap();
    for t in 0..4 {
        let mine: Vec<&String> = got
            .iter()
            .filter(|s| s.starts_with(&format!("{t}/")))
            .collect();
        let expected: Vec<String> = (0..500).map(|i| format!("{t}/{i:04}")).collect();
        assert_eq!(mine, expected.iter().collect::<Vec<_>>());
    }
    let stats = spool.stats();
    assert_eq!(
        (
            stats.unconsumed_records,
            stats.unconsumed_bytes,
            stats.segments
        ),
        (0, 0, 1)
    );
    assert_eq!(segment_files(dir.path()).len(), 1);
}

#[test]
fn handles_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Spool>();
    send::<SpoolReader>();
    send::<Batch>();
}

#[test]
fn positions_order_and_convert() {
    let a = Position::new(1, u64::MAX);
    let b = Position::new(2, 16);
    assert!(a < b);
    assert!(a.to_u128() < b.to_u128());
    assert_eq!(Position::from_u128(b.to_u128()), b);
    assert_eq!(b.to_string(), "2:16");
}

#[test]
fn the_tail_is_zero_filled_ahead_and_its_appends_overwrite_the_zeros() {
    let dir = TempDir::new().unwrap();
    let cfg = SpoolConfig {
        preallocate_bytes: 4096,
        ..SpoolConfig::default()
    };
    let spool = Spool::open(dir.path(), cfg.clone()).unwrap();
    let appended = append_n(&spool, 0..40); // 4 816 bytes of data: two stretches of zeros
    let seg = segment_files(dir.path()).pop().unwrap();
    let data_end = appended[39].end.offset;
    assert_eq!(data_end, 16 + 40 * 120);
    let stats = spool.stats();
    assert_eq!(fs::metadata(&seg).unwrap().len(), 16 + 2 * 4096);
    assert_eq!(stats.zero_fills, 2);
    assert_eq!(
        stats.fsyncs, stats.commit_groups,
        "zero fills are counted apart"
    );
    assert_eq!(stats.disk_bytes, data_end, "zeros are not data");
    let mut bytes = fs::read(&seg).unwrap();
    assert!(bytes[data_end as usize..].iter().all(|&b| b == 0));
    // Closing cuts the zeros: the file ends at its data.
    drop(spool);
    assert_eq!(fs::metadata(&seg).unwrap().len(), data_end);
    bytes.truncate(data_end as usize);
    assert_eq!(fs::read(&seg).unwrap(), bytes);

    // Without fsync there is nothing to gain: no zeros are written.
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(
        dir.path(),
        SpoolConfig {
            durability: Durability::None,
            ..cfg
        },
    )
    .unwrap();
    let a = append_n(&spool, 0..3);
    let seg = segment_files(dir.path()).pop().unwrap();
    assert_eq!(fs::metadata(&seg).unwrap().len(), a[2].end.offset);
    assert_eq!(spool.stats().zero_fills, 0);
}

/// Appends `n` zero bytes to the file (what a crash leaves of preallocated space).
fn add_zeros(path: &Path, n: u64) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len + n).unwrap();
}

#[test]
fn zeros_after_the_last_append_are_unused_space_not_damage() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(dir.path(), small()).unwrap();
    append_n(&spool, 0..12); // segment 1 sealed with 8, the tail holds 4
    drop(spool);
    let files = segment_files(dir.path());
    let tail_len = fs::metadata(&files[1]).unwrap().len();
    // As after a crash: the tail and the sealed segment still carry their zeros.
    add_zeros(&files[0], 40);
    add_zeros(&files[1], 500);

    let spool = Spool::open(dir.path(), small()).unwrap();
    let rep = spool.recovery().clone();
    assert_eq!(
        (rep.corrupt_regions, rep.torn_tail_bytes, rep.skipped_bytes),
        (0, 0, 0),
        "{rep:?}"
    );
    assert_eq!(rep.replayable_records, 12);
    assert_eq!(spool.stats().corrupt_regions, 0);
    // The next append overwrites the tail's zeros right after its data.
    let a = spool.append_blocking(Records::one(&rec(12))).unwrap();
    assert_eq!(a.start, Position::new(2, tail_len));
    let mut reader = spool.reader().unwrap();
    assert_eq!(drain(&mut reader), (0..13).map(rec).collect::<Vec<_>>());
    drop((reader, spool));
    let spool = Spool::open(dir.path(), small()).unwrap();
    assert_eq!(spool.recovery().corrupt_regions, 0);
    assert_eq!(spool.recovery().replayable_records, 0);
}

#[test]
fn a_torn_append_in_front_of_zeros_is_still_damage() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let a = append_n(&spool, 0..3);
    drop(spool);
    let seg = segment_files(dir.path()).pop().unwrap();
    // The first 50 bytes of a fourth record reached the disk, the rest of the stretch is zeros.
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    let mut torn = Records::one(&rec(3)).seal(0).buf;
    torn.truncate(50);
    f.write_all(&torn).unwrap();
    drop(f);
    add_zeros(&seg, 1000);

    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let rep = spool.recovery().clone();
    assert_eq!(
        (
            rep.corrupt_regions,
            rep.torn_tail_bytes,
            rep.replayable_records
        ),
        (1, 1050, 3)
    );
    assert_eq!(fs::metadata(&seg).unwrap().len(), a[2].end.offset);
    let b = spool.append_blocking(Records::one(b"after")).unwrap();
    assert_eq!(b.start, a[2].end);
    assert_eq!(
        drain(&mut spool.reader().unwrap()),
        vec![rec(0), rec(1), rec(2), b"after".to_vec()]
    );
}

#[test]
fn a_large_group_extends_the_file_and_small_ones_get_zeros_again() {
    let dir = TempDir::new().unwrap();
    let cfg = SpoolConfig {
        preallocate_bytes: 4096,
        ..SpoolConfig::default()
    };
    let spool = Spool::open(dir.path(), cfg).unwrap();
    let seg = || segment_files(dir.path()).pop().unwrap();
    // One small append: a stretch of zeros after it.
    let a = spool.append_blocking(Records::one(&rec(0))).unwrap();
    assert_eq!(spool.stats().zero_fills, 1);
    assert_eq!(fs::metadata(seg()).unwrap().len(), 16 + 4096);
    // One append of 40 kB (a batch of events): over the zeros and past them, no new zeros.
    let big: Records = (1..=400).map(rec).collect();
    let b = spool.append_blocking(big).unwrap();
    assert!(b.end.offset - b.start.offset >= super::committer::PREALLOCATE_BELOW);
    assert_eq!(spool.stats().zero_fills, 1);
    assert_eq!(fs::metadata(seg()).unwrap().len(), b.end.offset);
    // Small appends again: zeros ahead of them.
    let c = spool.append_blocking(Records::one(&rec(401))).unwrap();
    assert_eq!(c.start, b.end);
    assert_eq!(spool.stats().zero_fills, 2);
    assert_eq!(fs::metadata(seg()).unwrap().len(), b.end.offset + 4096);
    assert_eq!(a.end, b.start);
    let mut reader = spool.reader().unwrap();
    assert_eq!(drain(&mut reader), (0..=401).map(rec).collect::<Vec<_>>());
}

#[test]
fn a_zeroed_header_is_damage_even_when_zeros_follow() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    append_n(&spool, 0..2);
    drop(spool);
    let seg = segment_files(dir.path()).pop().unwrap();
    // The whole file zeros (header included), as a device that lost it would leave it.
    let len = fs::metadata(&seg).unwrap().len();
    fs::write(&seg, vec![0u8; len as usize + 4096]).unwrap();

    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    let rep = spool.recovery().clone();
    assert_eq!(
        (
            rep.corrupt_regions,
            rep.torn_tail_bytes,
            rep.replayable_records
        ),
        (1, len + 4096, 0)
    );
    // The tail was made anew: what is appended now survives a reopen.
    spool.append_blocking(Records::one(b"after")).unwrap();
    drop(spool);
    let spool = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
    assert_eq!(spool.recovery().corrupt_regions, 0);
    assert_eq!(drain(&mut spool.reader().unwrap()), vec![b"after".to_vec()]);
}

#[test]
fn each_commit_is_timed_for_metrics() {
    let dir = TempDir::new().unwrap();
    let spool = Spool::open(dir.path(), small()).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<Duration>::new()));
    let into = seen.clone();
    spool.observe_commits(move |took| into.lock().unwrap().push(took));
    // Only the first observer counts.
    let ignored = Arc::new(AtomicUsize::new(0));
    let other = ignored.clone();
    spool.observe_commits(move |_| {
        other.fetch_add(1, Ordering::Relaxed);
    });
    let started = Instant::now();
    append_n(&spool, 0..20);
    let wall = started.elapsed();
    let stats = spool.stats();
    let seen = seen.lock().unwrap().clone();
    // One append at a time: one group each, none split (8 records fit a segment), so one
    // commit per group, each synced, each taking some time, all within the appends' time.
    assert_eq!(stats.commit_groups, 20);
    assert_eq!(seen.len() as u64, stats.commit_groups);
    assert!(seen.iter().all(|d| *d > Duration::ZERO), "{seen:?}");
    assert!(
        seen.iter().sum::<Duration>() <= wall,
        "{seen:?} in {wall:?}"
    );
    assert_eq!(ignored.load(Ordering::Relaxed), 0);
    assert_eq!(drain(&mut spool.reader().unwrap()).len(), 20);
}
