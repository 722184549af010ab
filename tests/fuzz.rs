//! Fuzzing in CI, with proptest: arbitrary bytes as a plugin file, and arbitrary sequences of
//! host-resource calls from inside a plugin. The host must never panic; a failed snapshot
//! must leave no file behind.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use snapshot_host::backend::{KeyedStateBackend, StateKind};
use snapshot_host::key_groups::KeyGroupRange;
use snapshot_host::result_provider::primary_and_local;
use snapshot_host::runtime::{Plugin, PluginLimits, PluginRuntime};
use snapshot_host::streams::{FileStreamFactory, StateScope};

fn runtime() -> &'static PluginRuntime {
    static RUNTIME: OnceLock<PluginRuntime> = OnceLock::new();
    RUNTIME.get_or_init(|| PluginRuntime::new().unwrap())
}

fn limits() -> PluginLimits {
    PluginLimits { timeout: Duration::from_secs(2), memory_bytes: 64 << 20, ..PluginLimits::default() }
}

fn good_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| std::fs::read(suite::plugin_path("full-keyed")).unwrap())
}

fn script_plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(|| runtime().load(&suite::plugin_path("fixture-misbehave"), limits()).unwrap())
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_plugin_bytes_never_panic_the_host(
        mutations in proptest::collection::vec(
            prop_oneof![
                (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
                any::<usize>().prop_map(Mutation::Truncate),
                (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Mutation::Insert(i, b)),
            ],
            1..4,
        ),
        random in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = good_bytes().to_vec();
        for m in mutations {
            match m {
                Mutation::Flip(i, x) => { let n = bytes.len(); bytes[i % n] ^= x; }
                Mutation::Truncate(i) => { let n = bytes.len(); bytes.truncate(i % n); }
                Mutation::Insert(i, b) => { let at = i % (bytes.len() + 1); bytes.splice(at..at, b); }
            }
        }
        // Whatever the bytes, loading returns (Ok or an error naming the file); no panic.
        if let Err(e) = runtime().load_bytes(Path::new("mutated.wasm"), &bytes, limits()) {
            prop_assert!(e.to_string().contains("mutated.wasm"), "{e}");
        }
        let _ = runtime().load_bytes(Path::new("random.wasm"), &random, limits());
        let mut with_header = b"\0asm\x0d\0\x01\0".to_vec();
        with_header.extend_from_slice(&random);
        let _ = runtime().load_bytes(Path::new("random-component.wasm"), &with_header, limits());
    }

    #[test]
    fn arbitrary_host_call_sequences_keep_the_host_sound(script in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut backend = KeyedStateBackend::new(16, KeyGroupRange::new(4, 11)).unwrap();
        let s = backend.register_state("fixture:script", StateKind::Value).unwrap();
        // The script travels as the values of the state, in key-group order.
        let mut placed = 0;
        for (i, chunk) in script.chunks(8).enumerate() {
            let key = (0..).map(|n| format!("k{i}-{n}")).find(|k| backend.key_group_of(k.as_bytes()).is_ok()).unwrap();
            backend.put(s, key.as_bytes(), b"", chunk).unwrap();
            placed += chunk.len();
        }
        prop_assert_eq!(placed, script.len());
        let dir = tempfile::tempdir().unwrap();
        let factory = FileStreamFactory::new(dir.path().join("chk"), dir.path().join("shared"), 0).unwrap();
        let out = primary_and_local(&factory, StateScope::Exclusive, &dir.path().join("local")).unwrap();
        match script_plugin().snapshot_keyed(backend.snapshot(), out) {
            Ok((stream, offsets)) => {
                let result = stream.close_and_finalize().unwrap();
                prop_assert_eq!(offsets.range(), KeyGroupRange::new(4, 11));
                prop_assert!(result.primary().is_some());
            }
            Err(_) => {
                let left = |d: &Path| std::fs::read_dir(d).map(|e| e.count()).unwrap_or(0);
                prop_assert_eq!(left(&dir.path().join("chk")), 0);
                prop_assert_eq!(left(&dir.path().join("local")), 0);
            }
        }
    }
}
