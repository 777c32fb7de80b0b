//! LoCoMo (Maharana et al., 2024): long conversations between two speakers over many
//! sessions, with questions whose evidence is a list of dialogue turns.
//!
//! [`Dataset::load`] reads the JSON file as published (a list of samples, see the crate
//! documentation for the format) into [`Sample`]s with their [`Session`]s sorted by number,
//! [`Turn`]s in conversation order and [`Qa`]s whose evidence has been normalised.
//!
//! The published data has flaws, which the loader repairs where it can and reports in
//! [`Dataset::warnings`] and [`Dataset::stats`] where it cannot; it never panics on input:
//!
//! - an evidence string holding several ids (`"D8:6; D9:17"`) is split on `;`, `,` and
//!   whitespace;
//! - an id in a near-miss form (`"D:11:26"`, `"d3:05"`) is rewritten as `D11:26`, `D3:5`;
//! - a piece that is no dialogue id at all (`"D"`) is dropped;
//! - a well-formed id that names no turn of the sample (`"D10:19"` where session 10 has
//!   fewer turns) is dropped, so every id left in [`Qa::evidence`] resolves with
//!   [`Sample::turn`];
//! - a `session_N_date_time` without a `session_N` is ignored, and a date that cannot be
//!   parsed leaves [`Session::timestamp_ms`] as `None`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// Environment variable that, when set, names the LoCoMo file [`default_locomo_path`]
/// returns (normally the development split, `locomo-dev.json`).
pub const LOCOMO_ENV: &str = "MEMLOG_LOCOMO";

/// Where the development split lives relative to the directory that holds the checkout
/// (the checkout is `X/main`, the file `X/shared/datasets/locomo/locomo-dev.json`).
pub const LOCOMO_DEV_RELATIVE_PATH: &str = "shared/datasets/locomo/locomo-dev.json";

/// The category of adversarial questions: they have an `adversarial_answer` (the tempting
/// wrong answer) and are excluded from retrieval scores.
pub const ADVERSARIAL_CATEGORY: u8 = 5;

/// Why a data set file (LoCoMo, or a JSON Lines fixture such as the
/// [consolidation pairs](crate::consolidation), a LongMemEval file, an OTLP trace file)
/// could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read data set file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file is not JSON in the LoCoMo format.
    #[error("invalid LoCoMo file {}{}: {source}", path.display(), at_suffix(at))]
    Format {
        /// The file (or the origin given to [`Dataset::from_slice`]).
        path: PathBuf,
        /// Where in the JSON the problem is, e.g. `[0].conversation.session_3[4].text`;
        /// empty when the document as a whole is at fault.
        at: String,
        /// What is wrong, with line and column.
        source: serde_json::Error,
    },
    /// A file is not the JSON document its format requires (a LongMemEval file that is no
    /// JSON array; an OTLP/JSON document that is not JSON).
    #[error("invalid {format} file {}: {source}", path.display())]
    Json {
        /// The file (or the origin given to a `from_slice`).
        path: PathBuf,
        /// The format expected, e.g. `"LongMemEval"`.
        format: &'static str,
        /// What is wrong, with line and column.
        source: serde_json::Error,
    },
    /// A line of a JSON Lines file is wrong: not JSON, a missing, unknown or mistyped field,
    /// an empty text, an id already used.
    #[error("invalid line {line} of {}: {message}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The line, counting from 1.
        line: usize,
        /// What is wrong, naming the field where there is one.
        message: String,
    },
}

fn at_suffix(at: &str) -> String {
    if at.is_empty() {
        String::new()
    } else {
        format!(" at `{at}`")
    }
}

/// One dialogue turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Turn {
    /// Who speaks: one of the sample's two speakers.
    pub speaker: String,
    /// The turn's id, `D<session>:<n>` with `n` counting from 1 within the session.
    pub dia_id: String,
    /// What was said.
    pub text: String,
    /// For a turn that shares an image: the image's automatic caption (BLIP). The image
    /// itself (`img_url`) and the search `query` that found it are not kept.
    pub blip_caption: Option<String>,
}

/// One session: a dated run of turns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    /// The `N` of `session_N` (from 1; sessions are sorted by it).
    pub index: u32,
    /// The date as written, e.g. `"1:56 pm on 8 May, 2023"`; empty if the file has none.
    pub date_time: String,
    /// [`Session::date_time`] as milliseconds since the Unix epoch, read as UTC; `None` if
    /// it could not be parsed (see [`parse_date_time`]).
    pub timestamp_ms: Option<i64>,
    /// The turns, in conversation order.
    pub turns: Vec<Turn>,
}

/// One question about a sample's conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Qa {
    /// The question.
    pub question: String,
    /// The reference answer; numbers in the file (`2022`) become text (`"2022"`). `None`
    /// for most adversarial questions.
    pub answer: Option<String>,
    /// For adversarial questions ([`ADVERSARIAL_CATEGORY`]): the tempting wrong answer.
    pub adversarial_answer: Option<String>,
    /// The `dia_id`s of the turns that hold the answer, normalised: split, rewritten in
    /// canonical form, deduplicated, and limited to ids of turns that exist in the sample.
    /// May be empty (some open-domain questions have no evidence).
    pub evidence: Vec<String>,
    /// The question's category, 1–5. Names differ between papers, so report by number.
    pub category: u8,
}

impl Qa {
    /// True for adversarial questions (category 5), which retrieval scores leave out.
    pub fn is_adversarial(&self) -> bool {
        self.category == ADVERSARIAL_CATEGORY
    }
}

/// One conversation with its questions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// The sample's id, e.g. `"conv-26"`.
    pub sample_id: String,
    /// The first speaker's name.
    pub speaker_a: String,
    /// The second speaker's name.
    pub speaker_b: String,
    /// The sessions, sorted by [`Session::index`].
    pub sessions: Vec<Session>,
    /// The questions, in file order.
    pub qa: Vec<Qa>,
}

impl Sample {
    /// Every turn with its session, in conversation order (sessions by index, then turns
    /// in file order).
    pub fn turns(&self) -> impl Iterator<Item = (&Session, &Turn)> + '_ {
        self.sessions
            .iter()
            .flat_map(|session| session.turns.iter().map(move |turn| (session, turn)))
    }

    /// The number of turns in all sessions.
    pub fn turn_count(&self) -> usize {
        self.sessions.iter().map(|s| s.turns.len()).sum()
    }

    /// The session with the given index.
    pub fn session(&self, index: u32) -> Option<&Session> {
        self.sessions
            .binary_search_by_key(&index, |s| s.index)
            .ok()
            .and_then(|i| self.sessions.get(i))
    }

    /// The turn with the given `dia_id` (exact match) and its session. Canonical ids are
    /// found without a scan; others fall back to one.
    pub fn turn(&self, dia_id: &str) -> Option<(&Session, &Turn)> {
        if let Some((session, n)) = parse_dia_id(dia_id)
            && let Some(s) = self.session(session)
            && let Some(t) = n.checked_sub(1).and_then(|i| s.turns.get(i as usize))
            && t.dia_id == dia_id
        {
            return Some((s, t));
        }
        self.turns().find(|(_, t)| t.dia_id == dia_id)
    }
}

/// Counts of what the loader had to repair or leave out (each also has warnings).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LoadStats {
    /// Evidence strings that held several ids (and were split).
    pub evidence_split: usize,
    /// Evidence ids rewritten into canonical form (`D:11:26` → `D11:26`).
    pub evidence_repaired: usize,
    /// Evidence pieces that are no dialogue id (dropped).
    pub evidence_malformed: usize,
    /// Well-formed evidence ids that name no turn of the sample (dropped).
    pub evidence_dangling: usize,
    /// Evidence ids listed twice for one question (kept once).
    pub evidence_duplicate: usize,
    /// Session dates that could not be parsed (`timestamp_ms` is `None`).
    pub dates_unparsed: usize,
    /// `session_N_date_time` keys without a `session_N` (ignored).
    pub dates_without_session: usize,
    /// `session_N` keys without a `session_N_date_time` (date left empty).
    pub sessions_without_date: usize,
}

/// A loaded LoCoMo file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dataset {
    /// The samples, in file order.
    pub samples: Vec<Sample>,
    /// One line per repair or oddity found while loading, naming the sample and place.
    pub warnings: Vec<String>,
    /// The repairs and omissions, counted.
    pub stats: LoadStats,
}

impl Dataset {
    /// Reads and parses a LoCoMo JSON file. The error names the file and, for format
    /// errors, the place in the JSON (`[0].qa[3].category`) with line and column.
    pub fn load(path: impl AsRef<Path>) -> Result<Dataset, Error> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Dataset::from_slice(&bytes, path)
    }

    /// Parses LoCoMo JSON already in memory; `origin` is only used in error messages.
    pub fn from_slice(json: &[u8], origin: impl AsRef<Path>) -> Result<Dataset, Error> {
        let format_error = |at: String, source: serde_json::Error| Error::Format {
            path: origin.as_ref().to_owned(),
            at,
            source,
        };
        let mut de = serde_json::Deserializer::from_slice(json);
        let raw: Vec<RawSample> = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let at = e.path().to_string();
            let at = if at == "." || at == "?" {
                String::new()
            } else {
                at
            };
            format_error(at, e.into_inner())
        })?;
        de.end().map_err(|e| format_error(String::new(), e))?;

        let mut builder = Builder::default();
        let samples = raw.into_iter().map(|s| builder.sample(s)).collect();
        Ok(Dataset {
            samples,
            warnings: builder.warnings,
            stats: builder.stats,
        })
    }

    /// The sample with the given id.
    pub fn sample(&self, sample_id: &str) -> Option<&Sample> {
        self.samples.iter().find(|s| s.sample_id == sample_id)
    }

    /// Every question with its sample, in file order.
    pub fn questions(&self) -> impl Iterator<Item = (&Sample, &Qa)> + '_ {
        self.samples
            .iter()
            .flat_map(|sample| sample.qa.iter().map(move |qa| (sample, qa)))
    }

    /// The questions retrieval is scored on: not adversarial, with at least one evidence
    /// turn.
    pub fn retrieval_questions(&self) -> impl Iterator<Item = (&Sample, &Qa)> + '_ {
        self.questions()
            .filter(|(_, qa)| !qa.is_adversarial() && !qa.evidence.is_empty())
    }

    /// The number of turns in all samples.
    pub fn turn_count(&self) -> usize {
        self.samples.iter().map(Sample::turn_count).sum()
    }
}

/// Where the LoCoMo development split is: the file named by `MEMLOG_LOCOMO` if that is set
/// (whether or not it exists, so that a wrong setting is reported by [`Dataset::load`]);
/// otherwise `shared/datasets/locomo/locomo-dev.json` under the current directory or any
/// of its ancestors, the first that exists (for a checkout at `X/main` this finds
/// `X/shared/…`, the checkout's sibling). `None` if there is none.
pub fn default_locomo_path() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok();
    locomo_path_from(std::env::var_os(LOCOMO_ENV), cwd.as_deref())
}

/// [`default_locomo_path`] with its inputs explicit: the value of `MEMLOG_LOCOMO` and the
/// directory to start the upward search from.
fn locomo_path_from(env: Option<OsString>, start: Option<&Path>) -> Option<PathBuf> {
    if let Some(value) = env.filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(value));
    }
    // Checking `A/shared/...` for every ancestor `A` also covers `A/../shared/...`: the
    // parent is the next ancestor.
    start?
        .ancestors()
        .map(|a| a.join(LOCOMO_DEV_RELATIVE_PATH))
        .find(|candidate| candidate.is_file())
}

/// Parses a LoCoMo session date such as `"1:56 pm on 8 May, 2023"` into milliseconds
/// since the Unix epoch, reading it as UTC. Accepts a 12-hour clock with `am`/`pm`
/// (any case, also written against the time: `1:56pm`), an optional `on`, full or
/// three-letter English month names (any case) and an optional comma. `None` if the text
/// is not such a date or names an impossible one (`31 June`, `13:00 pm`).
pub fn parse_date_time(text: &str) -> Option<i64> {
    let mut tokens = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .peekable();

    let first = tokens.next()?;
    let lower = first.to_ascii_lowercase();
    let (clock, meridiem) = match lower
        .strip_suffix("am")
        .or_else(|| lower.strip_suffix("pm"))
    {
        Some(clock) => (clock.to_owned(), lower[clock.len()..].to_owned()),
        None => (lower.clone(), tokens.next()?.to_ascii_lowercase()),
    };
    let (hour, minute) = clock.split_once(':')?;
    let hour: u32 = parse_digits(hour)?;
    let minute: u32 = parse_digits(minute)?;
    if !(1..=12).contains(&hour) || minute > 59 {
        return None;
    }
    let hour = match meridiem.as_str() {
        "am" | "a.m." => hour % 12,
        "pm" | "p.m." => hour % 12 + 12,
        _ => return None,
    };

    if tokens.peek().is_some_and(|t| t.eq_ignore_ascii_case("on")) {
        tokens.next();
    }
    let day: u32 = parse_digits(tokens.next()?)?;
    let month = month_number(tokens.next()?)?;
    let year: i64 = parse_digits(tokens.next()?)?;
    if tokens.next().is_some() || !(1..=9999).contains(&year) {
        return None;
    }
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }

    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + i64::from(hour) * 3_600 + i64::from(minute) * 60;
    Some(seconds * 1_000)
}

/// ASCII digits only (no sign, no spaces), at most 9 of them so the value fits.
pub(crate) fn parse_digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

fn month_number(name: &str) -> Option<u32> {
    let name = name.to_ascii_lowercase();
    let position = MONTHS
        .iter()
        .position(|m| *m == name || (name.len() == 3 && m.starts_with(name.as_str())))?;
    u32::try_from(position + 1).ok()
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

pub(crate) fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a date in the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`). `month` is 1–12, `day` 1–31.
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400); // [0, 399]
    let month = i64::from(month);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 }; // March = 0
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `(session, n)` of a canonical dialogue id `D<session>:<n>`.
fn parse_dia_id(id: &str) -> Option<(u32, u32)> {
    let (session, n) = id.strip_prefix('D')?.split_once(':')?;
    if (session.len() > 1 && session.starts_with('0')) || (n.len() > 1 && n.starts_with('0')) {
        return None;
    }
    Some((parse_digits(session)?, parse_digits(n)?))
}

/// The canonical form of something meant as a dialogue id: `D`/`d`, an optional stray
/// `:`, then `<session>:<n>` with leading zeros dropped. `None` if it is not one.
fn canonical_dia_id(piece: &str) -> Option<String> {
    let rest = piece
        .strip_prefix('D')
        .or_else(|| piece.strip_prefix('d'))?;
    let rest = rest.strip_prefix(':').unwrap_or(rest);
    let (session, n) = rest.split_once(':')?;
    let session: u32 = parse_digits(session)?;
    let n: u32 = parse_digits(n)?;
    Some(format!("D{session}:{n}"))
}

/// Turns raw samples into [`Sample`]s, collecting warnings and counts.
#[derive(Default)]
struct Builder {
    warnings: Vec<String>,
    stats: LoadStats,
    seen_samples: HashSet<String>,
}

impl Builder {
    fn sample(&mut self, raw: RawSample) -> Sample {
        let id = raw.sample_id;
        if !self.seen_samples.insert(id.clone()) {
            self.warn(format!("sample id {id:?} occurs more than once"));
        }
        let RawConversation {
            speaker_a,
            speaker_b,
            sessions: raw_sessions,
            mut dates,
        } = raw.conversation;

        let mut sessions = Vec::with_capacity(raw_sessions.len());
        for (index, raw_turns) in raw_sessions {
            let date_time = match dates.remove(&index) {
                Some(date) => date,
                None => {
                    self.stats.sessions_without_date += 1;
                    self.warn(format!(
                        "{id}: session_{index} has no session_{index}_date_time"
                    ));
                    String::new()
                }
            };
            let timestamp_ms = parse_date_time(&date_time);
            if timestamp_ms.is_none() && !date_time.is_empty() {
                self.stats.dates_unparsed += 1;
                self.warn(format!(
                    "{id}: session_{index}_date_time {date_time:?} is not a date; no timestamp"
                ));
            }
            let turns = raw_turns
                .into_iter()
                .map(|t| Turn {
                    speaker: t.speaker,
                    dia_id: t.dia_id,
                    text: t.text,
                    blip_caption: t.blip_caption,
                })
                .collect();
            sessions.push(Session {
                index,
                date_time,
                timestamp_ms,
                turns,
            });
        }
        if !dates.is_empty() {
            self.stats.dates_without_session += dates.len();
            let keys: Vec<String> = dates
                .keys()
                .map(|i| format!("session_{i}_date_time"))
                .collect();
            self.warn(format!(
                "{id}: {} session date(s) without a session, ignored: {}",
                keys.len(),
                keys.join(", ")
            ));
        }

        let mut sample = Sample {
            sample_id: id,
            speaker_a,
            speaker_b,
            sessions,
            qa: Vec::new(),
        };
        self.check_turns(&sample);
        let known: HashSet<&str> = sample.turns().map(|(_, t)| t.dia_id.as_str()).collect();
        let qa = raw
            .qa
            .into_iter()
            .enumerate()
            .map(|(i, q)| self.qa(&sample.sample_id, i, q, &known))
            .collect();
        sample.qa = qa;
        sample
    }

    /// Warns about turn ids that are not `D<session>:<n>` for their session, and about
    /// ids used twice (only the first is found by [`Sample::turn`]).
    fn check_turns(&mut self, sample: &Sample) {
        let id = &sample.sample_id;
        let mut seen: HashMap<&str, u32> = HashMap::new();
        for session in &sample.sessions {
            for (i, turn) in session.turns.iter().enumerate() {
                let dia_id = turn.dia_id.as_str();
                if parse_dia_id(dia_id).is_none_or(|(s, _)| s != session.index) {
                    self.warn(format!(
                        "{id}: session_{}[{i}] has dia_id {dia_id:?}, not D{}:<n>",
                        session.index, session.index
                    ));
                }
                if let Some(first) = seen.insert(dia_id, session.index) {
                    self.warn(format!(
                        "{id}: dia_id {dia_id:?} occurs again in session_{} (first in session_{first})",
                        session.index
                    ));
                }
            }
        }
    }

    fn qa(&mut self, sample_id: &str, index: usize, raw: RawQa, known: &HashSet<&str>) -> Qa {
        let place = format!("{sample_id} qa[{index}]");
        let mut evidence: Vec<String> = Vec::with_capacity(raw.evidence.len());
        for item in &raw.evidence {
            let pieces: Vec<&str> = item
                .split(|c: char| c == ';' || c == ',' || c.is_whitespace())
                .filter(|p| !p.is_empty())
                .collect();
            if pieces.is_empty() {
                self.stats.evidence_malformed += 1;
                self.warn(format!("{place}: empty evidence {item:?} dropped"));
                continue;
            }
            if pieces.len() > 1 {
                self.stats.evidence_split += 1;
                self.warn(format!(
                    "{place}: evidence {item:?} split into {}",
                    pieces.join(", ")
                ));
            }
            for piece in pieces {
                let id = if known.contains(piece) {
                    piece.to_owned()
                } else if let Some(canonical) = canonical_dia_id(piece) {
                    if canonical != piece {
                        self.stats.evidence_repaired += 1;
                        self.warn(format!("{place}: evidence {piece:?} read as {canonical}"));
                    }
                    if !known.contains(canonical.as_str()) {
                        self.stats.evidence_dangling += 1;
                        self.warn(format!(
                            "{place}: evidence {canonical} names no turn of {sample_id}; dropped"
                        ));
                        continue;
                    }
                    canonical
                } else {
                    self.stats.evidence_malformed += 1;
                    self.warn(format!(
                        "{place}: evidence {piece:?} is not a dialogue id; dropped"
                    ));
                    continue;
                };
                if evidence.contains(&id) {
                    self.stats.evidence_duplicate += 1;
                    self.warn(format!("{place}: evidence {id} listed twice; kept once"));
                } else {
                    evidence.push(id);
                }
            }
        }
        if !(1..=5).contains(&raw.category) {
            self.warn(format!("{place}: category {} is outside 1–5", raw.category));
        }
        if raw.answer.is_none() && raw.adversarial_answer.is_none() {
            self.warn(format!(
                "{place}: neither answer nor adversarial_answer is given"
            ));
        }
        Qa {
            question: raw.question,
            answer: raw.answer,
            adversarial_answer: raw.adversarial_answer,
            evidence,
            category: raw.category,
        }
    }

    fn warn(&mut self, message: String) {
        self.warnings.push(message);
    }
}

// ---- the file's shape -------------------------------------------------------------------

/// A sample as in the file; `event_summary`, `observation`, `session_summary` and any other
/// keys are ignored.
#[derive(Deserialize)]
struct RawSample {
    sample_id: String,
    conversation: RawConversation,
    qa: Vec<RawQa>,
}

#[derive(Deserialize)]
struct RawTurn {
    speaker: String,
    dia_id: String,
    text: String,
    #[serde(default)]
    blip_caption: Option<String>,
}

#[derive(Deserialize)]
struct RawQa {
    question: String,
    #[serde(default, deserialize_with = "text_or_number")]
    answer: Option<String>,
    #[serde(default, deserialize_with = "text_or_number")]
    adversarial_answer: Option<String>,
    evidence: Vec<String>,
    category: u8,
}

/// A string, a number (kept as its text) or null.
pub(crate) fn text_or_number<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    struct TextVisitor;

    impl<'de> Visitor<'de> for TextVisitor {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string, a number or null")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_owned()))
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    deserializer.deserialize_any(TextVisitor)
}

/// `conversation`: the speakers, `session_N` and `session_N_date_time`; other keys are
/// skipped without being parsed.
struct RawConversation {
    speaker_a: String,
    speaker_b: String,
    sessions: BTreeMap<u32, Vec<RawTurn>>,
    dates: BTreeMap<u32, String>,
}

enum ConversationKey {
    SpeakerA,
    SpeakerB,
    Session(u32),
    Date(u32),
    Other,
}

impl ConversationKey {
    fn classify(key: &str) -> ConversationKey {
        match key {
            "speaker_a" => ConversationKey::SpeakerA,
            "speaker_b" => ConversationKey::SpeakerB,
            _ => {
                let Some(rest) = key.strip_prefix("session_") else {
                    return ConversationKey::Other;
                };
                let (number, is_date) = match rest.strip_suffix("_date_time") {
                    Some(number) => (number, true),
                    None => (rest, false),
                };
                match parse_digits::<u32>(number) {
                    Some(n) if is_date => ConversationKey::Date(n),
                    Some(n) => ConversationKey::Session(n),
                    None => ConversationKey::Other,
                }
            }
        }
    }
}

impl<'de> Deserialize<'de> for RawConversation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ConversationVisitor;

        impl<'de> Visitor<'de> for ConversationVisitor {
            type Value = RawConversation;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a LoCoMo conversation object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut speaker_a = None;
                let mut speaker_b = None;
                let mut sessions = BTreeMap::new();
                let mut dates = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    let duplicate = || de::Error::custom(format_args!("duplicate key `{key}`"));
                    match ConversationKey::classify(&key) {
                        ConversationKey::SpeakerA => {
                            if speaker_a.replace(map.next_value::<String>()?).is_some() {
                                return Err(duplicate());
                            }
                        }
                        ConversationKey::SpeakerB => {
                            if speaker_b.replace(map.next_value::<String>()?).is_some() {
                                return Err(duplicate());
                            }
                        }
                        ConversationKey::Session(n) => {
                            let turns = map.next_value::<Vec<RawTurn>>()?;
                            if sessions.insert(n, turns).is_some() {
                                return Err(duplicate());
                            }
                        }
                        ConversationKey::Date(n) => {
                            let date = map.next_value::<String>()?;
                            if dates.insert(n, date).is_some() {
                                return Err(duplicate());
                            }
                        }
                        ConversationKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(RawConversation {
                    speaker_a: speaker_a.ok_or_else(|| de::Error::missing_field("speaker_a"))?,
                    speaker_b: speaker_b.ok_or_else(|| de::Error::missing_field("speaker_b"))?,
                    sessions,
                    dates,
                })
            }
        }

        deserializer.deserialize_map(ConversationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2023, 5, 8), 19_485);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(days_from_civil(1600, 1, 1), -135_140);
    }

    #[test]
    fn days_from_civil_is_consecutive() {
        let mut expected = days_from_civil(1899, 1, 1);
        for year in 1899..=2101 {
            for month in 1..=12 {
                for day in 1..=days_in_month(year, month) {
                    assert_eq!(
                        days_from_civil(year, month, day),
                        expected,
                        "{year}-{month}-{day}"
                    );
                    expected += 1;
                }
            }
        }
    }

    #[test]
    fn parses_locomo_dates() {
        // Values checked against Python's datetime(…, tzinfo=timezone.utc).
        assert_eq!(
            parse_date_time("1:56 pm on 8 May, 2023"),
            Some(1_683_554_160_000)
        );
        assert_eq!(
            parse_date_time("10:37 am on 27 June, 2023"),
            Some(1_687_862_220_000)
        );
        assert_eq!(
            parse_date_time("12:06 am on 11 November, 2022"),
            Some(1_668_125_160_000)
        );
        assert_eq!(
            parse_date_time("12:30 pm on 29 February, 2024"),
            Some(1_709_209_800_000)
        );
        // Lenient spellings.
        assert_eq!(
            parse_date_time("1:56PM on 8 may 2023"),
            Some(1_683_554_160_000)
        );
        assert_eq!(
            parse_date_time("  1:56 p.m.  8 May,  2023 "),
            Some(1_683_554_160_000)
        );
        assert_eq!(
            parse_date_time("1:56 pm on 8 Sep, 2023"),
            parse_date_time("1:56 pm on 8 September, 2023")
        );
    }

    #[test]
    fn rejects_non_dates() {
        for text in [
            "",
            "yesterday",
            "13:00 pm on 8 May, 2023",
            "0:10 am on 8 May, 2023",
            "1:60 pm on 8 May, 2023",
            "1:56 on 8 May, 2023",
            "1:56 pm on 31 June, 2023",
            "1:56 pm on 29 February, 2023",
            "1:56 pm on 0 May, 2023",
            "1:56 pm on 8 Mayo, 2023",
            "1:56 pm on 8 Ma, 2023",
            "1:56 pm on 8 May, 2023 extra",
            "1:56 pm on 8 May",
            "1:-5 pm on 8 May, 2023",
            "1:56 pm on 8 May, 99999999999999999999",
            "١:56 pm on 8 May, 2023",
        ] {
            assert_eq!(parse_date_time(text), None, "{text:?}");
        }
    }

    #[test]
    fn canonicalises_dialogue_ids() {
        assert_eq!(canonical_dia_id("D8:6").as_deref(), Some("D8:6"));
        assert_eq!(canonical_dia_id("D:11:26").as_deref(), Some("D11:26"));
        assert_eq!(canonical_dia_id("d03:05").as_deref(), Some("D3:5"));
        for bad in [
            "D", "D:", "D1", "D1:", ":1:2", "X1:2", "D1:2:3", "D-1:2", "Dé:1",
        ] {
            assert_eq!(canonical_dia_id(bad), None, "{bad:?}");
        }
        assert_eq!(parse_dia_id("D10:3"), Some((10, 3)));
        assert_eq!(parse_dia_id("D01:3"), None);
        assert_eq!(parse_dia_id("D:1:3"), None);
    }

    #[test]
    fn locomo_path_prefers_the_environment() {
        let dir = tempfile::tempdir().expect("temp dir");
        let named = PathBuf::from("/nowhere/locomo.json");
        assert_eq!(
            locomo_path_from(Some(named.clone().into_os_string()), Some(dir.path())),
            Some(named)
        );
        // An empty variable counts as unset.
        assert_eq!(
            locomo_path_from(Some(OsString::new()), Some(dir.path())),
            None
        );
        assert_eq!(locomo_path_from(None, None), None);
    }

    #[test]
    fn locomo_path_is_found_beside_an_ancestor() {
        let root = tempfile::tempdir().expect("temp dir");
        let checkout = root.path().join("main");
        let deep = checkout.join("datasets").join("src");
        std::fs::create_dir_all(&deep).expect("mkdir");
        assert_eq!(locomo_path_from(None, Some(&deep)), None);

        let file = root.path().join(LOCOMO_DEV_RELATIVE_PATH);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(&file, "[]").expect("write");
        assert_eq!(locomo_path_from(None, Some(&deep)), Some(file.clone()));
        assert_eq!(locomo_path_from(None, Some(&checkout)), Some(file.clone()));
        assert_eq!(locomo_path_from(None, Some(root.path())), Some(file));
    }

    fn parse(json: &str) -> Result<Dataset, Error> {
        Dataset::from_slice(json.as_bytes(), "test.json")
    }

    #[test]
    fn format_errors_name_file_and_place() {
        let missing_text = r#"[{"sample_id": "s", "qa": [],
            "conversation": {"speaker_a": "A", "speaker_b": "B",
                "session_1_date_time": "1:00 pm on 1 May, 2023",
                "session_1": [{"speaker": "A", "dia_id": "D1:1"}]}}]"#;
        let err = parse(missing_text).expect_err("missing text");
        let message = err.to_string();
        assert!(
            message.starts_with("invalid LoCoMo file test.json at `[0].conversation.session_1[0]`"),
            "{message}"
        );
        assert!(message.contains("missing field `text`"), "{message}");

        let bad_category = r#"[{"sample_id": "s", "conversation": {"speaker_a": "A", "speaker_b": "B"},
            "qa": [{"question": "q", "answer": "a", "evidence": [], "category": "one"}]}]"#;
        let message = parse(bad_category).expect_err("bad category").to_string();
        assert!(message.contains("at `[0].qa[0].category`"), "{message}");

        let bad_answer = r#"[{"sample_id": "s", "conversation": {"speaker_a": "A", "speaker_b": "B"},
            "qa": [{"question": "q", "answer": ["a"], "evidence": [], "category": 1}]}]"#;
        let message = parse(bad_answer).expect_err("bad answer").to_string();
        assert!(message.contains("at `[0].qa[0].answer`"), "{message}");

        let no_speaker = r#"[{"sample_id": "s", "qa": [], "conversation": {"speaker_a": "A"}}]"#;
        let message = parse(no_speaker).expect_err("no speaker_b").to_string();
        assert!(message.contains("missing field `speaker_b`"), "{message}");

        let duplicate = r#"[{"sample_id": "s", "qa": [], "conversation": {"speaker_a": "A",
            "speaker_b": "B", "session_1": [], "session_01": []}}]"#;
        let message = parse(duplicate).expect_err("duplicate").to_string();
        assert!(message.contains("duplicate key `session_01`"), "{message}");

        let message = parse(r#"{"sample_id": "s"}"#)
            .expect_err("not a list")
            .to_string();
        assert!(
            message.starts_with("invalid LoCoMo file test.json: invalid type"),
            "{message}"
        );

        let message = parse("[] []").expect_err("trailing").to_string();
        assert!(message.contains("trailing characters"), "{message}");

        let message = parse("").expect_err("empty").to_string();
        assert!(message.contains("EOF"), "{message}");
    }

    #[test]
    fn read_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("absent.json");
        let err = Dataset::load(&path).expect_err("absent");
        assert!(matches!(err, Error::Read { .. }));
        assert!(err.to_string().contains("absent.json"), "{err}");
    }

    #[test]
    fn sessions_without_dates_and_odd_turn_ids_are_reported() {
        let json = r#"[{"sample_id": "s", "qa": [{"question": "q", "evidence": ["", "D2:1"], "category": 9}],
            "conversation": {"speaker_a": "A", "speaker_b": "B",
                "session_2": [{"speaker": "A", "dia_id": "D2:1", "text": "hi"},
                              {"speaker": "B", "dia_id": "X", "text": "ho"},
                              {"speaker": "B", "dia_id": "D2:1", "text": "again"}]}},
            {"sample_id": "s", "qa": [], "conversation": {"speaker_a": "A", "speaker_b": "B"}}]"#;
        let data = parse(json).expect("parses");
        let sample = &data.samples[0];
        assert_eq!(sample.sessions[0].date_time, "");
        assert_eq!(sample.sessions[0].timestamp_ms, None);
        // The first of two turns with one id wins; odd ids are still found by a scan.
        assert_eq!(
            sample.turn("D2:1").map(|(_, t)| t.text.as_str()),
            Some("hi")
        );
        assert_eq!(sample.turn("X").map(|(_, t)| t.text.as_str()), Some("ho"));
        assert_eq!(sample.qa[0].evidence, ["D2:1"]);
        assert_eq!(
            data.stats,
            LoadStats {
                sessions_without_date: 1,
                evidence_malformed: 1,
                ..LoadStats::default()
            }
        );
        assert_eq!(
            data.warnings,
            [
                "s: session_2 has no session_2_date_time",
                "s: session_2[1] has dia_id \"X\", not D2:<n>",
                "s: dia_id \"D2:1\" occurs again in session_2 (first in session_2)",
                "s qa[0]: empty evidence \"\" dropped",
                "s qa[0]: category 9 is outside 1–5",
                "s qa[0]: neither answer nor adversarial_answer is given",
                "sample id \"s\" occurs more than once",
            ]
        );
    }
}
