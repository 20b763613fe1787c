//! Connection-level limits on a real `tally serve`: slow or half-open clients cannot hold the
//! server. A client that never finishes its request head is disconnected after the header
//! timeout; idle connections are closed the same way; past the connection cap new clients wait
//! (they are not refused) and are served as soon as the timeouts free a slot; hundreds of stalled
//! connections do not stop a well-behaved client from being served.
//!
//! The assertions are about what happens, never about how fast: each wait has a generous deadline
//! far above the configured timeouts, so a busy machine cannot make them flake.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tally_tests::TallyServer;

/// Far above every timeout configured below.
const DEADLINE: Duration = Duration::from_secs(30);

fn addr(server: &TallyServer) -> SocketAddr {
    server
        .base_url()
        .trim_start_matches("http://")
        .parse()
        .expect("base URL is host:port")
}

/// Reads until the server closes the connection (or `DEADLINE` passes), returning what was read.
fn read_until_closed(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    stream
        .set_read_timeout(Some(DEADLINE))
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => Ok(got),
        // A reset also means the server let go of the connection.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(got),
        Err(e) => Err(format!("connection still open after {DEADLINE:?}: {e}")),
    }
}

/// `GET /` over a fresh connection; the status line of the answer.
fn get_root(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: tally\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let answer = read_until_closed(&mut s)?;
    let text = String::from_utf8_lossy(&answer);
    Ok(text.lines().next().unwrap_or("").to_string())
}

#[test]
fn a_client_that_never_finishes_its_request_head_is_disconnected() {
    let server = TallyServer::start_with(&["--header-timeout-secs", "1"], &[]);
    let mut slow = TcpStream::connect(addr(&server)).expect("connect");
    slow.write_all(b"POST /v1/ingest HTTP/1.1\r\nHost: tally\r\nAuthori")
        .expect("write");
    let started = Instant::now();
    let got = read_until_closed(&mut slow).unwrap_or_else(|e| panic!("{e}"));
    assert!(started.elapsed() < DEADLINE);
    // Whatever hyper says before closing (a 408 or nothing), it is not a served request.
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains(" 200 "), "{text}");

    // An idle keep-alive connection is let go the same way.
    let mut idle = TcpStream::connect(addr(&server)).expect("connect");
    idle.write_all(b"GET / HTTP/1.1\r\nHost: tally\r\n\r\n")
        .expect("write");
    let got = read_until_closed(&mut idle).unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[test]
fn hundreds_of_stalled_connections_do_not_stop_other_clients() {
    // Long timeouts: the stalled connections stay open for the whole test.
    let server = TallyServer::start_with(&["--header-timeout-secs", "120"], &[]);
    let mut stalled = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(addr(&server)).expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: tal").expect("write");
        stalled.push(s);
    }
    for _ in 0..5 {
        let status = get_root(addr(&server)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status, "HTTP/1.1 200 OK", "{}", server.logs());
    }
    drop(stalled);
}

#[test]
fn past_the_connection_cap_clients_wait_and_are_served_once_slots_free() {
    let server = TallyServer::start_with(
        &["--max-connections", "4", "--header-timeout-secs", "1"],
        &[],
    );
    // Four connections that never send anything take every slot...
    let hogs: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(addr(&server)).expect("connect"))
        .collect();
    // ...so a fifth client waits in the backlog until the header timeout frees one, and is then
    // served normally rather than refused.
    let status = get_root(addr(&server)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, "HTTP/1.1 200 OK", "{}", server.logs());
    // It was served only once a slot was free: by then the server had closed some hog.
    let closed = hogs.iter().filter(|hog| is_closed(hog)).count();
    assert!(closed >= 1, "served while all 4 slots were still taken");
    for mut hog in hogs {
        read_until_closed(&mut hog).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Whether the peer has closed `stream` (a read would return end-of-file right now).
fn is_closed(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).expect("nonblocking");
    let mut byte = [0u8; 1];
    let closed = match (&*stream).read(&mut byte) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    };
    stream.set_nonblocking(false).expect("blocking");
    closed
}

#[test]
fn the_rate_limit_flags_reach_the_server() {
    let server =
        TallyServer::start_with(&["--rate-limit-rps", "1", "--rate-limit-burst", "2"], &[]);
    let token = server.token().to_string();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..5 {
        let mut s = TcpStream::connect(addr(&server)).expect("connect");
        let req = format!(
            "GET /v1/billable-metrics HTTP/1.1\r\nHost: tally\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).expect("write");
        let answer = read_until_closed(&mut s).unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&answer).to_string();
        statuses.push(text.lines().next().unwrap_or("").to_string());
        if let Some(line) = text
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("retry-after:"))
        {
            retry_after = Some(line.to_string());
        }
    }
    assert_eq!(statuses[0], "HTTP/1.1 200 OK", "{statuses:?}");
    assert!(
        statuses
            .iter()
            .any(|s| s == "HTTP/1.1 429 Too Many Requests"),
        "{statuses:?}"
    );
    assert!(retry_after.is_some(), "no retry-after on the 429");
}

/// Sends `head` (a whole request head, ending in a blank line) with `Connection: close` and
/// returns the status code and body of the answer.
fn raw_request(addr: SocketAddr, head: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .write_all(head.as_bytes())
        .map_err(|e| e.to_string())?;
    let got = String::from_utf8_lossy(&read_until_closed(&mut stream)?).into_owned();
    let status = got
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {got:?}"))?;
    let body = got
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// The `message` of a JSON error body, or a description of what came instead.
fn message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or_else(|| format!("<no JSON message in {body:?}>"))
}

#[test]
fn oversized_request_heads_are_refused_with_a_message() {
    let server = TallyServer::start();
    let addr = addr(&server);
    let get = |target: &str, extra: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n")
    };

    // At the limits: served (401 without a token is the router answering, not a size check).
    let target = format!("/v1/customers?x={}", "a".repeat(16 * 1024 - 16));
    assert_eq!(target.len(), 16 * 1024);
    let (status, body) = raw_request(addr, &get(&target, "")).unwrap();
    assert_eq!(status, 401, "{body}");
    // Host and Connection plus 98: 100 headers.
    let headers: String = (0..98).map(|i| format!("x-h{i}: v\r\n")).collect();
    let (status, body) = raw_request(addr, &get("/v1/customers", &headers)).unwrap();
    assert_eq!(status, 401, "100 headers are served: {body}");

    // One byte past the target limit: 414 with a message (hyper's own would be empty).
    let long = format!("{target}b");
    let (status, body) = raw_request(addr, &get(&long, "")).unwrap();
    assert_eq!(status, 414, "{body}");
    assert!(message(&body).contains("at most 16384"), "{body}");

    // 101 headers, and 100 KiB of headers in two: 431 with a message.
    let headers: String = (0..99).map(|i| format!("x-h{i}: v\r\n")).collect();
    let (status, body) = raw_request(addr, &get("/v1/customers", &headers)).unwrap();
    assert_eq!(status, 431, "{body}");
    assert!(message(&body).contains("101 headers"), "{body}");
    let big = "v".repeat(50 * 1024);
    let headers = format!("x-a: {big}\r\nx-b: {big}\r\n");
    let (status, body) = raw_request(addr, &get("/v1/customers", &headers)).unwrap();
    assert_eq!(status, 431, "{body}");
    assert!(message(&body).contains("at most 65536"), "{body}");

    // The server is still serving.
    assert!(get_root(addr).unwrap().contains(" 200 "));
}
