//! Tests of the PROXY protocol parser: every header form of versions 1 and 2, every refusal, and
//! the reader's promise that `Incomplete` never asks for a byte past the header.

use super::*;

fn complete(bytes: &[u8]) -> (ProxyHeader, usize) {
    match parse(bytes) {
        Ok(Parsed::Complete { header, len }) => (header, len),
        other => panic!("{bytes:?}: expected a complete header, got {other:?}"),
    }
}

fn refused(bytes: &[u8]) -> ProxyHeaderError {
    match parse(bytes) {
        Err(error) => error,
        other => panic!("{bytes:?}: expected a refusal, got {other:?}"),
    }
}

fn addr(text: &str) -> Option<SocketAddr> {
    Some(text.parse().unwrap())
}

/// Feeds `stream` as a reader would: each read takes at most what `Incomplete` asks for (here
/// exactly that, the worst case for over-reading); returns the header, its length and the reads.
fn read_like_a_socket(stream: &[u8]) -> (Result<ProxyHeader, ProxyHeaderError>, usize, usize) {
    let mut filled = 0;
    let mut reads = 0;
    loop {
        match parse(&stream[..filled]) {
            Ok(Parsed::Incomplete { at_least }) => {
                assert!(at_least > 0);
                filled = (filled + at_least).min(stream.len());
                reads += 1;
            }
            Ok(Parsed::Complete { header, len }) => return (Ok(header), len, reads),
            Err(error) => return (Err(error), filled, reads),
        }
    }
}

fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x20 | command);
    out.push(family);
    out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn v4_body() -> Vec<u8> {
    let mut body = vec![203, 0, 113, 7, 10, 0, 0, 1];
    body.extend_from_slice(&4242u16.to_be_bytes());
    body.extend_from_slice(&1883u16.to_be_bytes());
    body
}

fn v6_body() -> Vec<u8> {
    let source: Ipv6Addr = "2001:db8::7".parse().unwrap();
    let destination: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let mut body = source.octets().to_vec();
    body.extend_from_slice(&destination.octets());
    body.extend_from_slice(&4242u16.to_be_bytes());
    body.extend_from_slice(&1883u16.to_be_bytes());
    body
}

#[test]
fn v1_tcp4_gives_the_source_and_its_length() {
    let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 4242 1883\r\n";
    let mut stream = line.to_vec();
    stream.extend_from_slice(&[0x10, 0x0c]);
    let (header, len) = complete(&stream);
    assert_eq!(header.version, 1);
    assert_eq!(header.source, addr("203.0.113.7:4242"));
    assert_eq!(len, line.len());
}

#[test]
fn v1_tcp6_gives_the_source() {
    let (header, _) = complete(b"PROXY TCP6 2001:db8::7 2001:db8::1 4242 1883\r\n");
    assert_eq!(header.source, addr("[2001:db8::7]:4242"));
}

#[test]
fn v1_unknown_names_no_address_and_ignores_the_rest() {
    assert_eq!(complete(b"PROXY UNKNOWN\r\n").0.source, None);
    let (header, len) = complete(b"PROXY UNKNOWN ffff:: whatever \xff\r\nMQTT");
    assert_eq!((header.source, len), (None, 33));
}

#[test]
fn v1_longest_line_is_accepted_and_one_more_byte_is_not() {
    let mut line = b"PROXY UNKNOWN ".to_vec();
    line.resize(MAX_V1_LEN - 2, b'x');
    line.extend_from_slice(b"\r\n");
    assert_eq!(complete(&line).1, MAX_V1_LEN);
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(MAX_V1_LEN - 1, b'x');
    long.extend_from_slice(b"\r\n");
    assert_eq!(refused(&long), ProxyHeaderError::V1TooLong);
    // No CRLF within the bound, whatever follows.
    assert_eq!(refused(&[b'P'; 200][..]), ProxyHeaderError::Missing);
    let mut endless = b"PROXY TCP4 ".to_vec();
    endless.resize(MAX_V1_LEN, b'1');
    assert_eq!(refused(&endless), ProxyHeaderError::V1TooLong);
}

#[test]
fn v1_malformed_lines_are_refused() {
    let cases: &[&[u8]] = &[
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
        b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 2001:db8::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 x\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx",
        b"PROXY TCP4 1.2.3.\xff 5.6.7.8 1 2\r\n",
        b"PROXY \r\n",
        b"PROXY\r\n",
    ];
    for case in cases {
        let error = refused(case);
        assert!(
            matches!(error, ProxyHeaderError::V1(_) | ProxyHeaderError::Missing),
            "{:?}: {error}",
            String::from_utf8_lossy(case)
        );
    }
}

#[test]
fn v2_proxy_ipv4_and_ipv6_give_the_source_and_skip_tlvs() {
    let header = v2(1, 0x11, &v4_body());
    assert_eq!(
        complete(&header),
        (
            ProxyHeader {
                version: 2,
                source: addr("203.0.113.7:4242")
            },
            28
        )
    );
    let mut body = v6_body();
    // Two TLVs (an ALPN and a unique id), skipped.
    body.extend_from_slice(&[
        0x01, 0x00, 0x04, b'm', b'q', b't', b't', 0x05, 0x00, 0x01, 9,
    ]);
    let mut stream = v2(1, 0x21, &body);
    let len = stream.len();
    stream.extend_from_slice(&[0x10, 0x0c]);
    assert_eq!(
        complete(&stream),
        (
            ProxyHeader {
                version: 2,
                source: addr("[2001:db8::7]:4242")
            },
            len
        )
    );
}

#[test]
fn v2_local_unspec_and_unix_name_no_address() {
    assert_eq!(complete(&v2(0, 0x00, &[])).0.source, None);
    // LOCAL ignores whatever addresses it carries.
    assert_eq!(complete(&v2(0, 0x11, &v4_body())).0.source, None);
    assert_eq!(complete(&v2(1, 0x00, &[])).0.source, None);
    assert_eq!(complete(&v2(1, 0x31, &[0; 216])).0.source, None);
}

#[test]
fn v2_malformed_headers_are_refused() {
    let mut wrong_version = v2(1, 0x11, &v4_body());
    wrong_version[12] = 0x11;
    let mut wrong_command = v2(1, 0x11, &v4_body());
    wrong_command[12] = 0x22;
    let mut bad_signature = v2(1, 0x11, &v4_body());
    bad_signature[6] = b'X';
    let cases = [
        (wrong_version, "version"),
        (wrong_command, "command"),
        (v2(1, 0x11, &v4_body()[..11]), "short IPv4"),
        (v2(1, 0x21, &v4_body()), "short IPv6"),
        (v2(1, 0x31, &[0; 100]), "short UNIX"),
        (v2(1, 0x12, &v4_body()), "UDP"),
        (v2(1, 0x41, &v4_body()), "family"),
        (v2(1, 0x13, &v4_body()), "transport"),
    ];
    for (bytes, what) in cases {
        assert!(matches!(refused(&bytes), ProxyHeaderError::V2(_)), "{what}");
    }
    assert_eq!(refused(&bad_signature), ProxyHeaderError::Missing);
}

#[test]
fn v2_length_is_bounded_before_the_body_is_read() {
    let mut fixed = v2(1, 0x11, &[]);
    fixed[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    assert_eq!(refused(&fixed), ProxyHeaderError::V2TooLong(16 + 65535));
    let largest = v2(1, 0x11, &vec![0; MAX_V2_LEN - 16]);
    assert_eq!(complete(&largest).1, MAX_V2_LEN);
}

#[test]
fn no_header_is_refused_from_its_first_byte() {
    // An MQTT CONNECT, a TLS ClientHello, an HTTP request.
    for first in [&[0x10u8, 0x0c][..], &[0x16, 0x03, 0x01], b"GET / HTTP/1.1"] {
        assert_eq!(refused(first), ProxyHeaderError::Missing);
    }
    assert!(matches!(parse(b"PRO"), Ok(Parsed::Incomplete { .. })));
    assert_eq!(refused(b"PROXX"), ProxyHeaderError::Missing);
    assert_eq!(refused(b"\r\n\r\n\0\r\nQUIX"), ProxyHeaderError::Missing);
}

#[test]
fn reads_never_go_past_the_header_and_take_few_steps() {
    let headers: Vec<Vec<u8>> = vec![
        b"PROXY UNKNOWN\r\n".to_vec(),
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
        b"PROXY TCP4 203.0.113.7 10.0.0.1 4242 1883\r\n".to_vec(),
        b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n".to_vec(),
        b"PROXY TCP6 :: :: 0 0\r\n".to_vec(),
        b"PROXY TCP6 2001:db8::7 2001:db8::1 4242 1883\r\n".to_vec(),
        v2(0, 0x00, &[]),
        v2(1, 0x11, &v4_body()),
        v2(1, 0x21, &v6_body()),
    ];
    for header in headers {
        let mut stream = header.clone();
        stream.extend_from_slice(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00");
        let (parsed, len, reads) = read_like_a_socket(&stream);
        let text = String::from_utf8_lossy(&header);
        assert!(parsed.is_ok(), "{text}");
        assert_eq!(len, header.len(), "{text}");
        assert!(reads <= 8, "{text}: {reads} reads");
    }
}

#[test]
fn partial_headers_are_incomplete() {
    let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 4242 1883\r\n";
    for end in 0..line.len() {
        assert!(
            matches!(parse(&line[..end]), Ok(Parsed::Incomplete { .. })),
            "{end}"
        );
    }
    let header = v2(1, 0x21, &v6_body());
    for end in 0..header.len() {
        assert!(
            matches!(parse(&header[..end]), Ok(Parsed::Incomplete { .. })),
            "{end}"
        );
    }
}
