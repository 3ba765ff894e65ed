//! Tests of the data directory on real temporary directories: creation, lock and refusal,
//! generations (switch, crash before the switch, a damaged `CURRENT`), atomic writes,
//! truncation and each shard's files in order. The journal writer's are in `journal.rs`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

mod journal;

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// A new data directory `data` in a temporary directory (removed when the first is dropped).
fn open_new() -> (tempfile::TempDir, std::path::PathBuf, DataDir) {
    let tmp = temp();
    let path = tmp.path().join("data");
    let dir = DataDir::open(&path).unwrap();
    (tmp, path, dir)
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn open_creates_the_directory_private_and_locked() {
    let tmp = temp();
    let path = tmp.path().join("a/b/data");
    let dir = DataDir::open(&path).unwrap();
    assert_eq!(dir.path(), path);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    assert_eq!(dir.current(), None, "a new directory has no generation");
    assert_eq!(names(&path), ["LOCK"], "the probe file is gone");
    let pid = std::fs::read_to_string(path.join("LOCK")).unwrap();
    assert_eq!(pid.trim(), std::process::id().to_string());

    // A second open (here: same process, another open file description) is refused.
    let err = DataDir::open(&path).unwrap_err();
    assert!(
        matches!(&err, DurableError::Locked { holder: Some(p), .. } if *p == std::process::id()),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
    assert!(msg.contains("in use by another broker"), "{msg}");
    assert!(
        msg.contains(&format!("(pid {})", std::process::id())),
        "{msg}"
    );

    // The lock goes with the DataDir.
    drop(dir);
    DataDir::open(&path).unwrap();
}

/// The path [`child_opens_a_locked_directory`] tries.
const LOCKED_DIR_ENV: &str = "SHARDS_TEST_LOCKED_DIR";

#[test]
fn a_second_process_is_refused_while_the_first_holds_the_directory() {
    let (_tmp, path, dir) = open_new();
    crate::test_util::run_child(
        "durable::tests::child_opens_a_locked_directory",
        &[(LOCKED_DIR_ENV, path.as_os_str())],
    );
    drop(dir);
}

/// Run by the test above in a child process, while the parent holds the directory open.
#[test]
#[ignore = "run in a child process by a_second_process_is_refused_while_the_first_holds_the_directory"]
fn child_opens_a_locked_directory() {
    let path = std::path::PathBuf::from(std::env::var_os(LOCKED_DIR_ENV).expect(LOCKED_DIR_ENV));
    let err = DataDir::open(&path).unwrap_err();
    let parent = std::os::unix::process::parent_id();
    assert!(
        matches!(&err, DurableError::Locked { holder: Some(p), .. } if *p == parent),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{}: the data directory is in use by another broker (pid {parent}); one broker per \
             directory",
            path.display()
        )
    );
}

#[test]
fn open_refuses_a_directory_that_cannot_be_created_naming_path_and_reason() {
    let tmp = temp();
    let file = tmp.path().join("plain-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let path = file.join("data");
    let err = DataDir::open(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DurableError::Io { .. }), "{err:?}");
    assert_eq!(err.path(), path);
    assert_eq!(
        err.io_error().map(|e| e.kind()),
        Some(std::io::ErrorKind::NotADirectory)
    );
    assert!(
        msg.starts_with(&format!(
            "{}: cannot create the data directory: ",
            path.display()
        )),
        "{msg}"
    );
    assert!(msg.contains("Not a directory"), "{msg}");
}

#[test]
fn open_refuses_a_read_only_directory_naming_path_and_reason() {
    let Some(fs) = SmallTmpfs::mount(64 * 1024, libc::MS_RDONLY) else {
        return;
    };
    // Root may write anywhere chmod forbids, not on a read-only file system.
    let err = DataDir::open(fs.0.path()).unwrap_err();
    assert_eq!(err.path(), fs.0.path().join("LOCK"));
    assert_eq!(
        err.io_error().and_then(|e| e.raw_os_error()),
        Some(libc::EROFS)
    );
    let msg = err.to_string();
    assert!(
        msg.contains("cannot create the lock file: Read-only file system"),
        "{msg}"
    );
    let err = DataDir::open(&fs.0.path().join("data")).unwrap_err();
    assert!(
        err.to_string().contains("cannot create the data directory"),
        "{err}"
    );
}

/// A small tmpfs mounted for one test and unmounted when dropped.
pub(super) struct SmallTmpfs(pub(super) tempfile::TempDir);

impl SmallTmpfs {
    /// A tmpfs of `bytes` with mount `flags` (`libc::MS_RDONLY`, ...); `None` when this process
    /// may not mount (not root, or in a container that forbids it).
    pub(super) fn mount(bytes: usize, flags: libc::c_ulong) -> Option<SmallTmpfs> {
        let dir = temp();
        let target = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
        let options = std::ffi::CString::new(format!("size={bytes}")).unwrap();
        // SAFETY: NUL-terminated strings that outlive the call.
        let mounted = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                flags,
                options.as_ptr().cast(),
            )
        };
        if mounted != 0 {
            eprintln!(
                "cannot mount a tmpfs ({}): skipping this case",
                std::io::Error::last_os_error()
            );
            return None;
        }
        Some(SmallTmpfs(dir))
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let target = std::ffi::CString::new(self.0.path().as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: as in mount.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn generations_switch_and_old_ones_go() {
    let (_tmp, path, mut dir) = open_new();
    let first = dir.begin_generation(2).unwrap();
    assert_eq!(first.number(), 1);
    assert_eq!(first.path(), path.join("gen-1"));
    let shards = first.shards().unwrap();
    assert_eq!(shards.iter().map(|s| s.shard()).collect::<Vec<_>>(), [0, 1]);
    write_atomically(&shards[1].snapshot_path(1), b"state of shard 1").unwrap();
    dir.commit_generation(first).unwrap();
    assert_eq!(
        std::fs::read_to_string(path.join("CURRENT")).unwrap(),
        "1\n"
    );
    assert_eq!(names(&path), ["CURRENT", "LOCK", "gen-1"]);
    drop(dir);

    // The next start reads generation 1 and writes generation 2.
    let mut dir = DataDir::open(&path).unwrap();
    let live = dir.current().cloned().expect("generation 1 is live");
    assert_eq!(live.number(), 1);
    let shard1 = live.shard(1);
    let files = shard1.files().unwrap();
    assert_eq!(files.snapshots.len(), 1);
    assert_eq!(
        read_file(&files.snapshots[0].path).unwrap(),
        b"state of shard 1"
    );
    let second = dir.begin_generation(3).unwrap();
    assert_eq!(second.number(), 2);
    assert_eq!(second.shards().unwrap().len(), 3);
    dir.commit_generation(second).unwrap();
    assert_eq!(
        std::fs::read_to_string(path.join("CURRENT")).unwrap(),
        "2\n"
    );
    assert_eq!(names(&path), ["CURRENT", "LOCK", "gen-2"], "gen-1 removed");
    assert_eq!(dir.current().map(Generation::number), Some(2));
}

#[test]
fn a_crash_before_the_switch_keeps_the_old_generation_live() {
    let (_tmp, path, mut dir) = open_new();
    let first = dir.begin_generation(1).unwrap();
    write_atomically(&first.shard(0).snapshot_path(1), b"old").unwrap();
    dir.commit_generation(first).unwrap();
    // The next start writes generation 2 but dies before committing it.
    let second = dir.begin_generation(1).unwrap();
    write_atomically(&second.shard(0).snapshot_path(1), b"new").unwrap();
    std::fs::write(
        second.shard(0).path().join("snapshot-00000002.bin.tmp"),
        b"half",
    )
    .unwrap();
    drop(dir);
    assert_eq!(names(&path), ["CURRENT", "LOCK", "gen-1", "gen-2"]);

    let dir = DataDir::open(&path).unwrap();
    assert_eq!(dir.current().map(Generation::number), Some(1));
    assert_eq!(
        names(&path),
        ["CURRENT", "LOCK", "gen-1"],
        "gen-2 is garbage"
    );
    let snapshot = &dir.current().unwrap().shard(0).files().unwrap().snapshots[0];
    assert_eq!(read_file(&snapshot.path).unwrap(), b"old");
}

#[test]
fn a_crash_before_the_first_switch_leaves_no_generation() {
    let (_tmp, path, mut dir) = open_new();
    let first = dir.begin_generation(2).unwrap();
    write_atomically(&first.shard(0).snapshot_path(1), b"x").unwrap();
    drop(dir);
    std::fs::write(path.join("CURRENT.tmp"), b"1\n").unwrap();
    let dir = DataDir::open(&path).unwrap();
    assert_eq!(dir.current(), None);
    assert_eq!(names(&path), ["LOCK"]);
}

#[test]
fn leftover_tmp_files_of_the_live_generation_are_removed_at_open() {
    let (_tmp, path, mut dir) = open_new();
    let first = dir.begin_generation(1).unwrap();
    let shard = first.shard(0);
    dir.commit_generation(first).unwrap();
    write_atomically(&shard.snapshot_path(1), b"whole").unwrap();
    std::fs::write(shard.path().join("snapshot-00000002.bin.tmp"), b"torn").unwrap();
    drop(dir);
    DataDir::open(&path).unwrap();
    assert_eq!(names(shard.path()), ["snapshot-00000001.bin"]);
}

#[test]
fn a_damaged_current_is_refused_and_nothing_is_removed() {
    let (_tmp, path, mut dir) = open_new();
    let first = dir.begin_generation(1).unwrap();
    dir.commit_generation(first).unwrap();
    drop(dir);
    for (content, needle) in [
        ("one\n", "expected a generation number, found \"one\\n\""),
        ("", "expected a generation number"),
        ("7\n", "names generation 7, but"),
    ] {
        std::fs::write(path.join("CURRENT"), content).unwrap();
        let err = DataDir::open(&path).unwrap_err();
        assert!(matches!(err, DurableError::Corrupt { .. }), "{err:?}");
        assert_eq!(err.path(), path.join("CURRENT"));
        assert!(err.to_string().contains(needle), "{err}");
        assert!(path.join("gen-1").is_dir(), "nothing removed");
    }
}

#[test]
fn only_the_generation_begun_last_can_be_committed() {
    let (_tmp, _path, mut dir) = open_new();
    let first = dir.begin_generation(1).unwrap();
    let stale = first.clone();
    dir.commit_generation(first).unwrap();
    let err = dir.commit_generation(stale).unwrap_err();
    assert!(
        err.to_string()
            .contains("is not the generation begun last in this directory"),
        "{err}"
    );
    assert_eq!(dir.current().map(Generation::number), Some(1));
}

#[test]
fn write_atomically_replaces_whole_files() {
    let tmp = temp();
    let path = tmp.path().join("snapshot.bin");
    write_atomically(&path, b"first").unwrap();
    assert_eq!(read_file(&path).unwrap(), b"first");
    // A stale tmp from a crash is overwritten, not appended to.
    std::fs::write(tmp.path().join("snapshot.bin.tmp"), b"stale stale stale").unwrap();
    write_atomically(&path, b"second").unwrap();
    assert_eq!(read_file(&path).unwrap(), b"second");
    assert_eq!(names(tmp.path()), ["snapshot.bin"]);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    let err = write_atomically(&tmp.path().join("no-dir/x.bin"), b"x").unwrap_err();
    assert_eq!(err.path(), tmp.path().join("no-dir/x.bin.tmp"));
    assert!(err.to_string().contains("cannot create"), "{err}");
}

#[test]
fn truncate_cuts_a_torn_tail() {
    let tmp = temp();
    let path = tmp.path().join("journal-00000001.log");
    std::fs::write(&path, b"whole record|torn rec").unwrap();
    truncate(&path, 13).unwrap();
    assert_eq!(read_file(&path).unwrap(), b"whole record|");
    let err = truncate(&tmp.path().join("missing.log"), 0).unwrap_err();
    assert_eq!(err.path(), tmp.path().join("missing.log"));
    let err = read_file(&tmp.path().join("missing.log")).unwrap_err();
    assert!(
        err.to_string().contains("missing.log: cannot read: "),
        "{err}"
    );
}

#[test]
fn shard_files_are_listed_in_number_order_and_removed_below_a_number() {
    let (_tmp, _path, mut dir) = open_new();
    let generation = dir.begin_generation(1).unwrap();
    let shard = generation.shard(0);
    for name in [
        "journal-00000010.log",
        "snapshot-00000010.bin",
        "journal-00000003.log",
        "journal-9.log",
        "snapshot-00000002.bin",
        "notes.txt",
        "journal-x.log",
        "snapshot-00000011.bin.tmp",
    ] {
        std::fs::write(shard.path().join(name), name).unwrap();
    }
    let files = shard.files().unwrap();
    let seqs = |f: &[SeqFile]| f.iter().map(|f| f.seq).collect::<Vec<_>>();
    assert_eq!(seqs(&files.snapshots), [2, 10]);
    assert_eq!(seqs(&files.journals), [3, 9, 10]);
    assert_eq!(files.journals[1].path, shard.path().join("journal-9.log"));
    assert_eq!(
        shard.journal_path(3),
        shard.path().join("journal-00000003.log")
    );

    shard.remove_before(10).unwrap();
    let files = shard.files().unwrap();
    assert_eq!(seqs(&files.snapshots), [10]);
    assert_eq!(seqs(&files.journals), [10]);
    assert!(
        shard.path().join("notes.txt").exists(),
        "other files are left"
    );
}

#[test]
fn error_messages_name_the_path_and_the_step() {
    let err = DurableError::Io {
        path: "/data/gen-1/shard-0/journal-00000001.log".into(),
        action: "append to the journal",
        source: std::io::Error::from_raw_os_error(libc::ENOSPC),
    };
    assert_eq!(
        err.to_string(),
        "/data/gen-1/shard-0/journal-00000001.log: cannot append to the journal: \
         No space left on device (os error 28)"
    );
    assert_eq!(
        err.io_error().map(|e| e.kind()),
        Some(std::io::ErrorKind::StorageFull)
    );
}
