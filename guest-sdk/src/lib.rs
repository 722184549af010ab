//! Write snapshot strategies for `snapshot-host` as WebAssembly components.
//!
//! A snapshot strategy decides the byte format of a keyed snapshot. The host owns everything
//! that must never go wrong: it opens and closes the streams, records where each key group
//! starts, keeps a local copy beside the durable one and decides which copy to restore from.
//! The strategy only turns a consistent view of state into bytes and back.
//!
//! Implement [`SnapshotStrategy`] and export it with [`export_strategy!`]; build the crate as
//! a `cdylib` for `wasm32-wasip2`, and the result is a component the host loads. A strategy
//! implements keyed state, operator state or both; the kinds it leaves out fail with a clear
//! error if a job asks for them.
//!
//! ```
//! use snapshot_guest::{
//!     codec::{ReadExt, WriteExt}, BatchBuilder, KeyedStateView, PluginInfo, RestoreReader,
//!     RestoreSink, Result, SnapshotStrategy, SnapshotWriter,
//! };
//!
//! /// Writes each key group as: id, then per non-empty state its name, kind and entries.
//! struct Tiny;
//!
//! impl SnapshotStrategy for Tiny {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("tiny", env!("CARGO_PKG_VERSION"), "tiny", 1)
//!     }
//!
//!     fn snapshot_keyed(state: &KeyedStateView<'_>, out: &mut SnapshotWriter<'_>) -> Result<()> {
//!         let states = state.states();
//!         for key_group in state.key_group_range() {
//!             out.begin_key_group(key_group)?;
//!             out.write_u32(key_group)?;
//!             for (index, info) in states.iter().enumerate() {
//!                 let mut entries = state.entries(index as u32, key_group)?;
//!                 while let Some(batch) = entries.next_batch(64 * 1024) {
//!                     for entry in batch.iter() {
//!                         out.write_u8(1)?;
//!                         out.write_bytes(info.name.as_bytes())?;
//!                         out.write_u8(info.kind.to_u8())?;
//!                         out.write_bytes(entry.key)?;
//!                         out.write_bytes(entry.namespace)?;
//!                         out.write_bytes(entry.user_key)?;
//!                         out.write_bytes(entry.value)?;
//!                     }
//!                 }
//!             }
//!             out.write_u8(0)?;
//!         }
//!         Ok(())
//!     }
//!
//!     fn restore_key_group(
//!         key_group: u32,
//!         input: &mut RestoreReader<'_>,
//!         sink: &mut RestoreSink<'_>,
//!     ) -> Result<()> {
//!         let found = input.read_u32()?;
//!         if found != key_group {
//!             return Err(format!("expected key group {key_group}, found {found}").into());
//!         }
//!         while input.read_u8()? == 1 {
//!             let name = String::from_utf8(input.read_bytes()?).map_err(|e| e.to_string())?;
//!             let kind = snapshot_guest::StateKind::from_u8(input.read_u8()?)?;
//!             let state = sink.state(&name, kind)?;
//!             let mut batch = BatchBuilder::new();
//!             let (key, ns, user_key, value) =
//!                 (input.read_bytes()?, input.read_bytes()?, input.read_bytes()?, input.read_bytes()?);
//!             batch.push(&key, &ns, &user_key, &value);
//!             sink.put(state, &batch)?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! snapshot_guest::export_strategy!(Tiny);
//! ```

#![warn(missing_docs)]

// Lets the generated bindings name this crate by the path plugin crates use.
extern crate self as snapshot_guest;

pub mod codec;
mod error;
mod io;
mod operator;
mod state;

pub use error::{Error, Result};
pub use io::{RestoreReader, SnapshotWriter, DEFAULT_BUFFER_SIZE};
pub use operator::{
    restore_length_prefixed, snapshot_length_prefixed, DistributionMode, ElementBatch, ElementBatchBuilder, Elements,
    OperatorSink, OperatorStateInfo, OperatorStateView,
};
pub use state::{
    Batch, BatchBuilder, Entries, Entry, GroupPart, KeyedStateView, PendingBatch, PluginInfo, RestoreSink, StateInfo,
    StateKind,
};

/// What a snapshot strategy implements.
///
/// The host calls these functions on a fresh instance for every snapshot or restore, so a
/// strategy keeps no state between calls: everything it needs is in its arguments. Only
/// `describe` is required; a kind of state a strategy does not implement fails with an error
/// naming the strategy.
pub trait SnapshotStrategy {
    /// Names the strategy and the format it writes.
    fn describe() -> PluginInfo;

    /// Writes keyed `state` into `out`. Every key group of `state.key_group_range()` must be
    /// announced with [`SnapshotWriter::begin_key_group`], once, in ascending order, before
    /// its bytes; the host records the offsets and restores each group from its own offset.
    fn snapshot_keyed(state: &KeyedStateView<'_>, out: &mut SnapshotWriter<'_>) -> Result<()> {
        let _ = (state, out);
        Err(unsupported::<Self>("keyed state"))
    }

    /// Reads the key group `key_group` from `input` (already positioned at its offset) and
    /// puts its entries into `sink`: the restore of a full key group. Strategies that write
    /// deltas, or that want the format version the host recorded, implement
    /// [`restore_key_group_part`](Self::restore_key_group_part) instead.
    ///
    /// # Format versions
    ///
    /// A restore never sees the start of the stream (after rescaling, a restore begins in the
    /// middle of one), so a version written only in a stream header cannot guide it. Either
    /// use the version the host passes to
    /// [`restore_key_group_part`](Self::restore_key_group_part), or start every key group, and
    /// every operator element, with the format version, and read every version this strategy
    /// ever wrote:
    ///
    /// ```
    /// use snapshot_guest::{codec::ReadExt, Error, RestoreReader, RestoreSink, Result};
    /// # fn read_group_v1(_: u32, _: &mut RestoreReader<'_>, _: &mut RestoreSink<'_>) -> Result<()> { Ok(()) }
    /// # fn read_group_v2(_: u32, _: &mut RestoreReader<'_>, _: &mut RestoreSink<'_>) -> Result<()> { Ok(()) }
    /// fn restore_key_group(key_group: u32, input: &mut RestoreReader<'_>, sink: &mut RestoreSink<'_>) -> Result<()> {
    ///     match input.read_u8()? {
    ///         1 => read_group_v1(key_group, input, sink),
    ///         2 => read_group_v2(key_group, input, sink),
    ///         v => Err(Error::msg(format!("key group {key_group}: unknown format version {v}"))),
    ///     }
    /// }
    /// ```
    ///
    /// `snapshot-host plugin new` generates a strategy laid out this way.
    fn restore_key_group(key_group: u32, input: &mut RestoreReader<'_>, sink: &mut RestoreSink<'_>) -> Result<()> {
        let _ = (key_group, input, sink);
        Err(unsupported::<Self>("keyed state"))
    }

    /// Restores one stored part of `key_group`: the host calls it for the group's full part,
    /// then for each of its deltas, oldest first, into the same sink. `format_version` is the
    /// version the writing build described (an older build's bytes may need an older
    /// reader). The default reads full parts with
    /// [`restore_key_group`](Self::restore_key_group) and refuses deltas, which the host only
    /// stores for strategies that describe themselves as
    /// [`incremental`](PluginInfo::incremental).
    fn restore_key_group_part(
        key_group: u32,
        part: GroupPart,
        format_version: u32,
        input: &mut RestoreReader<'_>,
        sink: &mut RestoreSink<'_>,
    ) -> Result<()> {
        let _ = format_version;
        match part {
            GroupPart::Full => Self::restore_key_group(key_group, input, sink),
            GroupPart::Delta => Err(unsupported::<Self>("deltas (it does not describe itself as incremental)")),
        }
    }

    /// Writes the operator list states of `state` into `out`, announcing every element with
    /// [`SnapshotWriter::begin_partition`] before its bytes.
    fn snapshot_operator(state: &OperatorStateView<'_>, out: &mut SnapshotWriter<'_>) -> Result<()> {
        let _ = (state, out);
        Err(unsupported::<Self>("operator state"))
    }

    /// Reads one element of operator state `name` from `input` (positioned at its offset) and
    /// adds it to `sink`.
    fn restore_operator_partition(
        name: &str,
        mode: DistributionMode,
        input: &mut RestoreReader<'_>,
        sink: &mut OperatorSink<'_>,
    ) -> Result<()> {
        let _ = (name, mode, input, sink);
        Err(unsupported::<Self>("operator state"))
    }
}

fn unsupported<S: SnapshotStrategy + ?Sized>(what: &str) -> Error {
    Error::msg(format!("strategy {} does not support {what}", S::describe().name))
}

/// Exports a [`SnapshotStrategy`] implementation as the component's `strategy` world.
///
/// Use it once per plugin crate, at the crate root: `snapshot_guest::export_strategy!(MyStrategy);`
#[macro_export]
macro_rules! export_strategy {
    ($strategy:ty) => {
        const _: () = {
            struct __SnapshotStrategyExport;

            impl $crate::__private::bindings::Guest for __SnapshotStrategyExport {
                fn describe() -> $crate::__private::bindings::snapshot::strategy::types::PluginInfo {
                    $crate::__private::describe::<$strategy>()
                }

                fn snapshot_keyed(
                    state: &$crate::__private::bindings::KeyedStateView,
                    out: &$crate::__private::bindings::OutputStream,
                ) -> ::core::result::Result<(), $crate::__private::String> {
                    $crate::__private::snapshot_keyed::<$strategy>(state, out)
                }

                fn restore_key_group(
                    key_group: u32,
                    part: $crate::__private::bindings::GroupPart,
                    format_version: u32,
                    input: &$crate::__private::bindings::InputStream,
                    sink: &$crate::__private::bindings::RestoreSink,
                ) -> ::core::result::Result<(), $crate::__private::String> {
                    $crate::__private::restore_key_group::<$strategy>(key_group, part, format_version, input, sink)
                }

                fn snapshot_operator(
                    state: &$crate::__private::bindings::OperatorStateView,
                    out: &$crate::__private::bindings::OutputStream,
                ) -> ::core::result::Result<(), $crate::__private::String> {
                    $crate::__private::snapshot_operator::<$strategy>(state, out)
                }

                fn restore_operator_partition(
                    name: $crate::__private::String,
                    mode: $crate::__private::bindings::DistributionMode,
                    input: &$crate::__private::bindings::InputStream,
                    sink: &$crate::__private::bindings::OperatorSink,
                ) -> ::core::result::Result<(), $crate::__private::String> {
                    $crate::__private::restore_operator_partition::<$strategy>(name, mode, input, sink)
                }
            }

            $crate::__private::bindings::__export_strategy!(
                __SnapshotStrategyExport with_types_in $crate::__private::bindings
            );
        };
    };
}

/// Not public API: what [`export_strategy!`] expands to.
#[doc(hidden)]
pub mod __private {
    pub use std::string::String;
    pub use wit_bindgen;

    #[allow(missing_docs, clippy::all)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "wit",
            world: "strategy",
            pub_export_macro: true,
            export_macro_name: "__export_strategy",
            default_bindings_module: "snapshot_guest::__private::bindings",
            runtime_path: "snapshot_guest::__private::wit_bindgen::rt",
        });
    }

    use crate::{
        KeyedStateView, OperatorSink, OperatorStateView, RestoreReader, RestoreSink, SnapshotStrategy, SnapshotWriter,
    };

    pub fn describe<S: SnapshotStrategy>() -> bindings::snapshot::strategy::types::PluginInfo {
        S::describe().into()
    }

    pub fn snapshot_keyed<S: SnapshotStrategy>(
        state: &bindings::KeyedStateView,
        out: &bindings::OutputStream,
    ) -> Result<(), String> {
        let view = KeyedStateView::new(state);
        let mut writer = SnapshotWriter::new(out);
        S::snapshot_keyed(&view, &mut writer).map_err(|e| e.to_string())?;
        // Bytes still buffered belong to the last key group: hand them to the host before it
        // closes the stream.
        writer.finish().map_err(|e| e.to_string())
    }

    pub fn restore_key_group<S: SnapshotStrategy>(
        key_group: u32,
        part: bindings::GroupPart,
        format_version: u32,
        input: &bindings::InputStream,
        sink: &bindings::RestoreSink,
    ) -> Result<(), String> {
        let mut reader = RestoreReader::new(input);
        let mut sink = RestoreSink::new(sink);
        S::restore_key_group_part(key_group, part.into(), format_version, &mut reader, &mut sink)
            .map_err(|e| e.to_string())
    }

    pub fn snapshot_operator<S: SnapshotStrategy>(
        state: &bindings::OperatorStateView,
        out: &bindings::OutputStream,
    ) -> Result<(), String> {
        let view = OperatorStateView::new(state);
        let mut writer = SnapshotWriter::new(out);
        S::snapshot_operator(&view, &mut writer).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())
    }

    pub fn restore_operator_partition<S: SnapshotStrategy>(
        name: String,
        mode: bindings::DistributionMode,
        input: &bindings::InputStream,
        sink: &bindings::OperatorSink,
    ) -> Result<(), String> {
        let mut reader = RestoreReader::new(input);
        let mut sink = OperatorSink::new(sink);
        S::restore_operator_partition(&name, mode.into(), &mut reader, &mut sink).map_err(|e| e.to_string())
    }
}
