//! Tests of the `listeners` section: inheritance from `default`, unbound and missing listeners,
//! WebSocket and TLS listeners (certificate, key, mutual TLS), bind addresses, and the per-listener
//! `max-connections`, `max_connect_rate` and `proxy-protocol`; the admin endpoint's `bind` and token.

use super::*;

#[test]
fn listeners_inherit_default_and_override_it() {
    let c = ok("
listeners:
  a:
    bind: 127.0.0.1:1884
  default:
    type: tcp
    max-connections: 50
    bind: 0.0.0.0:1883
  b:
    bind: 127.0.0.1:1885
    max-connections: -1
  c:
    bind: 127.0.0.1:1886
    max_connections: 7
");
    assert_eq!(
        names(&c),
        ["default", "a", "b", "c"],
        "default first, then file order"
    );
    assert_eq!(c.listeners[0].max_connections, Some(50));
    assert_eq!(c.listeners[1].max_connections, Some(50));
    assert_eq!(c.listeners[2].max_connections, None);
    assert_eq!(c.listeners[3].max_connections, Some(7));
    assert_eq!(c.listeners[1].bind, addr("127.0.0.1:1884"));
}

#[test]
fn listener_with_only_a_name_inherits_everything() {
    let c = ok("listeners:\n  default:\n    bind: 127.0.0.1:1883\n  twin:\n");
    assert_eq!(names(&c), ["default", "twin"]);
    assert_eq!(c.listeners[1].bind, addr("127.0.0.1:1883"));
}

#[test]
fn unbound_listeners_are_skipped() {
    let c = ok("listeners:\n  default:\n    max-connections: 10\n  x:\n    bind: 127.0.0.1:1884\n");
    assert_eq!(names(&c), ["x"]);
    assert_eq!(c.listeners[0].max_connections, Some(10));
}

#[test]
fn no_bound_listener_is_an_error() {
    invalid(
        "listeners:\n  default:\n    type: tcp\n  x: {}\n",
        "listeners",
        "no listener has a 'bind'",
    );
    invalid("listeners: {}\n", "listeners", "no listener has a 'bind'");
}

#[test]
fn null_listeners_means_builtin_default() {
    assert_eq!(
        ok("listeners:\n").listeners,
        BrokerConfig::default().listeners
    );
}

#[test]
fn display_format_matches_the_contract() {
    let e = err("listeners:\n  default:\n    bind: 0.0.0.0:1883\n  tls-1:\n    bind: 0.0.0.0:8883\n    ssl: on\n    certfile: /c.pem\n");
    assert_eq!(
        e.to_string(),
        "config/broker.yaml: key 'listeners.tls-1.keyfile': required when ssl is on"
    );
}

#[test]
fn websocket_listeners_inherit_their_type() {
    let c = ok("listeners:\n  default:\n    bind: 0.0.0.0:1883\n  w:\n    type: ws\n    bind: 0.0.0.0:8080\n");
    assert_eq!(c.listeners[0].kind, ListenerKind::Tcp);
    assert_eq!(c.listeners[1].kind, ListenerKind::Ws);
    let c = ok("listeners:\n  default:\n    type: ws\n  w:\n    bind: 0.0.0.0:8080\n");
    assert_eq!(c.listeners[0].kind, ListenerKind::Ws);
}

#[test]
fn tls_listeners_need_certificate_and_key() {
    for on in ["on", "ON", "'on'", "true", "True", "\"true\""] {
        let c = ok(&format!(
                "listeners:\n  default:\n    bind: 0.0.0.0:8883\n    ssl: {on}\n    certfile: /c.pem\n    keyfile: /k.pem\n"
            ));
        let tls = c.listeners[0].tls.as_ref().expect("tls");
        assert_eq!(tls.certfile, PathBuf::from("/c.pem"));
        assert!(!tls.require_certificate);
    }
    invalid(
        "listeners:\n  default:\n    bind: 0.0.0.0:8883\n    ssl: on\n    keyfile: /k.pem\n",
        "listeners.default.certfile",
        "required when ssl is on",
    );
    for off in ["off", "OFF", "false", "'false'"] {
        let c = ok(&format!(
                "listeners:\n  default:\n    bind: 0.0.0.0:1883\n    ssl: {off}\n    certfile: /x.pem\n    keyfile: /x.key\n    cafile: /ca\n    capath: /cas\n    cadata: PEM\n"
            ));
        assert!(c.listeners[0].tls.is_none());
    }
    invalid(
        "listeners:\n  default:\n    bind: 0.0.0.0:1883\n    ssl: maybe\n",
        "listeners.default.ssl",
        "a boolean (true/false, yes/no or on/off)",
    );
}

#[test]
fn mutual_tls_needs_a_ca_and_identity_needs_mutual_tls() {
    let base = "listeners:\n  default:\n    bind: 0.0.0.0:8883\n    ssl: on\n    certfile: /c.pem\n    keyfile: /k.pem\n";
    invalid(
        &format!("{base}    require-certificate: true\n"),
        "listeners.default.require-certificate",
        "need a CA",
    );
    invalid(
        &format!("{base}    use-identity-as-username: true\n"),
        "listeners.default.use-identity-as-username",
        "require-certificate",
    );
    let c = ok(&format!(
            "{base}    cafile: /ca.pem\n    require-certificate: true\n    use-identity-as-username: true\n"
        ));
    let tls = c.listeners[0].tls.as_ref().expect("tls");
    assert!(tls.require_certificate && tls.use_identity_as_username);
    assert_eq!(tls.cafile, Some(PathBuf::from("/ca.pem")));
}

#[test]
fn bind_forms() {
    let bind = |b: &str| ok(&format!("listeners:\n  default:\n    bind: {b}\n")).listeners[0].bind;
    assert_eq!(bind("0.0.0.0:1883"), addr("0.0.0.0:1883"));
    assert_eq!(bind("127.0.0.1:1884"), addr("127.0.0.1:1884"));
    assert_eq!(bind("':1885'"), addr("0.0.0.0:1885"));
    assert_eq!(bind("1886"), addr("0.0.0.0:1886"));
    assert_eq!(bind("'1887'"), addr("0.0.0.0:1887"));
    assert_eq!(bind("'[::1]:1888'"), addr("[::1]:1888"));
    assert_eq!(bind("'[::]'"), addr("[::]:1883"));
    assert_eq!(bind("'::1'"), addr("[::1]:1883"));
    assert_eq!(bind("10.1.2.3"), addr("10.1.2.3:1883"));
    assert_eq!(bind("'10.1.2.3:'"), addr("10.1.2.3:1883"));
    assert_eq!(bind("''"), addr("0.0.0.0:1883"));
    assert_eq!(bind("127.0.0.1:0"), addr("127.0.0.1:0"));
    let local = bind("localhost:1889");
    assert!(local.ip().is_loopback(), "{local}");
    assert_eq!(local.port(), 1889);
}

#[test]
fn bad_bind_addresses() {
    let bad = |b: &str, needle: &str| {
        invalid(
            &format!("listeners:\n  default:\n    bind: {b}\n"),
            "listeners.default.bind",
            needle,
        )
    };
    bad("0.0.0.0:99999", "not a port number");
    bad("0.0.0.0:http", "not a port number");
    bad("'[::1:1883'", "without a closing ']'");
    bad("'[nope]:1883'", "not an IPv6 address");
    bad("'[::1]x'", "after ']'");
    bad("'1:2:3:4:5'", "is not of the form");
    bad("no-such-host.invalid:1883", "cannot resolve host");
    bad("[1883]", "expected an address");
    let msg = invalid(
        "listeners:\n  default:\n    bind: 'x:y'\n  other: {}\n",
        "listeners.default.bind",
        "not a port",
    );
    assert!(
        !msg.contains("inherited"),
        "default itself fails first: {msg}"
    );
}

#[test]
fn max_connections_values() {
    let mc = |v: &str| {
        load(&format!(
            "listeners:\n  default:\n    bind: :1883\n    max-connections: {v}\n"
        ))
        .map(|c| c.listeners[0].max_connections)
    };
    assert_eq!(mc("-1").ok(), Some(None));
    // aMQTT's default and documented "unlimited".
    assert_eq!(mc("0").ok(), Some(None));
    assert_eq!(mc("1").ok(), Some(Some(1)));
    assert_eq!(mc("100000").ok(), Some(Some(100_000)));
    for bad in ["-2", "-100"] {
        let msg = mc(bad).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("key 'listeners.default.max-connections'"),
            "{msg}"
        );
        assert!(msg.contains("0 (or -1) for unlimited"), "{msg}");
    }
}

#[test]
fn max_connect_rate_values() {
    let rate = |v: &str| {
        load(&format!(
                "listeners:\n  default:\n    bind: :1883\n    max_connect_rate: {v}\n  other:\n    bind: :1884\n"
            ))
            .map(|c| (c.listeners[0].max_connect_rate, c.listeners[1].max_connect_rate))
    };
    assert_eq!(rate("0").ok(), Some((None, None)));
    assert_eq!(rate("-1").ok(), Some((None, None)));
    // Inherited from `default` like every listener key.
    assert_eq!(rate("500").ok(), Some((Some(500), Some(500))));
    let msg = rate("-5").err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("key 'listeners.default.max_connect_rate'"),
        "{msg}"
    );
    assert!(msg.contains("0 for unlimited"), "{msg}");
}

#[test]
fn proxy_protocol_is_off_unless_set_inherits_and_reads_both_spellings() {
    let c = ok("
listeners:
  default:
    bind: 127.0.0.1:1883
  dashed:
    bind: 127.0.0.1:1884
    proxy-protocol: true
  underscored:
    bind: 127.0.0.1:1885
    proxy_protocol: yes
");
    let on: Vec<bool> = c.listeners.iter().map(|l| l.proxy_protocol).collect();
    assert_eq!(on, [false, true, true]);
    assert!(!BrokerConfig::default().listeners[0].proxy_protocol);
    let inherited = ok("
listeners:
  default:
    proxy-protocol: on
  behind-proxy:
    bind: 127.0.0.1:1884
  direct:
    bind: 127.0.0.1:1885
    proxy-protocol: off
");
    let on: Vec<bool> = inherited
        .listeners
        .iter()
        .map(|l| l.proxy_protocol)
        .collect();
    assert_eq!(on, [true, false]);
    invalid(
        "listeners:\n  default:\n    bind: :1\n    proxy-protocol: sometimes\n",
        "listeners.default.proxy-protocol",
        "(line 4, column",
    );
}

#[test]
fn admin_needs_a_token_file_and_a_port_of_its_own() {
    assert_eq!(ok("shards: 1\n").admin, None, "off by default");
    let admin = ok("admin:\n  token-file: /etc/amqtt/admin.token\n")
        .admin
        .expect("admin on");
    assert_eq!(admin.bind, "127.0.0.1:9884".parse().expect("addr"));
    assert_eq!(admin.token_file, PathBuf::from("/etc/amqtt/admin.token"));
    let admin = ok("admin:\n  bind: 0.0.0.0:0\n  token_file: t\n")
        .admin
        .expect("admin on");
    assert_eq!(admin.bind, "0.0.0.0:0".parse().expect("addr"));
    invalid(
        "admin:\n  bind: 127.0.0.1:9999\n",
        "admin.token_file",
        "required",
    );
    invalid(
        "admin:\n  token_file: '  '\n",
        "admin.token_file",
        "required",
    );
    invalid(
        "listeners:\n  default:\n    type: tcp\n    bind: 0.0.0.0:9884\nadmin:\n  token_file: t\n",
        "admin.bind",
        "overlaps listener 'default'",
    );
    invalid(
        "admin:\n  bind: '127.0.0.1:x'\n  token_file: t\n",
        "admin.bind",
        "",
    );
}
