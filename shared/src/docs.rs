//! Man pages and shell completions generated from a binary's clap definition (its hidden `generate-docs DIR`).

use std::path::{Path, PathBuf};

use clap::{value_parser, Arg, ArgMatches, Command};
use clap_complete::Shell;

/// The hidden subcommand both binaries take; scripts/build-deb.sh calls it.
pub const SUBCOMMAND: &str = "generate-docs";

#[derive(Debug, thiserror::Error)]
#[error("writing man pages and completions to {}: {source}", dir.display())]
pub struct DocsError {
    dir: PathBuf,
    source: std::io::Error,
}

/// `C::parse()` plus the hidden `generate-docs DIR`, which writes C's docs and exits.
pub fn parse<C: clap::Parser>() -> C {
    match matches_or_generate(C::command()) {
        Ok(Some(matches)) => C::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()),
        Ok(None) => std::process::exit(0),
        Err(e) => {
            eprintln!("{}: {e}", C::command().get_name());
            std::process::exit(1)
        }
    }
}

/// Parses the command line against `cmd` plus the hidden `generate-docs DIR`. For that
/// one, writes the docs of `cmd` (which does not have it, so neither the pages nor the
/// completions offer it) and returns None; otherwise the matches for `cmd`'s own parser.
fn matches_or_generate(cmd: Command) -> Result<Option<ArgMatches>, DocsError> {
    let with_docs = cmd.clone().subcommand(
        Command::new(SUBCOMMAND).hide(true).arg(
            Arg::new("dir")
                .required(true)
                .value_parser(value_parser!(PathBuf)),
        ),
    );
    let matches = with_docs.get_matches();
    let Some((SUBCOMMAND, sub)) = matches.subcommand() else {
        return Ok(Some(matches));
    };
    let dir = sub.get_one::<PathBuf>("dir").cloned().unwrap_or_default();
    generate(cmd, &dir).map_err(|source| DocsError { dir, source })?;
    Ok(None)
}

/// Writes `DIR/man/` (a page for the command and one per visible subcommand, as
/// `switchboard-agent.1`) and `DIR/completions/` (`NAME.bash`, `_NAME`, `NAME.fish`).
fn generate(cmd: Command, dir: &Path) -> std::io::Result<()> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let name = cmd.get_name().to_string();
    clap_mangen::generate_to(cmd.clone(), &man)?;
    let mut cmd = cmd;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, &name, &completions)?;
    }
    Ok(())
}

/// `--version` of both binaries: the crate version and the commit it was built from
/// (`SWITCHBOARD_COMMIT`, set by the workspace's build.rs).
#[macro_export]
macro_rules! version {
    () => {
        concat!(
            env!("CARGO_PKG_VERSION"),
            " (commit ",
            env!("SWITCHBOARD_COMMIT"),
            ")"
        )
    };
}
