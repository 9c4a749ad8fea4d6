//! The spool's row encoding: how one [`EventRow`] is stored as the payload of one spool record
//! (see [`batch`](super::batch)), and read back by the writer thread.
//!
//! # Wire format (row encoding version 1)
//!
//! | offset | size | field                                                                 |
//! |-------:|-----:|-----------------------------------------------------------------------|
//! | 0      | 1    | encoding tag: `0x01` (this format)                                    |
//! | 1      | …    | every column of [`EventRow`] in declaration order, except `spool_token` |
//!
//! Columns are laid out like ClickHouse's RowBinary: `String` as an unsigned LEB128 length then
//! the UTF-8 bytes; `u8` one byte; `u32`/`i64` little-endian, 4/8 bytes; `[u8; 16]` the 16
//! bytes; `Vec<String>` an LEB128 count then each string. `spool_token` is not stored: the
//! writer sets it from the batch. Decoding is strict: a payload must be consumed exactly, every
//! string must be valid UTF-8 and lengths must fit in what is left, else it is refused
//! (counted as a corrupt spool record, as before).
//!
//! **Earlier spools.** Until issue 18 a payload was the row's JSON object (`serde_json`), which
//! always starts with `{` (`0x7b`). [`decode`] still reads those, so a spool written by an
//! older collector is replayed by a newer one. Any other first byte is an unknown encoding
//! (e.g. a spool from a newer collector): refused as undecodable, never guessed at.
//!
//! Why not JSON: it was encoded by every request handler and parsed again (field names, escapes,
//! number text) by the writer before the sink serialized the same row once more; this format is
//! a handful of length prefixes and copies at both ends.
//!
//! # From the spool to ClickHouse without decoding
//!
//! After the tag, a version-1 payload *is* one ClickHouse RowBinary row of the columns
//! [`INSERT_COLUMNS`] names, but for the last one, `spool_token`. The writer thread therefore
//! never builds an [`EventRow`]: [`append_row_binary`] walks the payload against [`LAYOUT`]
//! (every length checked, every string checked as UTF-8, the whole payload consumed, as
//! [`decode`] does), copies it and appends the batch's token, and the sink sends the bytes as
//! `INSERT INTO events (INSERT_COLUMNS) FORMAT RowBinary`. A JSON payload of an older spool is
//! decoded and re-encoded first.

use super::EventRow;

/// First byte of a version-1 binary row.
pub const TAG_V1: u8 = 0x01;
/// First byte of a legacy JSON row (`{`).
const TAG_JSON: u8 = b'{';

/// The type of one column in a version-1 payload (its RowBinary encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    /// `String`: LEB128 length, then UTF-8 bytes.
    Str,
    /// `UInt8`: one byte.
    U8,
    /// `UInt32` or `DateTime`: 4 bytes, little-endian.
    U32,
    /// `Int64`: 8 bytes, little-endian.
    I64,
    /// `FixedString(16)`: 16 bytes.
    Fixed16,
    /// `Array(String)`: LEB128 count, then each string.
    Strs,
}

/// The columns of a version-1 payload, in order; [`INSERT_COLUMNS`] names them (test:
/// `layout_matches_the_encoder`).
pub const LAYOUT: [Col; 44] = {
    use Col::{Fixed16, Str, Strs, I64, U32, U8};
    [
        Str, U32, // site, timestamp
        Str, Str, Str, Str, Str, Str, Str, Str, Str, Str, // name … utm_term
        Fixed16, Fixed16, // visitor_id, session_id
        Str, Str, Str, Str, Str, Str, // browser … country_code
        Strs, Strs, // prop_keys, prop_values
        U32, U8, // engagement_ms, scroll_depth
        Str, Str, Str, Str, Str, Str, Str, // screen_class … engine
        U8,  // is_debug
        Str, Str, Str, Str, // source, channel, region, city
        U32, // asn
        Str, Str, Str, Str, // isp, device_model, install_source, bot
        I64, Str, U8, // revenue_micros, revenue_currency, interactive
    ]
};

/// The column list of the writer's INSERT: [`LAYOUT`]'s columns, then `spool_token` (which the
/// writer appends to every row).
pub const INSERT_COLUMNS: [&str; 45] = [
    "site",
    "timestamp",
    "name",
    "hostname",
    "pathname",
    "referrer",
    "referrer_source",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "visitor_id",
    "session_id",
    "browser",
    "browser_version",
    "os",
    "os_version",
    "device",
    "country_code",
    "prop_keys",
    "prop_values",
    "engagement_ms",
    "scroll_depth",
    "screen_class",
    "processor_class",
    "locale",
    "app_version",
    "app_build",
    "sdk_version",
    "engine",
    "is_debug",
    "source",
    "channel",
    "region",
    "city",
    "asn",
    "isp",
    "device_model",
    "install_source",
    "bot",
    "revenue_micros",
    "revenue_currency",
    "interactive",
    "spool_token",
];

/// Where the columns of `events`' sorting key sit in one RowBinary row, found while the row
/// is walked: the writer orders a batch by them before the insert (see the sink module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowKey {
    /// `timestamp` (Unix seconds).
    pub timestamp: u32,
    /// The bytes of `site` (the first column): `row[site.0..site.1]`.
    pub site: (u32, u32),
    /// The first byte of `visitor_id`'s 16 in the row.
    pub visitor: u32,
}

/// Appends one RowBinary row of [`INSERT_COLUMNS`] to `out`: the payload's columns, checked
/// against [`LAYOUT`], then `token`. Returns where the row's sorting key is (offsets from the
/// row's first byte in `out`), or `None` (and `out` as it was) when the payload is damaged or
/// in an unknown encoding, as [`decode`] would.
pub fn append_row_binary(payload: &[u8], token: &str, out: &mut Vec<u8>) -> Option<RowKey> {
    match *payload.first()? {
        TAG_V1 => {
            let body = payload.get(1..)?;
            let key = check_v1(body)?;
            out.extend_from_slice(body);
            Writer(out).str(token);
            Some(key)
        }
        TAG_JSON => {
            let row: EventRow = serde_json::from_slice(payload).ok()?;
            let mut v1 = Vec::new();
            encode(&row, &mut v1);
            append_row_binary(&v1, token, out)
        }
        _ => None,
    }
}

/// Walks a version-1 body (after the tag) against [`LAYOUT`]; its key if it is whole.
fn check_v1(b: &[u8]) -> Option<RowKey> {
    let mut r = Reader(b);
    let key = walk(&mut r)?;
    r.0.is_empty().then_some(key)
}

/// Steps `r` over one row of [`LAYOUT`]'s columns; where its key columns are: the first
/// `String` (`site`), the first `UInt32` (`timestamp`), the first `FixedString(16)`
/// (`visitor_id`).
fn walk(r: &mut Reader<'_>) -> Option<RowKey> {
    let total = r.0.len();
    let at = |r: &Reader<'_>| u32::try_from(total - r.0.len()).ok();
    let (mut timestamp, mut site, mut visitor) = (None, None, None);
    for col in LAYOUT {
        match col {
            Col::Str => {
                let s = r.str_ref()?;
                if site.is_none() {
                    let end = at(r)?;
                    let len = u32::try_from(s.len()).ok()?;
                    site = Some((end - len, end));
                }
            }
            Col::U8 => {
                r.u8()?;
            }
            Col::U32 => {
                let v = r.u32()?;
                timestamp.get_or_insert(v);
            }
            Col::I64 => {
                r.take(8)?;
            }
            Col::Fixed16 => {
                if visitor.is_none() {
                    visitor = Some(at(r)?);
                }
                r.take(16)?;
            }
            Col::Strs => {
                for _ in 0..r.count()? {
                    r.str_ref()?;
                }
            }
        }
    }
    Some(RowKey {
        timestamp: timestamp?,
        site: site?,
        visitor: visitor?,
    })
}

/// Decodes one row [`append_row_binary`] wrote (its `spool_token` included): for sinks that
/// want rows rather than bytes (tests, fakes).
pub fn decode_row_binary(row: &[u8]) -> Option<EventRow> {
    // The token is the last column: it starts where the payload's columns end.
    let mut r = Reader(row);
    walk(&mut r)?;
    let end = row.len() - r.0.len();
    let spool_token = r.str()?;
    if !r.0.is_empty() {
        return None;
    }
    let mut tagged = Vec::with_capacity(end + 1);
    tagged.push(TAG_V1);
    tagged.extend_from_slice(&row[..end]);
    let mut decoded = decode(&tagged)?;
    decoded.spool_token = spool_token;
    Some(decoded)
}

/// Appends the encoding of `row` to `out`.
pub fn encode(row: &EventRow, out: &mut Vec<u8>) {
    // Destructured without `..`: a column added to `EventRow` fails to compile here until it is
    // encoded (and decoded) too.
    let EventRow {
        site,
        timestamp,
        name,
        hostname,
        pathname,
        referrer,
        referrer_source,
        utm_source,
        utm_medium,
        utm_campaign,
        utm_content,
        utm_term,
        visitor_id,
        session_id,
        browser,
        browser_version,
        os,
        os_version,
        device,
        country_code,
        prop_keys,
        prop_values,
        engagement_ms,
        scroll_depth,
        screen_class,
        processor_class,
        locale,
        app_version,
        app_build,
        sdk_version,
        engine,
        is_debug,
        spool_token: _,
        source,
        channel,
        region,
        city,
        asn,
        isp,
        device_model,
        install_source,
        bot,
        revenue_micros,
        revenue_currency,
        interactive,
    } = row;
    out.reserve(64 + row.approx_bytes());
    out.push(TAG_V1);
    let mut w = Writer(out);
    w.str(site);
    w.u32(*timestamp);
    for s in [
        name,
        hostname,
        pathname,
        referrer,
        referrer_source,
        utm_source,
        utm_medium,
        utm_campaign,
        utm_content,
        utm_term,
    ] {
        w.str(s);
    }
    w.0.extend_from_slice(visitor_id);
    w.0.extend_from_slice(session_id);
    for s in [
        browser,
        browser_version,
        os,
        os_version,
        device,
        country_code,
    ] {
        w.str(s);
    }
    w.strs(prop_keys);
    w.strs(prop_values);
    w.u32(*engagement_ms);
    w.0.push(*scroll_depth);
    for s in [
        screen_class,
        processor_class,
        locale,
        app_version,
        app_build,
        sdk_version,
        engine,
    ] {
        w.str(s);
    }
    w.0.push(*is_debug);
    for s in [source, channel, region, city] {
        w.str(s);
    }
    w.u32(*asn);
    for s in [isp, device_model, install_source, bot] {
        w.str(s);
    }
    w.0.extend_from_slice(&revenue_micros.to_le_bytes());
    w.str(revenue_currency);
    w.0.push(*interactive);
}

/// Decodes a payload written by [`encode`], or by an older collector as JSON; `None` if it is
/// neither (damaged, or an encoding this build does not know).
pub fn decode(payload: &[u8]) -> Option<EventRow> {
    match *payload.first()? {
        TAG_V1 => decode_v1(payload.get(1..)?),
        TAG_JSON => serde_json::from_slice(payload).ok(),
        _ => None,
    }
}

fn decode_v1(b: &[u8]) -> Option<EventRow> {
    let mut r = Reader(b);
    let row = EventRow {
        site: r.str()?,
        timestamp: r.u32()?,
        name: r.str()?,
        hostname: r.str()?,
        pathname: r.str()?,
        referrer: r.str()?,
        referrer_source: r.str()?,
        utm_source: r.str()?,
        utm_medium: r.str()?,
        utm_campaign: r.str()?,
        utm_content: r.str()?,
        utm_term: r.str()?,
        visitor_id: r.array16()?,
        session_id: r.array16()?,
        browser: r.str()?,
        browser_version: r.str()?,
        os: r.str()?,
        os_version: r.str()?,
        device: r.str()?,
        country_code: r.str()?,
        prop_keys: r.strs()?,
        prop_values: r.strs()?,
        engagement_ms: r.u32()?,
        scroll_depth: r.u8()?,
        screen_class: r.str()?,
        processor_class: r.str()?,
        locale: r.str()?,
        app_version: r.str()?,
        app_build: r.str()?,
        sdk_version: r.str()?,
        engine: r.str()?,
        is_debug: r.u8()?,
        spool_token: String::new(),
        source: r.str()?,
        channel: r.str()?,
        region: r.str()?,
        city: r.str()?,
        asn: r.u32()?,
        isp: r.str()?,
        device_model: r.str()?,
        install_source: r.str()?,
        bot: r.str()?,
        revenue_micros: i64::from_le_bytes(r.take(8)?.try_into().ok()?),
        revenue_currency: r.str()?,
        interactive: r.u8()?,
    };
    r.0.is_empty().then_some(row)
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn len(&mut self, mut n: usize) {
        while n >= 0x80 {
            self.0.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn strs(&mut self, v: &[String]) {
        self.len(v.len());
        for s in v {
            self.str(s);
        }
    }

    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn array16(&mut self) -> Option<[u8; 16]> {
        self.take(16)?.try_into().ok()
    }

    /// An LEB128 length of at most 5 bytes (payloads are far below 4 GiB).
    fn len(&mut self) -> Option<usize> {
        let mut n = 0usize;
        for shift in (0..35).step_by(7) {
            let b = self.u8()?;
            n |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }

    fn str_ref(&mut self) -> Option<&'a str> {
        let n = self.len()?;
        std::str::from_utf8(self.take(n)?).ok()
    }

    fn str(&mut self) -> Option<String> {
        self.str_ref().map(str::to_owned)
    }

    /// An array's element count: every string takes at least its one length byte, so a count
    /// beyond what is left is damage.
    fn count(&mut self) -> Option<usize> {
        let n = self.len()?;
        (n <= self.0.len()).then_some(n)
    }

    fn strs(&mut self) -> Option<Vec<String>> {
        let n = self.count()?;
        (0..n).map(|_| self.str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_row() -> EventRow {
        EventRow {
            site: "example.com".into(),
            timestamp: 1_764_000_000,
            name: "Signup".into(),
            hostname: "www.example.com".into(),
            pathname: "/docs/ünïcödé".into(),
            referrer: "https://news.ycombinator.com/".into(),
            referrer_source: "news.ycombinator.com".into(),
            utm_source: "newsletter".into(),
            utm_medium: "email".into(),
            utm_campaign: "nov".into(),
            utm_content: "c".into(),
            utm_term: "t".into(),
            visitor_id: [7; 16],
            session_id: [9; 16],
            browser: "Chrome".into(),
            browser_version: "131".into(),
            os: "Windows".into(),
            os_version: "10".into(),
            device: "desktop".into(),
            country_code: "DE".into(),
            prop_keys: vec!["plan".into(), "x".repeat(300)],
            prop_values: vec!["pro".into(), String::new()],
            engagement_ms: 12_345,
            scroll_depth: 80,
            screen_class: "laptop".into(),
            processor_class: "5-8".into(),
            locale: "de-DE".into(),
            app_version: "1.2".into(),
            app_build: "42".into(),
            sdk_version: "veil-js/1".into(),
            engine: "V8 131".into(),
            is_debug: 1,
            spool_token: String::new(),
            source: "Hacker News".into(),
            channel: "Organic Social".into(),
            region: "Bavaria".into(),
            city: "Munich".into(),
            asn: 3320,
            isp: "DTAG".into(),
            device_model: "Pixel".into(),
            install_source: "play".into(),
            bot: String::new(),
            revenue_micros: -1_500_000,
            revenue_currency: "EUR".into(),
            interactive: 1,
        }
    }

    #[test]
    fn rows_round_trip() {
        for row in [full_row(), EventRow::default()] {
            let mut b = Vec::new();
            encode(&row, &mut b);
            assert_eq!(b[0], TAG_V1);
            assert_eq!(decode(&b), Some(row));
        }
    }

    #[test]
    fn spool_token_is_not_stored() {
        let mut row = full_row();
        let mut plain = Vec::new();
        encode(&row, &mut plain);
        row.spool_token = "token".into();
        let mut with_token = Vec::new();
        encode(&row, &mut with_token);
        assert_eq!(plain, with_token);
        assert_eq!(
            decode(&with_token).map(|r| r.spool_token),
            Some(String::new())
        );
    }

    #[test]
    fn layout_matches_the_encoder_and_the_row() {
        use clickhouse::Row;
        // The insert's columns are the row's, spool_token moved last.
        let mut names: Vec<&str> = EventRow::COLUMN_NAMES
            .iter()
            .copied()
            .filter(|c| *c != "spool_token")
            .collect();
        names.push("spool_token");
        assert_eq!(names, INSERT_COLUMNS);
        assert_eq!(LAYOUT.len() + 1, INSERT_COLUMNS.len());
        // Every row the encoder writes walks to its end and comes back whole with its token.
        for mut row in [full_row(), EventRow::default()] {
            let mut payload = Vec::new();
            encode(&row, &mut payload);
            let mut out = vec![0xee];
            let key = append_row_binary(&payload, "tok-1", &mut out).unwrap();
            assert_eq!(key.timestamp, row.timestamp);
            // Offsets from the row's first byte (out[1]).
            let (a, b) = (key.site.0 as usize + 1, key.site.1 as usize + 1);
            assert_eq!(&out[a..b], row.site.as_bytes());
            let v = key.visitor as usize + 1;
            assert_eq!(&out[v..v + 16], &row.visitor_id[..]);
            assert_eq!(out[0], 0xee, "appended, not overwritten");
            row.spool_token = "tok-1".into();
            assert_eq!(decode_row_binary(&out[1..]), Some(row));
        }
    }

    #[test]
    fn row_binary_refuses_what_decode_refuses() {
        let mut b = Vec::new();
        encode(&full_row(), &mut b);
        for n in 0..b.len() {
            let mut out = Vec::new();
            assert_eq!(append_row_binary(&b[..n], "t", &mut out), None, "{n}");
            assert!(out.is_empty());
        }
        let mut bad = b.clone();
        bad[2] = 0xff;
        assert_eq!(append_row_binary(&bad, "t", &mut Vec::new()), None);
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(append_row_binary(&longer, "t", &mut Vec::new()), None);
        // A JSON row of an older spool comes out as the same bytes as its binary twin.
        let json = serde_json::to_vec(&full_row()).unwrap();
        let (mut from_json, mut from_v1) = (Vec::new(), Vec::new());
        append_row_binary(&json, "t", &mut from_json).unwrap();
        append_row_binary(&b, "t", &mut from_v1).unwrap();
        assert_eq!(from_json, from_v1);
    }

    #[test]
    fn legacy_json_payloads_still_decode() {
        let row = full_row();
        let json = serde_json::to_vec(&row).unwrap();
        assert_eq!(decode(&json), Some(row));
    }

    #[test]
    fn damage_and_unknown_encodings_are_refused() {
        let mut b = Vec::new();
        encode(&full_row(), &mut b);
        // Every truncation, and a trailing byte.
        for n in 0..b.len() {
            assert_eq!(decode(&b[..n]), None, "truncated to {n}");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
        // An encoding this build does not know.
        let mut future = b.clone();
        future[0] = 0x02;
        assert_eq!(decode(&future), None);
        // Invalid UTF-8 inside a string (the first byte of `site`).
        let mut bad = b.clone();
        bad[2] = 0xff;
        assert_eq!(decode(&bad), None);
    }
}
