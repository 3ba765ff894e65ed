//! `amqtt_passwd`: manage the password file of the `auth_file` plugin, as `mosquitto_passwd` does.
//!
//! ```text
//! amqtt_passwd [-c] FILE USER              prompt twice for the password (no echo), add or update USER
//! amqtt_passwd [-c] FILE USER < pw.txt     the same, the password read from a non-terminal stdin
//! amqtt_passwd [-c] -b FILE USER PASSWORD  batch mode: the password on the command line
//! amqtt_passwd -D FILE USER                delete USER
//! amqtt_passwd -U FILE                     hash every plain-text `user:password` line of FILE
//! amqtt_passwd --sha512 ...                write SHA-512 crypt instead of argon2id
//! amqtt_passwd --scram ...                 write SCRAM-SHA-256 credentials instead (MQTT 5 SCRAM)
//! ```
//! A password from stdin is its first line without the line ending, so that scripts need not put
//! it in argv (where `ps` shows it): `printf '%s\n' "$PW" | amqtt_passwd FILE USER`.
//! `-c` creates (or overwrites) the file. Hashes are argon2id with a random salt and argon2-cffi's
//! default parameters (m=65536 KiB, t=3, p=4, 16-byte salt, 32-byte hash), exactly the string
//! aMQTT 0.12's documented helper (`argon2.PasswordHasher().hash(...)`) writes, so aMQTT 0.12
//! reads our files and we read its. `--sha512` writes SHA-512 crypt with a random salt and 5,000
//! rounds, the form `mkpasswd -m sha-512` writes, for Mosquitto 1.x-era tools and aMQTT up to
//! 0.11. `--scram` writes `SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>` (RFC 5803), which
//! lets the user log in with MQTT 5 enhanced authentication, method `SCRAM-SHA-256`, and with a
//! plain CONNECT password as well. Other lines (comments, other users) are kept as they are, the
//! file is replaced atomically (temporary file + rename) and keeps its permissions; a new file is
//! created readable by its owner only. The file's format and hashing live in
//! `amqtt::plugins::password_file`; this binary parses arguments, prompts, and writes.

use std::fs;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use amqtt::plugins::password_file::scram::SCRAM_PREFIX;
use amqtt::plugins::password_file::{
    check_hash, check_username, format_line, hash_argon2id, hash_scram, hash_sha512, parse_line,
    PasswordFile,
};

/// Manage an amqtt password file (users and password hashes), like mosquitto_passwd.
///
/// Hashes are argon2id with argon2-cffi's defaults (m=65536 KiB, t=3, p=4), as aMQTT 0.12 writes
/// them; --sha512 writes SHA-512 crypt as `mkpasswd -m sha-512` does; --scram writes SCRAM-SHA-256
/// credentials (4096 iterations), for MQTT 5 clients that authenticate with SCRAM-SHA-256 (plain
/// CONNECT passwords are checked against them too). The broker also reads bcrypt and SHA-256
/// crypt hashes made by other tools.
///
/// Adds or updates USER: the password is asked twice on the terminal (no echo); when stdin is not
/// a terminal it is read from stdin instead, one line without its line ending (for scripts:
/// `printf '%s\n' "$PW" | amqtt_passwd FILE USER`, which keeps it out of `ps`); with -b it is the
/// PASSWORD argument. -D deletes USER. -U hashes the plain-text passwords of FILE (lines already
/// holding a hash are kept). Other lines of FILE are kept; FILE is replaced atomically
/// and keeps its permissions (a new one is readable by its owner only). Exits 1 with a one-line
/// error on stderr.
#[derive(Parser, Debug)]
#[command(name = "amqtt_passwd", version)]
struct Args {
    /// Create a new password file; an existing one is overwritten.
    #[arg(short = 'c', conflicts_with = "delete")]
    create: bool,
    /// Delete USER from the file.
    #[arg(short = 'D', conflicts_with = "batch")]
    delete: bool,
    /// Batch mode: take the password from the command line instead of prompting.
    #[arg(short = 'b')]
    batch: bool,
    /// Upgrade FILE: replace every plain-text `user:password` line by `user:hash` (as
    /// mosquitto_passwd -U); lines that already hold a hash are kept.
    #[arg(short = 'U', conflicts_with_all = ["create", "delete", "batch"])]
    upgrade: bool,
    /// Write a SHA-512 crypt hash (`$6$`, as `mkpasswd -m sha-512`) instead of argon2id.
    #[arg(long = "sha512", conflicts_with = "delete")]
    sha512: bool,
    /// Write SCRAM-SHA-256 credentials (`SCRAM-SHA-256$4096:salt$StoredKey:ServerKey`) instead of
    /// argon2id: the user can then log in with MQTT 5 enhanced authentication (SCRAM-SHA-256), and
    /// with a plain CONNECT password too.
    #[arg(long = "scram", conflicts_with_all = ["delete", "sha512"])]
    scram: bool,
    /// The password file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The user to add, update or delete.
    #[arg(value_name = "USER", required_unless_present = "upgrade")]
    user: Option<String>,
    /// The password (with -b only).
    #[arg(value_name = "PASSWORD")]
    password: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("amqtt_passwd: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    if args.upgrade {
        if args.user.is_some() {
            return Err("-U takes only FILE".to_string());
        }
        let existing = fs::read_to_string(&args.file)
            .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
        let text = upgraded(&existing, &args.file, |password| new_hash(args, password))?;
        return write_atomically(&args.file, &text, false)
            .map_err(|e| format!("cannot write {}: {e}", args.file.display()));
    }
    let user = args.user.as_deref().unwrap_or_default();
    check_username(user).map_err(|e| format!("invalid user name: {e}"))?;
    if args.batch != args.password.is_some() {
        return Err(if args.batch {
            "-b needs a PASSWORD after USER".to_string()
        } else {
            "a PASSWORD on the command line needs -b (batch mode)".to_string()
        });
    }
    let existing = if args.create {
        String::new()
    } else {
        fs::read_to_string(&args.file).map_err(|e| {
            format!(
                "cannot read {}: {e} (use -c to create a new file)",
                args.file.display()
            )
        })?
    };
    let text = if args.delete {
        let (text, found) = without_user(&existing, user, &args.file)?;
        if !found {
            return Err(format!("user '{user}' is not in {}", args.file.display()));
        }
        text
    } else {
        let password = match &args.password {
            Some(password) => password.clone(),
            None if io::stdin().is_terminal() => prompt_password()?,
            None => read_stdin_password(io::stdin().lock())?,
        };
        let hash = new_hash(args, &password)?;
        with_user(&existing, user, &hash, &args.file)?
    };
    write_atomically(&args.file, &text, args.create)
        .map_err(|e| format!("cannot write {}: {e}", args.file.display()))
}

/// A hash of `password` in the scheme the options chose.
fn new_hash(args: &Args, password: &str) -> Result<String, String> {
    if password.is_empty() {
        return Err("empty password".to_string());
    }
    if args.sha512 {
        hash_sha512(password.as_bytes())
    } else if args.scram {
        hash_scram(password.as_bytes())
    } else {
        hash_argon2id(password.as_bytes())
    }
    .map_err(|e| e.to_string())
}

/// The file with every plain-text `user:password` line replaced by `user:hash`; comments, blank
/// lines and lines that hold a hash already are kept. The result must load as a password file.
fn upgraded(
    existing: &str,
    file: &Path,
    hash: impl Fn(&str) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(existing.len() * 2);
    for (index, line) in existing.lines().enumerate() {
        let at = |reason: String| format!("{}:{}: {reason}", file.display(), index + 1);
        let entry = line.trim();
        if entry.is_empty() || entry.starts_with('#') {
            out.push_str(line);
        } else {
            let (user, value) = entry
                .split_once(':')
                .ok_or_else(|| at("expected 'user:password'".to_string()))?;
            check_username(user).map_err(at)?;
            if value.starts_with('$') || value.starts_with(SCRAM_PREFIX) {
                // A hash (or a plain-text password that looks like one: refused, not guessed).
                check_hash(value).map_err(at)?;
                out.push_str(line);
            } else {
                out.push_str(&format_line(user, &hash(value).map_err(at)?));
            }
        }
        out.push('\n');
    }
    PasswordFile::parse(&out, &file.display().to_string()).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The file with `user`'s line replaced by `user:hash` (or appended), other lines untouched.
fn with_user(existing: &str, user: &str, hash: &str, file: &Path) -> Result<String, String> {
    let mut out = String::with_capacity(existing.len() + 128);
    let mut replaced = false;
    for (index, line) in existing.lines().enumerate() {
        match entry_user(line, index, file)? {
            Some(name) if name == user => {
                if !replaced {
                    out.push_str(&format_line(user, hash));
                    out.push('\n');
                    replaced = true;
                }
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if !replaced {
        out.push_str(&format_line(user, hash));
        out.push('\n');
    }
    Ok(out)
}

/// The file without `user`'s line, and whether it was there.
fn without_user(existing: &str, user: &str, file: &Path) -> Result<(String, bool), String> {
    let mut out = String::with_capacity(existing.len());
    let mut found = false;
    for (index, line) in existing.lines().enumerate() {
        if entry_user(line, index, file)? == Some(user) {
            found = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok((out, found))
}

/// The user of an entry line; `None` for blank lines and comments. A malformed line is an error:
/// rewriting a file the broker would refuse helps nobody.
fn entry_user<'a>(line: &'a str, index: usize, file: &Path) -> Result<Option<&'a str>, String> {
    parse_line(line)
        .map(|entry| entry.map(|(user, _)| user))
        .map_err(|reason| format!("{}:{}: {reason}", file.display(), index + 1))
}

/// Writes `text` to a temporary file next to `path`, then renames it over `path`. Keeps the old
/// file's permissions; a new file is 0600.
fn write_atomically(path: &Path, text: &str, create: bool) -> io::Result<()> {
    let mode = match fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => 0o600,
        Err(e) => return Err(e),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Asks for the password twice on the terminal, without echo.
fn prompt_password() -> Result<String, String> {
    let first = read_hidden("Password: ")?;
    let second = read_hidden("Reenter password: ")?;
    if first != second {
        return Err("passwords do not match".to_string());
    }
    Ok(first)
}

/// The first line of a non-terminal stdin, without its line ending. At most 64 KiB is read:
/// MQTT cannot carry a longer password.
fn read_stdin_password(input: impl Read) -> Result<String, String> {
    let mut line = Vec::new();
    io::BufReader::new(input.take(65_536))
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    if line.is_empty() {
        return Err(
            "no password on stdin (pipe one line, run on a terminal to be prompted, or use -b)"
                .to_string(),
        );
    }
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8(line.to_vec())
        .map_err(|_| "the password read from stdin is not valid UTF-8".to_string())
}

/// Reads one line from the controlling terminal with echo off (restored afterwards).
fn read_hidden(prompt: &str) -> Result<String, String> {
    let tty = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| format!("cannot open the terminal ({e}); use -b FILE USER PASSWORD"))?;
    let mut out = &tty;
    out.write_all(prompt.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot prompt: {e}"))?;
    let line = {
        let _echo_off = EchoOff::new(&tty).map_err(|e| format!("cannot turn echo off: {e}"))?;
        let mut line = String::new();
        io::BufReader::new(&tty)
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password: {e}"))?;
        line
    };
    // ECHONL echoed the newline the user typed.
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Terminal echo turned off while alive.
struct EchoOff {
    fd: std::os::fd::RawFd,
    saved: libc::termios,
}

impl EchoOff {
    fn new(tty: &fs::File) -> io::Result<EchoOff> {
        use std::os::fd::AsRawFd;
        let fd = tty.as_raw_fd();
        // SAFETY: `termios` is plain data, filled in by `tcgetattr` before use; `fd` is an open
        // terminal for the lifetime of this guard (the caller keeps the file).
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut saved) != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            quiet.c_lflag |= libc::ECHONL;
            if libc::tcsetattr(fd, libc::TCSANOW, &quiet) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(EchoOff { fd, saved })
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `new` on the same, still open, terminal.
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_hashes_plain_text_lines_and_keeps_the_rest() {
        use amqtt::plugins::password_file::verify;
        let file = Path::new("pw");
        let sha512 = |password: &str| {
            if password.is_empty() {
                return Err("empty password".to_string());
            }
            hash_sha512(password.as_bytes()).map_err(|e| e.to_string())
        };
        let kept = sha512("kept").expect("hash");
        let text = format!("# users\n\nalice:wonder land\nbob:{kept}\n carol:c:d\n");
        let out = upgraded(&text, file, sha512).expect("upgraded");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[..2], ["# users", ""]);
        assert_eq!(lines[3], format!("bob:{kept}"));
        let hash = |line: &str, user: &str| line.strip_prefix(user).expect(user).to_string();
        assert!(verify(b"wonder land", &hash(lines[2], "alice:")));
        assert!(verify(b"c:d", &hash(lines[4], "carol:")));
        assert_eq!(lines.len(), 5);
        for (bad, reason) in [
            ("alice\n", "pw:1: expected 'user:password'"),
            ("alice:\n", "pw:1: empty password"),
            (
                "alice:$ecret\n",
                "pw:1: unsupported password hash scheme '$ecret$'",
            ),
            ("a:x\na:y\n", "pw:2: user 'a' is listed twice"),
        ] {
            let error = upgraded(bad, file, sha512).expect_err(bad);
            assert!(error.starts_with(reason), "{bad:?}: {error}");
        }
    }

    #[test]
    fn stdin_password_is_its_first_line_without_the_ending() {
        assert_eq!(read_stdin_password(&b"s3cret\n"[..]).unwrap(), "s3cret");
        assert_eq!(
            read_stdin_password(&b"s3cret\r\nmore\n"[..]).unwrap(),
            "s3cret"
        );
        assert_eq!(
            read_stdin_password(&b"no newline"[..]).unwrap(),
            "no newline"
        );
        assert_eq!(read_stdin_password(&b"\n"[..]).unwrap(), "");
        assert!(read_stdin_password(&b""[..])
            .unwrap_err()
            .contains("no password on stdin"));
        assert!(read_stdin_password(&b"\xff\n"[..])
            .unwrap_err()
            .contains("UTF-8"));
    }
}
