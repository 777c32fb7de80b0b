//! LongMemEval (Wu et al., 2025, "LongMemEval: Benchmarking Chat Assistants on Long-Term
//! Interactive Memory", <https://github.com/xiaowu0162/LongMemEval>): questions, each with
//! its own haystack of dated user–assistant sessions, some of which hold the answer.
//!
//! The three published files (`longmemeval_s.json`, `longmemeval_m.json`,
//! `longmemeval_oracle.json`) share one format: a JSON array of instances,
//!
//! ```text
//! {"question_id": "e47becba", "question_type": "single-session-user",
//!  "question": "...", "answer": "...", "question_date": "2023/05/30 (Tue) 23:40",
//!  "haystack_session_ids": ["s1", ...], "haystack_dates": ["2023/05/20 (Sat) 02:36", ...],
//!  "haystack_sessions": [[{"role": "user", "content": "...", "has_answer": true}, ...], ...],
//!  "answer_session_ids": ["s1"]}
//! ```
//!
//! with the three `haystack_*` lists parallel. A `question_id` ending in `_abs` marks an
//! abstention question: it asks about something the history does not contain, and the
//! expected answer says so. `answer` is usually a string, sometimes a number.
//!
//! [`Dataset::load`] reads the file into [`Instance`]s, one at a time (the `_m` file is
//! gigabytes; only one instance is held as untyped JSON at once). It is tolerant: an
//! instance that does not have the format (a missing field, a wrong type) is skipped,
//! counted in [`LoadStats::instances_malformed`] and described in [`Dataset::warnings`]
//! with its place in the JSON; lesser flaws are repaired and reported the same way. Only a
//! file that is not a JSON array fails the load. It never panics on input.
//!
//! No LongMemEval data ships with this crate. The fixture `fixtures/longmemeval-sample.json`
//! is written for this project in LongMemEval's format (no text from LongMemEval).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::Error;
use crate::locomo::{days_from_civil, days_in_month, parse_digits, text_or_number};

/// Environment variable that, when set, names the LongMemEval file
/// [`default_longmemeval_path`] returns.
pub const LONGMEMEVAL_ENV: &str = "MEMLOG_LONGMEMEVAL";

/// Where LongMemEval_S lives relative to the directory that holds the checkout (the
/// checkout is `X/main`, the file `X/shared/datasets/longmemeval/longmemeval_s.json`).
pub const LONGMEMEVAL_RELATIVE_PATH: &str = "shared/datasets/longmemeval/longmemeval_s.json";

/// The suffix of an abstention question's `question_id`.
pub const ABSTENTION_SUFFIX: &str = "_abs";

/// What a question tests, as named in `question_type`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuestionType {
    /// `single-session-user`: a fact the user stated in one session.
    SingleSessionUser,
    /// `single-session-assistant`: something the assistant said in one session.
    SingleSessionAssistant,
    /// `single-session-preference`: a preference the user expressed, to be applied.
    SingleSessionPreference,
    /// `multi-session`: the answer combines several sessions.
    MultiSession,
    /// `temporal-reasoning`: the answer needs the sessions' dates.
    TemporalReasoning,
    /// `knowledge-update`: a fact that changed; the latest value is the answer.
    KnowledgeUpdate,
    /// Any other name, kept as written.
    Other(String),
}

impl QuestionType {
    /// The six types of the published data, in the README's order.
    pub const KNOWN: [QuestionType; 6] = [
        QuestionType::SingleSessionUser,
        QuestionType::SingleSessionAssistant,
        QuestionType::SingleSessionPreference,
        QuestionType::TemporalReasoning,
        QuestionType::KnowledgeUpdate,
        QuestionType::MultiSession,
    ];

    /// The type named `name`; an unknown name becomes [`QuestionType::Other`].
    pub fn parse(name: &str) -> QuestionType {
        match name {
            "single-session-user" => QuestionType::SingleSessionUser,
            "single-session-assistant" => QuestionType::SingleSessionAssistant,
            "single-session-preference" => QuestionType::SingleSessionPreference,
            "multi-session" => QuestionType::MultiSession,
            "temporal-reasoning" => QuestionType::TemporalReasoning,
            "knowledge-update" => QuestionType::KnowledgeUpdate,
            other => QuestionType::Other(other.to_owned()),
        }
    }

    /// The name used in the file.
    pub fn as_str(&self) -> &str {
        match self {
            QuestionType::SingleSessionUser => "single-session-user",
            QuestionType::SingleSessionAssistant => "single-session-assistant",
            QuestionType::SingleSessionPreference => "single-session-preference",
            QuestionType::MultiSession => "multi-session",
            QuestionType::TemporalReasoning => "temporal-reasoning",
            QuestionType::KnowledgeUpdate => "knowledge-update",
            QuestionType::Other(name) => name,
        }
    }
}

impl fmt::Display for QuestionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for QuestionType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for QuestionType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(QuestionType::parse(&name))
    }
}

/// Who speaks a turn.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// `"user"`.
    User,
    /// `"assistant"`.
    Assistant,
    /// Any other role, kept as written (and reported as a warning).
    Other(String),
}

impl Role {
    fn parse(name: &str) -> Role {
        match name {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => Role::Other(other.to_owned()),
        }
    }

    /// The name used in the file.
    pub fn as_str(&self) -> &str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Other(name) => name,
        }
    }
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One turn of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Turn {
    /// Who speaks.
    pub role: Role,
    /// What was said.
    pub content: String,
    /// True for the turns that hold the evidence (`has_answer: true`); false when the
    /// field is absent.
    pub has_answer: bool,
}

/// One dated session of an instance's haystack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    /// The session's id, from `haystack_session_ids`; `"<question_id>#<i>"` when the list
    /// is too short to name it.
    pub id: String,
    /// The date as written, e.g. `"2023/05/20 (Sat) 02:36"`; empty when
    /// `haystack_dates` is too short.
    pub date: String,
    /// [`Session::date`] as milliseconds since the Unix epoch, read as UTC; `None` if it
    /// could not be parsed (see [`parse_date`]).
    pub timestamp_ms: Option<i64>,
    /// The turns, in conversation order.
    pub turns: Vec<Turn>,
}

/// One question with its haystack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    /// The question's id, unique in the published files.
    pub question_id: String,
    /// What the question tests.
    pub question_type: QuestionType,
    /// True for abstention questions (`question_id` ends in `_abs`): the history does not
    /// hold the answer, and the reference answer says so. Retrieval is not scored on them.
    pub abstention: bool,
    /// The question.
    pub question: String,
    /// The reference answer; a number in the file (`3`) becomes its text (`"3"`).
    pub answer: String,
    /// When the question is asked, as written.
    pub question_date: String,
    /// [`Instance::question_date`] as milliseconds since the Unix epoch (UTC), if it parses.
    pub question_timestamp_ms: Option<i64>,
    /// The haystack, in file order (sorted by date in the `_s` and `_m` files, not in the
    /// oracle file).
    pub sessions: Vec<Session>,
    /// The ids of the sessions that hold the evidence, limited to ids of
    /// [`Instance::sessions`] (others are dropped with a warning).
    pub answer_session_ids: Vec<String>,
}

impl Instance {
    /// The session with the given id.
    pub fn session(&self, id: &str) -> Option<&Session> {
        self.sessions.iter().find(|s| s.id == id)
    }

    /// The evidence sessions, in the order of [`Instance::answer_session_ids`].
    pub fn evidence_sessions(&self) -> impl Iterator<Item = &Session> + '_ {
        self.answer_session_ids
            .iter()
            .filter_map(|id| self.session(id))
    }

    /// The turns marked `has_answer`, with their session and their index in it.
    pub fn evidence_turns(&self) -> impl Iterator<Item = (&Session, usize, &Turn)> + '_ {
        self.sessions.iter().flat_map(|session| {
            session
                .turns
                .iter()
                .enumerate()
                .filter(|(_, t)| t.has_answer)
                .map(move |(i, t)| (session, i, t))
        })
    }

    /// The number of turns in all sessions.
    pub fn turn_count(&self) -> usize {
        self.sessions.iter().map(|s| s.turns.len()).sum()
    }
}

/// Counts of what the loader skipped or repaired (each also has a warning).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LoadStats {
    /// Instances without the format (a missing or mistyped field, a null answer): skipped.
    pub instances_malformed: usize,
    /// Instances whose `haystack_session_ids` or `haystack_dates` is not as long as
    /// `haystack_sessions` (missing ids are generated, missing dates left empty, extras
    /// ignored).
    pub haystack_lists_mismatched: usize,
    /// Session dates and question dates that could not be parsed.
    pub dates_unparsed: usize,
    /// `answer_session_ids` entries that name no session of the haystack (dropped).
    pub answer_sessions_dangling: usize,
    /// Turns whose role is neither `user` nor `assistant` (kept as [`Role::Other`]).
    pub roles_unknown: usize,
    /// Instances with a `question_type` outside [`QuestionType::KNOWN`].
    pub question_types_unknown: usize,
    /// Instances whose `question_id` was already used (kept).
    pub question_ids_duplicate: usize,
}

/// A loaded LongMemEval file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dataset {
    /// The well-formed instances, in file order.
    pub instances: Vec<Instance>,
    /// One line per skipped instance, repair or oddity, naming the instance and place.
    pub warnings: Vec<String>,
    /// The skips and repairs, counted.
    pub stats: LoadStats,
}

impl Dataset {
    /// Reads a LongMemEval JSON file, streaming it (one instance in memory as untyped JSON
    /// at a time). Fails only if the file cannot be read or is not a JSON array.
    pub fn load(path: impl AsRef<Path>) -> Result<Dataset, Error> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Dataset::from_reader(std::io::BufReader::new(file), path)
    }

    /// Parses LongMemEval JSON already in memory; `origin` is only used in error messages.
    pub fn from_slice(json: &[u8], origin: impl AsRef<Path>) -> Result<Dataset, Error> {
        let mut de = serde_json::Deserializer::from_slice(json);
        Dataset::parse(&mut de, origin.as_ref())
    }

    /// Parses LongMemEval JSON from a reader (buffer it); `origin` is only used in error
    /// messages.
    pub fn from_reader(reader: impl Read, origin: impl AsRef<Path>) -> Result<Dataset, Error> {
        let mut de = serde_json::Deserializer::from_reader(reader);
        Dataset::parse(&mut de, origin.as_ref())
    }

    fn parse<'de, R: serde_json::de::Read<'de>>(
        de: &mut serde_json::Deserializer<R>,
        origin: &Path,
    ) -> Result<Dataset, Error> {
        let error = |source| Error::Json {
            path: origin.to_owned(),
            format: "LongMemEval",
            source,
        };
        let mut builder = Builder::default();
        Instances(&mut builder)
            .deserialize(&mut *de)
            .map_err(error)?;
        de.end().map_err(error)?;
        Ok(Dataset {
            instances: builder.instances,
            warnings: builder.warnings,
            stats: builder.stats,
        })
    }

    /// The instance with the given question id.
    pub fn instance(&self, question_id: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.question_id == question_id)
    }

    /// The instances retrieval is scored on: not abstention, with at least one evidence
    /// session (LongMemEval's own retrieval metrics skip abstention questions too).
    pub fn retrieval_instances(&self) -> impl Iterator<Item = &Instance> + '_ {
        self.instances
            .iter()
            .filter(|i| !i.abstention && !i.answer_session_ids.is_empty())
    }

    /// The number of turns in all haystacks.
    pub fn turn_count(&self) -> usize {
        self.instances.iter().map(Instance::turn_count).sum()
    }
}

/// Where LongMemEval_S is: the file named by `MEMLOG_LONGMEMEVAL` if that is set (whether
/// or not it exists, so that a wrong setting is reported by [`Dataset::load`]); otherwise
/// `shared/datasets/longmemeval/longmemeval_s.json` under the current directory or any of
/// its ancestors, the first that exists. `None` if there is none.
pub fn default_longmemeval_path() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok();
    path_from(std::env::var_os(LONGMEMEVAL_ENV), cwd.as_deref())
}

fn path_from(env: Option<OsString>, start: Option<&Path>) -> Option<PathBuf> {
    if let Some(value) = env.filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(value));
    }
    start?
        .ancestors()
        .map(|a| a.join(LONGMEMEVAL_RELATIVE_PATH))
        .find(|candidate| candidate.is_file())
}

/// Parses a LongMemEval date such as `"2023/05/20 (Sat) 02:36"` into milliseconds since
/// the Unix epoch, reading it as UTC. The weekday in parentheses is optional and not
/// checked; seconds (`02:36:15`) are accepted. `None` if the text is not such a date or
/// names an impossible one.
pub fn parse_date(text: &str) -> Option<i64> {
    let mut tokens = text.split_whitespace();
    let mut fields = tokens.next()?.split('/');
    let year: i64 = parse_digits(fields.next()?)?;
    let month: u32 = parse_digits(fields.next()?)?;
    let day: u32 = parse_digits(fields.next()?)?;
    if fields.next().is_some() || !(1..=9999).contains(&year) || !(1..=12).contains(&month) {
        return None;
    }
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let mut clock = tokens.next()?;
    if clock.starts_with('(') {
        if !clock.ends_with(')') {
            return None;
        }
        clock = tokens.next()?;
    }
    if tokens.next().is_some() {
        return None;
    }
    let mut parts = clock.split(':');
    let hour: u32 = parse_digits(parts.next()?)?;
    let minute: u32 = parse_digits(parts.next()?)?;
    let second: u32 = match parts.next() {
        Some(s) => parse_digits(s)?,
        None => 0,
    };
    if parts.next().is_some() || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds =
        days * 86_400 + i64::from(hour) * 3_600 + i64::from(minute) * 60 + i64::from(second);
    Some(seconds * 1_000)
}

// ---- loading ----------------------------------------------------------------------------

/// Visits the top-level array, handing each element to the builder as untyped JSON, so
/// that a malformed instance is skipped instead of failing the whole file.
struct Instances<'a>(&'a mut Builder);

impl<'de> DeserializeSeed<'de> for Instances<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Instances<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of LongMemEval instances")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(value) = seq.next_element::<Value>()? {
            self.0.instance(index, value);
            index += 1;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Builder {
    instances: Vec<Instance>,
    warnings: Vec<String>,
    stats: LoadStats,
    seen_ids: HashSet<String>,
}

impl Builder {
    fn instance(&mut self, index: usize, value: Value) {
        let id_hint = value
            .get("question_id")
            .and_then(Value::as_str)
            .map(|id| format!(" ({id})"))
            .unwrap_or_default();
        let raw: RawInstance = match serde_path_to_error::deserialize(value) {
            Ok(raw) => raw,
            Err(e) => {
                let at = e.path().to_string();
                let at = if at == "." || at == "?" {
                    String::new()
                } else {
                    format!(" at `{at}`")
                };
                self.stats.instances_malformed += 1;
                self.warn(format!(
                    "[{index}]{id_hint}: {}{at}; instance skipped",
                    e.into_inner()
                ));
                return;
            }
        };
        let id = raw.question_id;
        let Some(answer) = raw.answer else {
            self.stats.instances_malformed += 1;
            self.warn(format!(
                "[{index}] ({id}): answer is null; instance skipped"
            ));
            return;
        };
        if !self.seen_ids.insert(id.clone()) {
            self.stats.question_ids_duplicate += 1;
            self.warn(format!(
                "[{index}] ({id}): question_id occurs more than once"
            ));
        }

        // Some copies spell abstention in the type (`single-session-user_abs`); accept both.
        let (type_name, abstention_in_type) =
            match raw.question_type.strip_suffix(ABSTENTION_SUFFIX) {
                Some(base) => (base, true),
                None => (raw.question_type.as_str(), false),
            };
        let question_type = QuestionType::parse(type_name);
        if matches!(question_type, QuestionType::Other(_)) {
            self.stats.question_types_unknown += 1;
            self.warn(format!(
                "[{index}] ({id}): unknown question_type {:?}",
                raw.question_type
            ));
        }
        let abstention = id.ends_with(ABSTENTION_SUFFIX) || abstention_in_type;

        let question_timestamp_ms = parse_date(&raw.question_date);
        if question_timestamp_ms.is_none() {
            self.stats.dates_unparsed += 1;
            self.warn(format!(
                "[{index}] ({id}): question_date {:?} is not a date",
                raw.question_date
            ));
        }

        let n = raw.haystack_sessions.len();
        if raw.haystack_session_ids.len() != n || raw.haystack_dates.len() != n {
            self.stats.haystack_lists_mismatched += 1;
            self.warn(format!(
                "[{index}] ({id}): {n} haystack_sessions but {} haystack_session_ids and {} haystack_dates",
                raw.haystack_session_ids.len(),
                raw.haystack_dates.len()
            ));
        }
        let mut ids = raw.haystack_session_ids.into_iter();
        let mut dates = raw.haystack_dates.into_iter();
        let mut sessions = Vec::with_capacity(n);
        for (s, raw_turns) in raw.haystack_sessions.into_iter().enumerate() {
            let session_id = ids.next().unwrap_or_else(|| format!("{id}#{s}"));
            let date = dates.next().unwrap_or_default();
            let timestamp_ms = parse_date(&date);
            if timestamp_ms.is_none() && !date.is_empty() {
                self.stats.dates_unparsed += 1;
                self.warn(format!(
                    "[{index}] ({id}): date {date:?} of session {session_id} is not a date"
                ));
            }
            let turns: Vec<Turn> = raw_turns
                .into_iter()
                .map(|t| Turn {
                    role: Role::parse(&t.role),
                    content: t.content,
                    has_answer: t.has_answer.unwrap_or(false),
                })
                .collect();
            let unknown = turns
                .iter()
                .filter(|t| matches!(t.role, Role::Other(_)))
                .count();
            if unknown > 0 {
                self.stats.roles_unknown += unknown;
                self.warn(format!(
                    "[{index}] ({id}): {unknown} turn(s) of session {session_id} with a role other than user or assistant"
                ));
            }
            sessions.push(Session {
                id: session_id,
                date,
                timestamp_ms,
                turns,
            });
        }

        let known: HashSet<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
        let mut answer_session_ids = Vec::with_capacity(raw.answer_session_ids.len());
        let mut dangling = Vec::new();
        for sid in raw.answer_session_ids {
            if known.contains(sid.as_str()) {
                answer_session_ids.push(sid);
            } else {
                dangling.push(sid);
            }
        }
        if !dangling.is_empty() {
            self.stats.answer_sessions_dangling += dangling.len();
            self.warn(format!(
                "[{index}] ({id}): answer_session_ids not in the haystack, dropped: {}",
                dangling.join(", ")
            ));
        }

        self.instances.push(Instance {
            question_id: id,
            question_type,
            abstention,
            question: raw.question,
            answer,
            question_date: raw.question_date,
            question_timestamp_ms,
            sessions,
            answer_session_ids,
        });
    }

    fn warn(&mut self, message: String) {
        self.warnings.push(message);
    }
}

// ---- the file's shape -------------------------------------------------------------------

/// An instance as in the file; other keys are ignored.
#[derive(Deserialize)]
struct RawInstance {
    question_id: String,
    question_type: String,
    question: String,
    #[serde(deserialize_with = "text_or_number")]
    answer: Option<String>,
    question_date: String,
    #[serde(default)]
    haystack_session_ids: Vec<String>,
    #[serde(default)]
    haystack_dates: Vec<String>,
    haystack_sessions: Vec<Vec<RawTurn>>,
    #[serde(default)]
    answer_session_ids: Vec<String>,
}

#[derive(Deserialize)]
struct RawTurn {
    role: String,
    content: String,
    #[serde(default)]
    has_answer: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_longmemeval_dates() {
        // 2023-05-20T02:36:00Z, checked against Python's datetime(…, tzinfo=timezone.utc).
        assert_eq!(
            parse_date("2023/05/20 (Sat) 02:36"),
            Some(1_684_550_160_000)
        );
        assert_eq!(parse_date("2023/05/20 02:36"), Some(1_684_550_160_000));
        assert_eq!(
            parse_date(" 2023/05/20  (Sat)  02:36:15 "),
            Some(1_684_550_175_000)
        );
        assert_eq!(
            parse_date("2024/02/29 (Thu) 00:00"),
            Some(1_709_164_800_000)
        );
        for bad in [
            "",
            "2023/05/20",
            "2023-05-20 02:36",
            "2023/02/29 (Wed) 10:00",
            "2023/13/01 (Sat) 10:00",
            "2023/05/20 (Sat 02:36",
            "2023/05/20 (Sat) 24:00",
            "2023/05/20 (Sat) 02:36 extra",
            "2023/05/20/1 (Sat) 02:36",
        ] {
            assert_eq!(parse_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn question_types_round_trip() {
        for t in QuestionType::KNOWN {
            assert_eq!(QuestionType::parse(t.as_str()), t);
        }
        assert_eq!(
            QuestionType::parse("open-domain"),
            QuestionType::Other("open-domain".to_owned())
        );
        let json = serde_json::to_string(&QuestionType::KnowledgeUpdate).expect("serialises");
        assert_eq!(json, "\"knowledge-update\"");
        let back: QuestionType = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, QuestionType::KnowledgeUpdate);
    }

    #[test]
    fn path_prefers_the_environment_then_an_ancestor() {
        let root = tempfile::tempdir().expect("temp dir");
        let named = PathBuf::from("/nowhere/lme.json");
        assert_eq!(
            path_from(Some(named.clone().into_os_string()), Some(root.path())),
            Some(named)
        );
        let deep = root.path().join("main").join("datasets");
        std::fs::create_dir_all(&deep).expect("mkdir");
        assert_eq!(path_from(Some(OsString::new()), Some(&deep)), None);
        let file = root.path().join(LONGMEMEVAL_RELATIVE_PATH);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(&file, "[]").expect("write");
        assert_eq!(path_from(None, Some(&deep)), Some(file));
    }
}
