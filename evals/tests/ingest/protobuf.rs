//! The same requests in protobuf and in OTLP/JSON decode and map alike.

use memlog_evals::mapping;
use memlog_evals::otlp::{self, Limits};
use prost::Message as _;

use super::requests;

const FIXTURES: [&str; 7] = [
    "genai_current.json",
    "genai_legacy.json",
    "openinference_langgraph.json",
    "strands.json",
    "openai_agents.json",
    "multi_turn.jsonl",
    "spec_example.json",
];

#[test]
fn protobuf_round_trip_maps_the_same() {
    for name in FIXTURES {
        for from_json in requests(name) {
            let bytes = from_json.encode_to_vec();
            let from_protobuf = otlp::decode_protobuf(&bytes, &Limits::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(from_protobuf, from_json, "{name}");
            assert_eq!(
                mapping::map(&from_protobuf),
                mapping::map(&from_json),
                "{name}"
            );
        }
    }
}

#[test]
fn json_written_by_the_generated_serde_reads_back_the_same() {
    for name in FIXTURES {
        for request in requests(name) {
            let json = serde_json::to_vec(&request).unwrap();
            let again = otlp::decode_json(&json, &Limits::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(again, request, "{name}");
        }
    }
}
