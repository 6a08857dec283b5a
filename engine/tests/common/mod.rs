//! What several engine test binaries share: an engine in any mode on the simulated file
//! system, with small settings.

#![allow(dead_code, reason = "each test binary uses a part")]
#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::sync::Arc;

use ds_engine::fs::sim::SimFs;
use ds_engine::{Engine, EngineConfig, ManualClock, StorageMode};

/// Every storage mode.
pub const MODES: [StorageMode; 4] =
    [StorageMode::Memory, StorageMode::FileFast, StorageMode::FileDurable, StorageMode::Acid];

/// The test configuration of `mode`: data in `/data`, two acid shards, a 1 MiB journal.
pub fn config(mode: StorageMode) -> EngineConfig {
    EngineConfig {
        mode,
        data_dir: std::path::PathBuf::from("/data"),
        acid_shard_count: 2,
        journal_bytes: 1 << 20,
        ..EngineConfig::default()
    }
}

/// A ready engine in `mode`: memory, or a persistent mode on `sim`.
pub async fn open(mode: StorageMode, sim: &SimFs, clock: &ManualClock) -> Engine {
    let engine = if mode == StorageMode::Memory {
        Engine::open_with_clock(config(mode), Arc::new(clock.clone())).unwrap()
    } else {
        Engine::open_on(config(mode), Arc::new(clock.clone()), Arc::new(sim.clone())).unwrap()
    };
    engine.ready().await.unwrap();
    engine
}
