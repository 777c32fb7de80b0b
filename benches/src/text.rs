//! Synthetic conversational text for event payloads; the generator lives in the datasets
//! crate with the other synthetic data ([`memlog_datasets::synthetic::text`]).

pub use memlog_datasets::synthetic::text::*;
