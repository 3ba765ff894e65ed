//! Tests of [`JournalWriter`] on the runtime under test (`SHARDS_TEST_RUNTIME`): append, sync,
//! roll and removal of old segments; a write refused by the file system (EFBIG under
//! `RLIMIT_FSIZE`, in a child process; ENOSPC on a small tmpfs where mounting one is allowed)
//! leaves the segment whole and a retry appends correctly; and (ignored) the measurement of
//! 64 KiB appends with an fdatasync each, through the helper thread and on the shard itself.

use std::time::{Duration, Instant};

use super::*;
use crate::test_util::{run, run_child};

/// A writer on segment 1 of shard 0 of a new generation in `root/data`.
fn new_writer(root: &Path) -> (DataDir, ShardDir, JournalWriter) {
    let mut dir = DataDir::open(&root.join("data")).unwrap();
    let generation = dir.begin_generation(1).unwrap();
    let shard = generation.shard(0);
    let writer = JournalWriter::create(&shard, 1).unwrap();
    (dir, shard, writer)
}

#[test]
fn journal_appends_syncs_and_rolls() {
    run(|| async {
        let tmp = temp();
        let (_dir, shard, mut writer) = new_writer(tmp.path());
        assert_eq!((writer.seq(), writer.len()), (1, 0));
        assert!(writer.is_empty());
        writer.append(b"first|".to_vec()).await.unwrap();
        writer
            .append(std::sync::Arc::<[u8]>::from(&b"second|"[..]))
            .await
            .unwrap();
        writer.sync().await.unwrap();
        writer.append_and_sync(b"third|".to_vec()).await.unwrap();
        assert_eq!(writer.len(), 19);
        assert_eq!(writer.path(), shard.journal_path(1));
        assert_eq!(
            read_file(&shard.journal_path(1)).unwrap(),
            b"first|second|third|"
        );

        writer.roll(2).await.unwrap();
        assert_eq!((writer.seq(), writer.len()), (2, 0));
        writer
            .append_and_sync(b"after the snapshot|".to_vec())
            .await
            .unwrap();
        let files = shard.files().unwrap();
        assert_eq!(
            files.journals.iter().map(|f| f.seq).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(
            read_file(&shard.journal_path(2)).unwrap(),
            b"after the snapshot|"
        );

        let err = writer.roll(2).await.unwrap_err();
        assert!(matches!(err, DurableError::Misuse { .. }), "{err:?}");
        assert!(
            err.to_string().contains("above the current one (2)"),
            "{err}"
        );

        // Never the current segment, whatever number is asked.
        writer.remove_before(5).await.unwrap();
        let files = shard.files().unwrap();
        assert_eq!(
            files.journals.iter().map(|f| f.seq).collect::<Vec<_>>(),
            [2]
        );
        writer.append(b"still here|".to_vec()).await.unwrap();
        let bytes = read_file(&shard.journal_path(2)).unwrap();
        assert_eq!(bytes, b"after the snapshot|still here|");
    });
}

#[test]
fn journal_sync_leaves_the_shard_to_its_other_tasks() {
    use std::cell::Cell;
    use std::rc::Rc;
    run(|| async {
        let tmp = temp();
        let (_dir, _shard, mut writer) = new_writer(tmp.path());
        let (turns, running) = (Rc::new(Cell::new(0u64)), Rc::new(Cell::new(true)));
        let other = crate::rt::spawn({
            let (turns, running) = (Rc::clone(&turns), Rc::clone(&running));
            async move {
                while running.get() {
                    turns.set(turns.get() + 1);
                    futures_lite::future::yield_now().await;
                }
            }
        });
        futures_lite::future::yield_now().await;
        let before = turns.get();
        writer.append_and_sync(vec![7u8; 1 << 20]).await.unwrap();
        let during = turns.get() - before;
        running.set(false);
        other.await;
        // 1 MiB written and synced takes milliseconds: the other task ran meanwhile.
        assert!(
            during > 10,
            "the other task ran {during} times during the append"
        );
    });
}

#[test]
fn journal_reopened_appends_after_what_the_segment_holds() {
    let tmp = temp();
    let (_dir, shard, writer) = new_writer(tmp.path());
    drop(writer);
    std::fs::write(shard.journal_path(1), b"kept|").unwrap();
    let mut writer = JournalWriter::create(&shard, 1).unwrap();
    assert_eq!(writer.len(), 5);
    run(move || async move {
        writer.append_and_sync(b"more|".to_vec()).await.unwrap();
        assert_eq!(read_file(&shard.journal_path(1)).unwrap(), b"kept|more|");
    });
}

/// 3 records of this size fit under the child's file size limit, the 4th does not.
const RECORD: usize = 30_000;
const FILE_SIZE_LIMIT: u64 = 100_000;

fn record(n: u8) -> Vec<u8> {
    vec![n; RECORD]
}

#[test]
fn journal_append_refused_by_the_file_system_leaves_the_segment_whole() {
    run_child(
        "durable::tests::journal::child_append_past_the_file_size_limit",
        &[],
    );
}

/// Run by the test above in a child process: sets `RLIMIT_FSIZE` (process-wide) with SIGXFSZ
/// ignored, so a write past the limit is cut short and the next one fails with EFBIG.
#[test]
#[ignore = "run in a child process by journal_append_refused_by_the_file_system_leaves_the_segment_whole"]
fn child_append_past_the_file_size_limit() {
    let mut hard = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on values owned here.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut hard), 0);
        assert_eq!(libc::signal(libc::SIGXFSZ, libc::SIG_IGN), libc::SIG_DFL);
    }
    let set_limit = move |soft: u64| {
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard.rlim_max,
        };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &limit) }, 0);
    };
    run(move || async move {
        let tmp = temp();
        let (_dir, shard, mut writer) = new_writer(tmp.path());
        set_limit(FILE_SIZE_LIMIT);
        for n in 0..3 {
            writer.append(record(n)).await.unwrap();
        }
        let err = writer.append(record(3)).await.unwrap_err();
        assert_eq!(
            err.io_error().and_then(|e| e.raw_os_error()),
            Some(libc::EFBIG)
        );
        assert_eq!(err.path(), shard.journal_path(1));
        assert!(
            err.to_string().contains("cannot append to the journal"),
            "{err}"
        );
        let len = std::fs::metadata(shard.journal_path(1)).unwrap().len();
        assert_eq!(len, 3 * RECORD as u64, "the partial 4th record is cut off");
        assert_eq!(writer.len(), len);

        // Room again: the same append is retried and lands right after the 3rd record.
        set_limit(hard.rlim_cur);
        writer.append_and_sync(record(3)).await.unwrap();
        let bytes = read_file(&shard.journal_path(1)).unwrap();
        let expected: Vec<u8> = (0..4).flat_map(record).collect();
        assert!(
            bytes == expected,
            "{} bytes, not the 4 records",
            bytes.len()
        );
    });
}

#[test]
fn journal_append_on_a_full_disk_fails_and_succeeds_once_space_returns() {
    let Some(fs) = SmallTmpfs::mount(256 * 1024, 0) else {
        return;
    };
    let root = fs.0.path().to_path_buf();
    run(move || async move {
        let (_dir, shard, mut writer) = new_writer(&root);
        // Take most of the space with another file, to be freed later.
        let filler = root.join("filler");
        std::fs::write(&filler, vec![0u8; 160 * 1024]).unwrap();
        let mut appended = Vec::new();
        let err = loop {
            let n = appended.len() as u8;
            match writer.append(record(n)).await {
                Ok(()) => appended.push(n),
                Err(e) => break e,
            }
            assert!(appended.len() < 10, "the tmpfs never filled up");
        };
        let kind = err.io_error().map(|e| e.kind());
        assert_eq!(kind, Some(std::io::ErrorKind::StorageFull), "{err}");
        let len = std::fs::metadata(shard.journal_path(1)).unwrap().len();
        assert_eq!(len, (appended.len() * RECORD) as u64, "no partial record");

        std::fs::remove_file(&filler).unwrap();
        let n = appended.len() as u8;
        writer.append_and_sync(record(n)).await.unwrap();
        appended.push(n);
        let expected: Vec<u8> = appended.iter().copied().flat_map(record).collect();
        let bytes = read_file(&shard.journal_path(1)).unwrap();
        assert!(
            bytes == expected,
            "{} bytes, not {}",
            bytes.len(),
            expected.len()
        );
    });
    drop(fs);
}

/// Appends of 64 KiB, with an fdatasync each and without: calls per second and p50 / p99 latency,
/// through the helper thread (what the shard uses) and blocking the shard itself, for comparison.
/// `cargo test --release -p shards -- --ignored --nocapture journal_measure` (and with
/// `SHARDS_TEST_RUNTIME=epoll`); `JOURNAL_MEASURE_DIR` picks the file system (default: the
/// system's temporary directory).
#[test]
#[ignore = "a measurement: run it by hand"]
fn journal_measure_64k_appends_with_fdatasync() {
    const CALLS: usize = 400;
    run(|| async {
        let base = std::env::var_os("JOURNAL_MEASURE_DIR").map(std::path::PathBuf::from);
        let tmp = match base {
            Some(base) => tempfile::tempdir_in(base).unwrap(),
            None => temp(),
        };
        let (_dir, _shard, mut writer) = new_writer(tmp.path());
        let chunk = vec![0x5au8; 64 * 1024];
        let report = |name: &str, total: Duration, mut lat: Vec<Duration>| {
            lat.sort();
            println!(
                "{name:>26} on {}: {:7.0} calls/s, p50 {:6.3} ms, p99 {:6.3} ms",
                crate::rt::current(),
                CALLS as f64 / total.as_secs_f64(),
                lat[lat.len() / 2].as_secs_f64() * 1e3,
                lat[lat.len() * 99 / 100].as_secs_f64() * 1e3,
            );
        };
        let variants = [
            ("append+fdatasync, helper", true, true),
            ("append+fdatasync, direct", false, true),
            ("append only, helper", true, false),
            ("append only, direct", false, false),
        ];
        for round in 0..2u64 {
            for (name, helper, sync) in variants {
                let mut lat = Vec::with_capacity(CALLS);
                let start = Instant::now();
                for _ in 0..CALLS {
                    let t = Instant::now();
                    match (helper, sync) {
                        (true, true) => writer.append_and_sync(chunk.clone()).await,
                        (true, false) => writer.append(chunk.clone()).await,
                        (false, sync) => writer.append_here(&chunk, sync),
                    }
                    .unwrap();
                    lat.push(t.elapsed());
                }
                // The first round warms the file system up.
                if round == 1 {
                    report(name, start.elapsed(), lat);
                }
            }
            writer.roll(round + 2).await.unwrap();
            writer.remove_before(round + 2).await.unwrap();
        }
    });
}

/// Append-only calls (what `fsync: interval` waits for) right after socket traffic, when the
/// shard's poller may block in its brief `epoll_pwait2` wait while the append is on the helper
/// thread: p50 / p99, next to the same calls with no socket. `cargo test --release -p shards --
/// --ignored --nocapture journal_measure_after_socket` (and with `SHARDS_TEST_RUNTIME=epoll`).
#[test]
#[ignore = "a measurement: run it by hand"]
fn journal_measure_after_socket_traffic() {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use std::io::{Read, Write};
    const CALLS: usize = 2000;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let (mut peer, _) = listener.accept().unwrap();
        let mut byte = [0u8; 1];
        while peer.read_exact(&mut byte).is_ok() {
            peer.write_all(&byte).unwrap();
        }
    });
    run(move || async move {
        let tmp = temp();
        let (_dir, _shard, mut writer) = new_writer(tmp.path());
        let chunk = vec![0x5au8; 4096];
        let mut conn = crate::TcpConn::connect(addr).await.unwrap();
        for with_socket in [false, true, false, true] {
            let mut lat = Vec::with_capacity(CALLS);
            for _ in 0..CALLS {
                if with_socket {
                    let mut byte = [1u8];
                    conn.write_all(&byte).await.unwrap();
                    conn.read_exact(&mut byte).await.unwrap();
                }
                let t = Instant::now();
                writer.append(chunk.clone()).await.unwrap();
                lat.push(t.elapsed());
            }
            lat.sort();
            println!(
                "4 KiB append on {}, {:>18}: p50 {:7.3} ms, p99 {:7.3} ms",
                crate::rt::current(),
                if with_socket {
                    "after a round trip"
                } else {
                    "no socket traffic"
                },
                lat[CALLS / 2].as_secs_f64() * 1e3,
                lat[CALLS * 99 / 100].as_secs_f64() * 1e3,
            );
        }
        drop(conn);
    });
    echo.join().unwrap();
}
