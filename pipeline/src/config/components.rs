//! `[sources.NAME]` and `[sinks.NAME]`: enums that only dispatch. Every question about a
//! component (its problems, the resources it holds, what it describes, how it runs) goes to
//! its kind's own config type, so adding a kind is one line here.

use serde::Deserialize;
use sluice_buffers::BufferConfig;
use sluice_model::records::StreamName;
use sluice_simulator::SimulatorConfig;
use sluice_sinks::Sink;
use sluice_sinks::blackhole::BlackholeSinkConfig;
use sluice_sinks::elasticsearch::ElasticsearchSinkConfig;
use sluice_sinks::mysql::MysqlSinkConfig;
use sluice_sinks::prometheus::PrometheusSinkConfig;
use sluice_sinks::sqlite::SqliteSinkConfig;
use sluice_sinks::stdout::StdoutSinkConfig;
use sluice_sources::Source;
use sluice_sources::file::FileSourceConfig;
use sluice_sources::firehose::FirehoseConfig;
use sluice_sources::rlp::RlpConfig;

/// A `type`-tagged enum of component configs, and the two ways to reach the kind behind it.
macro_rules! dispatch {
    (
        $(#[$doc:meta])*
        pub enum $name:ident: dyn $kind:ident {
            $( $(#[$variant_doc:meta])* $variant:ident($config:ty), )+
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum $name {
            $( $(#[$variant_doc])* $variant($config), )+
        }

        impl $name {
            /// The kind's own config.
            pub fn component(&self) -> &dyn $kind {
                match self {
                    $( $name::$variant(config) => config, )+
                }
            }

            /// The kind's own config, to build its task from.
            pub fn into_component(self) -> Box<dyn $kind> {
                match self {
                    $( $name::$variant(config) => Box::new(config), )+
                }
            }
        }
    };
}

dispatch! {
    /// `[sources.NAME]`, by `type`.
    pub enum SourceConfig: dyn Source {
        /// A replay file (SPEC §1.3): finite.
        File(FileSourceConfig),
        /// The Firehose v1 WebSocket.
        Firehose(FirehoseConfig),
        /// The RLP gateway's v2 Server-Sent Events.
        Rlp(RlpConfig),
        /// Built-in realistic traffic.
        Simulator(SimulatorConfig),
    }
}

dispatch! {
    /// `[sinks.NAME]`, by `type`.
    pub enum SinkConfig: dyn Sink {
        /// The embedded store.
        Sqlite(SqliteSinkConfig),
        /// MySQL or MariaDB: the production store for everything but logs.
        Mysql(MysqlSinkConfig),
        /// Elasticsearch (or an OpenSearch-compatible cluster): logs only.
        Elasticsearch(ElasticsearchSinkConfig),
        /// A Prometheus remote-write receiver: rollups as samples (SPEC §13).
        Prometheus(PrometheusSinkConfig),
        /// NDJSON on standard output.
        Stdout(StdoutSinkConfig),
        /// Counts and discards: for benchmarks and trying a topology out.
        Blackhole(BlackholeSinkConfig),
    }
}

impl SourceConfig {
    /// The `type` it is configured with.
    pub fn type_name(&self) -> &'static str {
        self.component().kind()
    }

    /// Where its data comes from, for the topology printout.
    pub fn describe(&self) -> String {
        self.component().describe()
    }
}

impl SinkConfig {
    /// The `type` it is configured with.
    pub fn type_name(&self) -> &'static str {
        self.component().kind()
    }

    /// The streams it takes.
    pub fn streams(&self) -> &[StreamName] {
        self.component().streams()
    }

    /// Where its records wait (`buffer = { ... }`).
    pub fn buffer(&self) -> &BufferConfig {
        self.component().buffer()
    }

    /// Where its data goes, for the topology printout.
    pub fn describe(&self) -> String {
        self.component().describe()
    }
}
