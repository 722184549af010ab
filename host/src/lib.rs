//! snapshot-host: consistent snapshots of stream-processing state, written by sandboxed
//! WebAssembly strategy plugins, with task-local recovery.
#![warn(missing_docs)]

pub mod backend;
pub mod checksum;
pub mod config;
pub mod coordinator;
pub mod directories;
pub mod duplicating;
pub mod embedded_s3;
pub mod fsutil;
pub mod handles;
pub mod harness;
pub mod job;
pub mod key_groups;
pub mod local_store;
pub mod operator_backend;
pub mod repartition;
pub mod restore;
pub mod result;
pub mod result_provider;
pub mod runtime;
pub mod snapshot_directory;
pub mod storage;
pub mod streams;
