//! Conversations with planted facts and their ground truth.
//!
//! [`generate`] writes, for each of [`Options::users`] users, a run of dated sessions of
//! user–assistant turns: small talk (which mentions cities, cuisines and names in passing,
//! as distractors) with user turns planted among it that state something about the user.
//! Each plant is the evidence of a [`Question`]:
//!
//! - [`Category::Fact`]: a stable fact, stated once ("I've been working as a nurse for about
//!   six years now"); the answer is the value.
//! - [`Category::PreferenceUpdate`]: a preference stated, then changed once or twice in later
//!   sessions ("I used to be all about Thai food, but lately I much prefer Italian"); the
//!   answer is the latest value, the earlier ones are [`Question::superseded`].
//! - [`Category::Contradiction`]: a fact that a later session contradicts, explicitly
//!   ("we moved from Porto to Berlin") or not ("now that I live in Berlin"); the answer is the
//!   later value, the earlier one is superseded.
//! - [`Category::Temporal`]: "on what date did I …?" about an event told the day it happened
//!   (the answer is that session's date, `YYYY-MM-DD`), and "before D, what did I prefer?"
//!   for each preference change (D is the date of the first change; the answer is the first
//!   value).
//!
//! Every template kind has several wordings, and questions are worded differently from the
//! statements, so lexical retrieval is not trivially perfect. Sessions fall on distinct
//! days, in order; every turn has a timestamp. The output is a pure function of the
//! [`Options`] (seeded `fastrand`), and serialises to JSON.

use serde::{Deserialize, Serialize};

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// What to generate. Counts above the number of kinds available are capped (7 facts,
/// 6 preferences, 4 contradictions, 6 events per user).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// The seed; the same options give the same data set.
    pub seed: u64,
    /// How many users (each with their own sessions and questions).
    pub users: usize,
    /// Sessions per user; at least 2 (changes need a later session), 3 for two changes.
    pub sessions_per_user: usize,
    /// The fewest small-talk exchanges (a user turn and a reply) per session.
    pub min_filler_exchanges: usize,
    /// The most small-talk exchanges per session.
    pub max_filler_exchanges: usize,
    /// Stable facts planted per user, each with a [`Category::Fact`] question.
    pub facts_per_user: usize,
    /// Preferences that change per user, each with a [`Category::PreferenceUpdate`] and a
    /// [`Category::Temporal`] ("before D") question.
    pub preference_changes_per_user: usize,
    /// Facts contradicted later, per user, each with a [`Category::Contradiction`] question.
    pub contradictions_per_user: usize,
    /// Dated events per user, each with a [`Category::Temporal`] ("when") question.
    pub temporal_events_per_user: usize,
    /// The first session's day (milliseconds since the Unix epoch; the time of day is
    /// ignored). Default 2024-01-08.
    pub start_ms: i64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            seed: 7,
            users: 3,
            sessions_per_user: 6,
            min_filler_exchanges: 2,
            max_filler_exchanges: 5,
            facts_per_user: 3,
            preference_changes_per_user: 2,
            contradictions_per_user: 2,
            temporal_events_per_user: 2,
            start_ms: 1_704_672_000_000,
        }
    }
}

/// Who speaks a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The user, whose memory is tested.
    User,
    /// The assistant.
    Assistant,
}

/// One turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// Who speaks.
    pub role: Role,
    /// What was said.
    pub text: String,
    /// When, in milliseconds since the Unix epoch; increasing within a user's sessions.
    pub timestamp_ms: i64,
}

/// One session: a run of turns on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// `<user id>-s<nn>`, unique in the data set.
    pub id: String,
    /// The turns, in order; turn `i` is [`Evidence::turn`] `i`.
    pub turns: Vec<Turn>,
}

/// What kind of memory a question tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// A fact stated once.
    Fact,
    /// A preference that changed: the latest value is the answer.
    PreferenceUpdate,
    /// A fact contradicted later: the later value is the answer.
    Contradiction,
    /// A question about dates: when something happened, or what held before a date.
    Temporal,
}

impl Category {
    /// Every category, in declaration order.
    pub const ALL: [Category; 4] = [
        Category::Fact,
        Category::PreferenceUpdate,
        Category::Contradiction,
        Category::Temporal,
    ];
}

/// A turn that holds a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The session's id.
    pub session_id: String,
    /// The turn's index in the session, from 0.
    pub turn: usize,
    /// The planted text the turn contains verbatim (the value, or for a "when" question
    /// the event's phrase).
    pub value: String,
}

/// A question with its ground truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    /// `<user id>-q<nn>`, unique in the data set.
    pub id: String,
    /// What it tests.
    pub category: Category,
    /// The attribute asked about, e.g. `"city"`, `"cuisine"`, `"event:half marathon"`.
    pub attribute: String,
    /// The question, in the user's voice.
    pub question: String,
    /// The expected answer: a value, or a date `YYYY-MM-DD`.
    pub answer: String,
    /// The turns that support the answer (one, as generated).
    pub evidence: Vec<Evidence>,
    /// Earlier values of the attribute that the answer replaces, oldest first, with the
    /// turns that stated them. Empty for facts and temporal questions.
    pub superseded: Vec<Evidence>,
    /// When the question is asked: a day after the user's last turn.
    pub asked_at_ms: i64,
}

/// One user: their sessions and the questions about them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// `user-<nnn>`.
    pub id: String,
    /// A first name, for display.
    pub name: String,
    /// The sessions, in time order.
    pub sessions: Vec<Session>,
    /// The questions.
    pub questions: Vec<Question>,
}

impl User {
    /// The turn an [`Evidence`] points at, if it exists.
    pub fn turn(&self, evidence: &Evidence) -> Option<&Turn> {
        self.sessions
            .iter()
            .find(|s| s.id == evidence.session_id)?
            .turns
            .get(evidence.turn)
    }
}

/// A generated data set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    /// The options it was generated from.
    pub options: Options,
    /// The users.
    pub users: Vec<User>,
}

impl Dataset {
    /// Every question with its user.
    pub fn questions(&self) -> impl Iterator<Item = (&User, &Question)> + '_ {
        self.users
            .iter()
            .flat_map(|u| u.questions.iter().map(move |q| (u, q)))
    }

    /// The number of turns of all users.
    pub fn turn_count(&self) -> usize {
        self.users
            .iter()
            .flat_map(|u| &u.sessions)
            .map(|s| s.turns.len())
            .sum()
    }
}

/// Generates a data set (see the module documentation). Deterministic for `options`.
pub fn generate(options: &Options) -> Dataset {
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let users = (0..options.users)
        .map(|u| UserBuilder::new(u, options, &mut rng).build(&mut rng))
        .collect();
    Dataset {
        options: options.clone(),
        users,
    }
}

/// `YYYY-MM-DD` of a time in milliseconds since the Unix epoch (UTC).
pub fn date_string(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The date of a day number (days since 1970-01-01), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

// ---- templates ----------------------------------------------------------------------------

/// A stable fact: `{v}` is the value, `{a}` the value with `a`/`an`.
struct Fact {
    attribute: &'static str,
    values: &'static [&'static str],
    statements: &'static [&'static str],
    questions: &'static [&'static str],
}

/// An attribute that changes: `statements` give the first value (`{v}`, `{a}`), `changes`
/// a later one (`{new}`, optionally naming `{old}`); `before` asks for the value before
/// `{date}`.
struct Changeable {
    attribute: &'static str,
    values: &'static [&'static str],
    statements: &'static [&'static str],
    changes: &'static [&'static str],
    questions: &'static [&'static str],
    before: &'static [&'static str],
}

/// An event told the day it happens: `{p}` is the phrase.
struct Event {
    phrase: &'static str,
    statements: &'static [&'static str],
    questions: &'static [&'static str],
}

const NAMES: &[&str] = &[
    "Maria", "Ana", "Tomas", "Ines", "Jonas", "Priya", "Kenji", "Leila", "Oscar", "Freya", "Nadia",
    "Samir", "Greta", "Hugo", "Yara", "Felix",
];

const FACTS: &[Fact] = &[
    Fact {
        attribute: "job",
        values: &[
            "nurse",
            "architect",
            "electrician",
            "pharmacist",
            "accountant",
            "librarian",
            "paramedic",
            "translator",
        ],
        statements: &[
            "I've been working as {a} for about six years now.",
            "Long day at work. Being {a} is rewarding but exhausting.",
            "As {a}, I rarely get a full weekend off.",
            "Quick context: I'm {a}, so my schedule is all over the place.",
        ],
        questions: &[
            "What do I do for a living?",
            "What is my profession?",
            "What kind of work do I do?",
        ],
    },
    Fact {
        attribute: "sister",
        values: &["Maria", "Clara", "Sofia", "Elena", "Hana", "Rosa", "Ingrid"],
        statements: &[
            "My sister is called {v}, she's two years older than me.",
            "I'm visiting my sister {v} this weekend, she just bought a house.",
            "{v}, my younger sister, keeps sending me photos of her garden.",
        ],
        questions: &[
            "What is my sister's name?",
            "What's my sister called?",
            "Who is my sibling?",
        ],
    },
    Fact {
        attribute: "dog",
        values: &[
            "Biscuit", "Pepper", "Miso", "Rex", "Luna", "Noodle", "Ziggy",
        ],
        statements: &[
            "We have a dog called {v}, a very energetic terrier.",
            "Sorry if I'm slow today, {v} our dog kept me up all night.",
            "I took our dog {v} to the vet this morning, all fine.",
        ],
        questions: &[
            "What is my dog's name?",
            "What did we name our pet?",
            "What's the name of my dog?",
        ],
    },
    Fact {
        attribute: "hometown",
        values: &[
            "Leeds", "Porto", "Gdansk", "Bologna", "Cork", "Utrecht", "Graz",
        ],
        statements: &[
            "I grew up in {v}, so I'm used to grey weather.",
            "Back in {v}, where I grew up, everyone cycled everywhere.",
            "I'm originally from {v}, though I left when I was eighteen.",
        ],
        questions: &[
            "Where did I grow up?",
            "Which town am I originally from?",
            "What is my hometown?",
        ],
    },
    Fact {
        attribute: "allergy",
        values: &["peanuts", "shellfish", "penicillin", "pollen", "sesame"],
        statements: &[
            "Just so you know, I'm allergic to {v}.",
            "I had a reaction again, my allergy to {v} seems to be getting worse.",
            "Any recipe you suggest has to be free of {v}, I'm allergic.",
        ],
        questions: &[
            "What am I allergic to?",
            "Which allergy do I have?",
            "What should I avoid because of an allergy?",
        ],
    },
    Fact {
        attribute: "instrument",
        values: &["cello", "trumpet", "ukulele", "piano", "drums", "violin"],
        statements: &[
            "I've been learning the {v} since last spring.",
            "My {v} lesson ran late today, my teacher is very patient.",
            "I practise the {v} every evening, the neighbours are very tolerant.",
        ],
        questions: &[
            "Which instrument am I learning?",
            "What instrument do I play?",
            "What do I practise in the evenings?",
        ],
    },
    Fact {
        attribute: "car",
        values: &[
            "Honda Civic",
            "Toyota Yaris",
            "Skoda Octavia",
            "Ford Fiesta",
            "Volvo V60",
        ],
        statements: &[
            "I drive a {v}, it's old but reliable.",
            "My {v} needs new tyres before winter.",
            "The {v} failed its inspection, so that's another bill.",
        ],
        questions: &[
            "What car do I drive?",
            "Which car do I own?",
            "What's my vehicle?",
        ],
    },
];

const PREFERENCES: &[Changeable] = &[
    Changeable {
        attribute: "cuisine",
        values: &[
            "Thai",
            "Italian",
            "Mexican",
            "Japanese",
            "Indian",
            "Greek",
            "Ethiopian",
        ],
        statements: &[
            "I absolutely love {v} food, I could eat it every day.",
            "Nothing beats {v} food on a Friday night.",
            "My favourite cuisine is {v}, no contest.",
        ],
        changes: &[
            "I used to be all about {old} food, but lately I much prefer {new}.",
            "Honestly I've gone off {old} food. These days I'd pick {new} every time.",
            "My tastes have changed, {new} food is my favourite now.",
        ],
        questions: &[
            "What kind of food do I like best these days?",
            "Which cuisine is my current favourite?",
        ],
        before: &[
            "Before {date}, which cuisine did I like best?",
            "What was my favourite food before {date}?",
        ],
    },
    Changeable {
        attribute: "morning drink",
        values: &[
            "green tea",
            "espresso",
            "oat latte",
            "black coffee",
            "rooibos",
            "hot chocolate",
        ],
        statements: &[
            "I start every morning with {v}.",
            "I can't function until I've had my {v} in the morning.",
        ],
        changes: &[
            "I've switched from {old} to {new} in the mornings.",
            "No more {old} for me, these days my morning is all about {new}.",
            "Lately my morning drink is {new}.",
        ],
        questions: &[
            "What do I drink in the mornings now?",
            "What's my usual drink to start the day?",
        ],
        before: &[
            "Before {date}, what did I drink in the mornings?",
            "What was my morning drink before {date}?",
        ],
    },
    Changeable {
        attribute: "music",
        values: &[
            "jazz",
            "techno",
            "folk",
            "classical",
            "hip hop",
            "indie rock",
        ],
        statements: &[
            "I've had {v} on repeat all week.",
            "When I'm working I always put on some {v}.",
        ],
        changes: &[
            "I'm kind of over {old}; I've been listening to {new} instead.",
            "My music taste has shifted from {old} to {new}.",
            "These days I mostly listen to {new}.",
        ],
        questions: &[
            "What music do I listen to most now?",
            "Which genre is my current favourite?",
        ],
        before: &["Before {date}, what music was I mostly listening to?"],
    },
    Changeable {
        attribute: "holidays",
        values: &[
            "beach holidays",
            "hiking trips",
            "city breaks",
            "camping trips",
            "ski trips",
            "road trips",
        ],
        statements: &[
            "For me, {v} are the best way to recharge.",
            "I always go for {v} when I get time off.",
        ],
        changes: &[
            "I used to prefer {old}, but now {new} appeal to me much more.",
            "After last year I'm done with {old}; give me {new} any day.",
            "These days I'd choose {new} over anything else.",
        ],
        questions: &[
            "What kind of holidays do I prefer now?",
            "How do I like to spend time off these days?",
        ],
        before: &["What kind of holidays did I prefer before {date}?"],
    },
    Changeable {
        attribute: "reading",
        values: &[
            "crime novels",
            "science fiction",
            "biographies",
            "poetry",
            "fantasy",
        ],
        statements: &[
            "I mostly read {v} before bed.",
            "My bookshelf is basically all {v}.",
        ],
        changes: &[
            "I've drifted from {old} towards {new} lately.",
            "Lately I can't put down {new}.",
            "I barely touch {old} any more, it's all {new} now.",
        ],
        questions: &[
            "What do I like to read these days?",
            "What kind of books am I into now?",
        ],
        before: &["Before {date}, what did I mostly read?"],
    },
    Changeable {
        attribute: "exercise",
        values: &["running", "swimming", "yoga", "cycling", "climbing"],
        statements: &[
            "My favourite way to exercise is {v}.",
            "I try to fit in some {v} three times a week.",
        ],
        changes: &[
            "I've swapped {old} for {new}, it's easier on my knees.",
            "These days I prefer {new} to {old}.",
            "Lately I've really got into {new}, it's my main workout now.",
        ],
        questions: &[
            "What is my preferred exercise now?",
            "How do I like to keep fit these days?",
        ],
        before: &["Before {date}, how did I prefer to exercise?"],
    },
];

const CONTRADICTIONS: &[Changeable] = &[
    Changeable {
        attribute: "city",
        values: &[
            "Lisbon",
            "Berlin",
            "Toronto",
            "Melbourne",
            "Madrid",
            "Edinburgh",
            "Seattle",
            "Osaka",
        ],
        statements: &[
            "I live in {v}, right near the river.",
            "Rent in {v} keeps going up, and I live right in the centre.",
            "Here in {v}, where I live, it's been raining all week.",
        ],
        changes: &[
            "Big news: we moved from {old} to {new} last month!",
            "I finally left {old}; I live in {new} now.",
            "Now that I live in {new}, my commute is much shorter.",
        ],
        questions: &[
            "Which city do I live in?",
            "Where am I living at the moment?",
            "What city is home for me?",
        ],
        before: &[],
    },
    Changeable {
        attribute: "employer",
        values: &[
            "Northwind",
            "Globex",
            "Initech",
            "Acme Logistics",
            "Bluebird Health",
            "Stark Analytics",
        ],
        statements: &[
            "I work at {v}, on the data team.",
            "Things at {v} are hectic, my team is understaffed.",
        ],
        changes: &[
            "I left {old} and started at {new} on Monday.",
            "My first week at {new} went well, much better than {old}.",
            "My new employer, {new}, gives us Fridays off.",
        ],
        questions: &["Which company do I work for?", "Who is my employer?"],
        before: &[],
    },
    Changeable {
        attribute: "phone",
        values: &["iPhone", "Pixel", "Galaxy", "Fairphone", "OnePlus"],
        statements: &[
            "My {v} battery barely lasts a day.",
            "I use {a} and the camera is great.",
        ],
        changes: &[
            "I switched from my old {old} to a new {new}.",
            "My new {new} arrived today, the {old} is going in a drawer.",
            "I'm still getting used to the {new}, the gestures are different.",
        ],
        questions: &["What phone do I use now?", "Which phone do I have?"],
        before: &[],
    },
    Changeable {
        attribute: "commute",
        values: &["cycle", "take the bus", "drive", "take the train", "walk"],
        statements: &[
            "I usually {v} to work.",
            "Most days I {v} to the office, it takes about half an hour.",
        ],
        changes: &[
            "I used to {old} to work, but now I {new}.",
            "Since the move I {new} to work every day.",
        ],
        questions: &[
            "How do I get to work these days?",
            "How do I commute to the office?",
        ],
        before: &[],
    },
];

const EVENTS: &[Event] = &[
    Event {
        phrase: "half marathon",
        statements: &[
            "I ran my first {p} this morning!",
            "Legs are sore, I finished my first {p} today.",
        ],
        questions: &[
            "On what date did I run my first half marathon?",
            "When did I complete my first half marathon?",
        ],
    },
    Event {
        phrase: "adopted a kitten",
        statements: &[
            "We {p} today, she's tiny and grey.",
            "Guess what, I {p} this afternoon!",
        ],
        questions: &[
            "When did I adopt my kitten?",
            "On which day did we get our cat?",
        ],
    },
    Event {
        phrase: "broke my wrist",
        statements: &[
            "I {p} this morning falling off my bike.",
            "Typing one-handed, I {p} today.",
        ],
        questions: &[
            "What date did I break my wrist?",
            "When did I injure my wrist?",
        ],
    },
    Event {
        phrase: "got promoted",
        statements: &[
            "I {p} today, I'm leading the team from now on!",
            "Finally {p} this afternoon, drinks are on me.",
        ],
        questions: &["When did I get promoted?", "On what date was my promotion?"],
    },
    Event {
        phrase: "passed my driving test",
        statements: &[
            "I {p} today, first try!",
            "Today I {p}, I can't believe it.",
        ],
        questions: &[
            "When did I pass my driving test?",
            "On which date did I get my driving licence?",
        ],
    },
    Event {
        phrase: "went skydiving",
        statements: &[
            "I {p} today and I'm still shaking.",
            "Ticked one off the bucket list: {p} this morning!",
        ],
        questions: &[
            "When did I go skydiving?",
            "On what date did I jump out of a plane?",
        ],
    },
];

const OPENERS: &[&str] = &[
    "Hi again!",
    "Hey, quick question.",
    "Morning!",
    "Hello, are you there?",
    "Evening. Got a minute?",
    "Hi, me again.",
];

const GREETINGS: &[&str] = &[
    "Hello! What can I do for you today?",
    "Hi! How can I help?",
    "Good to hear from you. What's up?",
    "Of course, go ahead.",
];

/// Small talk from the user; `{city}`, `{food}` and `{name}` are filled with distractors
/// (values of the same kinds as the planted ones, in sentences that say nothing about the
/// user).
const USER_FILLER: &[&str] = &[
    "Can you help me plan meals for the week? Nothing too complicated.",
    "What's a good way to remember people's birthdays?",
    "My colleague {name} just got back from {city} and won't stop talking about it.",
    "Is {food} food usually very spicy?",
    "Any tips for sleeping better? I keep waking up at 3am.",
    "How do I get red wine out of a carpet?",
    "I need a gift idea for {name}, she likes gardening.",
    "What's the difference between a latte and a flat white?",
    "Can you explain how compound interest works?",
    "How many tablespoons are in a cup?",
    "I'm thinking of repainting the kitchen. Warm or cool colours?",
    "What should someone pack for a weekend in {city}?",
    "{name} recommended the new {food} place downtown. Is that cuisine good for vegetarians?",
    "How long should I boil an egg for a runny yolk?",
    "Could you summarise the plot of Hamlet in three sentences?",
    "Write me a short message to cancel a dentist appointment.",
    "What's the capital of Australia again?",
    "How do I politely decline a meeting invitation?",
    "Is it worth learning to touch type as an adult?",
    "What are some good stretches after sitting all day?",
    "Any ideas for a rainy Sunday afternoon?",
    "I read an article about housing prices in {city}, are they really that bad?",
    "How often should a cactus be watered?",
    "Help me write a toast for {name}'s wedding.",
    "What's a good board game for four people?",
    "How do I make my sourdough less dense?",
];

const ASSISTANT_FILLER: &[&str] = &[
    "Sure, here's a simple plan you can adapt as you go.",
    "Good question. It depends on the situation, but here is a rule of thumb.",
    "Here are a few ideas you could try this week.",
    "That's a common problem; most people find a steady routine helps.",
    "Happy to help. Let me know if you want more detail on any step.",
    "Here is a short draft you can edit to taste.",
    "It varies a lot, so it's worth checking a recent source.",
    "A few options come to mind, each with its own trade-offs.",
    "Try this and tell me how it goes.",
    "{city} is lovely in spring, though it can get crowded.",
    "Many {food} dishes can be made mild; just ask the kitchen.",
];

const ACKNOWLEDGEMENTS: &[&str] = &[
    "Thanks for sharing that.",
    "Got it, I'll remember that.",
    "Good to know.",
    "I see. How do you feel about it?",
    "Thanks for the update.",
    "Noted. Anything I can help with today?",
];

// ---- generation ---------------------------------------------------------------------------

fn pick<'a>(rng: &mut fastrand::Rng, items: &[&'a str]) -> &'a str {
    items[rng.usize(..items.len())]
}

fn with_article(value: &str) -> String {
    let vowel = value
        .chars()
        .next()
        .is_some_and(|c| "aeiouAEIOU".contains(c));
    format!("{} {value}", if vowel { "an" } else { "a" })
}

/// `template` with `{v}`, `{a}`, `{old}`, `{new}`, `{p}`, `{date}` replaced.
fn render(template: &str, slots: &[(&str, &str)]) -> String {
    let mut text = template.to_owned();
    for (key, value) in slots {
        text = text.replace(&format!("{{{key}}}"), value);
    }
    // Sentence case, for templates that open with a value.
    let mut chars = text.chars();
    match chars.next() {
        Some(c) if c.is_ascii_lowercase() => c.to_ascii_uppercase().to_string() + chars.as_str(),
        _ => text,
    }
}

fn fill_filler(template: &str, rng: &mut fastrand::Rng) -> String {
    let city = pick(rng, CONTRADICTIONS[0].values);
    let food = pick(rng, PREFERENCES[0].values);
    let name = pick(rng, NAMES);
    render(template, &[("city", city), ("food", food), ("name", name)])
}

/// `k` distinct indices below `n`, in random order.
fn distinct(rng: &mut fastrand::Rng, n: usize, k: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut all);
    all.truncate(k.min(n));
    all
}

/// A turn before timestamps and final positions are known; `plant` tags a planted turn.
struct Draft {
    role: Role,
    text: String,
    plant: Option<usize>,
}

/// A question whose evidence is still given as plant tags.
struct Pending {
    category: Category,
    attribute: String,
    question: String,
    /// The answer, or `None` for a "when" question (the date of `evidence`'s session).
    answer: Option<String>,
    evidence: (usize, String),
    superseded: Vec<(usize, String)>,
}

struct UserBuilder<'a> {
    index: usize,
    options: &'a Options,
    sessions: Vec<Vec<Draft>>,
    /// The session of each plant tag.
    plant_sessions: Vec<usize>,
    pending: Vec<Pending>,
}

impl<'a> UserBuilder<'a> {
    fn new(index: usize, options: &'a Options, rng: &mut fastrand::Rng) -> UserBuilder<'a> {
        let count = options.sessions_per_user.max(2);
        let (lo, hi) = (
            options.min_filler_exchanges,
            options
                .max_filler_exchanges
                .max(options.min_filler_exchanges),
        );
        let sessions = (0..count)
            .map(|_| {
                let mut turns = vec![
                    Draft {
                        role: Role::User,
                        text: pick(rng, OPENERS).to_owned(),
                        plant: None,
                    },
                    Draft {
                        role: Role::Assistant,
                        text: pick(rng, GREETINGS).to_owned(),
                        plant: None,
                    },
                ];
                for _ in 0..rng.usize(lo..=hi) {
                    let user = fill_filler(pick(rng, USER_FILLER), rng);
                    let reply = fill_filler(pick(rng, ASSISTANT_FILLER), rng);
                    turns.push(Draft {
                        role: Role::User,
                        text: user,
                        plant: None,
                    });
                    turns.push(Draft {
                        role: Role::Assistant,
                        text: reply,
                        plant: None,
                    });
                }
                turns
            })
            .collect();
        UserBuilder {
            index,
            options,
            sessions,
            plant_sessions: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Inserts a user turn and an acknowledgement after the greeting, at an exchange
    /// boundary of `session`; returns the plant's tag.
    fn plant(&mut self, session: usize, text: String, rng: &mut fastrand::Rng) -> usize {
        let tag = self.plant_sessions.len();
        self.plant_sessions.push(session);
        let turns = &mut self.sessions[session];
        let at = 2 + 2 * rng.usize(..=(turns.len() - 2) / 2);
        let ack = Draft {
            role: Role::Assistant,
            text: pick(rng, ACKNOWLEDGEMENTS).to_owned(),
            plant: None,
        };
        turns.insert(at, ack);
        turns.insert(
            at,
            Draft {
                role: Role::User,
                text,
                plant: Some(tag),
            },
        );
        tag
    }

    fn build(mut self, rng: &mut fastrand::Rng) -> User {
        let options = self.options;
        let session_count = self.sessions.len();

        for f in distinct(rng, FACTS.len(), options.facts_per_user) {
            let fact = &FACTS[f];
            let value = pick(rng, fact.values);
            let a = with_article(value);
            let text = render(pick(rng, fact.statements), &[("v", value), ("a", &a)]);
            let session = rng.usize(..session_count);
            let tag = self.plant(session, text, rng);
            self.pending.push(Pending {
                category: Category::Fact,
                attribute: fact.attribute.to_owned(),
                question: pick(rng, fact.questions).to_owned(),
                answer: Some(value.to_owned()),
                evidence: (tag, value.to_owned()),
                superseded: Vec::new(),
            });
        }

        for p in distinct(rng, PREFERENCES.len(), options.preference_changes_per_user) {
            let changes = rng.usize(1..=2).min(session_count - 1);
            self.changeable(&PREFERENCES[p], changes, Category::PreferenceUpdate, rng);
        }
        for c in distinct(rng, CONTRADICTIONS.len(), options.contradictions_per_user) {
            self.changeable(&CONTRADICTIONS[c], 1, Category::Contradiction, rng);
        }

        for e in distinct(rng, EVENTS.len(), options.temporal_events_per_user) {
            let event = &EVENTS[e];
            let text = render(pick(rng, event.statements), &[("p", event.phrase)]);
            let session = rng.usize(..session_count);
            let tag = self.plant(session, text, rng);
            self.pending.push(Pending {
                category: Category::Temporal,
                attribute: format!("event:{}", event.phrase),
                question: pick(rng, event.questions).to_owned(),
                answer: None,
                evidence: (tag, event.phrase.to_owned()),
                superseded: Vec::new(),
            });
        }

        self.finish(rng)
    }

    /// Plants a value and `changes` later changes of it, in increasing sessions, with the
    /// question about the latest value (and for preferences, the one about the first value
    /// before the first change).
    fn changeable(
        &mut self,
        kind: &Changeable,
        changes: usize,
        category: Category,
        rng: &mut fastrand::Rng,
    ) {
        let values: Vec<&str> = distinct(rng, kind.values.len(), changes + 1)
            .into_iter()
            .map(|i| kind.values[i])
            .collect();
        let mut sessions = distinct(rng, self.sessions.len(), values.len());
        sessions.sort_unstable();
        let mut tags = Vec::with_capacity(values.len());
        for (k, (&value, &session)) in values.iter().zip(&sessions).enumerate() {
            let text = if k == 0 {
                let a = with_article(value);
                render(pick(rng, kind.statements), &[("v", value), ("a", &a)])
            } else {
                render(
                    pick(rng, kind.changes),
                    &[("old", values[k - 1]), ("new", value)],
                )
            };
            tags.push(self.plant(session, text, rng));
        }
        let last = values.len() - 1;
        self.pending.push(Pending {
            category,
            attribute: kind.attribute.to_owned(),
            question: pick(rng, kind.questions).to_owned(),
            answer: Some(values[last].to_owned()),
            evidence: (tags[last], values[last].to_owned()),
            superseded: (0..last).map(|k| (tags[k], values[k].to_owned())).collect(),
        });
        if !kind.before.is_empty() && last > 0 {
            // `{date}` is filled in `finish`, once the first change's session has a date.
            self.pending.push(Pending {
                category: Category::Temporal,
                attribute: format!("{}:before", kind.attribute),
                question: pick(rng, kind.before).to_owned(),
                answer: Some(values[0].to_owned()),
                evidence: (tags[0], values[0].to_owned()),
                superseded: vec![(tags[1], values[1].to_owned())],
            });
        }
    }

    /// Dates the sessions, times the turns, and resolves plant tags to turn positions.
    fn finish(self, rng: &mut fastrand::Rng) -> User {
        let user_id = format!("user-{:03}", self.index);
        let name = pick(rng, NAMES).to_owned();
        let mut day = self.options.start_ms.div_euclid(DAY_MS) + self.index as i64 % 7;
        let mut located = vec![(0usize, 0usize); self.plant_sessions.len()];
        let mut sessions = Vec::with_capacity(self.sessions.len());
        let mut last_ms = 0;
        for (s, drafts) in self.sessions.into_iter().enumerate() {
            if s > 0 {
                day += rng.i64(1..=5);
            }
            // Between 08:00 and 20:59; a session lasts at most a few hours, so it never
            // crosses midnight and sessions fall on distinct days.
            let mut at = day * DAY_MS + rng.i64(8 * 60..21 * 60) * 60_000;
            let mut turns = Vec::with_capacity(drafts.len());
            for (t, draft) in drafts.into_iter().enumerate() {
                at += rng.i64(20..=120) * 1_000;
                if let Some(tag) = draft.plant {
                    located[tag] = (s, t);
                }
                turns.push(Turn {
                    role: draft.role,
                    text: draft.text,
                    timestamp_ms: at,
                });
            }
            last_ms = at;
            sessions.push(Session {
                id: format!("{user_id}-s{s:02}"),
                turns,
            });
        }
        let asked_at_ms = last_ms + DAY_MS;
        let evidence = |(tag, value): (usize, String)| {
            let (s, t) = located[tag];
            Evidence {
                session_id: sessions[s].id.clone(),
                turn: t,
                value,
            }
        };
        let session_date = |tag: usize| {
            let (s, t) = located[tag];
            date_string(sessions[s].turns[t].timestamp_ms)
        };
        let questions = self
            .pending
            .into_iter()
            .enumerate()
            .map(|(q, p)| {
                let (answer, question) = match p.answer {
                    Some(answer) => {
                        let date = p.superseded.first().map(|(tag, _)| session_date(*tag));
                        let question = match date {
                            Some(date) if p.category == Category::Temporal => {
                                render(&p.question, &[("date", &date)])
                            }
                            _ => p.question,
                        };
                        (answer, question)
                    }
                    None => (session_date(p.evidence.0), p.question),
                };
                let superseded = if p.category == Category::Temporal {
                    Vec::new()
                } else {
                    p.superseded.into_iter().map(evidence).collect()
                };
                Question {
                    id: format!("{user_id}-q{q:02}"),
                    category: p.category,
                    attribute: p.attribute,
                    question,
                    answer,
                    evidence: vec![evidence(p.evidence)],
                    superseded,
                    asked_at_ms,
                }
            })
            .collect();
        User {
            id: user_id,
            name,
            sessions,
            questions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_formatted_in_utc() {
        assert_eq!(date_string(0), "1970-01-01");
        assert_eq!(date_string(1_704_672_000_000), "2024-01-08");
        assert_eq!(date_string(1_709_164_800_000 + DAY_MS - 1), "2024-02-29");
        assert_eq!(date_string(-1), "1969-12-31");
        for days in [-800_000_i64, -1, 0, 59, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(crate::locomo::days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn articles_and_sentence_case() {
        assert_eq!(with_article("nurse"), "a nurse");
        assert_eq!(with_article("architect"), "an architect");
        assert_eq!(
            render("{v} is my go-to.", &[("v", "jazz")]),
            "Jazz is my go-to."
        );
    }
}
