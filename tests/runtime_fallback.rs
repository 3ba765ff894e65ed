//! The automatic fallback to the epoll runtime, for real: the `amqtt`, `amqtt_pub` and `amqtt_sub`
//! binaries run in child processes under a seccomp filter that refuses `io_uring_setup` with
//! `EPERM` (what Docker's default profile does), installed between fork and exec. The broker must
//! say once why it falls back, and carry messages between real clients; `runtime: glommio` must
//! fail at start with a clear error instead.
//!
//! x86_64 only (the filter names the syscall by its x86_64 number).
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod client_support;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use client_support::{free_port, pub_bin, sub_bin, terminate, wait_exit, wait_listening};

/// `io_uring_setup` on x86_64.
const SYS_IO_URING_SETUP: u32 = 425;
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

/// Makes `command`'s child refuse `io_uring_setup` with EPERM (every thread it starts inherits the
/// filter), and run with the automatic runtime choice whatever the test's environment says.
fn without_io_uring(command: &mut Command) -> &mut Command {
    let stmt = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u16, k: u32, jt: u8, jf: u8| libc::sock_filter { code, jt, jf, k };
    let ld_w_abs = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let jeq_k = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret_k = (libc::BPF_RET | libc::BPF_K) as u16;
    // seccomp_data: nr at offset 0, arch at offset 4.
    let program = [
        stmt(ld_w_abs, 4),
        jump(jeq_k, AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret_k, SECCOMP_RET_ALLOW),
        stmt(ld_w_abs, 0),
        jump(jeq_k, SYS_IO_URING_SETUP, 0, 1),
        stmt(ret_k, SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(ret_k, SECCOMP_RET_ALLOW),
    ];
    command.env_remove("AMQTT_RUNTIME");
    // SAFETY: between fork and exec the closure only makes two prctl calls on data it owns
    // (no allocation, no locks).
    unsafe {
        command.pre_exec(move || {
            let fprog = libc::sock_fprog {
                len: program.len() as u16,
                filter: program.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &fprog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// A broker process on `port` under the filter, with `extra` YAML; stderr captured.
fn broker(port: u16, extra: &str) -> (Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("broker.yaml");
    let yaml = format!(
        "listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\nshards: 2\npin_shards: false\n{extra}"
    );
    std::fs::write(&config, yaml).expect("write broker.yaml");
    let child = without_io_uring(
        Command::new(env!("CARGO_BIN_EXE_amqtt"))
            .arg("-c")
            .arg(&config),
    )
    .env("RUST_LOG", "info")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start amqtt");
    (child, dir)
}

/// Stops `child` and returns everything it wrote to stderr.
fn stop_and_read_stderr(mut child: Child) -> String {
    terminate(&child);
    if wait_exit(&mut child, Duration::from_secs(10)).is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    stderr
}

/// `runtime: glommio` without io_uring: the broker refuses to start, with the kernel's answer
/// (which also shows that the filter works).
#[test]
fn explicit_glommio_fails_clearly_without_io_uring() {
    let port = free_port();
    let (mut child, _dir) = broker(port, "runtime: glommio\n");
    let status = wait_exit(&mut child, Duration::from_secs(10)).expect("amqtt exits");
    assert!(!status.success());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(
        stderr.contains("needs io_uring") && stderr.contains("Operation not permitted"),
        "stderr:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_to_epoll_and_serves_real_clients() {
    let port = free_port();
    let (child, _dir) = broker(port, "");
    assert!(
        wait_listening(port, Duration::from_secs(10)),
        "amqtt did not listen"
    );

    // A real client (rumqttc) subscribes and receives its own QoS 1 publishes through the broker.
    let mut options = rumqttc::MqttOptions::new("fallback-rumqttc", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = rumqttc::AsyncClient::new(options, 16);
    client
        .subscribe("fallback/#", rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let mut received = Vec::new();
    let mut published = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.len() < 3 && Instant::now() < deadline {
        let event = tokio::time::timeout(Duration::from_secs(5), events.poll())
            .await
            .expect("an event within 5 s")
            .expect("connection event");
        match event {
            rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) if !published => {
                published = true;
                for i in 0..3 {
                    client
                        .publish(
                            format!("fallback/{i}"),
                            rumqttc::QoS::AtLeastOnce,
                            false,
                            vec![i as u8; 10],
                        )
                        .await
                        .expect("publish");
                }
            }
            rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => {
                received.push((p.topic.clone(), p.payload.to_vec()));
            }
            _ => {}
        }
    }
    assert_eq!(
        received,
        (0..3)
            .map(|i| (format!("fallback/{i}"), vec![i as u8; 10]))
            .collect::<Vec<_>>()
    );

    // The CLIs under the same filter: amqtt_sub receives what amqtt_pub sends.
    let url = format!("mqtt://127.0.0.1:{port}");
    let mut sub = without_io_uring(&mut Command::new(sub_bin()))
        .args(["--url", &url, "-t", "cli/fallback", "-n", "1", "-q", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start amqtt_sub");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    // Publish until the subscriber (which subscribes asynchronously) has received one and ended.
    let status = loop {
        let published = without_io_uring(&mut Command::new(pub_bin()))
            .args([
                "--url",
                &url,
                "-t",
                "cli/fallback",
                "-m",
                "hello",
                "-q",
                "1",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run amqtt_pub");
        assert!(
            published.status.success(),
            "amqtt_pub failed: {}",
            String::from_utf8_lossy(&published.stderr)
        );
        if let Some(status) = wait_exit(&mut sub, Duration::from_millis(300)) {
            break status;
        }
        assert!(Instant::now() < deadline, "amqtt_sub received nothing");
    };
    assert!(status.success());
    sub.stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut out)
        .expect("read stdout");
    assert_eq!(String::from_utf8_lossy(&out).trim(), "hello");

    drop(client);
    let stderr = stop_and_read_stderr(child);
    let warnings = stderr.matches("io_uring is not available").count();
    assert_eq!(
        warnings, 1,
        "one warning about the fallback; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("WARN") && stderr.contains("epoll runtime"),
        "stderr:\n{stderr}"
    );
    assert!(stderr.contains("runtime: epoll"), "stderr:\n{stderr}");
}
