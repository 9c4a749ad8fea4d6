#!/usr/bin/env python3
"""ClickHouse 26 for Veil's tests: a TEST FIXTURE, not a server for users.

Serves the part of ClickHouse's HTTP interface that Veil and the Rust `clickhouse` crate use,
in front of chdb (ClickHouse 26.9 run in-process, PyPI `chdb` / `chdb-core`). Debian ships only
ClickHouse 18.16; this lets the test suite prove Veil's SQL on a current engine. It has no
authentication, no access control, runs one query at a time and keeps no promise of
durability: never point users or production data at it.

Run:  python serve.py --data DIR [--port 0]
It binds 127.0.0.1 (port 0: a free port), prints `listening on http://127.0.0.1:PORT` on
stdout once it answers, and serves until killed. Data (databases, MergeTree tables) live
under DIR.

Wire format (the subset of https://clickhouse.com/docs/interfaces/http that is served):
- `GET /`, `GET /ping` -> 200 `Ok.\\n`.
- `GET|POST /?query=SQL&database=DB&default_format=F&SETTING=VALUE...` with an optional body:
  ClickHouse's rule, the statement is `query` (URL) followed by the body. An `INSERT ... FORMAT
  F` in the URL takes the body as its data in format F (written to a file and inserted with
  `INSERT ... FROM INFILE`), RowBinary as the crate sends it, or any format ClickHouse reads.
  Without `query`, the body is the statement.
- `decompress=1`: the body is ClickHouse's compressed-block format (per block: 16-byte
  CityHash128 checksum, method byte 0x82 = LZ4 or 0x02 = none, UInt32 compressed size
  including the 9-byte header, UInt32 uncompressed size, payload), as the crate sends inserts
  with LZ4 on. The checksum is not verified (loopback only).
- `Content-Encoding: gzip|deflate` request bodies are decoded. Responses are never
  compressed (a client's `Accept-Encoding: lz4` is legal to ignore: the server decides, and
  sends no `Content-Encoding`).
- Output: the statement's own `FORMAT` clause, else `default_format`, else TabSeparated.
  Header `X-ClickHouse-Format` names it.
- Settings in the URL (anything not listed below) are applied with `SET` for the one request
  and restored after it, so an unknown or renamed setting fails as on a real server (code 115).
  Not settings: query, database, default_format, decompress, compress, user, password,
  query_id, session_id, session_timeout, wait_end_of_query, buffer_size, param_*. Query
  parameters (`{name:Type}`, `param_*`, multipart bodies) are not served: Veil writes values
  into statements (veil_schemas::sql), and 18.16 has no parameters either.
- Errors: ClickHouse's text (`Code: N. DB::Exception: ... (NAME) (version 26.9...)`),
  header `X-ClickHouse-Exception-Code: N`, status 400 for bad queries, 404 for unknown
  databases/tables, 500 otherwise (ClickHouse's own mapping, in part).
"""

import argparse
import gzip
import os
import re
import struct
import sys
import tempfile
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import lz4.block
from chdb import session as chdb_session

NOT_SETTINGS = {
    "query", "database", "default_format", "decompress", "compress", "user", "password",
    "query_id", "session_id", "session_timeout", "session_check", "wait_end_of_query",
    "buffer_size", "enable_http_compression", "http_zlib_compression_level",
}

# ClickHouse's HTTPHandler maps these exception codes to statuses other than 500.
STATUS_400 = {
    6, 27, 36, 41, 42, 43, 44, 46, 47, 48, 53, 62, 69, 70, 72, 73, 113, 115, 117, 184, 215, 352,
}
STATUS_404 = {60, 81, 16}

INSERT_FORMAT = re.compile(r"^\s*(INSERT\s+INTO\s.*?)\s+FORMAT\s+([A-Za-z0-9_]+)\s*$",
                           re.IGNORECASE | re.DOTALL)
FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+[A-Za-z0-9_]+\s*;?\s*$", re.IGNORECASE)
CODE = re.compile(r"Code:\s*(\d+)")
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def decompress_blocks(data):
    """ClickHouse compressed blocks -> the concatenated payloads."""
    out = bytearray()
    pos = 0
    while pos < len(data):
        if len(data) - pos < 25:
            raise ValueError("truncated compressed block header")
        method = data[pos + 16]
        csize, usize = struct.unpack_from("<II", data, pos + 17)
        payload = data[pos + 25: pos + 16 + csize]
        if len(payload) != csize - 9:
            raise ValueError("truncated compressed block")
        if method == 0x82:
            out += lz4.block.decompress(payload, uncompressed_size=usize)
        elif method == 0x02:
            out += payload
        else:
            raise ValueError(f"unsupported compression method 0x{method:02x}")
        pos += 16 + csize
    return bytes(out)


class Engine:
    """One chdb session, one query at a time."""

    def __init__(self, path):
        self.session = chdb_session.Session(path)
        self.lock = threading.Lock()
        self.tmp = tempfile.mkdtemp(prefix="inserts-", dir=path)
        self.version = self._run("SELECT version()", "TabSeparated").decode().strip()
        self.defaults = {}
        for line in self._run("SELECT name, value FROM system.settings",
                              "TabSeparatedRaw").decode().splitlines():
            name, _, value = line.partition("\t")
            self.defaults[name] = value

    def _run(self, sql, fmt):
        return self.session.query(sql, fmt).bytes()

    def execute(self, sql, fmt, database, settings, data, data_format):
        """Runs one request's statement; returns the output bytes. Raises on error."""
        with self.lock:
            self._run("USE " + quote_ident(database or "default"), "TabSeparated")
            applied = []
            try:
                for name, value in settings:
                    if not IDENT.match(name):
                        raise RuntimeError(f"Code: 115. DB::Exception: Unknown setting '{name}'. (UNKNOWN_SETTING)")
                    self._run(f"SET {name} = {quote(value)}", "TabSeparated")
                    applied.append(name)
                if data is not None:
                    fd, path = tempfile.mkstemp(dir=self.tmp)
                    try:
                        with os.fdopen(fd, "wb") as f:
                            f.write(data)
                        return self._run(f"{sql} FROM INFILE {quote(path)} FORMAT {data_format}", fmt)
                    finally:
                        os.unlink(path)
                return self._run(sql, fmt)
            finally:
                for name in applied:
                    default = self.defaults.get(name)
                    if default is not None:
                        try:
                            self._run(f"SET {name} = {quote(default)}", "TabSeparated")
                        except Exception:  # an alias whose value the canonical name restores
                            pass


def quote(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(s):
    return "`" + s.replace("\\", "\\\\").replace("`", "\\`") + "`"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    engine = None

    def log_message(self, fmt, *args):  # quiet: tests print the fixture's output on failure
        pass

    def reply(self, status, body, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                out += self.rfile.read(size)
                self.rfile.readline()
            body = bytes(out)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        enc = self.headers.get("Content-Encoding", "").lower()
        if enc == "gzip":
            body = gzip.decompress(body)
        elif enc == "deflate":
            body = zlib.decompress(body)
        elif enc not in ("", "identity"):
            raise ValueError(f"unsupported Content-Encoding {enc}")
        return body

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self.handle_query(b"")

    def do_POST(self):
        try:
            body = self.read_body()
        except Exception as e:  # a malformed request body
            self.error(f"Code: 1001. DB::Exception: reading the request body: {e}. (STD_EXCEPTION)")
            return
        self.handle_query(body)

    def handle_query(self, body):
        url = urlsplit(self.path)
        params = parse_qsl(url.query, keep_blank_values=True)
        args = dict(params)
        if url.path in ("/ping", "/") and "query" not in args and not body:
            self.reply(200, b"Ok.\n")
            return
        if url.path not in ("/", ""):
            self.reply(404, b"There is no handle " + url.path.encode() + b"\n")
            return
        settings = [(k, v) for k, v in params
                    if k not in NOT_SETTINGS and not k.startswith("param_")]
        try:
            if args.get("decompress") == "1" and body:
                body = decompress_blocks(body)
            data = None
            data_format = None
            query = args.get("query")
            if query is None:
                sql = body.decode("utf-8")
            else:
                sql = query
                m = INSERT_FORMAT.match(query)
                if m and body:
                    sql, data_format = m.group(1), m.group(2)
                    data = body
                elif body:
                    sql = query + "\n" + body.decode("utf-8")
            sql = sql.strip().rstrip(";")
            fmt = args.get("default_format") or "TabSeparated"
            m = FORMAT_CLAUSE.search(sql)
            if m:
                fmt = sql[m.start():].split()[1].rstrip(";")
            out = self.engine.execute(sql, fmt, args.get("database"), settings, data, data_format)
        except Exception as e:
            self.error(str(e))
            return
        self.reply(200, out, [("X-ClickHouse-Format", fmt),
                              ("X-ClickHouse-Server-Display-Name", "veil-chdb-fixture")])

    def error(self, text):
        m = CODE.search(text)
        code = int(m.group(1)) if m else 1001
        if "(version " not in text:
            text = f"{text.rstrip()} (version {self.engine.version})"
        status = 400 if code in STATUS_400 else 404 if code in STATUS_404 else 500
        self.reply(status, (text.rstrip() + "\n").encode("utf-8", "replace"),
                   [("X-ClickHouse-Exception-Code", str(code))])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="directory for chdb's databases")
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.data, exist_ok=True)
    Handler.engine = Engine(os.path.abspath(a.data))
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
