//! `[cluster]` (SPEC §12): the processes of one timely cluster and which one this is.

use std::time::Duration;

use serde::Deserialize;

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Every process's `host:port`, in process order; the same list in every process.
    pub addresses: Vec<String>,
    /// This process's index in `addresses`; `sluice run --process N` wins over it.
    #[serde(default)]
    pub process: Option<usize>,
    /// How long to wait at start for every peer to answer before giving up.
    #[serde(
        default = "default_startup_timeout",
        with = "sluice_common::config::duration"
    )]
    pub startup_timeout: Duration,
}

const fn default_startup_timeout() -> Duration {
    Duration::from_secs(60)
}

impl ClusterConfig {
    /// Every problem of the section, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.addresses.is_empty() {
            problems.push("cluster.addresses: names no process".to_owned());
        }
        for (index, address) in self.addresses.iter().enumerate() {
            if let Err(problem) = check_address(address) {
                problems.push(format!("cluster.addresses[{index}]: `{address}` {problem}"));
            }
            if self.addresses[..index].contains(address) {
                problems.push(format!(
                    "cluster.addresses[{index}]: `{address}` is listed twice"
                ));
            }
        }
        if let Some(process) = self.process
            && process >= self.addresses.len()
        {
            problems.push(format!(
                "cluster.process: {process} is not an index of cluster.addresses (0 to {})",
                self.addresses.len().saturating_sub(1)
            ));
        }
        if self.startup_timeout.is_zero() {
            problems.push("cluster.startup_timeout: must be greater than 0".to_owned());
        }
        problems
    }
}

/// A peer address must be `host:port` with a port other than 0 (every process must know
/// where to reach every other).
fn check_address(address: &str) -> Result<(), &'static str> {
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err("is not host:port");
    };
    if host.is_empty() {
        return Err("has no host");
    }
    match port.parse::<u16>() {
        Ok(0) => Err("has port 0; every process must know where its peers listen"),
        Ok(_) => Ok(()),
        Err(_) => Err("has no valid port"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(addresses: &[&str], process: Option<usize>) -> ClusterConfig {
        ClusterConfig {
            addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
            process,
            startup_timeout: default_startup_timeout(),
        }
    }

    #[test]
    fn every_bad_address_and_index_is_named() {
        let problems = cluster(
            &["10.0.0.1:7100", "10.0.0.2", "10.0.0.1:7100", ":7100", "h:0"],
            Some(5),
        )
        .problems();
        assert_eq!(
            problems,
            [
                "cluster.addresses[1]: `10.0.0.2` is not host:port",
                "cluster.addresses[2]: `10.0.0.1:7100` is listed twice",
                "cluster.addresses[3]: `:7100` has no host",
                "cluster.addresses[4]: `h:0` has port 0; every process must know where its peers listen",
                "cluster.process: 5 is not an index of cluster.addresses (0 to 4)",
            ]
        );
        assert!(cluster(&["a:1", "b:2"], Some(1)).problems().is_empty());
    }
}
