//! Helpers for the client tests (`tests/client_*.rs`): brokers on fixed loopback ports (so one can be
//! restarted under a running client), Mosquitto started from a test, the CLI binaries run as child
//! processes, a switchable TCP proxy that holds one client offline for as long as a test wants, and
//! a fake broker that records the CONNECTs it is sent.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago and that this test binary has not handed out
/// before: the kernel may give the same free port to two bind-to-0 calls in a row, which once
/// put two listeners of one broker on one port in CI.
pub fn free_port() -> u16 {
    static ISSUED: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut issued = ISSUED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = listener.local_addr().expect("local address").port();
        if !issued.contains(&port) {
            issued.push(port);
            return port;
        }
    }
    panic!("no loopback port left that this test binary has not already used");
}

/// Our broker as a separate `amqtt` process on `127.0.0.1:port`, for tests that stop and restart
/// a broker under running clients. (A broker embedded in the test process and stopped with
/// `BrokerHandle::stop` keeps its listening socket open, which a restarted broker on the same
/// SO_REUSEPORT port would share; a process that exits closes it for sure.)
pub struct BrokerProcess {
    child: Option<Child>,
    pub port: u16,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl BrokerProcess {
    pub fn start(port: u16) -> BrokerProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("broker.yaml");
        let yaml = format!(
            "listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\nshards: 1\npin_shards: false\n"
        );
        std::fs::write(&config, yaml).expect("write broker.yaml");
        let mut broker = BrokerProcess {
            child: None,
            port,
            config,
            _dir: dir,
        };
        broker.launch();
        broker
    }

    fn launch(&mut self) {
        self.child = Some(spawn_broker(
            "amqtt",
            env!("CARGO_BIN_EXE_amqtt").as_ref(),
            &self.config,
            self.port,
        ));
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// SIGTERM, and wait until the process is gone.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child);
        }
    }

    /// Starts a new broker process on the same port (it has none of the old sessions).
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
    }
}

/// Waits until `127.0.0.1:port` accepts TCP connections.
pub fn wait_listening(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Polls `condition` every 20 ms until it holds or `within` passes.
pub fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// -- Mosquitto ------------------------------------------------------------------------------------

/// The Mosquitto broker binary, if installed (Debian: `apt-get install mosquitto`).
pub fn mosquitto_binary() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("mosquitto"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/mosquitto")])
        .find(|p| p.is_file())
}

/// A Mosquitto broker on a loopback port, started by the test and killed when dropped.
pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    binary: PathBuf,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts Mosquitto with `extra` appended to a minimal config (listener, anonymous access).
    /// `None`, after a loud message, when Mosquitto is not installed.
    pub fn start(test: &str, extra: &str) -> Option<Mosquitto> {
        let Some(binary) = mosquitto_binary() else {
            eprintln!(
                "\n*** SKIPPING {test}: the `mosquitto` broker is not installed \
                 (apt-get install mosquitto) ***\n"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        // Mosquitto started as root switches to its own user, which must be able to write here.
        set_mode_777(dir.path());
        let config = dir.path().join("mosquitto.conf");
        let mut mosquitto = Mosquitto {
            child: None,
            port: 0,
            binary,
            config,
            _dir: dir,
        };
        // `free_port` only finds a port that was free a moment ago: another test may take it
        // first, and then Mosquitto exits at once (its bind fails) while the other test's
        // listener answers `wait_listening`. So a start counts only if Mosquitto is still running
        // a little later; otherwise it is tried again on another port.
        for _ in 0..5 {
            mosquitto.port = free_port();
            let text = format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence_location {}/\n{extra}\n",
                mosquitto.port,
                mosquitto._dir.path().display()
            );
            std::fs::write(&mosquitto.config, text).expect("write mosquitto.conf");
            mosquitto.launch();
            std::thread::sleep(Duration::from_millis(100));
            let child = mosquitto.child.as_mut().expect("just launched");
            if child.try_wait().expect("mosquitto status").is_none() {
                return Some(mosquitto);
            }
            mosquitto.child = None;
        }
        panic!("mosquitto exited right after starting, five times (ports taken?)");
    }

    fn launch(&mut self) {
        self.child = Some(spawn_broker(
            "mosquitto",
            &self.binary,
            &self.config,
            self.port,
        ));
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// SIGTERM (Mosquitto saves its persistence file) and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child);
        }
    }

    /// Starts again with the same config and port.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
    }
}

fn set_mode_777(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).expect("chmod");
}

// -- child processes ------------------------------------------------------------------------------

/// SIGTERM to a child we started.
pub fn terminate(child: &Child) {
    signal(child, libc::SIGTERM);
}

/// Sends `signal` to a child we started (by its pid, never by name).
pub fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
    // SAFETY: kill(2) on the pid of a child this process spawned and has not reaped.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Starts `binary -c config` (amqtt or Mosquitto, output discarded) and waits until it listens on
/// `port`; `name` is for the panic when it does not.
fn spawn_broker(name: &str, binary: &Path, config: &Path, port: u16) -> Child {
    let child = Command::new(binary)
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    assert!(
        wait_listening(port, Duration::from_secs(10)),
        "{name} did not listen on {port}"
    );
    child
}

/// SIGTERM, up to 10 s for the child to exit on its own, then SIGKILL; reaped either way.
fn stop_child(mut child: Child) {
    terminate(&child);
    if wait_exit(&mut child, Duration::from_secs(10)).is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// SIGKILL and reap (a test that ends early must not leave its broker behind).
fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits for a child to exit, up to `within`.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn pub_bin() -> &'static str {
    env!("CARGO_BIN_EXE_amqtt_pub")
}

pub fn sub_bin() -> &'static str {
    env!("CARGO_BIN_EXE_amqtt_sub")
}

/// Output of a finished CLI run.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub took: Duration,
}

/// Runs a CLI to completion with `stdin` as its input; killed (and the test failed) after `limit`.
pub fn run_cli(bin: &str, args: &[&str], stdin: &[u8], limit: Duration) -> Finished {
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn CLI");
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let stdout = drain(child.stdout.take().expect("stdout"));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let status = match wait_exit(&mut child, limit) {
        Some(status) => status,
        None => {
            kill_child(&mut child);
            panic!("{bin} {args:?} did not finish within {limit:?}");
        }
    };
    let _ = feeder.join();
    Finished {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned(),
        took: started.elapsed(),
    }
}

fn drain(mut from: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = from.read_to_end(&mut all);
        all
    })
}

/// A running `amqtt_sub`: its stdout lines arrive on a channel, its stderr is kept.
pub struct RunningSub {
    pub child: Child,
    lines: mpsc::Receiver<Vec<u8>>,
    stderr: Arc<Mutex<String>>,
}

impl RunningSub {
    /// Starts `amqtt_sub` with `args` (info logging on, so "subscribed" shows on stderr).
    pub fn spawn(args: &[&str]) -> RunningSub {
        let mut child = Command::new(sub_bin())
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn amqtt_sub");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let stderr_pipe = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let keep = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { return };
                eprintln!("[amqtt_sub] {line}");
                if let Ok(mut all) = keep.lock() {
                    all.push_str(&line);
                    all.push('\n');
                }
            }
        });
        RunningSub {
            child,
            lines,
            stderr,
        }
    }

    /// Waits until stderr contains `text` `times` times.
    pub fn wait_stderr(&self, text: &str, times: usize, within: Duration) -> bool {
        eventually(within, || self.stderr().matches(text).count() >= times)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The next stdout line (without its `\n`).
    pub fn next_line(&self, within: Duration) -> Option<Vec<u8>> {
        self.lines.recv_timeout(within).ok()
    }

    /// The next stdout line as text.
    pub fn next_text(&self, within: Duration) -> Option<String> {
        self.next_line(within)
            .map(|l| String::from_utf8_lossy(&l).into_owned())
    }
}

impl Drop for RunningSub {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

// -- a switchable proxy ---------------------------------------------------------------------------

/// A TCP proxy on a loopback port in front of `127.0.0.1:upstream`. While "down" it closes every
/// new connection at once, so a client behind it stays offline for exactly as long as a test
/// wants. Existing connections end when the upstream closes them.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (up_flag, stop_flag) = (Arc::clone(&up), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop_flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if !up_flag.load(Ordering::SeqCst) {
                            drop(client);
                            continue;
                        }
                        let _ = client.set_nonblocking(false);
                        if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) {
                            pump_both_ways(client, server);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Proxy { port, up, stop }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Let new connections through (or not).
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn pump_both_ways(client: TcpStream, server: TcpStream) {
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    std::thread::spawn(move || pump(client, server2));
    std::thread::spawn(move || pump(server, client2));
}

/// Copies until either side closes, then shuts both down.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// A fake broker on a loopback port that records each CONNECT it is sent and answers it with
/// CONNACK 0, for tests of what a client puts in its CONNECT. After that it reads (and ignores)
/// whatever comes until the client closes, except SUBSCRIBE, on which it closes the connection.
pub struct RecordingBroker {
    pub port: u16,
    connects: mpsc::Receiver<amqtt::protocol::Connect>,
}

impl RecordingBroker {
    pub fn start() -> RecordingBroker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake broker");
        let port = listener.local_addr().expect("local address").port();
        let (tx, connects) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let tx = tx.clone();
                std::thread::spawn(move || serve_recording(stream, &tx));
            }
        });
        RecordingBroker { port, connects }
    }

    /// The next CONNECT received, if one comes within `within`.
    pub fn next_connect(&self, within: Duration) -> Option<amqtt::protocol::Connect> {
        self.connects.recv_timeout(within).ok()
    }
}

fn serve_recording(mut stream: TcpStream, tx: &mpsc::Sender<amqtt::protocol::Connect>) {
    use amqtt::protocol::{decode, Packet, PROTOCOL_MAX_PACKET_SIZE};
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let mut buf = bytes::BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        match decode(&mut buf, PROTOCOL_MAX_PACKET_SIZE) {
            Ok(Some(Packet::Connect(connect))) => {
                let _ = tx.send(*connect);
                if stream.write_all(&[0x20, 0x02, 0x00, 0x00]).is_err() {
                    return;
                }
            }
            Ok(Some(Packet::Subscribe(_))) | Err(_) => return,
            Ok(Some(_)) => {}
            Ok(None) => match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            },
        }
    }
}
