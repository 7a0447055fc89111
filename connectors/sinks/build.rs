//! Rebuilds the crate when a migration is added: sqlx's `migrate!` embeds the files it saw
//! at compile time and would not notice a new one.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
