//! What the graph saves at a checkpoint and restores at start (SPEC §9): the open windows of
//! every rollup kind and width (the space and org minutes of SPEC §11 among them), with
//! everything needed to continue them exactly, and the facts the Cloud Foundry directory is
//! made of (SPEC §11), so that a restarted run names and groups exactly as before. The
//! watermark and the source positions are the pipeline's ingest point's to save; the file
//! that holds it all is the pipeline's too.
//!
//! A checkpoint is a cut at the end of an epoch (see [`crate::time`]): the ingest point ends
//! an epoch by sending a [`Cut`] with the watermark it reached, every rollup operator, once
//! its input has no more of that epoch, closes the windows that watermark closes and hands
//! its open windows over as a [`Snapshot`], and the pipeline writes the parts together.

use serde::{Deserialize, Serialize};
use sluice_model::Str;

use crate::directory::SavedFact;
use crate::groups::{GroupKey, GroupWindow};
use crate::rollup::app::AppWindow;
use crate::rollup::platform::PlatformWindow;
use crate::route::PlatformKey;

/// The end of epoch `epoch` at one ingest point: the watermark (whole seconds) it reached.
/// Broadcast to every rollup operator; with several ingest points the least watermark wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    pub epoch: u64,
    pub watermark: u64,
}

/// One open window: its width and start (seconds), its key, and its aggregate so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenWindow<K, S> {
    pub width: u32,
    pub start: i64,
    pub key: K,
    pub state: S,
}

/// The open windows of every rollup kind and width, and the directory's facts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowState {
    pub app: Vec<OpenWindow<Str, AppWindow>>,
    pub platform: Vec<OpenWindow<PlatformKey, PlatformWindow>>,
    /// Space and org minutes (SPEC §11) not closed yet.
    pub group: Vec<OpenWindow<GroupKey, GroupWindow>>,
    /// What each worker's tags and the Cloud Controller's last listing say of each app:
    /// the directory is rebuilt from them exactly (the Cloud Controller's fact still wins).
    pub directory: Vec<SavedFact>,
}

impl WindowState {
    /// Adds another operator's windows (or facts).
    pub fn extend(&mut self, other: WindowState) {
        self.app.extend(other.app);
        self.platform.extend(other.platform);
        self.group.extend(other.group);
        self.directory.extend(other.directory);
    }

    /// How many windows, of every kind (the directory's facts are not windows).
    pub fn len(&self) -> usize {
        self.app.len() + self.platform.len() + self.group.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.directory.is_empty()
    }
}

/// One rollup operator's open windows at the end of `epoch`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub epoch: u64,
    pub windows: WindowState,
}
