//! A project: its API keys (stored as SHA-256 hashes) and its pseudonymization secret
//! (kept in a 0600 file). Created by `sonde init` or on the first `sonde serve`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ServerError;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Send events.
    Write,
    /// Query and inspect.
    Read,
    /// Everything, including quarantine replay.
    Admin,
}

impl Scope {
    /// Whether a key of this scope may act as `needed`.
    pub fn allows(self, needed: Scope) -> bool {
        self == Scope::Admin || self == needed
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyRecord {
    scope: Scope,
    sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProjectFile {
    project: String,
    keys: Vec<KeyRecord>,
    pseudonym_key_id: String,
}

/// A loaded project.
#[derive(Debug, Clone)]
pub struct Project {
    /// Project id.
    pub id: String,
    keys: Vec<KeyRecord>,
    /// Id of the pseudonymization key in use.
    pub pseudonym_key_id: String,
    /// The pseudonymization secret.
    pub secret: Vec<u8>,
}

/// The keys printed once by `init`; only their hashes are stored.
#[derive(Debug, Clone, Serialize)]
pub struct NewKeys {
    /// Project id.
    pub project: String,
    /// Key for `POST /v1/events`.
    pub write_key: String,
    /// Key for queries and inspection.
    pub read_key: String,
    /// Key for everything.
    pub admin_key: String,
}

fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn project_path(dir: &Path) -> PathBuf {
    dir.join("project.json")
}

fn secret_path(dir: &Path, key_id: &str) -> PathBuf {
    dir.join("secrets").join(format!("pseudonym-{key_id}.key"))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ServerError + '_ {
    move |e| ServerError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), ServerError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(data).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    Ok(())
}

impl Project {
    /// Whether `dir` already holds a project.
    pub fn exists(dir: &Path) -> bool {
        project_path(dir).exists()
    }

    /// Create a project in `dir`: keys, their hashes and a fresh pseudonymization secret.
    pub fn init(dir: &Path) -> Result<NewKeys, ServerError> {
        if Project::exists(dir) {
            return Err(ServerError::AlreadyInitialized(dir.to_path_buf()));
        }
        fs::create_dir_all(dir).map_err(io(dir))?;
        let keys = NewKeys {
            project: format!("proj_{}", random_hex(6)),
            write_key: format!("sonde_w_{}", random_hex(16)),
            read_key: format!("sonde_r_{}", random_hex(16)),
            admin_key: format!("sonde_a_{}", random_hex(16)),
        };
        let key_id = "k1".to_string();
        write_private(&secret_path(dir, &key_id), random_hex(32).as_bytes())?;
        let file = ProjectFile {
            project: keys.project.clone(),
            keys: vec![
                KeyRecord {
                    scope: Scope::Write,
                    sha256: hash_key(&keys.write_key),
                },
                KeyRecord {
                    scope: Scope::Read,
                    sha256: hash_key(&keys.read_key),
                },
                KeyRecord {
                    scope: Scope::Admin,
                    sha256: hash_key(&keys.admin_key),
                },
            ],
            pseudonym_key_id: key_id,
        };
        let body = serde_json::to_vec_pretty(&file)?;
        write_private(&project_path(dir), &body)?;
        Ok(keys)
    }

    /// Load the project of `dir`.
    pub fn load(dir: &Path) -> Result<Project, ServerError> {
        let path = project_path(dir);
        let file: ProjectFile = serde_json::from_slice(&fs::read(&path).map_err(io(&path))?)?;
        let spath = secret_path(dir, &file.pseudonym_key_id);
        let secret = fs::read(&spath).map_err(io(&spath))?;
        Ok(Project {
            id: file.project,
            keys: file.keys,
            pseudonym_key_id: file.pseudonym_key_id,
            secret,
        })
    }

    /// The scope of `key`, if it is one of this project's keys.
    pub fn scope_of(&self, key: &str) -> Option<Scope> {
        let h = hash_key(key);
        self.keys.iter().find(|k| k.sha256 == h).map(|k| k.scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_stores_hashes_and_a_private_secret() {
        let dir = tempfile::tempdir().expect("tmp");
        let keys = Project::init(dir.path()).expect("init");
        let p = Project::load(dir.path()).expect("load");
        assert_eq!(p.scope_of(&keys.write_key), Some(Scope::Write));
        assert_eq!(p.scope_of(&keys.read_key), Some(Scope::Read));
        assert_eq!(p.scope_of(&keys.admin_key), Some(Scope::Admin));
        assert_eq!(p.scope_of("sonde_w_wrong"), None);
        let text = fs::read_to_string(project_path(dir.path())).expect("read");
        assert!(!text.contains(&keys.write_key), "raw key on disk");
        let mode = fs::metadata(secret_path(dir.path(), "k1"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(p.secret.len(), 64);
        assert!(matches!(
            Project::init(dir.path()),
            Err(ServerError::AlreadyInitialized(_))
        ));
    }
}
