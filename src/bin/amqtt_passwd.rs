//! `amqtt_passwd`: manage the password file of the `auth_file` plugin, as `mosquitto_passwd` does.
//!
//! ```text
//! amqtt_passwd [-c] FILE USER              prompt twice for the password (no echo), add or update USER
//! amqtt_passwd [-c] FILE USER < pw.txt     the same, the password read from a non-terminal stdin
//! amqtt_passwd [-c] -b FILE USER PASSWORD  batch mode: the password on the command line
//! amqtt_passwd -D FILE USER                delete USER
//! amqtt_passwd --sha512 ...                write SHA-512 crypt instead of argon2id
//! ```
//! A password from stdin is its first line without the line ending, so that scripts need not put
//! it in argv (where `ps` shows it): `printf '%s\n' "$PW" | amqtt_passwd FILE USER`.
//! `-c` creates (or overwrites) the file. Hashes are argon2id with a random salt and argon2-cffi's
//! default parameters (m=65536 KiB, t=3, p=4, 16-byte salt, 32-byte hash), exactly the string
//! aMQTT 0.12's documented helper (`argon2.PasswordHasher().hash(...)`) writes, so aMQTT 0.12
//! reads our files and we read its. `--sha512` writes SHA-512 crypt with a random salt and 5,000
//! rounds, the form `mkpasswd -m sha-512` writes, for Mosquitto 1.x-era tools and aMQTT up to
//! 0.11. Other lines (comments, other users) are kept as they are, the
//! file is replaced atomically (temporary file + rename) and keeps its permissions; a new file is
//! created readable by its owner only. The file's format and hashing live in
//! `amqtt::plugins::password_file`; this binary parses arguments, prompts, and writes.

use std::fs;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use amqtt::plugins::password_file::{
    check_username, format_line, hash_argon2id, hash_sha512, parse_line,
};

/// Manage an amqtt password file (users and password hashes), like mosquitto_passwd.
///
/// Hashes are argon2id with argon2-cffi's defaults (m=65536 KiB, t=3, p=4), as aMQTT 0.12 writes
/// them; --sha512 writes SHA-512 crypt as `mkpasswd -m sha-512` does. The broker also reads bcrypt
/// and SHA-256 crypt hashes made by other tools.
///
/// Adds or updates USER: the password is asked twice on the terminal (no echo); when stdin is not
/// a terminal it is read from stdin instead, one line without its line ending (for scripts:
/// `printf '%s\n' "$PW" | amqtt_passwd FILE USER`, which keeps it out of `ps`); with -b it is the
/// PASSWORD argument. -D deletes USER. Other lines of FILE are kept; FILE is replaced atomically
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
    /// Write a SHA-512 crypt hash (`$6$`, as `mkpasswd -m sha-512`) instead of argon2id.
    #[arg(long = "sha512", conflicts_with = "delete")]
    sha512: bool,
    /// The password file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The user to add, update or delete.
    #[arg(value_name = "USER")]
    user: String,
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
    check_username(&args.user).map_err(|e| format!("invalid user name: {e}"))?;
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
        let (text, found) = without_user(&existing, &args.user, &args.file)?;
        if !found {
            return Err(format!(
                "user '{}' is not in {}",
                args.user,
                args.file.display()
            ));
        }
        text
    } else {
        let password = match &args.password {
            Some(password) => password.clone(),
            None if io::stdin().is_terminal() => prompt_password()?,
            None => read_stdin_password(io::stdin().lock())?,
        };
        if password.is_empty() {
            return Err("empty password".to_string());
        }
        let hash = if args.sha512 {
            hash_sha512(password.as_bytes())
        } else {
            hash_argon2id(password.as_bytes())
        }
        .map_err(|e| e.to_string())?;
        with_user(&existing, &args.user, &hash, &args.file)?
    };
    write_atomically(&args.file, &text, args.create)
        .map_err(|e| format!("cannot write {}: {e}", args.file.display()))
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
