//! Deterministic export data: every line `export/data.json`, `export/userEvents` and the
//! export-job files serve, generated from the config's seed and size, never stored.
//!
//! **Events.** Each (data type, UTC day) holds about `events_per_day` events (±25 %, fixed by
//! the seed), cut into blocks of [`BLOCK`] events. Block `b` of `nb` covers the `b`-th equal
//! slice of the day, and every event draws from its own RNG keyed by (seed, data type, day,
//! block, index). So a window only generates the blocks it overlaps, one line at a time, and
//! the same window always gives the same bytes. Lines come in generation order: by day and
//! block, but **not sorted by `createdAt`** inside a block. The first event of every day is
//! at exactly `00:00:00`, so start-inclusive / end-exclusive windows are testable.
//!
//! **Time model.** Each event has a visibility delay: mostly 1–120 s, for about 2 % ("late
//! data") 1–20 h. An event is served when its `createdAt` is in the window and
//! `createdAt + delay <= now` (the fake's clock). Its `itblInternal.documentCreatedAt` is that
//! visibility instant. A user signs up (75 % in the 90 days before `start`, 25 % during the
//! data range, every 50th user at exactly midnight) and then updates their profile at
//! random gaps until the end of the data range. At clock `now` a signed-up user's row is its
//! latest update `<= now`, windowed on `profileUpdatedAt`; users not yet signed up do not exist.
//!
//! **Cursor date.** A record's date is the UTC date of its cursor instant (`createdAt` for
//! events, `profileUpdatedAt` for users).
//!
//! **Fields.** Every property of the stream's JSON Schema, with a value of its declared type:
//! mostly present, sometimes `null`, sometimes absent. On top of that, the quirks seen in the
//! wild (see [`Generator`] for where each one lives).

use std::ops::ControlFlow;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::{FakeConfig, people};
use crate::catalog::{self, STREAMS};

/// Events per generation block.
pub(crate) const BLOCK: u32 = 1024;

const SECOND: i64 = 1_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;
/// The longest visibility delay of an event ("late data").
const LATEST_DELAY: i64 = 20 * HOUR;

/// The event index (in block 0 of each day) whose `transactionalData` or `dataFields`
/// carries a 10–100 KB string, in the data types that have one of those fields.
pub(crate) const LONG_TEXT_INDEX: u32 = 17;

/// Events refer to campaigns `CAMPAIGN_BASE + 0..CAMPAIGNS` and templates
/// `TEMPLATE_BASE + 0..CAMPAIGNS`.
pub(crate) const CAMPAIGN_BASE: i64 = 1_000_000;
pub(crate) const TEMPLATE_BASE: i64 = 2_000_000;
pub(crate) const CAMPAIGNS: i64 = 48;

/// A splitmix64 sequence: tiny, fast, and the same on every platform and version.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; 0 when `n` is 0.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..hi`; `lo` when the range is empty.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            lo
        } else {
            lo + self.below((hi - lo) as u64) as i64
        }
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn percent(&mut self) -> u64 {
        self.below(100)
    }
}

/// A 64-bit key for a tuple of numbers under `seed`.
fn key(seed: u64, parts: &[u64]) -> u64 {
    let mut bytes = [0u8; 64];
    for (chunk, part) in bytes.chunks_exact_mut(8).zip(parts) {
        chunk.copy_from_slice(&part.to_le_bytes());
    }
    xxh3_64_with_seed(&bytes[..parts.len() * 8], seed)
}

/// Where a record sits in generation order: (day, block, index) for events, and
/// (0, user / BLOCK, user % BLOCK) for users. Export-job files start at such positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Pos {
    pub day: u32,
    pub block: u32,
    pub idx: u32,
}

/// What a request selects: a data type, a window on the cursor `[start_ms, end_ms)`, the
/// clock, and how lines are shaped.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    /// Index into [`STREAMS`].
    pub ty: usize,
    pub start_ms: i64,
    pub end_ms: i64,
    pub now_ms: i64,
    /// Only this user's records (`userEvents`).
    pub user: Option<u32>,
    pub shape: Shape,
}

/// `onlyFields`, `omitFields` and `campaignId`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shape {
    /// Keep only these top-level keys (empty: all). A name also keeps the dotted keys under
    /// it: `itblInternal` keeps `itblInternal.emailDomain`.
    pub only: Vec<String>,
    /// Drop these top-level keys (and the dotted keys under them).
    pub omit: Vec<String>,
    /// Only events of this campaign; ignored for users.
    pub campaign_id: Option<i64>,
}

impl Shape {
    fn is_plain(&self) -> bool {
        self.only.is_empty() && self.omit.is_empty()
    }

    fn keep(&self, key: &str) -> bool {
        let matches = |name: &String| {
            key == name
                || key
                    .strip_prefix(name.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        };
        (self.only.is_empty() || self.only.iter().any(matches)) && !self.omit.iter().any(matches)
    }
}

/// Whether a body whose last line hashes to `last_line_hash` ends with `\n`. About a quarter
/// of non-empty bodies end without one, decided by the last line's xxh3 (`% 4 == 0`).
fn trailing_newline(last_line_hash: u64) -> bool {
    !last_line_hash.is_multiple_of(4)
}

/// The data generator of one fake: field plans parsed once from the catalog's schemas, and
/// the users as JSON literals.
///
/// Where each quirk lives (all of them appear in `FakeConfig::small`):
/// - timestamps: mostly `2024-01-02 03:04:05 +00:00`, some `2024-01-02 03:04:05.123 +00:00`,
///   `… +0000`, `… -05:00` (local time), `2024-01-02T03:04:05+00:00`, `…+05:30`,
///   `2024-01-02T03:04:05Z`, `2024-01-02T03:04:05.123Z`, `2024-01-02T03:04:05.123000.000Z` or
///   epoch-millisecond integers ([`Stamp`]); `sessionStartTime` / `sessionEndTime` of the
///   session types are always epoch-millisecond integers;
/// - users: `itblInternal.emailDomain`, `itblInternal.documentCreatedAt`,
///   `itblInternal.documentUpdatedAt`, `shoppingCart.total`, `shoppingCart.itemCount` (nested
///   objects flattened one level), `preferences.channels` (an object left after flattening),
///   `customScore` (int, float, numeric string or null), `bigCounter` (an integer of 30
///   digits), `loyaltyTier` (only when `profileUpdatedAt` is after the data range's middle);
/// - events: `transactionalData` a JSON-encoded string; `frequencyCapped` only in events
///   created after the data range's middle; free-form `dataFields`, `payload`, `items`, ...
///   sometimes `{}` / `[]`, structs sometimes `{}`, integer arrays sometimes `[]`;
/// - strings in every script (CJK, Arabic, Hebrew, emoji with ZWJ), JSON escapes (`\u0000`,
///   `\u2028`, surrogate pairs, `\/`) and raw U+2028; rare 10–100 KB strings at
///   [`LONG_TEXT_INDEX`].
#[derive(Debug)]
pub(crate) struct Generator {
    seed: u64,
    start_ms: i64,
    days: u32,
    events_per_day: u32,
    mid_ms: i64,
    end_ms: i64,
    people: Vec<Person>,
    /// With `FakeConfig::identity_changes`: the identity of the users who change it at the
    /// data range's middle, as their profile rows before it show it.
    earlier: Vec<Option<Person>>,
    plans: Vec<Plan>,
    nested: Nested,
    /// `Faults::cursorless_every`: one record in this many has no readable cursor (0: none).
    cursorless_every: u64,
    /// `Faults::keyless_users`: who a `users` record without a readable cursor is.
    keyless: Option<Person>,
}

#[derive(Debug)]
struct Person {
    email: String,
    user_id: Option<String>,
    /// `None`: a profile without an email (known by its userId only).
    email_json: Option<Box<[u8]>>,
    user_id_json: Option<Box<[u8]>>,
    domain_json: Option<Box<[u8]>>,
}

impl Person {
    fn new(email: Option<String>, user_id: Option<String>) -> Person {
        let domain = email
            .as_deref()
            .map(|e| e.rsplit('@').next().unwrap_or_default());
        Person {
            email_json: email.as_deref().map(json_literal),
            user_id_json: user_id.as_deref().map(json_literal),
            domain_json: domain.map(json_literal),
            email: email.unwrap_or_default(),
            user_id,
        }
    }
}

#[derive(Debug)]
struct Plan {
    data_type: &'static str,
    salt: u64,
    user: bool,
    fields: Vec<Field>,
}

#[derive(Debug)]
struct Field {
    key: Box<str>,
    /// `"key":`, ready to copy.
    prefix: Box<[u8]>,
    presence: Presence,
    kind: Gen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    Always,
    /// 82 % a value, 8 % `null`, 10 % absent.
    Usual,
    /// A value in this percentage of lines, absent otherwise.
    Sometimes(u64),
    /// The user's userId; users without one: absent (70 %) or `null`.
    UserId,
    /// The user's email; absent for a profile without one.
    Email,
    /// Only when the cursor is at or after the data range's middle, then 60 % of the time.
    AfterMid,
}

#[derive(Debug)]
enum Gen {
    Cursor,
    Email,
    UserId,
    EmailDomain,
    /// One of these JSON literals.
    Pick(&'static [&'static str]),
    Hex(usize),
    Uuid,
    Ip,
    Phone,
    Time(TimeRef),
    Int(i64, i64),
    CampaignId,
    TemplateId,
    /// A number from this range of cents, written `12.34` (or `12` now and then).
    Cents(i64, i64),
    Bool,
    IntArray(i64, i64),
    TokenArray,
    Struct(Vec<Field>),
    Blob(Blob),
    TransactionalData,
    /// `customScore`: an int, a float, a numeric string or null.
    Drift,
    /// An integer beyond i64.
    BigInt,
}

#[derive(Debug, Clone, Copy)]
enum TimeRef {
    Signup,
    /// Events: when the event became visible. Users: signup.
    DocCreated,
    /// Events: when the event became visible. Users: the profile update.
    DocUpdated,
    /// Epoch milliseconds, up to 30 minutes before `createdAt`.
    SessionStartMillis,
    /// Epoch milliseconds, `createdAt`.
    SessionEndMillis,
    /// A formatted instant up to a day before the cursor.
    Before,
}

#[derive(Debug, Clone, Copy)]
enum Blob {
    DataFields,
    Payload,
    Items,
    Impressions,
    Devices,
    Preferences,
}

/// How a timestamp is written: every shape real exports carry (the table of
/// `convert::timestamp`'s tests lists them with their instants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    /// `2024-01-02 03:04:05 +00:00`
    Spaced,
    /// `2024-01-02 03:04:05.123 +00:00`
    SpacedMillis,
    /// `2024-01-02 03:04:05 +0000`
    SpacedCompact,
    /// `2024-01-01 22:04:05 -05:00`
    SpacedWest,
    /// `2024-01-02T03:04:05+00:00`
    IsoOffset,
    /// `2024-01-02T08:34:05+05:30`
    IsoEast,
    /// `2024-01-02T03:04:05Z`
    IsoZ,
    /// `2024-01-02T03:04:05.123Z`
    IsoMillisZ,
    /// `2024-01-02T03:04:05.123000.000Z`: a doubled fraction, as one connector reported
    DoubleFraction,
    /// `1704164645123`: epoch milliseconds, a JSON number
    EpochMillis,
}

impl Stamp {
    fn draw(rng: &mut Rng) -> Stamp {
        match rng.percent() {
            0..80 => Stamp::Spaced,
            80..87 => Stamp::SpacedMillis,
            87..89 => Stamp::IsoOffset,
            89..91 => Stamp::IsoZ,
            91..93 => Stamp::IsoMillisZ,
            93..94 => Stamp::SpacedCompact,
            94..95 => Stamp::SpacedWest,
            95..96 => Stamp::IsoEast,
            96..98 => Stamp::DoubleFraction,
            _ => Stamp::EpochMillis,
        }
    }

    fn has_millis(self) -> bool {
        matches!(
            self,
            Stamp::SpacedMillis | Stamp::IsoMillisZ | Stamp::DoubleFraction | Stamp::EpochMillis
        )
    }

    /// The offset the local time is written in, in minutes east of UTC.
    fn offset_minutes(self) -> i64 {
        match self {
            Stamp::SpacedWest => -5 * 60,
            Stamp::IsoEast => 5 * 60 + 30,
            _ => 0,
        }
    }

    /// `ms` without its millisecond part when this format has none.
    fn truncate(self, ms: i64) -> i64 {
        if self.has_millis() {
            ms
        } else {
            ms.div_euclid(SECOND) * SECOND
        }
    }

    /// A millisecond part for an instant written this way (0 when the format has none).
    fn millis(self, rng: &mut Rng) -> i64 {
        if self.has_millis() {
            rng.below(1000) as i64
        } else {
            0
        }
    }
}

/// One record before rendering: enough to filter it without writing it.
#[derive(Debug, Clone, Copy)]
struct Record {
    cursor_ms: i64,
    cursor_stamp: Stamp,
    visible_ms: i64,
    /// Users only: when the user signed up.
    signup: Option<(i64, Stamp)>,
    user: u32,
    long_text: bool,
    rng: Rng,
}

/// Per-record rendering context.
struct Ctx<'a> {
    rec: &'a Record,
    person: &'a Person,
    nested: &'a Nested,
    mid_ms: i64,
    campaign: Option<i64>,
    cursor: CursorForm,
}

/// How a record's cursor field is sent ([`Faults::cursorless_every`](super::Faults)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CursorForm {
    Readable,
    Missing,
    /// `"unknown"`: present, but no instant.
    Unreadable,
}

impl Generator {
    /// Whether the data is final at the clock `now_ms`: every event of the data range is
    /// visible and every user's last update made, so a body no longer depends on the clock.
    pub(crate) fn settled(&self, now_ms: i64) -> bool {
        now_ms > self.end_ms + LATEST_DELAY
    }

    pub(crate) fn new(cfg: &FakeConfig) -> Generator {
        let start_ms = cfg.start.timestamp_millis();
        let end_ms = start_ms + cfg.days as i64 * DAY;
        let people = (0..cfg.users)
            .map(|i| {
                Person::new(
                    Some(people::email(cfg.seed, i)),
                    people::user_id(cfg.seed, i),
                )
            })
            .collect();
        let earlier = match cfg.identity_changes {
            true => (0..cfg.users)
                .map(|i| {
                    let user_id = people::user_id(cfg.seed, i)?;
                    let email = people::email(cfg.seed, i);
                    match i % 10 {
                        3 => Some(Person::new(None, Some(user_id))),
                        7 => Some(Person::new(Some(format!("was.{email}")), Some(user_id))),
                        _ => None,
                    }
                })
                .collect(),
            false => Vec::new(),
        };
        Generator {
            seed: cfg.seed,
            start_ms,
            days: cfg.days,
            events_per_day: cfg.events_per_day,
            mid_ms: start_ms + (end_ms - start_ms) / 2,
            end_ms,
            people,
            earlier,
            plans: catalog::export_streams().map(Plan::new).collect(),
            nested: Nested::new(),
            cursorless_every: cfg.faults.cursorless_every.map_or(0, u64::from),
            keyless: cfg.faults.keyless_users.then(|| Person::new(None, None)),
        }
    }

    /// The index in [`STREAMS`] of an export data type, accepting both spellings of
    /// `emailUnSubscribe`.
    pub(crate) fn type_index(data_type: &str) -> Option<usize> {
        let def = catalog::by_data_type(data_type)?;
        STREAMS.iter().position(|s| s.name == def.name)
    }

    /// The data type as the spec spells it.
    pub(crate) fn data_type(&self, ty: usize) -> &'static str {
        self.plans[ty].data_type
    }

    /// The instant from which the mid-range fields (`frequencyCapped`, `loyaltyTier`) appear.
    pub(crate) fn mid_ms(&self) -> i64 {
        self.mid_ms
    }

    /// The user whose email or userId this is.
    pub(crate) fn find_user(&self, email: Option<&str>, user_id: Option<&str>) -> Option<u32> {
        self.people
            .iter()
            .position(|p| {
                email.is_some_and(|e| p.email == e)
                    || user_id.is_some_and(|u| p.user_id.as_deref() == Some(u))
            })
            .map(|i| i as u32)
    }

    /// Calls `visit` with the cursor instant of every record `q` selects (shape ignored).
    pub(crate) fn cursors(&self, q: &Query, visit: &mut dyn FnMut(i64)) {
        let _ = self.scan(q, Pos::default(), &mut |_, rec| {
            visit(rec.cursor_ms);
            ControlFlow::Continue(())
        });
    }

    /// Calls `f` with every line (no newline) `q` selects, from position `from` on.
    pub(crate) fn lines(
        &self,
        q: &Query,
        from: Pos,
        f: &mut dyn FnMut(Pos, &[u8]) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let plan = &self.plans[q.ty];
        let shape = (!q.shape.is_plain()).then_some(&q.shape);
        let campaign = q.shape.campaign_id.filter(|_| !plan.user);
        let mut line = Vec::with_capacity(4096);
        let mut scratch = Vec::new();
        self.scan(q, from, &mut |pos, rec| {
            line.clear();
            let earlier = match plan.user && rec.cursor_ms < self.mid_ms {
                true => self.earlier.get(rec.user as usize).and_then(Option::as_ref),
                false => None,
            };
            let cursor = self.cursor_form(rec);
            let keyless = match (plan.user, cursor) {
                (true, CursorForm::Missing | CursorForm::Unreadable) => self.keyless.as_ref(),
                _ => None,
            };
            let mut ctx = Ctx {
                rec,
                person: keyless
                    .or(earlier)
                    .unwrap_or(&self.people[rec.user as usize]),
                nested: &self.nested,
                mid_ms: self.mid_ms,
                campaign: None,
                cursor,
            };
            let mut rng = rec.rng;
            write_object(
                &plan.fields,
                &mut ctx,
                &mut rng,
                shape,
                &mut line,
                &mut scratch,
            );
            if campaign.is_some() && ctx.campaign != campaign {
                return ControlFlow::Continue(());
            }
            f(pos, &line)
        })
    }

    /// How `rec`'s cursor is sent: one record in `cursorless_every` (drawn from the record's
    /// own seed, so every request that serves it sends it alike) without a readable one.
    fn cursor_form(&self, rec: &Record) -> CursorForm {
        if self.cursorless_every == 0 {
            return CursorForm::Readable;
        }
        let mut rng = Rng::new(rec.rng.0 ^ 0x5EED_C0C5);
        let draw = rng.next_u64();
        match (
            draw % self.cursorless_every,
            (draw / self.cursorless_every) % 2,
        ) {
            (0, 0) => CursorForm::Missing,
            (0, _) => CursorForm::Unreadable,
            _ => CursorForm::Readable,
        }
    }

    /// Writes the body `data.json` serves for `q`: lines joined by `\n`, with a final `\n`
    /// unless the last line's hash says otherwise (see `trailing_newline`).
    pub(crate) fn write_body(
        &self,
        q: &Query,
        out: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let mut last = None;
        self.lines(q, Pos::default(), &mut |_, line| {
            if last.is_some() {
                out(b"\n")?;
            }
            last = Some(xxh3_64(line));
            out(line)
        })?;
        match last {
            Some(hash) if trailing_newline(hash) => out(b"\n"),
            _ => ControlFlow::Continue(()),
        }
    }

    /// Writes the body `userEvents` serves: every visible event of `user`, data type by data
    /// type in catalog order (`customEvent` only when `include_custom`), each line starting
    /// with `"_type":"<dataTypeName>"`, joined like [`Generator::write_body`].
    pub(crate) fn write_user_events(
        &self,
        user: u32,
        include_custom: bool,
        now_ms: i64,
        out: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let mut last = None;
        let mut tagged = Vec::with_capacity(4096);
        for (ty, plan) in self.plans.iter().enumerate() {
            if plan.user || (plan.data_type == "customEvent" && !include_custom) {
                continue;
            }
            let q = Query {
                ty,
                start_ms: i64::MIN,
                end_ms: i64::MAX,
                now_ms,
                user: Some(user),
                shape: Shape::default(),
            };
            self.lines(&q, Pos::default(), &mut |_, line| {
                tagged.clear();
                tagged.extend_from_slice(b"{\"_type\":\"");
                tagged.extend_from_slice(plan.data_type.as_bytes());
                tagged.push(b'"');
                if line.len() > 2 {
                    tagged.push(b',');
                }
                tagged.extend_from_slice(&line[1..]);
                if last.is_some() {
                    out(b"\n")?;
                }
                last = Some(xxh3_64(&tagged));
                out(&tagged)
            })?;
        }
        match last {
            Some(hash) if trailing_newline(hash) => out(b"\n"),
            _ => ControlFlow::Continue(()),
        }
    }

    /// Visits every record `q` selects at or after `from`, in generation order.
    fn scan(
        &self,
        q: &Query,
        from: Pos,
        visit: &mut dyn FnMut(Pos, &Record) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let plan = &self.plans[q.ty];
        if plan.user {
            return self.scan_users(plan.salt, q, from, visit);
        }
        if self.people.is_empty() || q.start_ms >= q.end_ms {
            return ControlFlow::Continue(());
        }
        let day_of = |ms: i64| ms.saturating_sub(self.start_ms).div_euclid(DAY);
        let first = day_of(q.start_ms).max(from.day as i64);
        let last = day_of(q.end_ms.saturating_sub(1)).min(self.days as i64 - 1);
        for day in first.max(0)..=last {
            let day = day as u32;
            let n = self.day_count(plan, day);
            let blocks = n.div_ceil(BLOCK);
            let day_ms = self.start_ms + day as i64 * DAY;
            for block in 0..blocks {
                if (day, block) < (from.day, from.block) {
                    continue;
                }
                let lo_s = (block as i64 * 86_400) / blocks as i64;
                let hi_s = ((block as i64 + 1) * 86_400) / blocks as i64;
                if day_ms + hi_s * SECOND <= q.start_ms || day_ms + lo_s * SECOND >= q.end_ms {
                    continue;
                }
                let block_key = key(self.seed, &[plan.salt, day as u64, block as u64]);
                let first_idx = if (day, block) == (from.day, from.block) {
                    from.idx
                } else {
                    0
                };
                let in_block = BLOCK.min(n - block * BLOCK);
                for idx in first_idx..in_block {
                    let rec = self.event(plan, block_key, day_ms, (lo_s, hi_s), block, idx);
                    if rec.cursor_ms >= q.start_ms
                        && rec.cursor_ms < q.end_ms
                        && rec.visible_ms <= q.now_ms
                        && q.user.is_none_or(|u| u == rec.user)
                    {
                        visit(Pos { day, block, idx }, &rec)?;
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn scan_users(
        &self,
        salt: u64,
        q: &Query,
        from: Pos,
        visit: &mut dyn FnMut(Pos, &Record) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let first = from.block as usize * BLOCK as usize + from.idx as usize;
        for i in first..self.people.len() {
            let i = i as u32;
            if q.user.is_some_and(|u| u != i) {
                continue;
            }
            let Some(rec) = self.user_row(salt, i, q.now_ms) else {
                continue;
            };
            if rec.cursor_ms >= q.start_ms && rec.cursor_ms < q.end_ms {
                let pos = Pos {
                    day: 0,
                    block: i / BLOCK,
                    idx: i % BLOCK,
                };
                visit(pos, &rec)?;
            }
        }
        ControlFlow::Continue(())
    }

    /// How many events of this type day `day` holds: `events_per_day` ±25 %.
    fn day_count(&self, plan: &Plan, day: u32) -> u32 {
        let spread = key(self.seed, &[plan.salt, day as u64, u64::MAX]) % 51;
        (self.events_per_day as u64 * (75 + spread) / 100) as u32
    }

    fn event(
        &self,
        plan: &Plan,
        block_key: u64,
        day_ms: i64,
        (lo_s, hi_s): (i64, i64),
        block: u32,
        idx: u32,
    ) -> Record {
        let mut rng = Rng::new(block_key ^ (idx as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        rng.next_u64();
        let first_of_day = block == 0 && idx == 0;
        let stamp = if first_of_day {
            Stamp::Spaced
        } else {
            Stamp::draw(&mut rng)
        };
        let second = if first_of_day {
            lo_s
        } else {
            rng.range(lo_s, hi_s)
        };
        let cursor_ms = day_ms + second * SECOND + stamp.millis(&mut rng);
        let user = rng.below(self.people.len() as u64) as u32;
        let delay = if rng.below(50) == 0 {
            rng.range(HOUR, LATEST_DELAY + 1)
        } else {
            rng.range(SECOND, 120 * SECOND + 1)
        };
        Record {
            cursor_ms,
            cursor_stamp: stamp,
            visible_ms: cursor_ms + delay,
            signup: None,
            user,
            long_text: block == 0 && idx == LONG_TEXT_INDEX,
            rng: Rng::new(key(block_key, &[idx as u64, plan.salt])),
        }
    }

    /// User `i`'s row (`salt`: the user plan's) as the clock `now_ms` sees it: its latest profile update, or `None`
    /// before signup.
    fn user_row(&self, salt: u64, i: u32, now_ms: i64) -> Option<Record> {
        let mut rng = Rng::new(key(self.seed, &[salt, i as u64]));
        let signup_stamp;
        let signup_ms;
        if i.is_multiple_of(50) {
            signup_stamp = Stamp::Spaced;
            let day = rng.range(-30, self.days as i64);
            signup_ms = self.start_ms + day * DAY;
        } else {
            signup_stamp = Stamp::draw(&mut rng);
            let second = if rng.percent() < 75 {
                rng.range(-90 * 86_400, 0)
            } else {
                rng.range(0, self.days as i64 * 86_400)
            };
            signup_ms = self.start_ms + second * SECOND + signup_stamp.millis(&mut rng);
        }
        if signup_ms > now_ms {
            return None;
        }
        let (mut at, mut stamp, mut update) = (signup_ms, signup_stamp, 0u64);
        let recent_gap = (self.end_ms - self.start_ms) / 2;
        loop {
            let gap = if at < self.start_ms {
                rng.range(DAY, 30 * DAY)
            } else {
                rng.range(HOUR, recent_gap.max(2 * HOUR))
            };
            let next_stamp = Stamp::draw(&mut rng);
            let next = (at + gap) / SECOND * SECOND + next_stamp.millis(&mut rng);
            if next >= self.end_ms || next > now_ms {
                break;
            }
            (at, stamp, update) = (next, next_stamp, update + 1);
        }
        Some(Record {
            cursor_ms: at,
            cursor_stamp: stamp,
            visible_ms: at,
            signup: Some((signup_ms, signup_stamp)),
            user: i,
            long_text: false,
            rng: Rng::new(key(self.seed, &[salt, i as u64, update])),
        })
    }
}

impl Plan {
    fn new(def: &'static catalog::StreamDef) -> Plan {
        let schema: Schema =
            serde_json::from_str(def.schema).expect("catalog schemas are valid JSON Schema");
        let data_type = def.data_type();
        let user = data_type == "user";
        let mut fields = Vec::new();
        for (name, prop) in schema.properties.0 {
            match (user, prop.properties) {
                (true, Some(sub)) => {
                    for (sub_name, sub_prop) in sub.0 {
                        let kind = Gen::for_prop(&sub_name, &sub_prop, data_type);
                        fields.push(Field::new(
                            format!("{name}.{sub_name}"),
                            Presence::Usual,
                            kind,
                        ));
                    }
                }
                (_, sub) => {
                    let prop = Prop {
                        properties: sub,
                        ..prop
                    };
                    let presence = match name.as_str() {
                        "createdAt" => Presence::Always,
                        "email" => Presence::Email,
                        "profileUpdatedAt" if user => Presence::Always,
                        "userId" => Presence::UserId,
                        _ => Presence::Usual,
                    };
                    let kind = Gen::for_prop(&name, &prop, data_type);
                    fields.push(Field::new(name, presence, kind));
                }
            }
        }
        if user {
            fields.extend([
                Field::new("customScore", Presence::Sometimes(90), Gen::Drift),
                Field::new("bigCounter", Presence::Sometimes(25), Gen::BigInt),
                Field::new("shoppingCart.total", Presence::Usual, Gen::Cents(0, 50_000)),
                Field::new("shoppingCart.itemCount", Presence::Usual, Gen::Int(0, 12)),
                Field::new(
                    "preferences.channels",
                    Presence::Usual,
                    Gen::Blob(Blob::Preferences),
                ),
                Field::new("nickname", Presence::Usual, Gen::Pick(TEXT)),
                Field::new("loyaltyTier", Presence::AfterMid, Gen::Pick(TIERS)),
            ]);
        } else {
            fields.push(Field::new("frequencyCapped", Presence::AfterMid, Gen::Bool));
        }
        Plan {
            data_type,
            salt: xxh3_64(data_type.as_bytes()),
            user,
            fields,
        }
    }
}

impl Field {
    fn new(key: impl Into<String>, presence: Presence, kind: Gen) -> Field {
        let key: String = key.into();
        let mut prefix = json_literal(&key).into_vec();
        prefix.push(b':');
        Field {
            key: key.into(),
            prefix: prefix.into(),
            presence,
            kind,
        }
    }
}

impl Gen {
    fn for_prop(name: &str, prop: &Prop, data_type: &str) -> Gen {
        let user = data_type == "user";
        match prop.ty.main() {
            "string" if prop.format.as_deref() == Some("date-time") => match name {
                "createdAt" => Gen::Cursor,
                "profileUpdatedAt" if user => Gen::Cursor,
                "signupDate" => Gen::Time(TimeRef::Signup),
                "documentCreatedAt" => Gen::Time(TimeRef::DocCreated),
                "documentUpdatedAt" => Gen::Time(TimeRef::DocUpdated),
                "sessionStartTime" => Gen::Time(TimeRef::SessionStartMillis),
                "sessionEndTime" => Gen::Time(TimeRef::SessionEndMillis),
                _ => Gen::Time(TimeRef::Before),
            },
            "string" if prop.content_media_type.is_some() => Gen::TransactionalData,
            "string" => Gen::for_string(name),
            "integer" => Gen::for_integer(name),
            "number" => match name {
                "total" => Gen::Cents(99, 99_999),
                "totalDuration" => Gen::Cents(10, 60_000),
                _ => Gen::Cents(0, 1_000),
            },
            "boolean" => Gen::Bool,
            "object" => match &prop.properties {
                Some(sub) => Gen::Struct(
                    sub.0
                        .iter()
                        .map(|(n, p)| {
                            Field::new(n, Presence::Usual, Gen::for_prop(n, p, data_type))
                        })
                        .collect(),
                ),
                None if name == "payload" => Gen::Blob(Blob::Payload),
                None => Gen::Blob(Blob::DataFields),
            },
            "array" => match prop.items.as_ref().map(|i| i.ty.main()) {
                Some("integer") => match name {
                    "channelIds" | "unsubscribedChannelIds" => Gen::IntArray(10, 16),
                    "messageTypeIds"
                    | "unsubscribedMessageTypeIds"
                    | "subscribedMessageTypeIds" => Gen::IntArray(100, 112),
                    _ => Gen::IntArray(500, 520),
                },
                Some(_) => Gen::TokenArray,
                None => match name {
                    "impressions" => Gen::Blob(Blob::Impressions),
                    "devices" => Gen::Blob(Blob::Devices),
                    _ => Gen::Blob(Blob::Items),
                },
            },
            other => panic!("schema type {other} of {name} has no generator"),
        }
    }

    fn for_string(name: &str) -> Gen {
        match name {
            "email" => Gen::Email,
            "userId" => Gen::UserId,
            "emailDomain" => Gen::EmailDomain,
            "messageId" => Gen::Hex(32),
            "messageBusId" | "id" => Gen::Hex(24),
            "linkId" => Gen::Hex(12),
            "token" | "browserToken" => Gen::Hex(64),
            "deviceId" | "inboxSessionId" | "embeddedSessionId" | "sessionId" => Gen::Uuid,
            "ip" => Gen::Ip,
            "toPhoneNumber" | "fromPhoneNumber" | "phoneNumber" => Gen::Phone,
            "locale" => Gen::Pick(LOCALES),
            "timeZone" => Gen::Pick(TIME_ZONES),
            "userAgent" => Gen::Pick(USER_AGENTS),
            "userAgentDevice" => Gen::Pick(&[r#""Desktop""#, r#""Mobile""#, r#""Tablet""#]),
            "city" => Gen::Pick(CITIES),
            "region" => Gen::Pick(REGIONS),
            "country" => Gen::Pick(COUNTRIES),
            "url" | "linkUrl" | "clickedUrl" | "targetUrl" => Gen::Pick(URLS),
            "platform" => Gen::Pick(&[r#""iOS""#, r#""Android""#, r#""Web""#]),
            "appPackageName" => Gen::Pick(&[r#""com.example.shop""#, r#""com.example.shop.beta""#]),
            "currency" => Gen::Pick(&[r#""USD""#, r#""EUR""#, r#""JPY""#, r#""ILS""#]),
            "recipientState" => Gen::Pick(&[r#""Delivered""#, r#""Bounced""#, r#""Unknown""#]),
            "reason" => Gen::Pick(SKIP_REASONS),
            "bounceType" => Gen::Pick(&[r#""Hard""#, r#""Soft""#, r#""Transient""#]),
            "bounceMessage" | "smsProviderResponseMessage" => Gen::Pick(BOUNCES),
            "smsProviderResponseCode" => Gen::Pick(&[r#""30003""#, r#""30005""#, r#""30007""#]),
            "unsubSource" => Gen::Pick(&[
                r#""EmailLink""#,
                r#""HostedPage""#,
                r#""ListUnsubscribe""#,
                r#""API""#,
            ]),
            "signupSource" => Gen::Pick(&[r#""API""#, r#""Import""#, r#""WebForm""#, r#""iOS""#]),
            "closeAction" => Gen::Pick(&[r#""link""#, r#""back""#, r#""closeButton""#]),
            "deleteAction" => Gen::Pick(&[r#""delete-button""#, r#""inbox-swipe""#]),
            "proxySource" => Gen::Pick(&[r#""Apple""#, r#""Google""#, r#""Yahoo""#]),
            "trigger" => Gen::Pick(&[r#""immediate""#, r#""event""#, r#""never""#]),
            "location" => Gen::Pick(&[r#""in-app""#, r#""inbox""#]),
            "buttonIdentifier" => Gen::Pick(&[r#""cta-primary""#, r#""dismiss""#]),
            "eventName" => Gen::Pick(EVENT_NAMES),
            "workflowName" => {
                Gen::Pick(&[r#""Welcome series""#, r#""Win-back""#, r#""カート放棄""#])
            }
            "journeyExitReason" => Gen::Pick(&[
                r#""Completed""#,
                r#""ExitRuleMatched""#,
                r#""UserDeleted""#,
                r#""JourneyDeactivated""#,
            ]),
            "firstName" => Gen::Pick(FIRST_NAMES),
            "lastName" => Gen::Pick(LAST_NAMES),
            "fromEmail" => Gen::Pick(&[r#""news@example.com""#, r#""ニュース@example.jp""#]),
            _ => Gen::Pick(TEXT),
        }
    }

    fn for_integer(name: &str) -> Gen {
        match name {
            "campaignId" => Gen::CampaignId,
            "templateId" => Gen::TemplateId,
            "messageTypeId" => Gen::Int(100, 112),
            "channelId" => Gen::Int(10, 16),
            "emailListId" => Gen::Int(500, 520),
            "workflowId" => Gen::Int(30_000, 30_050),
            "experimentId" => Gen::Int(70_000, 70_100),
            "contentId" => Gen::Int(1, 1_000_000),
            "placementId" | "nodeId" => Gen::Int(1, 400),
            "fromSMSSenderId" => Gen::Int(1, 9),
            "hrefIndex" | "segmentCount" => Gen::Int(0, 8),
            _ => Gen::Int(0, 60),
        }
    }
}

/// Writes `{...}` for `fields`, keeping only keys `shape` allows (values are drawn either way,
/// so a shaped line holds the same values as the full one).
fn write_object(
    fields: &[Field],
    ctx: &mut Ctx,
    rng: &mut Rng,
    shape: Option<&Shape>,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) {
    out.push(b'{');
    let mut first = true;
    for field in fields {
        let present = match field.presence {
            Presence::Always => Some(true),
            Presence::Usual => match rng.percent() {
                0..82 => Some(true),
                82..90 => Some(false),
                _ => None,
            },
            Presence::Sometimes(pct) => (rng.percent() < pct).then_some(true),
            Presence::UserId => match ctx.person.user_id_json {
                Some(_) => Some(true),
                None => (rng.percent() >= 70).then_some(false),
            },
            Presence::Email => ctx.person.email_json.is_some().then_some(true),
            Presence::AfterMid => {
                (ctx.rec.cursor_ms >= ctx.mid_ms && rng.percent() < 60).then_some(true)
            }
        };
        let forced = ctx.rec.long_text
            && matches!(
                field.kind,
                Gen::TransactionalData | Gen::Blob(Blob::DataFields)
            );
        let Some(value) = present.or(forced.then_some(true)) else {
            continue;
        };
        if matches!(field.kind, Gen::Cursor) && ctx.cursor == CursorForm::Missing {
            continue;
        }
        let mark = out.len();
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(&field.prefix);
        if value || forced {
            write_value(&field.kind, ctx, rng, out, scratch);
        } else {
            out.extend_from_slice(b"null");
        }
        if shape.is_some_and(|s| !s.keep(&field.key)) {
            out.truncate(mark);
            continue;
        }
        first = false;
    }
    out.push(b'}');
}

fn write_value(kind: &Gen, ctx: &mut Ctx, rng: &mut Rng, out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
    let rec = ctx.rec;
    match kind {
        Gen::Cursor if ctx.cursor == CursorForm::Unreadable => {
            out.extend_from_slice(b"\"unknown\"")
        }
        Gen::Cursor => push_stamp(out, rec.cursor_ms, rec.cursor_stamp),
        Gen::Email => match &ctx.person.email_json {
            Some(email) => out.extend_from_slice(email),
            None => out.extend_from_slice(b"null"),
        },
        Gen::UserId => match &ctx.person.user_id_json {
            Some(id) => out.extend_from_slice(id),
            None => out.extend_from_slice(b"null"),
        },
        Gen::EmailDomain => match &ctx.person.domain_json {
            Some(domain) => out.extend_from_slice(domain),
            None => out.extend_from_slice(b"null"),
        },
        Gen::Pick(items) => out.extend_from_slice(rng.pick(items).as_bytes()),
        Gen::Hex(len) => {
            out.push(b'"');
            push_hex(out, rng, *len);
            out.push(b'"');
        }
        Gen::Uuid => {
            out.push(b'"');
            for (i, len) in [8, 4, 4, 4, 12].into_iter().enumerate() {
                if i > 0 {
                    out.push(b'-');
                }
                push_hex(out, rng, len);
            }
            out.push(b'"');
        }
        Gen::Ip => {
            let bits = rng.next_u64();
            out.push(b'"');
            for i in 0..4 {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, (bits >> (i * 8)) & 0xFF);
            }
            out.push(b'"');
        }
        Gen::Phone => {
            out.extend_from_slice(b"\"+1555");
            push_padded(out, rng.below(10_000_000), 7);
            out.push(b'"');
        }
        Gen::Time(at) => write_time(*at, rec, rng, out),
        Gen::Int(lo, hi) => push_i64(out, rng.range(*lo, *hi)),
        Gen::CampaignId => {
            let id = CAMPAIGN_BASE + rng.range(0, CAMPAIGNS);
            ctx.campaign = Some(id);
            push_i64(out, id);
        }
        Gen::TemplateId => push_i64(out, TEMPLATE_BASE + rng.range(0, CAMPAIGNS)),
        Gen::Cents(lo, hi) => {
            let cents = rng.range(*lo, *hi);
            if rng.below(10) == 0 {
                push_i64(out, cents / 100);
            } else {
                push_cents(out, cents);
            }
        }
        Gen::Bool => push_bool(out, rng.below(2) == 0),
        Gen::IntArray(lo, hi) => {
            let n = rng.below(5);
            out.push(b'[');
            for i in 0..n {
                if i > 0 {
                    out.push(b',');
                }
                push_i64(out, rng.range(*lo, *hi));
            }
            out.push(b']');
        }
        Gen::TokenArray => {
            let n = rng.below(3);
            out.push(b'[');
            for i in 0..n {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'"');
                push_hex(out, rng, 64);
                out.push(b'"');
            }
            out.push(b']');
        }
        Gen::Struct(fields) => {
            if rng.below(10) == 0 {
                out.extend_from_slice(b"{}");
            } else {
                write_object(fields, ctx, rng, None, out, scratch);
            }
        }
        Gen::Blob(blob) => write_blob(*blob, rec.long_text, rng, out),
        Gen::TransactionalData => {
            write_transactional(ctx.nested, rec.long_text, rng, out, scratch);
        }
        Gen::Drift => {
            let v = rng.range(0, 1000);
            match rng.below(10) {
                0..3 => push_i64(out, v),
                3..6 => push_cents(out, v * 100 + rng.range(1, 100)),
                6..8 => {
                    out.push(b'"');
                    push_i64(out, v);
                    out.push(b'"');
                }
                _ => out.extend_from_slice(b"null"),
            }
        }
        Gen::BigInt => {
            out.extend_from_slice(b"1234567890123456789");
            push_padded(out, rng.below(100_000_000_000), 11);
        }
    }
}

fn write_time(at: TimeRef, rec: &Record, rng: &mut Rng, out: &mut Vec<u8>) {
    match (at, rec.signup) {
        (TimeRef::Signup | TimeRef::DocCreated, Some((ms, stamp))) => push_stamp(out, ms, stamp),
        (TimeRef::DocUpdated, Some(_)) | (TimeRef::Signup, None) => {
            push_stamp(out, rec.cursor_ms, rec.cursor_stamp)
        }
        (TimeRef::DocCreated | TimeRef::DocUpdated, None) => {
            let stamp = Stamp::draw(rng);
            push_stamp(out, stamp.truncate(rec.visible_ms), stamp);
        }
        (TimeRef::SessionStartMillis, _) => {
            push_i64(out, rec.cursor_ms - rng.range(SECOND, 30 * 60 * SECOND))
        }
        (TimeRef::SessionEndMillis, _) => push_i64(out, rec.cursor_ms),
        (TimeRef::Before, _) => {
            let stamp = Stamp::draw(rng);
            push_stamp(
                out,
                stamp.truncate(rec.cursor_ms - rng.range(0, DAY)),
                stamp,
            );
        }
    }
}

fn write_blob(blob: Blob, long_text: bool, rng: &mut Rng, out: &mut Vec<u8>) {
    let empty = !long_text && rng.below(8) == 0;
    match blob {
        Blob::DataFields if empty => out.extend_from_slice(b"{}"),
        Blob::DataFields => {
            out.extend_from_slice(b"{\"productId\":\"p-");
            push_u64(out, rng.below(10_000));
            out.extend_from_slice(b"\",\"price\":");
            push_cents(out, rng.range(1, 100_000));
            out.extend_from_slice(",\"tags\":[\"new\",\"セール\"],\"comment\":".as_bytes());
            out.extend_from_slice(rng.pick(TEXT).as_bytes());
            out.extend_from_slice(b",\"nested\":{\"level\":");
            push_u64(out, rng.below(5));
            out.extend_from_slice(b",\"flag\":");
            push_bool(out, rng.below(2) == 0);
            out.extend_from_slice(b",\"empty\":{},\"none\":[]}");
            if long_text {
                out.extend_from_slice(b",\"longText\":\"");
                push_long_text(out, rng);
                out.push(b'"');
            }
            out.push(b'}');
        }
        Blob::Payload if empty => out.extend_from_slice(b"{}"),
        Blob::Payload => {
            out.extend_from_slice(b"{\"deeplink\":\"app://product/");
            push_u64(out, rng.below(1000));
            out.extend_from_slice(b"\",\"badge\":");
            push_u64(out, rng.below(10));
            out.push(b'}');
        }
        Blob::Preferences if empty => out.extend_from_slice(b"{}"),
        Blob::Preferences => {
            out.extend_from_slice(b"{\"email\":");
            push_bool(out, rng.below(2) == 0);
            out.extend_from_slice(b",\"sms\":");
            push_bool(out, rng.below(2) == 0);
            out.push(b'}');
        }
        Blob::Items | Blob::Impressions | Blob::Devices if empty => out.extend_from_slice(b"[]"),
        Blob::Items => {
            out.push(b'[');
            for i in 0..1 + rng.below(3) {
                if i > 0 {
                    out.push(b',');
                }
                let sku = rng.below(500);
                out.extend_from_slice(b"{\"id\":\"sku-");
                push_u64(out, sku);
                out.extend_from_slice(b"\",\"name\":");
                out.extend_from_slice(rng.pick(TEXT).as_bytes());
                out.extend_from_slice(b",\"price\":");
                push_cents(out, rng.range(100, 20_000));
                out.extend_from_slice(b",\"quantity\":");
                push_u64(out, 1 + rng.below(4));
                out.extend_from_slice(
                    ",\"categories\":[\"shoes\",\"靴\"],\"dataFields\":{}}".as_bytes(),
                );
            }
            out.push(b']');
        }
        Blob::Impressions => {
            out.push(b'[');
            for i in 0..1 + rng.below(3) {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"messageId\":\"");
                push_hex(out, rng, 32);
                out.extend_from_slice(b"\",\"displayCount\":");
                push_u64(out, 1 + rng.below(5));
                out.extend_from_slice(b",\"displayDuration\":");
                push_cents(out, rng.range(10, 6_000));
                out.push(b'}');
            }
            out.push(b']');
        }
        Blob::Devices => {
            out.extend_from_slice(b"[{\"token\":\"");
            push_hex(out, rng, 64);
            out.extend_from_slice(b"\",\"platform\":\"APNS\",\"applicationName\":\"com.example.shop\",\"endpointEnabled\":");
            push_bool(out, rng.below(4) != 0);
            out.extend_from_slice(b",\"dataFields\":{}}]");
        }
    }
}

/// The fixed parts of the JSON text a `transactionalData` string holds, around its values.
const TRANSACTIONAL_PARTS: [&str; 10] = [
    "{\"orderId\":\"",
    "\",\"items\":[{\"sku\":\"sku-",
    "\",\"name\":",
    ",\"qty\":",
    "}],\"total\":",
    ",\"shipTo\":{\"city\":",
    "}",
    ",\"note\":\"",
    "\"",
    "}",
];

/// What `transactionalData` is made of, escaped once more to sit inside a JSON string, so
/// that the hot path copies instead of escaping byte by byte.
#[derive(Debug)]
struct Nested {
    parts: Vec<Box<[u8]>>,
    text: Vec<Box<[u8]>>,
    cities: Vec<Box<[u8]>>,
}

impl Nested {
    fn new() -> Nested {
        let escape_all = |items: &[&str]| {
            items
                .iter()
                .map(|item| {
                    let mut out = Vec::new();
                    push_escaped_content(&mut out, item.as_bytes());
                    out.into_boxed_slice()
                })
                .collect()
        };
        Nested {
            parts: escape_all(&TRANSACTIONAL_PARTS),
            text: escape_all(TEXT),
            cities: escape_all(CITIES),
        }
    }
}

/// A `transactionalData` value: a JSON string holding a JSON object.
fn write_transactional(
    nested: &Nested,
    long_text: bool,
    rng: &mut Rng,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) {
    let part = |out: &mut Vec<u8>, i: usize| out.extend_from_slice(&nested.parts[i]);
    out.push(b'"');
    part(out, 0);
    push_hex(out, rng, 12);
    part(out, 1);
    push_u64(out, rng.below(500));
    part(out, 2);
    let text = rng.pick(nested.text.as_slice());
    out.extend_from_slice(text);
    part(out, 3);
    push_u64(out, 1 + rng.below(4));
    part(out, 4);
    push_cents(out, rng.range(100, 100_000));
    part(out, 5);
    let city = rng.pick(nested.cities.as_slice());
    out.extend_from_slice(city);
    part(out, 6);
    if long_text {
        part(out, 7);
        scratch.clear();
        push_long_text(scratch, rng);
        push_escaped_content(out, scratch);
        part(out, 8);
    }
    part(out, 9);
    out.push(b'"');
}

/// 10–100 KB of JSON string content (no quotes) in several scripts.
fn push_long_text(out: &mut Vec<u8>, rng: &mut Rng) {
    const PIECES: &[&str] = &[
        "Lorem ipsum dolor sit amet, ",
        "長い文章のテストです。",
        "نص طويل للاختبار ",
        "טקסט ארוך לבדיקה ",
        "🎉🚀 ",
        "line\\nbreak ",
        "quote \\\" ",
    ];
    let target = out.len() + rng.range(10_000, 100_000) as usize;
    while out.len() < target {
        out.extend_from_slice(rng.pick(PIECES).as_bytes());
    }
}

/// Writes `text` as a JSON string literal.
fn push_escaped(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'"');
    push_escaped_content(out, text);
    out.push(b'"');
}

/// Writes `text` escaped for the inside of a JSON string literal.
fn push_escaped_content(out: &mut Vec<u8>, text: &[u8]) {
    let mut run = 0;
    for (i, &b) in text.iter().enumerate() {
        let short: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\t' => Some(b"\\t"),
            b'\r' => Some(b"\\r"),
            0..0x20 => None,
            _ => continue,
        };
        out.extend_from_slice(&text[run..i]);
        run = i + 1;
        match short {
            Some(escape) => out.extend_from_slice(escape),
            None => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xF) as usize]);
            }
        }
    }
    out.extend_from_slice(&text[run..]);
}

/// `s` as a JSON string literal.
fn json_literal(s: &str) -> Box<[u8]> {
    let mut out = Vec::with_capacity(s.len() + 2);
    push_escaped(&mut out, s.as_bytes());
    out.into_boxed_slice()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut Vec<u8>, rng: &mut Rng, len: usize) {
    let mut chunk = [0u8; 16];
    let mut left = len;
    while left > 0 {
        let mut bits = rng.next_u64();
        for c in &mut chunk {
            *c = HEX[(bits & 0xF) as usize];
            bits >>= 4;
        }
        let n = left.min(16);
        out.extend_from_slice(&chunk[..n]);
        left -= n;
    }
}

fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
}

/// `v` with leading zeros to `width` digits.
fn push_padded(out: &mut Vec<u8>, mut v: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    while v > 0 {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&digits[i.min(digits.len() - width.min(20))..]);
}

fn push_cents(out: &mut Vec<u8>, cents: i64) {
    push_i64(out, cents / 100);
    out.push(b'.');
    push_padded(out, (cents % 100).unsigned_abs(), 2);
}

fn push_bool(out: &mut Vec<u8>, v: bool) {
    out.extend_from_slice(if v { b"true" } else { b"false" });
}

/// Writes the instant `ms` (epoch milliseconds, UTC) in `stamp`'s format: a quoted string,
/// or a number for [`Stamp::EpochMillis`].
fn push_stamp(out: &mut Vec<u8>, ms: i64, stamp: Stamp) {
    if stamp == Stamp::EpochMillis {
        push_i64(out, ms);
        return;
    }
    let local = ms + stamp.offset_minutes() * 60 * SECOND;
    let (y, mo, d) = civil_from_days(local.div_euclid(DAY));
    let in_day = local.rem_euclid(DAY);
    let secs = in_day / SECOND;
    out.push(b'"');
    if (0..=9999).contains(&y) {
        push_padded(out, y as u64, 4);
    } else {
        push_i64(out, y);
    }
    out.push(b'-');
    push_padded(out, mo as u64, 2);
    out.push(b'-');
    push_padded(out, d as u64, 2);
    let spaced = matches!(
        stamp,
        Stamp::Spaced | Stamp::SpacedMillis | Stamp::SpacedCompact | Stamp::SpacedWest
    );
    out.push(if spaced { b' ' } else { b'T' });
    push_padded(out, (secs / 3600) as u64, 2);
    out.push(b':');
    push_padded(out, (secs / 60 % 60) as u64, 2);
    out.push(b':');
    push_padded(out, (secs % 60) as u64, 2);
    if stamp.has_millis() {
        out.push(b'.');
        push_padded(out, (in_day % SECOND) as u64, 3);
    }
    out.extend_from_slice(match stamp {
        Stamp::Spaced | Stamp::SpacedMillis => b" +00:00\"",
        Stamp::SpacedCompact => b" +0000\"",
        Stamp::SpacedWest => b" -05:00\"",
        Stamp::IsoOffset => b"+00:00\"",
        Stamp::IsoEast => b"+05:30\"",
        Stamp::DoubleFraction => b"000.000Z\"",
        Stamp::IsoZ | Stamp::IsoMillisZ | Stamp::EpochMillis => b"Z\"",
    });
}

/// (year, month, day) of a day number counted from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Free text: every script, and the escapes JSON allows.
const TEXT: &[&str] = &[
    r#""Your order has shipped""#,
    r#""Welcome back!""#,
    r#""Last chance: 20% off""#,
    r#""ご注文ありがとうございます""#,
    r#""您的订单已发货""#,
    r#""주문이 발송되었습니다""#,
    r#""تم شحن طلبك""#,
    r#""ההזמנה שלך נשלחה""#,
    r#""mixed עברית, العربية and English""#,
    r#""🎉 Big sale 🚀 today 👍🏽""#,
    r#""family 👨‍👩‍👧 time""#,
    r#""smile \ud83d\ude00 escaped""#,
    r#""nul\u0000byte""#,
    "\"line\u{2028}separator raw\"",
    r#""paragraph\u2029and line\u2028escaped""#,
    r#""quote \" backslash \\ tab\t newline\n""#,
    r#""Cafe\u0301 and naïve café""#,
    r#""slash \/ escaped""#,
    r#""""#,
];

const TIERS: &[&str] = &[r#""bronze""#, r#""silver""#, r#""gold""#];

const LOCALES: &[&str] = &[
    r#""en-US""#,
    r#""fr-FR""#,
    r#""de-DE""#,
    r#""ja-JP""#,
    r#""ar-SA""#,
    r#""he-IL""#,
    r#""zh-CN""#,
];

const TIME_ZONES: &[&str] = &[
    r#""America/New_York""#,
    r#""Europe/Berlin""#,
    r#""Asia/Tokyo""#,
    r#""Asia/Jerusalem""#,
];

const USER_AGENTS: &[&str] = &[
    r#""Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 (KHTML, like Gecko)""#,
    r#""Mozilla\/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)""#,
    r#""Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0""#,
];

const CITIES: &[&str] = &[
    r#""New York""#,
    r#""München""#,
    r#""São Paulo""#,
    r#""東京""#,
    r#""القاهرة""#,
    r#""תל אביב""#,
    r#""Zürich""#,
];

const REGIONS: &[&str] = &[r#""CA""#, r#""NY""#, r#""Bayern""#, r#""東京都""#];

const COUNTRIES: &[&str] = &[
    r#""US""#, r#""DE""#, r#""JP""#, r#""EG""#, r#""IL""#, r#""BR""#,
];

const URLS: &[&str] = &[
    r#""https://example.com/sale?utm_source=iterable&utm_medium=email""#,
    r#""https://example.com/ürün/42""#,
    r#""https://例え.jp/パス?q=1&r=2""#,
    r#""https:\/\/example.com\/escaped""#,
];

const SKIP_REASONS: &[&str] = &[
    r#""DuplicateMarketingMessage""#,
    r#""FrequencyCapped""#,
    r#""MessageTypeUnsubscribed""#,
    r#""ListUnsubscribed""#,
    r#""QuietHours""#,
];

const BOUNCES: &[&str] = &[
    r#""550 5.1.1 The email account that you tried to reach does not exist""#,
    r#""452 4.2.2 Mailbox full""#,
    r#""Unreachable destination handset""#,
    r#""Zustellung fehlgeschlagen: Postfach voll""#,
];

const EVENT_NAMES: &[&str] = &[
    r#""addToCart""#,
    r#""viewedProduct""#,
    r#""appOpened""#,
    r#""ページ閲覧""#,
    r#""level up 🎮""#,
];

const FIRST_NAMES: &[&str] = &[
    r#""Anna""#,
    r#""José""#,
    r#""Zoë""#,
    r#""Владимир""#,
    r#""明""#,
    r#""محمد""#,
    r#""דוד""#,
];

const LAST_NAMES: &[&str] = &[
    r#""Müller""#,
    r#""García""#,
    r#""Nguyễn""#,
    r#""李""#,
    r#""O'Brien""#,
    r#""عبد الله""#,
];

/// The `properties` of a JSON Schema, in document order.
#[derive(Debug)]
struct Props(Vec<(String, Prop)>);

#[derive(Debug, Deserialize)]
struct Schema {
    properties: Props,
}

#[derive(Debug, Deserialize)]
struct Prop {
    #[serde(rename = "type")]
    ty: TypeDecl,
    #[serde(default)]
    format: Option<String>,
    #[serde(default, rename = "contentMediaType")]
    content_media_type: Option<String>,
    #[serde(default)]
    properties: Option<Props>,
    #[serde(default)]
    items: Option<Box<Prop>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TypeDecl {
    One(String),
    Many(Vec<String>),
}

impl TypeDecl {
    /// The declared type other than `null`.
    fn main(&self) -> &str {
        match self {
            TypeDecl::One(t) => t,
            TypeDecl::Many(ts) => ts.iter().find(|t| *t != "null").map_or("null", |t| t),
        }
    }
}

impl<'de> Deserialize<'de> for Props {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Props, D::Error> {
        struct OrderedVisitor;
        impl<'de> Visitor<'de> for OrderedVisitor {
            type Value = Props;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of JSON Schema properties")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Props, A::Error> {
                let mut props = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    props.push(entry);
                }
                Ok(Props(props))
            }
        }
        deserializer.deserialize_map(OrderedVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, FixedOffset, Utc};

    #[test]
    fn every_pool_entry_is_a_json_string() {
        let pools = [
            TEXT,
            TIERS,
            LOCALES,
            TIME_ZONES,
            USER_AGENTS,
            CITIES,
            REGIONS,
            COUNTRIES,
            URLS,
            SKIP_REASONS,
            BOUNCES,
            EVENT_NAMES,
            FIRST_NAMES,
            LAST_NAMES,
        ];
        for entry in pools.into_iter().flatten() {
            let v: serde_json::Value = serde_json::from_str(entry).unwrap();
            assert!(v.is_string(), "{entry}");
        }
    }

    #[test]
    fn stamps_match_chrono() {
        for ms in [
            0i64,
            1_704_067_200_000,
            1_709_251_199_999,
            951_782_400_123,
            -1,
        ] {
            let t = DateTime::<Utc>::from_timestamp_millis(ms).unwrap();
            let west = t.with_timezone(&FixedOffset::west_opt(5 * 3600).unwrap());
            let east = t.with_timezone(&FixedOffset::east_opt(5 * 3600 + 1800).unwrap());
            let cases = [
                (Stamp::Spaced, t.format("\"%Y-%m-%d %H:%M:%S +00:00\"")),
                (
                    Stamp::SpacedMillis,
                    t.format("\"%Y-%m-%d %H:%M:%S%.3f +00:00\""),
                ),
                (Stamp::IsoOffset, t.format("\"%Y-%m-%dT%H:%M:%S+00:00\"")),
                (Stamp::IsoZ, t.format("\"%Y-%m-%dT%H:%M:%SZ\"")),
                (Stamp::IsoMillisZ, t.format("\"%Y-%m-%dT%H:%M:%S%.3fZ\"")),
                (
                    Stamp::SpacedCompact,
                    t.format("\"%Y-%m-%d %H:%M:%S +0000\""),
                ),
                (Stamp::SpacedWest, west.format("\"%Y-%m-%d %H:%M:%S %:z\"")),
                (Stamp::IsoEast, east.format("\"%Y-%m-%dT%H:%M:%S%:z\"")),
                (
                    Stamp::DoubleFraction,
                    t.format("\"%Y-%m-%dT%H:%M:%S%.6f.000Z\""),
                ),
            ];
            for (stamp, want) in cases {
                let mut out = Vec::new();
                push_stamp(&mut out, ms, stamp);
                assert_eq!(String::from_utf8(out).unwrap(), want.to_string());
            }
            let mut out = Vec::new();
            push_stamp(&mut out, ms, Stamp::EpochMillis);
            assert_eq!(out, ms.to_string().as_bytes());
        }
    }

    #[test]
    fn numbers_are_written_like_std() {
        for v in [0i64, 7, -7, 1234567, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            push_i64(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
        let mut out = Vec::new();
        push_cents(&mut out, 1205);
        out.push(b' ');
        push_padded(&mut out, 42, 5);
        assert_eq!(out, b"12.05 00042");
    }

    #[test]
    fn escaping_round_trips() {
        let text = "a\"b\\c\nd\u{0}e\u{1f}f\u{2028}g😀";
        let json = json_literal(text);
        assert_eq!(serde_json::from_slice::<String>(&json).unwrap(), text);
    }

    #[test]
    fn schemas_keep_their_property_order() {
        let plan = Plan::new(catalog::find("email_send").unwrap());
        let keys: Vec<&str> = plan.fields.iter().map(|f| &*f.key).take(3).collect();
        assert_eq!(keys, ["createdAt", "email", "userId"]);
        let users = Plan::new(catalog::find("users").unwrap());
        assert!(
            users
                .fields
                .iter()
                .any(|f| &*f.key == "itblInternal.emailDomain")
        );
    }
}
