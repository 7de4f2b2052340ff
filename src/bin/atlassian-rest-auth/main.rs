//! `atlassian-rest-auth`: the administrator's CLI, built natively from the filter's own core.
//!
//!   check-config FILE                                   every configuration error, by field
//!   check-token --config FILE [--provider NAME] [--path P] TOKEN
//!                                                       what the filter would do with TOKEN
//!   new-token --user NAME [--expires 90d] [--name LABEL] mint an API token and its config entry
//!
//! `cargo build --target wasm32-wasip1` builds every target of the package, so the program has a
//! wasm32 form too: it only says it is native. The filter is the library (`make build`).

#[cfg(not(target_arch = "wasm32"))]
mod native;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    native::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {
    eprintln!("atlassian-rest-auth: the CLI runs natively; the filter is the library's .wasm");
}
