//! The `inject` and `profile` commands: load the policy, merge, write the result, report on stderr.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::atomic;
use crate::bundle;
use crate::profile;
use crate::settings::{self, Settings};

/// `inject --bundle DIR`.
pub fn inject(bundle_dir: &Path, settings: Settings) -> anyhow::Result<()> {
    let options = settings.merge_options()?;
    let injected = bundle::inject(bundle_dir, &options)?;
    settings::warn_all(&injected.warnings);
    eprintln!(
        "switchboard-oci-hook: {}: {} ({} syscalls NOTIFY, listenerPath {})",
        injected.config.display(),
        if injected.changed {
            "updated"
        } else {
            "unchanged"
        },
        injected.notify.len(),
        options.socket
    );
    Ok(())
}

/// `profile IN [-o OUT]`.
pub fn profile(input: &Path, output: Option<&Path>, settings: Settings) -> anyhow::Result<()> {
    let options = settings.merge_options()?;
    let bytes = std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
    let mut value: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not valid JSON", input.display()))?;
    let merged = profile::merge_profile(&mut value, &options)
        .with_context(|| format!("{}", input.display()))?;
    settings::warn_all(&merged.warnings);
    let mut out = serde_json::to_vec_pretty(&value).expect("a JSON value serializes");
    out.push(b'\n');
    match output {
        Some(path) => {
            atomic::replace(path, &out)?;
            eprintln!(
                "switchboard-oci-hook: wrote {} ({} syscalls NOTIFY, listenerPath {})",
                path.display(),
                merged.record.notify.len(),
                options.socket
            );
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&out)
                .and_then(|()| stdout.flush())
                .context("writing the profile to stdout")?;
        }
    }
    Ok(())
}
