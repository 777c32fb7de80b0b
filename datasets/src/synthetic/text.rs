//! Filler text for load generation: deterministic for a given RNG state, ASCII only (so a
//! byte length is also a character length), and shaped like chat turns rather than random
//! bytes, so that anything downstream that tokenises text sees realistic input.
//!
//! The word list and the algorithm are those of `memlog-benches`' `text` module, so the
//! benches can use this one and produce the same bytes for the same seed.

/// Words the generator draws from: the vocabulary of an assistant helping someone plan.
const WORDS: &[&str] = &[
    "I",
    "you",
    "we",
    "they",
    "it",
    "the",
    "a",
    "my",
    "your",
    "our",
    "this",
    "that",
    "next",
    "last",
    "week",
    "Tuesday",
    "morning",
    "evening",
    "flight",
    "hotel",
    "meeting",
    "dinner",
    "booking",
    "order",
    "refund",
    "account",
    "password",
    "address",
    "invoice",
    "delivery",
    "package",
    "doctor",
    "appointment",
    "train",
    "ticket",
    "seat",
    "window",
    "aisle",
    "vegetarian",
    "allergic",
    "peanuts",
    "prefer",
    "need",
    "want",
    "would",
    "like",
    "could",
    "please",
    "change",
    "move",
    "cancel",
    "confirm",
    "remember",
    "forgot",
    "usually",
    "always",
    "never",
    "again",
    "before",
    "after",
    "about",
    "with",
    "without",
    "for",
    "to",
    "from",
    "at",
    "on",
    "in",
    "and",
    "but",
    "so",
    "because",
    "if",
    "when",
    "is",
    "was",
    "will",
    "can",
    "should",
    "has",
    "have",
    "sure",
    "thanks",
    "okay",
    "great",
    "sorry",
    "here",
    "there",
    "Berlin",
    "Lisbon",
    "Osaka",
    "Denver",
    "budget",
    "cheaper",
    "earlier",
    "later",
    "two",
    "three",
    "o'clock",
    "daughter",
    "manager",
    "team",
    "project",
    "deadline",
    "report",
    "draft",
];

/// Appends words (sentence-cased, with punctuation) to `out` until it is at least `bytes`
/// long, then cuts it to exactly `bytes`.
pub fn fill(rng: &mut fastrand::Rng, out: &mut String, bytes: usize) {
    let mut sentence_start = out.is_empty() || out.ends_with(". ");
    let mut words_in_sentence = 0;
    while out.len() < bytes {
        let word = WORDS[rng.usize(..WORDS.len())];
        if sentence_start {
            let mut cs = word.chars();
            if let Some(c) = cs.next() {
                out.push(c.to_ascii_uppercase());
                out.push_str(cs.as_str());
            }
            sentence_start = false;
        } else {
            out.push_str(word);
        }
        words_in_sentence += 1;
        if words_in_sentence >= 6 && rng.u8(..4) == 0 {
            out.push_str(if rng.bool() { ". " } else { "? " });
            sentence_start = true;
            words_in_sentence = 0;
        } else if rng.u8(..10) == 0 {
            out.push_str(", ");
        } else {
            out.push(' ');
        }
    }
    out.truncate(bytes);
}

/// `bytes` bytes of conversational text.
pub fn conversational(rng: &mut fastrand::Rng, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 16);
    fill(rng, &mut s, bytes);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_length_ascii_and_deterministic() {
        for bytes in [1, 7, 300, 4096] {
            let a = conversational(&mut fastrand::Rng::with_seed(7), bytes);
            let b = conversational(&mut fastrand::Rng::with_seed(7), bytes);
            assert_eq!(a.len(), bytes);
            assert!(a.is_ascii());
            assert_eq!(a, b);
        }
        let c = conversational(&mut fastrand::Rng::with_seed(8), 300);
        assert_ne!(c, conversational(&mut fastrand::Rng::with_seed(7), 300));
    }

    #[test]
    fn fill_keeps_a_prefix() {
        let mut s = String::from("[00000042] ");
        fill(&mut fastrand::Rng::with_seed(1), &mut s, 64);
        assert!(s.starts_with("[00000042] "));
        assert_eq!(s.len(), 64);
    }
}
