//! Rule-based extraction: what memlog extracts with no LLM configured.
//!
//! Deterministic patterns over what the user says (never the assistant: an assistant
//! restating a fact is not evidence of it), clause by clause:
//!
//! - preferences: "I like/love/enjoy/prefer …", "I hate/dislike/avoid/can't stand …",
//!   "I'm a fan of / into …", "I'm allergic to …", diets, "my favourite X is Y";
//! - facts about the speaker: name, where they live (and moves), work, job, studies,
//!   age, birthplace, what they have or use, and "my X is Y";
//! - retractions: "I no longer live in …", "I quit my job", "my dog passed away",
//!   "I'm not vegan anymore", "I stopped using …".
//!
//! Every candidate carries a *slot* (what it is about, e.g. `lives_in`, `pref:coffee`)
//! and a value, which is what consolidation compares: a new value in a single-valued
//! slot updates, an opposite polarity or a retraction invalidates, the same value is a
//! no-op. Patterns err on the side of extracting nothing: a missed fact costs less than
//! a wrong one that later invalidates a true record.

use std::sync::LazyLock;

use regex::Regex;

/// Bumped whenever the rules change what they extract (it is logged with every run).
pub const VERSION: &str = "rules-2";

/// How a candidate's slot behaves in consolidation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotKind {
    /// One value at a time (where the user lives): a new value supersedes the old.
    Single,
    /// A preference: the value is the polarity (`+`/`-`); a flip contradicts.
    Preference,
    /// Many values may hold (things the user has or uses): only duplicates and
    /// retractions touch existing records.
    Multi,
}

/// One extracted statement.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The record text, self-contained ("The user lives in Berlin.").
    pub text: String,
    pub slot: String,
    pub slot_kind: SlotKind,
    /// Normalised value (lowercase, no articles); for preferences `+` or `-`.
    pub value: String,
    /// A retraction ends matching records and writes none.
    pub retract: bool,
    /// A coarse category for preferences (food, drink, music, …).
    pub category: Option<String>,
    /// "Switched from X to Y": the slot of what this one replaces.
    pub replaces: Option<String>,
}

fn re(s: &str) -> Regex {
    // The patterns are constants, checked by the tests.
    Regex::new(s).unwrap_or_else(|e| panic!("bad pattern {s}: {e}"))
}

/// Words a captured value stops before (they start a new clause or a reason).
static CUT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)(?:\s*[,(:]|\s+-|\s+(?:because|since|when|whenever|if|so that|but|although|though|which|as i|as it|for now|even|after all|and it|and i)\b).*$",
    )
});
/// Fillers at the end of a value.
static TRAIL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)(?:\s+(?:anymore|any more|now|these days|nowadays|lately|recently|today|yesterday|a lot|so much|very much|too|as well|actually|right now|at the moment|at all|though|again|really|honestly|for sure|haha|lol|(?:in|on|since|last|this|next|early|late)\s+(?:january|february|march|april|may|june|july|august|september|october|november|december|spring|summer|fall|autumn|winter|week|weekend|month|year|monday|tuesday|wednesday|thursday|friday|saturday|sunday)|(?:a|one|two|three|four|five|six|\d+|a couple of|a few)\s+(?:days|weeks|months|years|day|week|month|year)\s+ago))+$",
    )
});
/// Splits a sentence into clauses where a new subject starts.
static CLAUSE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i),?\s+(?:but|and|although|though|whereas|so|also|plus)\s+(?:also\s+)?(?:i\b|i'm\b|i've\b|my\b|we\b)",
    )
});
static LEAD: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)^(?:(?:[\w' ]{1,25}:\s+)|(?:oh|well|so|btw|by the way|found out|turns out|it turns out|apparently|i think|i guess|i realized|i realised|funny thing|good news|bad news|update|quick update|also|actually|honestly|yeah|yes|no|hey|hi|ok|okay|fyi|anyway|and|but|plus|just so you know|for the record|to be honest|these days|nowadays|lately|now)\b[,!]?\s*)+",
    )
});

fn clean_value(v: &str) -> Option<String> {
    let v = CUT.replace(v.trim(), "");
    let v = TRAIL.replace(v.trim(), "");
    let v = v
        .trim()
        .trim_end_matches(|c: char| !c.is_alphanumeric() && c != ')' && c != '"')
        .trim();
    let words = v.split_whitespace().count();
    (1..=8).contains(&words).then(|| v.to_owned())
}

/// Lowercase, without leading articles and possessives, single spaces.
pub fn normalise(v: &str) -> String {
    let lower = v.to_lowercase();
    let mut words: Vec<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '-'))
        .filter(|w| !w.is_empty())
        .collect();
    while let Some(first) = words.first() {
        if matches!(*first, "a" | "an" | "the" | "my" | "our" | "some" | "any") {
            words.remove(0);
        } else {
            break;
        }
    }
    words.join(" ")
}

const CATEGORIES: &[(&str, &[&str])] = &[
    (
        "drink",
        &[
            "coffee",
            "tea",
            "espresso",
            "latte",
            "matcha",
            "beer",
            "wine",
            "juice",
            "soda",
            "whisky",
            "whiskey",
            "cocktail",
            "water",
            "milk",
            "smoothie",
            "cappuccino",
        ],
    ),
    (
        "food",
        &[
            "food",
            "pizza",
            "sushi",
            "pasta",
            "cuisine",
            "chocolate",
            "cheese",
            "meat",
            "fish",
            "vegetable",
            "fruit",
            "spicy",
            "curry",
            "burger",
            "dessert",
            "cake",
            "rice",
            "noodle",
            "ramen",
            "taco",
            "salad",
            "bread",
            "seafood",
            "steak",
            "chicken",
            "egg",
            "nut",
            "peanut",
            "dairy",
            "gluten",
            "cilantro",
            "mushroom",
            "olive",
            "garlic",
            "onion",
            "avocado",
            "breakfast",
            "dinner",
            "lunch",
            "cooking",
            "baking",
        ],
    ),
    (
        "music",
        &[
            "music",
            "song",
            "band",
            "jazz",
            "rock",
            "pop",
            "classical",
            "hip hop",
            "rap",
            "album",
            "concert",
            "guitar",
            "piano",
            "singer",
            "metal",
            "techno",
            "opera",
        ],
    ),
    (
        "sport",
        &[
            "sport",
            "football",
            "soccer",
            "tennis",
            "running",
            "hiking",
            "yoga",
            "gym",
            "swimming",
            "cycling",
            "climbing",
            "basketball",
            "golf",
            "skiing",
            "surfing",
            "workout",
            "exercise",
            "marathon",
            "chess",
        ],
    ),
    (
        "travel",
        &[
            "travel",
            "trip",
            "beach",
            "mountain",
            "flight",
            "hotel",
            "city",
            "country",
            "vacation",
            "holiday",
            "camping",
            "road trip",
        ],
    ),
    (
        "media",
        &[
            "movie",
            "film",
            "book",
            "novel",
            "series",
            "show",
            "podcast",
            "reading",
            "game",
            "gaming",
            "anime",
            "documentary",
            "comic",
            "netflix",
            "poetry",
        ],
    ),
    (
        "technology",
        &[
            "python",
            "rust",
            "java",
            "javascript",
            "linux",
            "mac",
            "windows",
            "editor",
            "vim",
            "emacs",
            "code",
            "programming",
            "app",
            "phone",
            "laptop",
            "software",
            "typescript",
            "golang",
            "notion",
            "slack",
        ],
    ),
    (
        "communication",
        &[
            "email",
            "call",
            "text",
            "message",
            "meeting",
            "reply",
            "answer",
            "explanation",
            "summary",
            "bullet",
            "detail",
            "brief",
            "formal",
            "casual",
        ],
    ),
];

fn category(subject: &str) -> String {
    let words: Vec<&str> = subject.split_whitespace().collect();
    for (cat, keys) in CATEGORIES {
        let hit = keys.iter().any(|k| {
            if k.contains(' ') {
                subject.contains(k)
            } else {
                words
                    .iter()
                    .any(|w| w.trim_end_matches('s') == *k || *w == *k)
            }
        });
        if hit {
            return (*cat).to_owned();
        }
    }
    "general".to_owned()
}

/// What a pattern produces from its captures.
type Build = fn(&regex::Captures<'_>) -> Option<Candidate>;

fn cap<'c>(c: &'c regex::Captures<'_>, name: &str) -> Option<&'c str> {
    c.name(name).map(|m| m.as_str())
}

fn single(slot: &str, text: String, value: &str) -> Candidate {
    Candidate {
        text,
        slot: slot.to_owned(),
        slot_kind: SlotKind::Single,
        value: normalise(value),
        retract: false,
        category: None,
        replaces: None,
    }
}

fn retract(slot: String, kind: SlotKind, value: &str) -> Candidate {
    Candidate {
        text: String::new(),
        slot,
        slot_kind: kind,
        value: normalise(value),
        retract: true,
        category: None,
        replaces: None,
    }
}

fn preference(object: &str, positive: bool, verb: &str) -> Option<Candidate> {
    let object = clean_value(object)?;
    let subject = normalise(&object);
    if subject.is_empty()
        || matches!(
            subject.as_str(),
            "it" | "that" | "this" | "them" | "you" | "to"
        )
    {
        return None;
    }
    Some(Candidate {
        text: format!("The user {verb} {object}."),
        category: Some(category(&subject)),
        slot: format!("pref:{subject}"),
        slot_kind: SlotKind::Preference,
        value: if positive { "+" } else { "-" }.to_owned(),
        retract: false,
        replaces: None,
    })
}

/// The head noun of "a dog named Rex" → "dog"; "two cats" → "cat".
fn head_noun(phrase: &str) -> String {
    let n = normalise(phrase);
    let stop = [
        "named", "called", "who", "that", "which", "with", "and", "from", "at", "in", "of",
        "about", "for", "to", "on", "whose",
    ];
    let words: Vec<&str> = n.split(' ').take_while(|w| !stop.contains(w)).collect();
    let last = words.last().copied().unwrap_or("");
    let last = last
        .strip_suffix('s')
        .filter(|s| s.len() > 2)
        .unwrap_or(last);
    last.to_owned()
}

const DIETS: &str = r"vegetarian|vegan|pescatarian|lactose[- ]intolerant|gluten[- ]free|coeliac|celiac|teetotal|diabetic|kosher|halal|keto|sober";
const JOBS: &str = r"engineer|developer|teacher|nurse|doctor|designer|student|manager|lawyer|writer|scientist|researcher|programmer|accountant|chef|cook|consultant|analyst|architect|artist|musician|photographer|pilot|farmer|carpenter|electrician|plumber|pharmacist|dentist|therapist|journalist|professor|librarian|mechanic|firefighter|police officer|salesperson|entrepreneur|founder|freelancer|intern|editor|translator|paramedic|vet|veterinarian|barista|waiter|waitress|cashier|driver|recruiter|economist|physicist|chemist|biologist|surgeon|psychologist|social worker|data scientist|product manager";
const ADV: &str = r"(?:(?:really|absolutely|also|totally|just|do|still|genuinely|truly|honestly|kind of|kinda|sort of|now|actually|definitely|especially|mostly|mainly|usually|generally|personally|very much|much|rather|even|always)\s+)*";

static RULES: LazyLock<Vec<(Regex, Build)>> = LazyLock::new(|| {
    let mut rules: Vec<(Regex, Build)> = Vec::new();
    let mut add =
        |pattern: String, build: Build| rules.push((re(&format!("(?i)^{pattern}$")), build));
    // Retractions first: "I don't live in Paris anymore" must not read as a fact.
    add(
        r"(?:i|we)\s+(?:no longer|don't|do not|dont)\s+(?:live|reside)\s+in\s+(?P<v>.+?)(?:\s+any\s?more)?".into(),
        |c| Some(retract("lives_in".into(), SlotKind::Single, cap(c, "v")?)),
    );
    add(
        r"i\s+(?:no longer|don't|do not|dont)\s+work\s+(?:at|for)\s+(?P<v>.+?)(?:\s+any\s?more)?"
            .into(),
        |c| Some(retract("works_at".into(), SlotKind::Single, cap(c, "v")?)),
    );
    add(
        r"i\s+(?:just\s+)?(?:quit|left|lost)\s+(?:my\s+)?(?:job|position|role)(?:\s+(?:at|with)\s+(?P<v>.+?))?(?:\s+.*)?".into(),
        |c| Some(retract("works_at".into(), SlotKind::Single, cap(c, "v").unwrap_or(""))),
    );
    add(
        r"i\s+(?:just\s+)?(?:got|was|have been|'ve been|got\s+myself)\s+(?:laid off|fired|let go)(?:\s+(?:from|at|by)\s+(?P<v>.+?))?(?:\s+.*)?".into(),
        |c| Some(retract("works_at".into(), SlotKind::Single, cap(c, "v").unwrap_or(""))),
    );
    add(
        r"i(?:'m|\s+am)\s+(?:no longer|not)\s+(?:a\s+)?(?P<v>".to_owned()
            + DIETS
            + r")(?:\s+any\s?more)?(?:\W.*)?",
        |c| Some(retract("diet".into(), SlotKind::Single, cap(c, "v")?)),
    );
    add(
        r"i\s+(?:no longer|don't|do not|dont)\s+(?:have|own)\s+(?:a|an|any)\s+(?P<v>.+?)(?:\s+any\s?more)?".into(),
        |c| Some(retract(format!("has:{}", head_noun(cap(c, "v")?)), SlotKind::Multi, "")),
    );
    add(
        r"(?:sadly\s+)?my\s+(?:old\s+|beloved\s+|poor\s+)?(?P<v>[\w'-]+)(?:\s+[\w'-]+)?\s+(?:died|passed away|passed|ran away|was put down)(?:\s+.*)?".into(),
        |c| Some(retract(format!("has:{}", head_noun(cap(c, "v")?)), SlotKind::Multi, "")),
    );
    add(
        r"i\s+(?:stopped|quit|gave up|have stopped|'ve stopped|no longer)\s+(?:using|use|drinking|eating|playing|doing)\s+(?P<v>.+)".into(),
        |c| {
            let v = clean_value(cap(c, "v")?)?;
            Some(retract(format!("uses:{}", normalise(&v)), SlotKind::Multi, ""))
        },
    );
    add(
        r"i(?:'m|\s+am)\s+(?:actually\s+)?not\s+(?:really\s+)?allergic\s+to\s+(?P<v>.+)".into(),
        |c| {
            let v = clean_value(cap(c, "v")?)?;
            Some(retract(
                format!("allergy:{}", normalise(&v)),
                SlotKind::Multi,
                "",
            ))
        },
    );
    add(
        r"(?:i|we)\s+(?:(?:have|'ve|just|recently|finally)\s+)*(?:switched|migrated|changed)\s+(?:over\s+)?from\s+(?P<old>.+?)\s+to\s+(?P<v>.+)".into(),
        |c| {
            let old = clean_value(cap(c, "old")?)?;
            let v = clean_value(cap(c, "v")?)?;
            Some(Candidate {
                text: format!("The user uses {v} (switched from {old})."),
                slot: format!("uses:{}", normalise(&v)),
                slot_kind: SlotKind::Multi,
                value: normalise(&v),
                retract: false,
                category: Some(category(&normalise(&v))),
                replaces: Some(format!("uses:{}", normalise(&old))),
            })
        },
    );
    // Preferences.
    add(
        format!(
            r"(?:i|we)\s+{ADV}(?:no longer|don't|do not|dont|can't|cannot|can not|won't)\s+{ADV}(?P<verb>like|love|enjoy|stand|eat|drink|tolerate|bear)\s+(?P<v>.+)"
        ),
        |c| preference(cap(c, "v")?, false, "dislikes"),
    );
    add(
        format!(r"(?:i|we)\s+{ADV}(?P<verb>hate|dislike|detest|despise|avoid|loathe)\s+(?P<v>.+)"),
        |c| {
            let verb = match cap(c, "verb")?.to_lowercase().as_str() {
                "avoid" => "avoids",
                _ => "dislikes",
            };
            preference(cap(c, "v")?, false, verb)
        },
    );
    add(
        format!(r"(?:i|we)\s+{ADV}(?P<verb>love|like|enjoy|adore|prefer|dig)\s+(?P<v>.+)"),
        |c| {
            let verb = match cap(c, "verb")?.to_lowercase().as_str() {
                "love" | "adore" => "loves",
                "prefer" => "prefers",
                "enjoy" => "enjoys",
                _ => "likes",
            };
            let v = cap(c, "v")?;
            // "I'd like to book …" is a request, not a preference; "I like to X" is one.
            preference(v, true, verb)
        },
    );
    add(
        format!(
            r"i(?:'m|\s+am)\s+{ADV}(?:a\s+(?:big\s+|huge\s+|massive\s+)?fan of|fond of|into|keen on|crazy about|passionate about|obsessed with|addicted to)\s+(?P<v>.+)"
        ),
        |c| preference(cap(c, "v")?, true, "likes"),
    );
    add(
        format!(
            r"i(?:'m|\s+am)\s+{ADV}(?:not\s+(?:a\s+(?:big\s+)?fan of|into|fond of|keen on)|tired of|sick of|done with)\s+(?P<v>.+)"
        ),
        |c| preference(cap(c, "v")?, false, "dislikes"),
    );
    add(
        r"i(?:'m|\s+am)\s+(?:(?:severely|very|mildly|deathly|also|super)\s+)?allergic\s+to\s+(?P<v>.+)".into(),
        |c| {
            let v = clean_value(cap(c, "v")?)?;
            Some(Candidate {
                text: format!("The user is allergic to {v}."),
                slot: format!("allergy:{}", normalise(&v)),
                slot_kind: SlotKind::Multi,
                value: normalise(&v),
                retract: false,
                category: Some("health".into()),
                replaces: None,
            })
        },
    );
    add(
        r"i(?:'m|\s+am)\s+(?:(?:now|a|strictly|fully|mostly)\s+)*(?P<v>".to_owned()
            + DIETS
            + r")(?:\W.*)?",
        |c| {
            let v = cap(c, "v")?.to_lowercase();
            let mut cand = single("diet", format!("The user is {v}."), &v);
            cand.category = Some("food".into());
            Some(cand)
        },
    );
    add(
        r"my\s+(?:absolute\s+|all-time\s+|new\s+)?favou?rite\s+(?P<k>[\w' -]{1,40}?)\s+(?:is|are|has to be|would be)\s+(?P<v>.+)".into(),
        |c| {
            let k = normalise(cap(c, "k")?);
            let v = clean_value(cap(c, "v")?)?;
            let mut cand = single(&format!("favourite:{k}"), format!("The user's favourite {k} is {v}."), &v);
            cand.category = Some(category(&k));
            Some(cand)
        },
    );
    add(
        r"i(?:'m|\s+am)\s+(?:a\s+)?(?:huge|big|massive|great|total)\s+(?P<v>[\w' -]{1,40}?)\s+(?:fan|lover|enthusiast|nerd|geek)(?:\W.*)?".into(),
        |c| preference(cap(c, "v")?, true, "likes"),
    );
    // Facts about the speaker.
    add(
        r"(?:my name is|my name's|call me|people call me|everyone calls me)\s+(?P<v>[\w' -]{1,40})"
            .into(),
        |c| {
            let v = clean_value(cap(c, "v")?)?;
            Some(single("name", format!("The user's name is {v}."), &v))
        },
    );
    add(
        r"(?:i|we)(?:'m|'re|\s+am|\s+are)?\s+(?:(?:now|currently|still|actually|happen to)\s+)?(?:live|living|reside|residing|based|settled)\s+in\s+(?P<v>.+)".into(),
        |c| {
            let v = clean_value(cap(c, "v")?)?;
            Some(single("lives_in", format!("The user lives in {v}."), &v))
        },
    );
    add(
        r"(?:i|we)\s+(?:(?:just|recently|finally|have|'ve|have just|'ve just|had)\s+)*(?:moved|relocated)\s+(?:(?:back\s+)?from\s+(?P<old>.+?)\s+)?(?:back\s+)?to\s+(?P<v>.+)".into(),
        |c| {
            let v = clean_value(cap(c, "v")?)?;
            Some(single("lives_in", format!("The user lives in {v}."), &v))
        },
    );
    add(
        r"i\s+(?:(?:now|currently|still)\s+)?work\s+(?:at|for)\s+(?P<v>.+)".into(),
        |c| {
            let v = clean_value(cap(c, "v")?)?;
            Some(single("works_at", format!("The user works at {v}."), &v))
        },
    );
    add(
        r"i\s+(?:just\s+|recently\s+)?(?:started|joined|got a (?:new\s+)?job)\s+(?:a new job\s+|working\s+)?(?:at|for|with)\s+(?P<v>.+)".into(),
        |c| {
            let v = clean_value(cap(c, "v")?)?;
            Some(single("works_at", format!("The user works at {v}."), &v))
        },
    );
    add(
        r"i\s+(?:(?:now|currently)\s+)?work\s+as\s+(?:a|an)\s+(?P<v>.+)".into(),
        |c| {
            let v = clean_value(cap(c, "v")?)?;
            Some(single(
                "occupation",
                format!("The user works as {}.", with_article(&v)),
                &v,
            ))
        },
    );
    add(
        r"i(?:'m|\s+am)\s+(?:(?:now|currently|actually)\s+)?(?:a|an)\s+(?P<v>(?:[\w-]+\s+){0,2}(?:"
            .to_owned()
            + JOBS
            + r"))(?:\s+.*)?",
        |c| {
            let v = cap(c, "v")?.to_owned();
            Some(single(
                "occupation",
                format!("The user is {}.", with_article(&v)),
                &v,
            ))
        },
    );
    add(
        r"i(?:'m|\s+am)?\s+(?:(?:now|currently)\s+)?(?:study|studying|major in|majoring in)\s+(?P<v>.+)".into(),
        |c| {
            let v = clean_value(cap(c, "v")?)?;
            Some(single("studies", format!("The user studies {v}."), &v))
        },
    );
    add(r"i\s+was\s+born\s+(?:in|on)\s+(?P<v>.+)".into(), |c| {
        let v = clean_value(cap(c, "v")?)?;
        Some(single("born", format!("The user was born in {v}."), &v))
    });
    add(r"i\s+grew\s+up\s+in\s+(?P<v>.+)".into(), |c| {
        let v = clean_value(cap(c, "v")?)?;
        Some(single("grew_up", format!("The user grew up in {v}."), &v))
    });
    add(
        r"i(?:'m|\s+am)\s+(?:now\s+)?(?P<v>\d{1,3})(?:\s+years old|\s+yo)?(?:\W.*)?".into(),
        |c| {
            let v = cap(c, "v")?;
            let n: u32 = v.parse().ok()?;
            (5..=120)
                .contains(&n)
                .then(|| single("age", format!("The user is {n} years old."), v))
        },
    );
    add(
        r"(?:i|we)\s+(?:(?:now|also|still)\s+)?(?:have|'ve got|have got|own)\s+(?P<v>(?:a|an|two|three|four|\d+)\s+.+)".into(),
        |c| {
            let v = clean_value(cap(c, "v")?)?;
            let noun = head_noun(&v);
            if noun.is_empty() || matches!(noun.as_str(), "question" | "idea" | "problem" | "issue" | "lot" | "bit" | "feeling" | "minute" | "second" | "look") {
                return None;
            }
            Some(Candidate {
                text: format!("The user has {v}."),
                slot: format!("has:{noun}"),
                slot_kind: SlotKind::Multi,
                value: normalise(&v),
                retract: false,
                category: None,
                replaces: None,
            })
        },
    );
    add(
        r"(?:i|we)\s+(?:(?:just|recently|finally|have|'ve|have just|'ve just)\s+)*(?:adopted|got|bought|rescued)\s+(?P<v>(?:a|an|two|three|\d+)\s+.+)".into(),
        |c| {
            let v = clean_value(cap(c, "v")?)?;
            let noun = head_noun(&v);
            (!noun.is_empty()).then(|| Candidate {
                text: format!("The user has {v}."),
                slot: format!("has:{noun}"),
                slot_kind: SlotKind::Multi,
                value: normalise(&v),
                retract: false,
                category: None,
                replaces: None,
            })
        },
    );
    add(
        r"i\s+(?:just\s+)?turned\s+(?P<v>\d{1,3})(?:\W.*)?".into(),
        |c| {
            let v = cap(c, "v")?;
            let n: u32 = v.parse().ok()?;
            (5..=120)
                .contains(&n)
                .then(|| single("age", format!("The user is {n} years old."), v))
        },
    );
    add(
        r"(?:i|we)\s+(?:(?:now|mostly|mainly|currently|usually|always)\s+)?use\s+(?P<v>.+?)(?:\s+(?:to|for|at|on|in|with|every|because)\s+.*)?".into(),
        |c| {
            let v = clean_value(cap(c, "v")?)?;
            Some(Candidate {
                text: format!("The user uses {v}."),
                slot: format!("uses:{}", normalise(&v)),
                slot_kind: SlotKind::Multi,
                value: normalise(&v),
                retract: false,
                category: Some(category(&normalise(&v))),
                replaces: None,
            })
        },
    );
    add(
        r"my\s+(?P<k>(?:[\w'-]+\s+){0,3}?[\w'-]+)\s+(?:is|are|was)\s+(?P<v>.+)".into(),
        |c| {
            let k = normalise(cap(c, "k")?);
            if k.starts_with("favourite")
                || k.starts_with("favorite")
                || matches!(
                    k.as_str(),
                    "bad"
                        | "pleasure"
                        | "point"
                        | "question"
                        | "guess"
                        | "problem"
                        | "issue"
                        | "day"
                        | "week"
                )
            {
                return None;
            }
            let v = clean_value(cap(c, "v")?)?;
            Some(single(
                &format!("my:{k}"),
                format!("The user's {k} is {v}."),
                &v,
            ))
        },
    );
    add(
        r"my\s+(?P<k>[\w'-]+(?:\s+[\w'-]+)?)\s+(?P<verb>lives|works|studies)\s+(?P<prep>in|at|for)\s+(?P<v>.+)".into(),
        |c| {
            let k = normalise(cap(c, "k")?);
            let verb = cap(c, "verb")?.to_lowercase();
            let prep = cap(c, "prep")?.to_lowercase();
            let v = clean_value(cap(c, "v")?)?;
            Some(single(&format!("my:{k}:{verb}"), format!("The user's {k} {verb} {prep} {v}."), &v))
        },
    );
    rules
});

fn with_article(v: &str) -> String {
    let first = v.chars().next().unwrap_or('x').to_ascii_lowercase();
    if "aeiou".contains(first) {
        format!("an {v}")
    } else {
        format!("a {v}")
    }
}

/// Splits a message into clauses that each have one subject.
pub fn clauses(text: &str) -> Vec<String> {
    let text = text.replace(['\u{2019}', '\u{2018}'], "'");
    let mut out = Vec::new();
    for sentence in text.split(['.', '!', '?', ';', '\n']) {
        let mut rest = sentence.trim();
        while let Some(m) = CLAUSE.find(rest) {
            // Keep the subject ("I", "my") with the next clause.
            let matched = m.as_str();
            let subject_at = m.start()
                + matched
                    .rfind(|c: char| c.is_whitespace())
                    .map_or(0, |i| i + 1);
            out.push(rest[..m.start()].trim().to_owned());
            rest = rest[subject_at..].trim();
        }
        out.push(rest.to_owned());
    }
    out.into_iter()
        .map(|c| {
            LEAD.replace(&c, "")
                .trim()
                .trim_matches(',')
                .trim()
                .to_owned()
        })
        .filter(|c| !c.is_empty())
        .collect()
}

/// What the rules extract from one user message, in order, without repeats.
pub fn extract(text: &str) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    for clause in clauses(text) {
        if clause.ends_with('?') || clause.split_whitespace().count() > 40 {
            continue;
        }
        for (pattern, build) in RULES.iter() {
            if let Some(c) = pattern.captures(&clause) {
                if let Some(cand) = build(&c)
                    && !out.iter().any(|o| {
                        o.slot == cand.slot && o.value == cand.value && o.retract == cand.retract
                    })
                {
                    out.push(cand);
                }
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Candidate {
        let c = extract(text);
        assert_eq!(c.len(), 1, "{text}: {c:#?}");
        c.into_iter().next().unwrap()
    }

    #[test]
    fn patterns_compile() {
        assert!(RULES.len() > 20);
    }

    #[test]
    fn facts_and_preferences_from_plain_statements() {
        let c = one("Hi! I live in Paris.");
        assert_eq!((c.slot.as_str(), c.value.as_str()), ("lives_in", "paris"));
        assert_eq!(c.text, "The user lives in Paris.");
        let c = one("We just moved from Paris to Berlin last month");
        assert_eq!(
            (c.slot.as_str(), c.text.as_str()),
            ("lives_in", "The user lives in Berlin.")
        );
        let c = one("I really love spicy Thai food because it reminds me of home.");
        assert_eq!(c.text, "The user loves spicy Thai food.");
        assert_eq!(
            (c.slot.as_str(), c.value.as_str()),
            ("pref:spicy thai food", "+")
        );
        assert_eq!(c.category.as_deref(), Some("food"));
        let c = one("I can't stand coffee anymore");
        assert_eq!((c.slot.as_str(), c.value.as_str()), ("pref:coffee", "-"));
        let c = one("I'm allergic to peanuts");
        assert_eq!(c.text, "The user is allergic to peanuts.");
        let c = one("My name is Ana Lopez.");
        assert_eq!(c.slot, "name");
        let c = one("my sister's name is Maria");
        assert_eq!(c.slot, "my:sister's name");
        let c = one("I have a dog named Rex");
        assert_eq!(c.slot, "has:dog");
        let c = one("btw I'm vegetarian now");
        assert_eq!((c.slot.as_str(), c.value.as_str()), ("diet", "vegetarian"));
    }

    #[test]
    fn retractions_and_clauses() {
        let c = one("I don't live in Paris anymore.");
        assert!(c.retract);
        assert_eq!(c.slot, "lives_in");
        let c = one("Sadly my dog passed away last week");
        assert!(c.retract && c.slot == "has:dog", "{c:?}");
        let c = extract("I love sushi but I hate wasabi");
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[1].slot, "pref:wasabi");
    }

    #[test]
    fn questions_requests_and_chatter_extract_nothing() {
        for text in [
            "Do you like coffee?",
            "I'd like to book a table for two.",
            "Can you help me with my homework?",
            "That sounds great, thanks!",
            "I have a question about my order",
        ] {
            assert!(extract(text).is_empty(), "{text}: {:?}", extract(text));
        }
    }
}
