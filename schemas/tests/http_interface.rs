//! ClickHouse's HTTP interface as Veil relies on it, checked on whichever server the harness
//! gives (the managed 18.16 by default, the ClickHouse 26 fixture with
//! `VEIL_TEST_CLICKHOUSE=chdb26`): `/ping`, a query in the URL and in the body, the database
//! parameter, and failures as ClickHouse sends them (status by error, `Code: N` text, and from
//! 19 on the `X-ClickHouse-Exception-Code` header), so the fixture answers like a real server. Raw HTTP/1.0 over a TCP stream: what is on the wire, not what a client makes of it.
//! Requests log in as Veil's clients do (`X-ClickHouse-User`/`X-ClickHouse-Key`) when the
//! server has a password (the managed one has).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn request(method: &str, path_and_query: &str, body: &str) -> Answer {
    let url = veil_schemas::testing::server_url();
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    let auth = match veil_schemas::testing::server_password() {
        Some(p) => format!("X-ClickHouse-User: default\r\nX-ClickHouse-Key: {p}\r\n"),
        None => String::new(),
    };
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path_and_query} HTTP/1.0\r\nHost: {host}\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

#[test]
fn ping_and_queries_in_the_url_and_in_the_body() {
    let a = request("GET", "/ping", "");
    assert_eq!((a.status, a.body.as_str()), (200, "Ok.\n"));
    let a = request("GET", "/?query=SELECT%201%2B1", "");
    assert_eq!((a.status, a.body.as_str()), (200, "2\n"));
    let a = request("POST", "/?default_format=TabSeparated", "SELECT 'a', 3");
    assert_eq!((a.status, a.body.as_str()), (200, "a\t3\n"));
    let a = request("POST", "/?query=SELECT", " 4 AS x FORMAT JSONEachRow");
    assert_eq!((a.status, a.body.as_str()), (200, "{\"x\":4}\n"));
    let a = request("POST", "/?database=system", "SELECT currentDatabase()");
    assert_eq!((a.status, a.body.as_str()), (200, "system\n"));
}

#[test]
fn failures_come_with_their_code_in_status_header_and_text() {
    let version = request("GET", "/?query=SELECT%20version()", "").body;
    let version = veil_schemas::sql::ServerVersion::parse(&version).unwrap();
    // (statement, ClickHouse's code, the HTTP status ClickHouse maps it to)
    for (stmt, code, status) in [
        ("SELEC 1", 62, 400),
        ("SELECT 1 FROM no_such_table_here", 60, 404),
        ("SELECT 1 FROM no_such_db_here.t", 81, 404),
        ("SELECT throwIf(1)", 395, 500),
    ] {
        let a = request("POST", "/?database=default", stmt);
        assert_eq!(a.status, status, "{stmt}: {}", a.body);
        // 18.16 sends no X-ClickHouse-Exception-Code header; later servers do.
        let header = a.header("X-ClickHouse-Exception-Code");
        if version.is_legacy() {
            assert_eq!(header, None, "{stmt}");
        } else {
            assert_eq!(header, Some(code.to_string().as_str()), "{stmt}");
        }
        assert!(
            a.body.starts_with(&format!("Code: {code}")),
            "{stmt}: {}",
            a.body
        );
    }
    // A setting the server does not know fails the request as well.
    let a = request("POST", "/?no_such_setting_here=1", "SELECT 1");
    assert!(a.body.starts_with("Code: 115"), "{}", a.body);
}
