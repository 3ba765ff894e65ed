//! `amqtt_passwd`: batch mode creating, updating and deleting users in a file the broker then
//! accepts, argon2id by default and SHA-512 crypt with `--sha512` (compared with `openssl passwd
//! -6` and `mkpasswd`), the interactive prompt on a terminal, and the password piped on stdin.

use std::io::Write;

use super::*;

// ---- amqtt_passwd ------------------------------------------------------------------------

fn passwd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_amqtt_passwd"))
        .args(args)
        .output()
        .expect("amqtt_passwd runs")
}

fn users(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').next().unwrap_or_default().to_string())
        .collect()
}

/// A path for a password file in a new temporary directory (removed when the guard drops).
fn new_passwd_path() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("passwd");
    (dir, path)
}

#[test]
fn amqtt_passwd_batch_mode_creates_updates_and_deletes_and_the_broker_accepts_the_file() {
    let _serial = serial();
    let (_dir, path) = new_passwd_path();
    let file = path.to_str().expect("utf-8 path");

    let missing = passwd(&["-b", file, "alice", "pw"]);
    assert!(!missing.status.success(), "without -c the file must exist");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("use -c"));

    assert!(passwd(&["-c", "-b", file, "alice", "first"])
        .status
        .success());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a new password file is private");
    assert!(passwd(&["-b", file, "bob", "builder"]).status.success());
    // A comment added by hand survives updates.
    let mut text = std::fs::read_to_string(&path).expect("read");
    text.insert_str(0, "# managed by hand too\n");
    std::fs::write(&path, text).expect("write");
    assert!(
        passwd(&["-b", file, "alice", "wonderland"])
            .status
            .success(),
        "update"
    );
    assert!(passwd(&["-b", file, "carol", "c"]).status.success());
    assert!(passwd(&["-D", file, "carol"]).status.success());
    assert_eq!(users(&path), ["alice", "bob"]);
    assert!(std::fs::read_to_string(&path)
        .expect("read")
        .starts_with("# managed by hand too\n"));

    let bad = passwd(&["-D", file, "carol"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("not in"));
    assert!(
        !passwd(&["-b", file, "dave"]).status.success(),
        "-b needs a password"
    );
    assert!(
        !passwd(&["-b", file, "a:b", "x"]).status.success(),
        "':' in a user name"
    );
    assert!(
        !passwd(&["-b", file, "erin", ""]).status.success(),
        "empty password"
    );

    // New hashes are argon2id with argon2-cffi's parameters (aMQTT 0.12's helper).
    let alice_hash = hash_in(&path, "alice");
    assert!(
        alice_hash.starts_with("$argon2id$v=19$m=65536,t=3,p=4$"),
        "{alice_hash}"
    );
    assert!(password_file::verify(b"wonderland", &alice_hash));

    // --sha512: what `openssl passwd -6` and `mkpasswd -m sha-512` write for that salt.
    assert!(passwd(&["--sha512", "-b", file, "dave", "diver"])
        .status
        .success());
    let dave_hash = hash_in(&path, "dave");
    assert!(
        dave_hash.starts_with("$6$") && !dave_hash.contains("rounds="),
        "{dave_hash}"
    );
    let salt = dave_hash.split('$').nth(2).expect("salt");
    let mut compared = 0;
    for tool in [
        &["openssl", "passwd", "-6", "-salt", salt, "diver"][..],
        &["mkpasswd", "-m", "sha-512", "-S", salt, "diver"][..],
    ] {
        if let Ok(out) = Command::new(tool[0]).args(&tool[1..]).output() {
            if out.status.success() {
                assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), dave_hash);
                compared += 1;
            }
        }
    }
    eprintln!("--sha512 output compared with {compared} of openssl, mkpasswd");
    assert!(
        !passwd(&["--sha512", "-D", file, "dave"]).status.success(),
        "--sha512 with -D"
    );

    let (_broker, addr) = start(&auth_yaml(&path, false), 1);
    use ConnectReturnCode::{Accepted, NotAuthorized};
    for (id, user, password, code) in [
        ("a", "alice", "wonderland", Accepted),
        ("a2", "alice", "first", NotAuthorized),
        ("b", "bob", "builder", Accepted),
        ("c", "carol", "c", NotAuthorized),
        ("d", "dave", "diver", Accepted),
        ("d2", "dave", "Diver", NotAuthorized),
    ] {
        expect_connack(addr, login(id, Some(user), Some(password)), code);
    }
}

/// The hash of `user` in the password file at `path`.
fn hash_in(path: &Path, user: &str) -> String {
    let text = std::fs::read_to_string(path).expect("read");
    let prefix = format!("{user}:");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_string))
        .unwrap_or_else(|| panic!("{user} in {text}"))
}

#[test]
fn amqtt_passwd_prompts_twice_on_the_terminal() {
    let _serial = serial();
    // `script` gives the tool a terminal; what we write to its stdin is typed on it.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("script (util-linux) not installed: skipped");
        return;
    }
    let (_dir, path) = new_passwd_path();
    let run = |typed: &str| {
        let command = format!(
            "{} -c {} alice",
            env!("CARGO_BIN_EXE_amqtt_passwd"),
            path.display()
        );
        let mut child = Command::new("script")
            .args(["-q", "-e", "-c", &command, "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("script runs");
        let mut stdin = child.stdin.take().expect("stdin");
        for line in typed.lines() {
            // One line at a time, after the prompt had time to turn echo off.
            std::thread::sleep(Duration::from_millis(300));
            let _ = stdin.write_all(format!("{line}\n").as_bytes());
        }
        std::thread::sleep(Duration::from_millis(300));
        drop(stdin);
        child.wait_with_output().expect("output")
    };
    let out = run("s3cret\ns3cret\n");
    let screen = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    assert!(
        screen.contains("Password:") && screen.contains("Reenter password:"),
        "{screen}"
    );
    assert!(
        !screen.contains("s3cret"),
        "the password was echoed: {screen}"
    );
    assert!(password_file::verify(b"s3cret", &hash_in(&path, "alice")));

    let out = run("one\ntwo\n");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("do not match"),
        "{out:?}"
    );
}

/// `amqtt_passwd` with `input` piped to its stdin (not a terminal).
fn passwd_piped(args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_amqtt_passwd"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("amqtt_passwd runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().expect("output")
}

#[test]
fn amqtt_passwd_reads_the_password_from_a_piped_stdin() {
    let _serial = serial();
    let (_dir, path) = new_passwd_path();
    let file = path.to_str().expect("utf-8 path");

    let out = passwd_piped(&["-c", file, "alice"], b"pipe d\n");
    assert!(out.status.success(), "{out:?}");
    let hash_of = |user: &str| hash_in(&path, user);
    assert!(password_file::verify(b"pipe d", &hash_of("alice")));
    // The line ending is not part of the password, \r\n included; only the first line counts.
    let out = passwd_piped(&[file, "bob"], b"builder\r\nignored\n");
    assert!(out.status.success(), "{out:?}");
    assert!(password_file::verify(b"builder", &hash_of("bob")));

    for (input, expected) in [
        (&b""[..], "no password on stdin"),
        (&b"\n"[..], "empty password"),
    ] {
        let out = passwd_piped(&[file, "carol"], input);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{input:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{input:?}: {stderr}");
    }
    assert_eq!(users(&path), ["alice", "bob"]);

    let help = passwd(&["--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.starts_with("Manage an amqtt password file"), "{help}");
    assert!(help.contains("-U"), "{help}");
    assert!(help.contains("stdin is not"), "{help}");
    assert!(
        help.contains("argon2id") && help.contains("--sha512"),
        "{help}"
    );
}

#[test]
fn amqtt_passwd_upgrades_a_plain_text_file_as_mosquitto_passwd_does() {
    let _serial = serial();
    let (_dir, path) = new_passwd_path();
    let file = path.to_str().expect("utf-8 path");
    std::fs::write(
        &path,
        format!("# plain\nalice:wonder land\nbob:{ALICE_HUNTER2}\n"),
    )
    .expect("write");
    let out = passwd(&["-U", file]);
    assert!(out.status.success(), "{out:?}");
    assert!(hash_in(&path, "alice").starts_with("$argon2id$"));
    assert_eq!(
        hash_in(&path, "bob"),
        ALICE_HUNTER2,
        "a hash is kept as it is"
    );
    // Nothing left to upgrade: the file stays the same.
    let before = std::fs::read_to_string(&path).expect("read");
    assert!(passwd(&["-U", file]).status.success());
    assert_eq!(std::fs::read_to_string(&path).expect("read"), before);
    let misuse = passwd(&["-U", file, "alice"]);
    assert!(String::from_utf8_lossy(&misuse.stderr).contains("-U takes only FILE"));

    let (_broker, addr) = start(&auth_yaml(&path, false), 1);
    for (user, password) in [("alice", "wonder land"), ("bob", "hunter2")] {
        let connect = login(user, Some(user), Some(password));
        expect_connack(addr, connect, ConnectReturnCode::Accepted);
    }
}

/// argon2id with aMQTT 0.12's parameters (64 MiB, tens to hundreds of milliseconds per
/// verification) takes the same path as SHA-512 crypt: the shard's helper thread.
#[test]
fn argon2_verification_does_not_stall_the_shards_other_clients() {
    let _serial = serial();
    let slow = password_file::hash_argon2id(b"right").expect("hash");
    let verification = (0..2)
        .map(|_| {
            let started = Instant::now();
            assert!(!password_file::verify(b"wrong", &slow));
            started.elapsed()
        })
        .min()
        .expect("two runs");
    hashing_stays_off_the_event_loop(&slow, verification);
}
