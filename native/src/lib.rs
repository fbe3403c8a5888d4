//! The command path's compiled lane (`scheduler/streams/fastlane.py` says how it is used).
//!
//! For each record of a batch it either declines (Python then judges and
//! applies the command as it always did), or returns what the Python path
//! would have written for it: the schedule id, the schedule's record and its
//! due-index key. It takes only upserts of a narrow, common shape, and only
//! where it is sure the pydantic model would accept them; anything it is not
//! sure of is declined, never refused. `tests/unit/test_fastlane.py` holds it
//! to that over generated commands.
//!
//! When its timer wakes such a schedule, a one-shot, `fire` writes the woken
//! record and its firing from the stored bytes, or declines and the Python
//! path wakes it (`scheduler.streams.firing.fired_by_lane`);
//! `tests/unit/test_fastlane_fire.py` holds it to the Python path's bytes.
//!
//! For the executor, `held` reads a record of `firings`: what it holds the
//! firing by and, for a Kafka task, the record it produces, or declines
//! (`scheduler.streams.delivery.take`; `tests/unit/test_fastlane_held.py`).
//!
//! It keeps the interpreter lock throughout: a call that let go of it let the
//! consumer's thread take it, which cost the command path more than the work
//! saved (see `scheduler.domain.ids.murmur2`).

// PyO3 0.22's #[pyfunction] expands to a conversion clippy calls useless.
#![allow(clippy::useless_conversion)]

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// `Text` in the model: 1 to 512 characters.
const TEXT_MAX: usize = 512;
/// The model's bounds (`scheduler.domain.models`), in seconds.
const WEEK_S: f64 = 7.0 * 86400.0;
const YEAR_S: f64 = 366.0 * 86400.0;
const MAX_HEADERS: usize = 64;
const MAX_HEADER_CHARS: usize = 16_384;
/// 9999-12-31T23:59:59.999999Z, Python's last instant, in µs since the epoch.
const LAST_US: i64 = 253_402_300_799_999_999;
/// 1971-01-01T00:00:00Z: nothing earlier is taken (a one-shot at or before
/// 1970 is stored completed, which this lane does not write).
const FIRST_US: i64 = 31_536_000_000_000;
/// The Python path reads a record's timestamp as `ms / 1000`, a float, whose
/// spacing passes half a microsecond at 2^32 s: from there on it may be a
/// microsecond off the exact value this lane computes (year 2106).
const LAST_STAMP_MS: i64 = 4_294_967_296_000;
/// `MIN_RECUR` of `delay-recur`.
const MIN_RECUR_US: i64 = 1_000_000;

/// A field the model takes as non-nullable: present means not null.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// An enum read from its name, and only from its name: serde_json also takes
/// `{"name": null}` for a unit variant, which the model refuses.
fn named<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: de::DeserializeOwned,
{
    let name = String::deserialize(d)?;
    T::deserialize(de::value::StrDeserializer::<D::Error>::new(&name))
}

/// `named`, for a field the model takes as non-nullable (`present`).
fn present_named<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: de::DeserializeOwned,
{
    named(d).map(Some)
}

#[derive(Deserialize)]
enum Upsert {
    #[serde(rename = "upsert")]
    Upsert,
}

#[derive(Deserialize)]
enum Utc {
    #[serde(rename = "UTC")]
    Utc,
}

#[derive(Deserialize, Clone, Copy)]
enum Kind {
    #[serde(rename = "date")]
    Date,
    #[serde(rename = "delay")]
    Delay,
    #[serde(rename = "delay-recur")]
    DelayRecur,
}

#[derive(Deserialize, Clone, Copy)]
enum TaskType {
    #[serde(rename = "rest")]
    Rest,
    #[serde(rename = "kafka")]
    Kafka,
}

#[derive(Deserialize)]
enum FailedPolicy {
    #[serde(rename = "none")]
    None,
    #[serde(rename = "retry")]
    Retry,
}

#[derive(Deserialize)]
enum Misfire {
    #[serde(rename = "fire_once")]
    FireOnce,
    #[serde(rename = "fire_all")]
    FireAll,
    #[serde(rename = "skip")]
    Skip,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "D: Deserialize<'de>"))]
#[allow(dead_code)] // read by serde: present and well-typed is the check
struct Command<'a, D = AnyJson> {
    #[serde(default, deserialize_with = "present_named")]
    action: Option<Upsert>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "object")]
    client: Client<'a>,
    #[serde(rename = "type", deserialize_with = "named")]
    kind: Kind,
    #[serde(borrow)]
    schedule: Cow<'a, str>,
    #[serde(default, deserialize_with = "present_named")]
    timezone: Option<Utc>,
    #[serde(borrow, deserialize_with = "object")]
    task: Task<'a, D>,
    #[serde(default, deserialize_with = "present_named")]
    misfire_policy: Option<Misfire>,
    #[serde(default, deserialize_with = "present")]
    misfire_grace: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Client<'a> {
    #[serde(borrow)]
    operation: Cow<'a, str>,
    #[serde(borrow)]
    application: Cow<'a, str>,
    #[serde(borrow)]
    group: Cow<'a, str>,
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    type_: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "D: Deserialize<'de>"))]
#[allow(dead_code)]
struct Task<'a, D = AnyJson> {
    #[serde(rename = "type", deserialize_with = "named")]
    kind: TaskType,
    #[serde(borrow, deserialize_with = "object")]
    connection: Connection<'a>,
    #[serde(default)]
    data: Option<D>,
    #[serde(default, deserialize_with = "present_named")]
    failed_policy: Option<FailedPolicy>,
    #[serde(default, deserialize_with = "present")]
    retry_wait: Option<f64>,
    #[serde(default, deserialize_with = "present")]
    max_retries: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    retry_backoff: Option<f64>,
    #[serde(default, deserialize_with = "present")]
    retry_max_wait: Option<f64>,
    #[serde(default, deserialize_with = "present")]
    retry_max_age: Option<f64>,
    #[serde(default, deserialize_with = "present")]
    timeout: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Connection<'a> {
    #[serde(borrow)]
    host: Cow<'a, str>,
    #[serde(default, borrow)]
    topic: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    key: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "present")]
    headers: Option<Headers>,
}

/// Header pairs in the order written; a name written twice declines the command.
struct Headers(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Headers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Headers, M::Error> {
                let mut pairs: Vec<(String, String)> = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, String>()? {
                    if pairs.len() >= MAX_HEADERS || pairs.iter().any(|(n, _)| *n == name) {
                        return Err(de::Error::custom("declined"));
                    }
                    pairs.push((name, value));
                }
                Ok(Headers(pairs))
            }
        }
        d.deserialize_map(Pairs)
    }
}

/// Any JSON value, read through (numbers parsed, so one out of a float's range declines).
struct AnyJson;

impl<'de> Deserialize<'de> for AnyJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnyVisitor)
    }
}

struct AnyVisitor;

impl<'de> Visitor<'de> for AnyVisitor {
    type Value = AnyJson;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_i64<E>(self, _: i64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_u64<E>(self, _: u64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<AnyJson, E> {
        if v.is_finite() {
            Ok(AnyJson)
        } else {
            Err(E::custom("declined"))
        }
    }
    fn visit_str<E>(self, _: &str) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_unit<E>(self) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_none<E>(self) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyJson, A::Error> {
        while seq.next_element::<AnyJson>()?.is_some() {}
        Ok(AnyJson)
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<AnyJson, M::Error> {
        while map.next_entry::<IgnoredAny, AnyJson>()?.is_some() {}
        Ok(AnyJson)
    }
}

/// What the model's `Text` takes as it is: 1 to 512 characters, nothing its
/// whitespace stripping would change (such text declines).
fn plain_text(text: &str) -> bool {
    let (Some(first), Some(last)) = (text.chars().next(), text.chars().next_back()) else {
        return false;
    };
    let trimmed = |c: char| c.is_whitespace() || c.is_control();
    !trimmed(first) && !trimmed(last) && text.chars().count() <= TEXT_MAX
}

/// A client field the schedule id's fast form takes: nothing JSON would escape.
fn id_text(text: &str) -> bool {
    plain_text(text) && !text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
}

fn in_range(value: Option<f64>, above: f64, most: f64, or_equal_low: bool) -> bool {
    match value {
        None => true,
        Some(v) => (if or_equal_low { v >= above } else { v > above }) && v <= most,
    }
}

/// A JSON escape of a UTF-16 surrogate anywhere: the Python path looks at those itself.
fn surrogate_escape(raw: &[u8]) -> bool {
    raw.windows(4).any(|w| {
        w[0] == b'\\'
            && w[1] == b'u'
            && (w[2] == b'd' || w[2] == b'D')
            && matches!(w[3], b'8' | b'9' | b'a'..=b'f' | b'A'..=b'F')
    })
}

/// Whether the command is one this lane takes, as far as its own fields say.
fn well_formed<D>(c: &Command<'_, D>) -> bool {
    let client = &c.client;
    let t = &c.task;
    let conn = &t.connection;
    [
        &client.operation,
        &client.application,
        &client.group,
        &client.key,
        &client.type_,
    ]
    .iter()
    .all(|f| id_text(f))
        && c.name
            .as_ref()
            .is_none_or(|n| n.chars().count() <= TEXT_MAX)
        && in_range(c.misfire_grace, 0.0, YEAR_S, false)
        && plain_text(&conn.host)
        && conn.topic.as_ref().is_none_or(|s| plain_text(s))
        && conn.key.as_ref().is_none_or(|s| plain_text(s))
        && (matches!(t.kind, TaskType::Rest) || conn.topic.is_some())
        && conn.headers.as_ref().is_none_or(headers_ok)
        && in_range(t.retry_wait, 0.0, WEEK_S, false)
        && t.max_retries.is_none_or(|n| n <= 1000)
        && in_range(t.retry_backoff, 1.0, 10.0, true)
        && in_range(t.retry_max_wait, 0.0, WEEK_S, false)
        && in_range(t.retry_max_age, 0.0, YEAR_S, false)
        && in_range(t.timeout, 0.0, 3600.0, false)
}

/// The model's header checks, on the text as written (stripping could only shorten it).
fn headers_ok(headers: &Headers) -> bool {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+.^_`|~-".contains(&b);
    let mut size = 0;
    for (name, value) in &headers.0 {
        if name.is_empty() || !name.bytes().all(token) {
            return false;
        }
        if value.contains(['\r', '\n', '\0']) {
            return false;
        }
        size += name.chars().count() + value.chars().count();
    }
    size <= MAX_HEADER_CHARS
}

fn digits(text: &[u8]) -> Option<i64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(text.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01 (Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

fn month_days(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// A `date` schedule in UTC as this lane takes it: `YYYY-MM-DDTHH:MM:SS`, then
/// optionally 3 or 6 digits of fraction, then optionally `Z` or `+00:00`.
fn date_us(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (h, mi, s) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    let mut rest = &b[19..];
    let mut micros = 0;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        micros = match n {
            3 => digits(&frac[..3])? * 1000,
            6 => digits(&frac[..6])?,
            _ => return None,
        };
        rest = &frac[n..];
    }
    if !(rest.is_empty() || rest == b"Z" || rest == b"+00:00") {
        return None;
    }
    if !(1..=12).contains(&mo) || d < 1 || d > month_days(y, mo) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let seconds = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s;
    Some(seconds * 1_000_000 + micros)
}

/// A delay as this lane takes it: up to 10 digits of seconds, then optionally a
/// point and 1 to 6 digits.
fn delay_us(text: &str) -> Option<i64> {
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) if (1..=6).contains(&f.len()) => (w, f),
        Some(_) => return None,
        None => (text, ""),
    };
    if whole.len() > 10 {
        return None;
    }
    let mut micros = digits(whole.as_bytes())? * 1_000_000;
    if !frac.is_empty() {
        micros += digits(frac.as_bytes())? * 10i64.pow(6 - frac.len() as u32);
    }
    Some(micros)
}

/// `format_utc(instant, micros=True)`: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn write_instant(out: &mut Vec<u8>, us: i64) {
    let seconds = us.div_euclid(1_000_000);
    let (y, m, d) = civil_from_days(seconds.div_euclid(86_400));
    let s = seconds.rem_euclid(86_400);
    let mut put = |value: i64, width: usize, after: u8| {
        let at = out.len();
        out.resize(at + width, b'0');
        let mut v = value;
        for slot in out[at..].iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.push(after);
    };
    put(y, 4, b'-');
    put(m, 2, b'-');
    put(d, 2, b'T');
    put(s / 3600, 2, b':');
    put(s % 3600 / 60, 2, b':');
    put(s % 60, 2, b'.');
    put(us.rem_euclid(1_000_000), 6, b'Z');
}

/// Kafka's murmur2 (`scheduler.domain.ids.murmur2`).
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5BD1_E995;
    let mut h: u32 = 0x9747_B28C ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        if tail.len() >= 3 {
            h ^= u32::from(tail[2]) << 16;
        }
        if tail.len() >= 2 {
            h ^= u32::from(tail[1]) << 8;
        }
        h = (h ^ u32::from(tail[0])).wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

fn schedule_id(c: &Client) -> String {
    let canonical = format!(
        "[\"{}\",\"{}\",\"{}\",\"{}\",\"{}\"]",
        c.operation, c.application, c.group, c.key, c.type_
    );
    let digest = Sha256::digest(canonical.as_bytes());
    let mut id = String::with_capacity(36);
    id.push_str("sch_");
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for byte in &digest[..16] {
        id.push(char::from(HEX[usize::from(byte >> 4)]));
        id.push(char::from(HEX[usize::from(byte & 15)]));
    }
    id
}

/// What the lane makes of one command, if it takes it.
struct Taken<'a> {
    sid: String,
    partition: u32,
    kind: TaskType,
    host: Cow<'a, str>,
    record: Vec<u8>,
    entry: Vec<u8>,
    due_us: i64,
}

const UNTOUCHED: &[u8] = b"\"fire_count\":0,\"last_fired_at\":null,\"missed_count\":0,\
\"last_missed_at\":null,\"last_wake\":null,\"last_batch\":[],\"ahead\":[],\"before_ahead\":null";

/// The lane's work on one command. With `read_as`, the record's key and the
/// partition it was read from: a command not keyed by its schedule id, or
/// read from another partition than its own, declines (the Python path
/// re-keys it).
fn take<'a>(
    raw: &'a [u8],
    read_as: Option<(Option<&[u8]>, u32)>,
    timestamp_ms: i64,
    partitions: u32,
    max_bytes: usize,
) -> Option<Taken<'a>> {
    if partitions == 0 || raw.len() > max_bytes || surrogate_escape(raw) {
        return None;
    }
    std::str::from_utf8(raw).ok()?;
    let command: Command = from_object(raw)?;
    if !well_formed(&command) {
        return None;
    }
    let sid = schedule_id(&command.client);
    let partition = (murmur2(sid.as_bytes()) & 0x7FFF_FFFF) % partitions;
    if let Some((key, read_from)) = read_as {
        if key != Some(sid.as_bytes()) || read_from != partition {
            return None;
        }
    }
    if !(FIRST_US / 1000..LAST_STAMP_MS).contains(&timestamp_ms) {
        return None;
    }
    let accepted_us = timestamp_ms * 1000;
    let schedule: &str = &command.schedule;
    let due_us = match command.kind {
        Kind::Date => date_us(schedule)?,
        Kind::Delay => accepted_us.checked_add(delay_us(schedule).filter(|&us| us > 0)?)?,
        Kind::DelayRecur => {
            accepted_us.checked_add(delay_us(schedule).filter(|&us| us >= MIN_RECUR_US)?)?
        }
    };
    if !(FIRST_US..LAST_US).contains(&due_us) {
        return None;
    }
    let mut record = Vec::with_capacity(raw.len() + 420);
    record.extend_from_slice(b"{\"schedule_id\":\"");
    record.extend_from_slice(sid.as_bytes());
    record.extend_from_slice(b"\",\"status\":\"active\",\"accepted_at\":\"");
    let start = record.len();
    write_instant(&mut record, accepted_us);
    let accepted = record[start..].to_vec();
    for member in [&b"\",\"created_at\":\""[..], b"\",\"updated_at\":\""] {
        record.extend_from_slice(member);
        record.extend_from_slice(&accepted);
    }
    record.extend_from_slice(b"\",\"next_fire_at\":\"");
    write_instant(&mut record, due_us);
    record.extend_from_slice(b"\",");
    record.extend_from_slice(UNTOUCHED);
    record.extend_from_slice(b",\"command\":");
    record.extend_from_slice(raw);
    record.push(b'}');
    // `b"%017d|%s"`: at least 17 digits (an instant after the year 5138 has 18).
    let mut entry = Vec::with_capacity(19 + sid.len());
    let width = due_us.to_string().len().max(17);
    let mut v = due_us;
    entry.resize(width, b'0');
    for slot in entry.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    entry.push(b'|');
    entry.extend_from_slice(sid.as_bytes());
    let Command { task, .. } = command;
    Some(Taken {
        sid,
        partition,
        kind: task.kind,
        host: task.connection.host,
        record,
        entry,
        due_us,
    })
}

/// What the lane makes of `records` (aiokafka's records of one partition:
/// `.key`, `.value`, `.timestamp` in ms): `(taken, targets)`. `taken` has, for
/// each record, `None` (declined) or `(schedule id, target, record, due-index
/// key, due µs)`, where `target` indexes `targets`, the distinct `(task type,
/// host)` pairs of the call: the caller judges each target once.
#[pyfunction]
fn take_batch<'py>(
    py: Python<'py>,
    records: &Bound<'py, PyList>,
    partition: u32,
    partitions: u32,
    max_bytes: usize,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
    let out = PyList::empty_bound(py);
    let targets = PyList::empty_bound(py);
    let mut seen: [HashMap<String, usize>; 2] = [HashMap::new(), HashMap::new()];
    let (key_name, value_name, ts_name) = (
        pyo3::intern!(py, "key"),
        pyo3::intern!(py, "value"),
        pyo3::intern!(py, "timestamp"),
    );
    for record in records.iter() {
        let value = record.getattr(value_name)?;
        let key = record.getattr(key_name)?;
        let timestamp: i64 = record.getattr(ts_name)?.extract()?;
        let raw = value.downcast::<PyBytes>().ok().map(|b| b.as_bytes());
        let key = key.downcast::<PyBytes>().ok().map(|b| b.as_bytes());
        match raw.and_then(|raw| {
            take(
                raw,
                Some((key, partition)),
                timestamp,
                partitions,
                max_bytes,
            )
        }) {
            None => out.append(py.None())?,
            Some(t) => {
                let of_kind = &mut seen[t.kind as usize];
                let index = match of_kind.get(t.host.as_ref()) {
                    Some(&index) => index,
                    None => {
                        let name = match t.kind {
                            TaskType::Rest => pyo3::intern!(py, "rest"),
                            TaskType::Kafka => pyo3::intern!(py, "kafka"),
                        };
                        let index = targets.len();
                        targets.append((name, PyString::new_bound(py, &t.host)))?;
                        of_kind.insert(t.host.into_owned(), index);
                        index
                    }
                };
                out.append((
                    PyString::new_bound(py, &t.sid),
                    index,
                    PyBytes::new_bound(py, &t.record),
                    PyBytes::new_bound(py, &t.entry),
                    t.due_us,
                ))?;
            }
        }
    }
    Ok((out, targets))
}

/// The lane's judgement of one command's bytes, whatever its key and partition:
/// `None` (declined) or `(schedule id, partition, task type, host, record,
/// due-index key, due µs)`. For tests.
#[pyfunction]
fn judge_one(
    py: Python<'_>,
    raw: &[u8],
    timestamp_ms: i64,
    partitions: u32,
    max_bytes: usize,
) -> PyObject {
    match take(raw, None, timestamp_ms, partitions, max_bytes) {
        None => py.None(),
        Some(t) => (
            t.sid,
            t.partition,
            match t.kind {
                TaskType::Rest => "rest",
                TaskType::Kafka => "kafka",
            },
            t.host.into_owned(),
            PyBytes::new_bound(py, &t.record),
            PyBytes::new_bound(py, &t.entry),
            t.due_us,
        )
            .into_py(py),
    }
}

/// A `data` value as Python holds it once pydantic has read it: an object
/// keeps each key where it first came and the value it last had, as a dict
/// does. What this cannot say the way pydantic writes it back declines the
/// firing: an integral number of 2^63 or more, written as a float or not (a
/// float cannot tell `1e19` from `10000000000000000000`, which Python reads
/// as a float and as an int), a negative zero (`-0` is an int to Python, and
/// serde_json reads it as `-0.0`), and an object of more than `DATA_KEYS` keys.
enum Data {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Text(String),
    List(Vec<Data>),
    Object(Vec<(String, Data)>),
}

/// The keys an object of `data` may have for a compiled firing (each new key is
/// looked for among the others).
const DATA_KEYS: usize = 64;
/// 2^63: from here an integral float may stand for an int Python would keep.
const BIG: f64 = 9_223_372_036_854_775_808.0;

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DataVisitor)
    }
}

struct DataVisitor;

impl<'de> Visitor<'de> for DataVisitor {
    type Value = Data;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Data, E> {
        Ok(Data::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Data, E> {
        Ok(Data::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Data, E> {
        Ok(Data::Uint(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Data, E> {
        // A negative zero may have been written `-0`, which Python reads as the int 0.
        if !v.is_finite() || (v.fract() == 0.0 && (v.abs() >= BIG || v.is_sign_negative())) {
            return Err(E::custom("declined"));
        }
        Ok(Data::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Data, E> {
        Ok(Data::Text(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Data, E> {
        Ok(Data::Text(v))
    }
    fn visit_unit<E>(self) -> Result<Data, E> {
        Ok(Data::Null)
    }
    fn visit_none<E>(self) -> Result<Data, E> {
        Ok(Data::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Data, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Data>()? {
            items.push(item);
        }
        Ok(Data::List(items))
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Data, M::Error> {
        let mut members: Vec<(String, Data)> = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Data>()? {
            if let Some(slot) = members.iter_mut().find(|(k, _)| *k == key) {
                slot.1 = value;
            } else if members.len() < DATA_KEYS {
                members.push((key, value));
            } else {
                return Err(de::Error::custom("declined"));
            }
        }
        Ok(Data::Object(members))
    }
}

/// A JSON string as pydantic writes it (pydantic-core escapes as serde_json does).
fn put_text(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(&mut *out, text).expect("a string always encodes");
}

/// A float as pydantic writes it (the shortest text that reads back the same).
fn put_float(out: &mut Vec<u8>, value: f64) {
    serde_json::to_writer(&mut *out, &value).expect("a finite float always encodes");
}

fn put_data(out: &mut Vec<u8>, value: &Data) {
    put_data_as(out, value, PYDANTIC);
}

/// How a writer of JSON spells what varies: separators and floats.
#[derive(Clone, Copy)]
struct Spelling {
    comma: &'static [u8],
    colon: &'static [u8],
    float: fn(&mut Vec<u8>, f64),
}

/// As pydantic writes: no spaces, floats as serde_json does.
const PYDANTIC: Spelling = Spelling {
    comma: b",",
    colon: b":",
    float: put_float,
};

/// As `json.dumps` writes by default: a space after each separator, floats as `repr`.
const JSON_DUMPS: Spelling = Spelling {
    comma: b", ",
    colon: b": ",
    float: put_py_float,
};

fn put_data_as(out: &mut Vec<u8>, value: &Data, spelling: Spelling) {
    match value {
        Data::Null => out.extend_from_slice(b"null"),
        Data::Bool(v) => out.extend_from_slice(if *v { b"true" } else { b"false" }),
        Data::Int(v) => out.extend_from_slice(v.to_string().as_bytes()),
        Data::Uint(v) => out.extend_from_slice(v.to_string().as_bytes()),
        Data::Float(v) => (spelling.float)(out, *v),
        Data::Text(v) => put_text(out, v),
        Data::List(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(spelling.comma);
                }
                put_data_as(out, item, spelling);
            }
            out.push(b']');
        }
        Data::Object(members) => {
            out.push(b'{');
            for (i, (key, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(spelling.comma);
                }
                put_text(out, key);
                out.extend_from_slice(spelling.colon);
                put_data_as(out, item, spelling);
            }
            out.push(b'}');
        }
    }
}

fn put_opt_text(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => out.extend_from_slice(b"null"),
        Some(v) => put_text(out, v),
    }
}

fn put_opt_float(out: &mut Vec<u8>, value: Option<f64>) {
    match value {
        None => out.extend_from_slice(b"null"),
        Some(v) => put_float(out, v),
    }
}

/// Text the model's whitespace stripping leaves as it is (empty text too).
fn kept_text(text: &str) -> bool {
    text.is_empty() || plain_text(text)
}

/// `Command.firing_fields`: the command's `"name"`, `"client"` and `"task"` as
/// pydantic writes them, every default filled in; None where this cannot be
/// sure it writes the same (text the model would strip).
fn firing_fields(c: &Command<'_, Data>) -> Option<Vec<u8>> {
    let t = &c.task;
    let conn = &t.connection;
    if !c.name.as_deref().is_none_or(kept_text) {
        return None;
    }
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"\"name\":");
    put_opt_text(&mut out, c.name.as_deref());
    let client = &c.client;
    out.extend_from_slice(b",\"client\":{\"operation\":");
    put_text(&mut out, &client.operation);
    out.extend_from_slice(b",\"application\":");
    put_text(&mut out, &client.application);
    out.extend_from_slice(b",\"group\":");
    put_text(&mut out, &client.group);
    out.extend_from_slice(b",\"key\":");
    put_text(&mut out, &client.key);
    out.extend_from_slice(b",\"type\":");
    put_text(&mut out, &client.type_);
    out.extend_from_slice(match t.kind {
        TaskType::Rest => b"},\"task\":{\"type\":\"rest\",\"connection\":{\"host\":",
        TaskType::Kafka => b"},\"task\":{\"type\":\"kafka\",\"connection\":{\"host\":",
    });
    put_text(&mut out, &conn.host);
    out.extend_from_slice(b",\"cluster\":null,\"headers\":{");
    if let Some(headers) = &conn.headers {
        for (i, (name, value)) in headers.0.iter().enumerate() {
            if !kept_text(value) {
                return None;
            }
            if i > 0 {
                out.push(b',');
            }
            put_text(&mut out, name);
            out.push(b':');
            put_text(&mut out, value);
        }
    }
    out.extend_from_slice(b"},\"topic\":");
    put_opt_text(&mut out, conn.topic.as_deref());
    out.extend_from_slice(b",\"key\":");
    put_opt_text(&mut out, conn.key.as_deref());
    out.extend_from_slice(b",\"mode\":null},\"data\":");
    match &t.data {
        None => out.extend_from_slice(b"null"),
        Some(data) => put_data(&mut out, data),
    }
    out.extend_from_slice(match t.failed_policy {
        None | Some(FailedPolicy::None) => b",\"history_check\":false,\"failed_policy\":\"none\"",
        Some(FailedPolicy::Retry) => b",\"history_check\":false,\"failed_policy\":\"retry\"",
    });
    out.extend_from_slice(b",\"retry_wait\":");
    put_float(&mut out, t.retry_wait.unwrap_or(60.0));
    out.extend_from_slice(b",\"max_retries\":");
    out.extend_from_slice(t.max_retries.unwrap_or(3).to_string().as_bytes());
    out.extend_from_slice(b",\"retry_backoff\":");
    put_float(&mut out, t.retry_backoff.unwrap_or(1.0));
    out.extend_from_slice(b",\"retry_max_wait\":");
    put_opt_float(&mut out, t.retry_max_wait);
    out.extend_from_slice(b",\"retry_max_age\":");
    put_opt_float(&mut out, t.retry_max_age);
    out.extend_from_slice(b",\"timeout\":");
    put_float(&mut out, t.timeout.unwrap_or(10.0));
    out.push(b'}');
    Some(out)
}

/// `format_utc(instant, micros=True)`'s length.
const INSTANT_LEN: usize = 27;

/// The parts of a record as `take` writes it: schedule id, acceptance instant
/// (as written), next instant (µs) and the command's bytes.
fn lane_record(record: &[u8]) -> Option<(&str, &[u8], i64, &[u8])> {
    const HEAD: &[u8] = b"{\"schedule_id\":\"";
    const SID_LEN: usize = 36;
    let rest = record.strip_prefix(HEAD)?;
    let sid = std::str::from_utf8(rest.get(..SID_LEN)?).ok()?;
    let rest = rest[SID_LEN..].strip_prefix(b"\",\"status\":\"active\",\"accepted_at\":\"")?;
    let accepted = rest.get(..INSTANT_LEN)?;
    let mut rest = &rest[INSTANT_LEN..];
    for member in [&b"\",\"created_at\":\""[..], b"\",\"updated_at\":\""] {
        rest = rest.strip_prefix(member)?;
        if rest.get(..INSTANT_LEN)? != accepted {
            return None;
        }
        rest = &rest[INSTANT_LEN..];
    }
    let rest = rest.strip_prefix(b"\",\"next_fire_at\":\"")?;
    let next_us = date_us(std::str::from_utf8(rest.get(..INSTANT_LEN)?).ok()?)?;
    let rest = rest[INSTANT_LEN..].strip_prefix(b"\",")?;
    let rest = rest.strip_prefix(UNTOUCHED)?;
    let command = rest.strip_prefix(b",\"command\":")?.strip_suffix(b"}")?;
    if !sid.starts_with("sch_") || accepted.len() != INSTANT_LEN {
        return None;
    }
    Some((sid, accepted, next_us, command))
}

/// `state.wake`'s one-shot on time: woken up to this long after its instant
/// (later, `misfire.plan` decides).
const ON_TIME_US: i64 = 1_000_000;

/// A one-shot woken for its instant `due_us` by its timer, whose record is still
/// as the lane (or the Python path, for a command the lane takes) wrote it:
/// the record `state.wake` makes of it (its one instant fired, the schedule
/// completed) and the firing `state.firing_bytes` writes for it, fired at
/// `now_us`. None where the Python path must decide: another record (woken
/// before, changed, paused, or of a command the lane declines), a wake-up for
/// another instant (stale), a recurring schedule, an instant past its grace
/// (or near its end), a `skip` policy's instant more than a second past, a
/// grace under a second, or anything `firing_fields` declines.
fn fire_woken(record: &[u8], due_us: i64, now_us: i64) -> Option<(Vec<u8>, Vec<u8>)> {
    let (sid, accepted, next_us, raw) = lane_record(record)?;
    if next_us != due_us || surrogate_escape(raw) {
        return None;
    }
    let command: Command<'_, Data> = from_object(raw)?;
    let grace = command.misfire_grace.unwrap_or(3600.0);
    if !well_formed(&command) || matches!(command.kind, Kind::DelayRecur) || grace < 1.0 {
        return None;
    }
    let late_us = now_us - due_us;
    // Later than on time: `misfire.plan` fires a one-shot's one late instant
    // under `fire_once` and `fire_all`, as long as it is within the grace; the
    // record and firing are then those of an instant fired on time. A grace
    // ends at a microsecond the Python path rounds to: a millisecond near it
    // declines, as do `skip` and an expired instant.
    if late_us > ON_TIME_US
        && (matches!(command.misfire_policy, Some(Misfire::Skip))
            || late_us as f64 / 1e6 >= grace - 0.001)
    {
        return None;
    }
    let fields = firing_fields(&command)?;
    let mut instant = Vec::with_capacity(INSTANT_LEN);
    write_instant(&mut instant, due_us);
    let mut fired = Vec::with_capacity(record.len() + 200);
    fired.extend_from_slice(b"{\"schedule_id\":\"");
    fired.extend_from_slice(sid.as_bytes());
    fired.extend_from_slice(b"\",\"status\":\"completed\",\"accepted_at\":\"");
    fired.extend_from_slice(accepted);
    fired.extend_from_slice(b"\",\"created_at\":\"");
    fired.extend_from_slice(accepted);
    fired.extend_from_slice(b"\",\"updated_at\":\"");
    fired.extend_from_slice(accepted);
    fired.extend_from_slice(b"\",\"next_fire_at\":null,\"fire_count\":1,\"last_fired_at\":\"");
    fired.extend_from_slice(&instant);
    fired.extend_from_slice(b"\",\"missed_count\":0,\"last_missed_at\":null,\"last_wake\":\"");
    fired.extend_from_slice(&instant);
    fired.extend_from_slice(b"\",\"last_batch\":[\"");
    fired.extend_from_slice(&instant);
    // Fired ahead of now: an executor holds it, and a delete or pause may take it back.
    if due_us > now_us {
        fired.extend_from_slice(b"\"],\"ahead\":[\"");
        fired.extend_from_slice(&instant);
        fired.extend_from_slice(b"\"],\"before_ahead\":null,\"command\":");
    } else {
        fired.extend_from_slice(b"\"],\"ahead\":[],\"before_ahead\":null,\"command\":");
    }
    fired.extend_from_slice(raw);
    fired.push(b'}');
    // `ids.firing_id`: "fir_" and the first 32 hex digits of sha256("<id>|<instant>").
    let mut material = Vec::with_capacity(sid.len() + 1 + INSTANT_LEN);
    material.extend_from_slice(sid.as_bytes());
    material.push(b'|');
    material.extend_from_slice(&instant);
    let mut firing = Vec::with_capacity(fields.len() + 200);
    firing.extend_from_slice(b"{\"firing_id\":\"fir_");
    put_hex(&mut firing, &Sha256::digest(&material)[..16]);
    firing.extend_from_slice(b"\",\"schedule_id\":\"");
    firing.extend_from_slice(sid.as_bytes());
    firing.extend_from_slice(b"\",\"scheduled_for\":\"");
    firing.extend_from_slice(&instant);
    firing.extend_from_slice(b"\",\"fired_at\":\"");
    write_instant(&mut firing, now_us);
    firing.extend_from_slice(b"\",\"attempt\":1,");
    firing.extend_from_slice(&fields);
    firing.push(b'}');
    Some((fired, firing))
}

fn put_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(HEX[usize::from(byte >> 4)]);
        out.push(HEX[usize::from(byte & 15)]);
    }
}

/// `fire_woken` for Python: `(record, firing)` as bytes, or None.
#[pyfunction]
fn fire(py: Python<'_>, record: &[u8], due_us: i64, now_us: i64) -> PyObject {
    match fire_woken(record, due_us, now_us) {
        None => py.None(),
        Some((fired, firing)) => (
            PyBytes::new_bound(py, &fired),
            PyBytes::new_bound(py, &firing),
        )
            .into_py(py),
    }
}

/// A record of `firings` as `delivery.take` reads it, as far as it holds a
/// firing by it; other members are read through and left alone, as Python
/// leaves them. A member named here written twice declines (Python keeps the
/// last); one not named here may be, as Python ignores it too.
#[derive(Deserialize)]
struct Firing<'a> {
    #[serde(borrow)]
    firing_id: Cow<'a, str>,
    #[serde(borrow)]
    schedule_id: Cow<'a, str>,
    #[serde(borrow)]
    scheduled_for: Cow<'a, str>,
    // Present means a text: `take` parses it whenever the member is there.
    #[serde(default, borrow, deserialize_with = "present")]
    deliver_at: Option<Cow<'a, str>>,
    // A revocation, whatever it holds, is `take`'s to apply.
    #[serde(default, deserialize_with = "present")]
    revoked: Option<IgnoredAny>,
    attempt: i64,
    #[serde(borrow, deserialize_with = "object")]
    task: FiringTask<'a>,
}

#[derive(Deserialize)]
struct FiringTask<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    history_check: Option<bool>,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    timeout: Option<f64>,
    #[serde(default, borrow, deserialize_with = "some_object")]
    connection: Option<FiringConnection<'a>>,
}

#[derive(Deserialize)]
struct FiringConnection<'a> {
    #[serde(default, borrow)]
    host: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    cluster: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    topic: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    key: Option<Cow<'a, str>>,
}

/// `clusters.PREFIX`: a named cluster's producer key.
const CLUSTER_PREFIX: &str = "cluster:";

/// A float as Python's `repr` writes it (and so `json.dumps`): the shortest
/// digits that read back the same, in positional notation from 1e-4 up to
/// 1e16 (with `.0` if integral), else `d.ddde+XX`. The digits are serde_json's
/// (ryu's), which break a tie between two shortest spellings as Python does
/// (to the even digit); Rust's own `{:e}` does not.
fn put_py_float(out: &mut Vec<u8>, value: f64) {
    let written = serde_json::to_string(&value).expect("a finite float always encodes");
    let (mantissa, exponent) = match written.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().expect("a decimal exponent")),
        None => (written.as_str(), 0),
    };
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // The value is 0.<digits> x 10^point, with no leading or trailing zero digit.
    let mut digits: Vec<u8> = whole.bytes().chain(fraction.bytes()).collect();
    let mut point = whole.len() as i64 + exponent;
    let leading = digits.iter().take_while(|d| **d == b'0').count();
    digits.drain(..leading);
    point -= leading as i64;
    while digits.last() == Some(&b'0') {
        digits.pop();
    }
    if digits.is_empty() {
        // Zero: a negative zero declines before it gets here.
        out.extend_from_slice(if negative { b"-0.0" } else { b"0.0" });
        return;
    }
    if negative {
        out.push(b'-');
    }
    if point <= -4 || point > 16 {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        let shown = point - 1;
        out.push(b'e');
        out.push(if shown < 0 { b'-' } else { b'+' });
        let magnitude = shown.unsigned_abs();
        if magnitude < 10 {
            out.push(b'0');
        }
        out.extend_from_slice(magnitude.to_string().as_bytes());
    } else if point <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', point.unsigned_abs() as usize));
        out.extend_from_slice(&digits);
    } else {
        let point = point as usize;
        if digits.len() <= point {
            out.extend_from_slice(&digits);
            out.extend(std::iter::repeat_n(b'0', point - digits.len()));
            out.extend_from_slice(b".0");
        } else {
            out.extend_from_slice(&digits[..point]);
            out.push(b'.');
            out.extend_from_slice(&digits[point..]);
        }
    }
}

/// Reads a JSON object into a struct, and only an object: serde's derived
/// structs also take an array of their fields in order, which Python reads as
/// a list (and refuses where it wants an object).
struct ObjectOnly<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for ObjectOnly<D> {
    type Error = D::Error;
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
        enum identifier ignored_any
    }
}

/// A whole JSON text that must be an object, read into a struct.
fn from_object<'de, T: Deserialize<'de>>(raw: &'de [u8]) -> Option<T> {
    let mut reader = serde_json::Deserializer::from_slice(raw);
    let value = object(&mut reader).ok()?;
    reader.end().ok()?;
    Some(value)
}

/// A member that must be an object, read into a struct.
fn object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(ObjectOnly(d))
}

/// An optional member that, present, must be an object.
fn some_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(ObjectOnly(d)).map(Some)
}

/// `data` as `json.dumps(..., ensure_ascii=False)` writes it (`executors.payload_json`):
/// its default separators, strings escaped as serde_json escapes them (the
/// same set, in the same spelling), floats as Python's `repr`.
fn put_py_data(out: &mut Vec<u8>, value: &Data) {
    put_data_as(out, value, JSON_DUMPS);
}

/// An instant as `parse_utc` reads it, in µs, for the one form firings are
/// written in (`YYYY-MM-DDTHH:MM:SS`, 0, 3 or 6 digits of fraction, `Z`).
fn firing_instant_us(text: &str) -> Option<i64> {
    if !text.ends_with('Z') || text.starts_with("0000") {
        return None;
    }
    date_us(text)
}

/// What a firing's Kafka task produces (`executors.kafka_record`).
struct Produced {
    host: String,
    topic: String,
    key: Vec<u8>,
    key_hash: u32,
    value: Vec<u8>,
    headers: [(&'static str, Vec<u8>); 4],
    timeout: f64,
}

/// What `delivery.take` holds a firing by: its id, the instant it is delivered
/// at (µs), its task type, whether it keeps history, and for a Kafka task the
/// record it produces. None where the Python path must look: a revocation,
/// anything `take` would refuse or read differently, a task type that is not
/// text, a Kafka task whose record `kafka_record` could not build or that this
/// cannot be sure to build the same (a member of another type than firings
/// are written with, a UTF-16 surrogate escape).
struct Held<'a> {
    firing_id: Cow<'a, str>,
    due_us: i64,
    kind: Cow<'a, str>,
    keeps_history: bool,
    produced: Option<Produced>,
}

fn held_firing(raw: &[u8]) -> Option<Held<'_>> {
    if surrogate_escape(raw) {
        return None;
    }
    let firing: Firing<'_> = from_object(raw)?;
    if firing.revoked.is_some() {
        return None;
    }
    firing_instant_us(&firing.scheduled_for)?;
    let due = firing
        .deliver_at
        .as_deref()
        .unwrap_or(&firing.scheduled_for);
    let due_us = firing_instant_us(due)?;
    let task = &firing.task;
    let mut produced = None;
    if task.kind == "kafka" {
        let conn = task.connection.as_ref()?;
        let host = match conn.cluster.as_deref() {
            Some(cluster) if !cluster.is_empty() => format!("{CLUSTER_PREFIX}{cluster}"),
            _ => conn.host.as_deref()?.to_owned(),
        };
        let key = match conn.key.as_deref() {
            Some(key) if !key.is_empty() => key,
            _ => &firing.schedule_id,
        };
        let mut value = Vec::with_capacity(128);
        match &task.data {
            None => value.extend_from_slice(b"null"),
            Some(data) => put_py_data(&mut value, data),
        }
        produced = Some(Produced {
            host,
            topic: conn.topic.as_deref()?.to_owned(),
            key: key.as_bytes().to_vec(),
            key_hash: murmur2(key.as_bytes()) & 0x7FFF_FFFF,
            value,
            headers: [
                ("Idempotency-Key", firing.firing_id.as_bytes().to_vec()),
                ("X-Schedule-Id", firing.schedule_id.as_bytes().to_vec()),
                ("X-Scheduled-For", firing.scheduled_for.as_bytes().to_vec()),
                ("X-Attempt", firing.attempt.to_string().into_bytes()),
            ],
            timeout: task.timeout?,
        });
    }
    Some(Held {
        due_us,
        keeps_history: task.history_check.unwrap_or(false),
        produced,
        kind: firing.task.kind,
        firing_id: firing.firing_id,
    })
}

/// `held_firing` for Python: `(firing id, due µs, task type, keeps history,
/// (host, topic, key, key hash, value, headers, timeout) or None)`, or None.
#[pyfunction]
fn held(py: Python<'_>, raw: &[u8]) -> PyObject {
    let Some(h) = held_firing(raw) else {
        return py.None();
    };
    let produced = match h.produced {
        None => py.None(),
        Some(p) => {
            let headers: Vec<PyObject> = p
                .headers
                .iter()
                .map(|(name, value)| (*name, PyBytes::new_bound(py, value)).into_py(py))
                .collect();
            (
                p.host,
                p.topic,
                PyBytes::new_bound(py, &p.key),
                p.key_hash,
                PyBytes::new_bound(py, &p.value),
                pyo3::types::PyTuple::new_bound(py, headers),
                p.timeout,
            )
                .into_py(py)
        }
    };
    (
        h.firing_id.as_ref(),
        h.due_us,
        h.kind.as_ref(),
        h.keeps_history,
        produced,
    )
        .into_py(py)
}

#[pymodule]
fn scheduler_fastlane(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(take_batch, m)?)?;
    m.add_function(wrap_pyfunction!(judge_one, m)?)?;
    m.add_function(wrap_pyfunction!(fire, m)?)?;
    m.add_function(wrap_pyfunction!(held, m)?)?;
    Ok(())
}
