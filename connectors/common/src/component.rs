//! What every configured component (a source or a sink kind) tells the pipeline before it
//! runs: the problems of its config, found without I/O and all at once; the resources only it
//! may hold in a topology; and one line describing it. The pipeline's config enums dispatch
//! to these, so a check written once here covers every kind.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with a component's config: the key, relative to the component (`url`,
/// `buffer.path`), and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The same problem, its key under `prefix` (`buffer` + `path` → `buffer.path`).
    pub fn under(self, prefix: &str) -> Problem {
        Problem {
            key: format!("{prefix}.{}", self.key),
            message: self.message,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Something only one component of a topology may hold: two writers of one SQLite file, disk
/// buffer or dead-letter file would corrupt it, and two listeners cannot bind one address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// A file or directory the component writes.
    Path(PathBuf),
    /// A local address (`host:port`) the component listens on.
    Listen(String),
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Path(path) => write!(f, "`{}`", path.display()),
            Resource::Listen(address) => write!(f, "address `{address}`"),
        }
    }
}

/// A resource and the key that claims it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub key: String,
    pub resource: Resource,
}

impl Claim {
    pub fn path(key: impl Into<String>, path: impl Into<PathBuf>) -> Claim {
        Claim {
            key: key.into(),
            resource: Resource::Path(path.into()),
        }
    }

    pub fn listen(key: impl Into<String>, address: impl Into<String>) -> Claim {
        Claim {
            key: key.into(),
            resource: Resource::Listen(address.into()),
        }
    }
}

/// What the pipeline asks of every configured component before running it.
pub trait Component {
    /// The `type` the component is configured with (`file`, `sqlite`, ...).
    fn kind(&self) -> &'static str;

    /// Every problem with the config, checked without I/O.
    fn problems(&self) -> Vec<Problem> {
        Vec::new()
    }

    /// What this component must hold alone in a topology.
    fn resources(&self) -> Vec<Claim> {
        Vec::new()
    }

    /// One line for the topology printout: where data comes from or goes.
    fn describe(&self) -> String;
}

/// Why a running component stopped: its own typed error, kept whole for the log and the exit
/// code.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ComponentError(Box<dyn std::error::Error + Send + Sync>);

impl ComponentError {
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> ComponentError {
        ComponentError(Box::new(error))
    }
}
