//! Replacing a file atomically: a temporary file in the same directory, then rename, keeping mode and owner.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a file could not be replaced.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct WriteError {
    action: &'static str,
    path: PathBuf,
    source: io::Error,
}

fn at<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> WriteError + 'p {
    move |source| WriteError {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` by rename, so readers see the old or the new file, never
/// part of one. An existing file's mode and owner are kept; a new file gets 0644.
pub fn replace(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let existing = fs::metadata(path).ok();
    let mode = existing
        .as_ref()
        .map_or(0o644, |m| m.permissions().mode() & 0o7777);
    // tempfile removes the file if anything below fails, and creates it 0600.
    let mut file = tempfile::Builder::new()
        .prefix(".switchboard-")
        .tempfile_in(dir)
        .map_err(at("creating a temporary file in", dir))?;
    let tmp = file.path().to_path_buf();
    file.write_all(bytes).map_err(at("writing", &tmp))?;
    if let Some(meta) = &existing {
        // Best effort: only root may give a file away, and then it matters.
        let _ = std::os::unix::fs::fchown(file.as_file(), Some(meta.uid()), Some(meta.gid()));
    }
    file.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(at("setting the mode of", &tmp))?;
    file.as_file().sync_all().map_err(at("syncing", &tmp))?;
    file.persist(path)
        .map_err(|e| at("renaming into place", path)(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        replace(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
