//! What every configured component (a source or a sink kind) tells the pipeline before it
//! runs: the problems of its config, found without I/O and all at once; the resources only it
//! may hold in a topology; and one line describing it. The pipeline's config enums dispatch
//! to these, so a check written once here covers every kind.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

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
            Resource::Listen(address) => write!(f, "`{address}`"),
        }
    }
}

/// A resource, the key that claims it, and what it is to the claimant (`the disk buffer`),
/// for the message when a second key claims it too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub key: String,
    pub resource: Resource,
    pub what: &'static str,
}

impl Claim {
    pub fn path(key: impl Into<String>, what: &'static str, path: impl Into<PathBuf>) -> Claim {
        Claim {
            key: key.into(),
            resource: Resource::Path(path.into()),
            what,
        }
    }

    pub fn listen(key: impl Into<String>, address: impl Into<String>) -> Claim {
        Claim {
            key: key.into(),
            resource: Resource::Listen(address.into()),
            what: "the address",
        }
    }

    /// The same claim, its key under `prefix` (`sinks.db` + `path` → `sinks.db.path`).
    pub fn under(self, prefix: &str) -> Claim {
        Claim {
            key: format!("{prefix}.{}", self.key),
            ..self
        }
    }
}

/// A problem for every claim of a resource an earlier claim holds: `key: `x` is already
/// the disk buffer of other.key`. Paths are compared as written, less `.` components.
pub fn conflicts(claims: &[Claim]) -> Vec<Problem> {
    let normal = |resource: &Resource| match resource {
        Resource::Path(path) => Resource::Path(
            path.components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect(),
        ),
        other => other.clone(),
    };
    let mut problems = Vec::new();
    for (i, claim) in claims.iter().enumerate() {
        let resource = normal(&claim.resource);
        if let Some(first) = claims[..i].iter().find(|c| normal(&c.resource) == resource) {
            problems.push(Problem::new(
                claim.key.clone(),
                format!(
                    "{} is already {} of {}",
                    claim.resource, first.what, first.key
                ),
            ));
        }
    }
    problems
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

/// A built component's task: it runs until its input ends or its shutdown is cancelled.
pub type ComponentTask = Pin<Box<dyn Future<Output = Result<(), ComponentError>> + Send>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_claimed_twice_is_a_problem_naming_both_keys() {
        let claims = [
            Claim::path("sinks.db.buffer.path", "the disk buffer", "buffers/shared"),
            Claim::path("sinks.local.path", "the SQLite database", "data/a.db"),
            Claim::path(
                "sinks.out.buffer.path",
                "the disk buffer",
                "./buffers/shared",
            ),
            Claim::listen("admin.listen", "127.0.0.1:9598"),
            Claim::listen("api.listen", "127.0.0.1:9598"),
        ];
        let problems: Vec<String> = conflicts(&claims).iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "sinks.out.buffer.path: `./buffers/shared` is already the disk buffer of sinks.db.buffer.path",
                "api.listen: `127.0.0.1:9598` is already the address of admin.listen",
            ]
        );
    }
}
