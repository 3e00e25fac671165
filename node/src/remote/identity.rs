//! A node's [`Identity`]: its Ed25519 key and self-signed certificate, kept as
//! `node.key` and `node.crt` in the node's home directory and created on first use.
//!
//! The certificate carries no names anyone checks: peers recognise a node by the
//! [`NodeId`] of its certificate, which they were given beforehand.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use super::nodeid::NodeId;

/// The private key's file name in the node's home (PKCS#8, PEM).
pub const KEY_FILE: &str = "node.key";

/// The certificate's file name in the node's home (PEM).
pub const CERT_FILE: &str = "node.crt";

/// Why the node's identity could not be loaded or created. A cause is part of the message,
/// not also a `source`, so a printer of the whole chain shows it once.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading, writing or inspecting a file failed.
    #[error("cannot {op} {path}: {error}")]
    Io {
        /// What was being done (`read`, `create`, ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        error: io::Error,
    },
    /// The key file can be read or written by users other than its owner.
    #[error(
        "{path} is readable or writable by other users (mode {mode:04o}): run `chmod 600 {path}`"
    )]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key exists but its certificate does not.
    #[error(
        "{key} exists but {cert} is missing: restore it, or remove {key} to create a new \
         identity (peers will then need the new node id)"
    )]
    MissingCertificate {
        /// The key file, which exists.
        key: PathBuf,
        /// The certificate file, which does not.
        cert: PathBuf,
    },
    /// The certificate exists but its key does not.
    #[error(
        "{cert} exists but {key} is missing: restore it, or remove {cert} to create a new \
         identity (peers will then need the new node id)"
    )]
    MissingKey {
        /// The key file, which does not exist.
        key: PathBuf,
        /// The certificate file, which exists.
        cert: PathBuf,
    },
    /// A file is not the PEM it should be.
    #[error("{path} is not a PEM-encoded {what}: {reason}")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate was not made for this key.
    #[error("{cert} does not belong to the key in {key}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// Generating the key or certificate failed.
    #[error("cannot generate a node identity: {0}")]
    Generate(rcgen::Error),
    /// No environment variable says where the node's home is.
    #[error("cannot find the node's home directory: set FERRY_HOME (or XDG_DATA_HOME or HOME)")]
    NoHome,
}

impl IdentityError {
    fn io(op: &'static str, path: &Path, error: io::Error) -> Self {
        IdentityError::Io {
            op,
            path: path.to_path_buf(),
            error,
        }
    }
}

/// A node's key, its self-signed certificate, and the [`NodeId`] that certificate gives it.
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    id: NodeId,
}

impl Identity {
    /// Loads the identity kept in `home`, or creates one there (and `home` itself, mode
    /// 0700) if neither file exists. The flag is true when the identity was just created.
    ///
    /// Refuses a key file other users may read, a key without its certificate (or the
    /// reverse), files that are not the expected PEM, and a certificate of another key.
    pub fn load_or_create(home: &Path) -> Result<(Identity, bool), IdentityError> {
        let key_path = home.join(KEY_FILE);
        let cert_path = home.join(CERT_FILE);
        let key_exists = exists(&key_path)?;
        let cert_exists = exists(&cert_path)?;
        match (key_exists, cert_exists) {
            (true, true) => Ok((load(&key_path, &cert_path)?, false)),
            (true, false) => Err(IdentityError::MissingCertificate {
                key: key_path,
                cert: cert_path,
            }),
            (false, true) => Err(IdentityError::MissingKey {
                key: key_path,
                cert: cert_path,
            }),
            (false, false) => Ok((create(home, &key_path, &cert_path)?, true)),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The DER certificate to present to peers.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// A copy of the private key, for a TLS configuration.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    /// Checks that `cert` belongs to `key` and builds the identity.
    fn from_parts(
        cert: CertificateDer<'static>,
        key: PrivatePkcs8KeyDer<'static>,
        key_path: &Path,
        cert_path: &Path,
    ) -> Result<Identity, IdentityError> {
        let provider = rustls::crypto::ring::default_provider();
        let signing_key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(key.clone_key()))
            .map_err(|e| IdentityError::BadPem {
                path: key_path.to_path_buf(),
                what: "PKCS#8 private key",
                reason: e.to_string(),
            })?;
        match CertifiedKey::new(vec![cert.clone()], signing_key).keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(_)) => {
                return Err(IdentityError::Mismatch {
                    cert: cert_path.to_path_buf(),
                    key: key_path.to_path_buf(),
                })
            }
            Err(e) => {
                return Err(IdentityError::BadPem {
                    path: cert_path.to_path_buf(),
                    what: "certificate",
                    reason: e.to_string(),
                })
            }
        }
        let id = NodeId::of_certificate(&cert);
        Ok(Identity { cert, key, id })
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            id: self.id,
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Identity")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Where the node keeps its identity when not told otherwise: `$FERRY_HOME`, else
/// `$XDG_DATA_HOME/ferry`, else `$HOME/.local/share/ferry` (empty variables count as unset).
pub fn default_home() -> Result<PathBuf, IdentityError> {
    home_from(|name| std::env::var_os(name))
}

/// [`default_home`] with the environment passed in, so tests need not change it.
fn home_from(var: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, IdentityError> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty());
    if let Some(home) = set("FERRY_HOME") {
        return Ok(PathBuf::from(home));
    }
    // The XDG spec says relative paths in its variables are invalid and must be ignored.
    if let Some(data) = set("XDG_DATA_HOME").map(PathBuf::from) {
        if data.is_absolute() {
            return Ok(data.join("ferry"));
        }
    }
    if let Some(home) = set("HOME") {
        return Ok(PathBuf::from(home).join(".local/share/ferry"));
    }
    Err(IdentityError::NoHome)
}

fn exists(path: &Path) -> Result<bool, IdentityError> {
    path.try_exists()
        .map_err(|e| IdentityError::io("inspect", path, e))
}

fn load(key_path: &Path, cert_path: &Path) -> Result<Identity, IdentityError> {
    let meta = fs::metadata(key_path).map_err(|e| IdentityError::io("inspect", key_path, e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::KeyPermissions {
            path: key_path.to_path_buf(),
            mode,
        });
    }
    let key_pem = fs::read(key_path).map_err(|e| IdentityError::io("read", key_path, e))?;
    let key = PrivatePkcs8KeyDer::from_pem_slice(&key_pem).map_err(|e| IdentityError::BadPem {
        path: key_path.to_path_buf(),
        what: "PKCS#8 private key",
        reason: e.to_string(),
    })?;
    let cert_pem = fs::read(cert_path).map_err(|e| IdentityError::io("read", cert_path, e))?;
    let cert = CertificateDer::from_pem_slice(&cert_pem).map_err(|e| IdentityError::BadPem {
        path: cert_path.to_path_buf(),
        what: "certificate",
        reason: e.to_string(),
    })?;
    Identity::from_parts(cert, key, key_path, cert_path)
}

fn create(home: &Path, key_path: &Path, cert_path: &Path) -> Result<Identity, IdentityError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(home)
        .map_err(|e| IdentityError::io("create directory", home, e))?;

    let key_pair = KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(IdentityError::Generate)?;
    let mut params =
        CertificateParams::new(vec!["ferry".to_string()]).map_err(IdentityError::Generate)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "ferry node");
    params.distinguished_name = name;
    // Peers pin the certificate itself, so it must never expire under them.
    params.not_before = rcgen::date_time_ymd(1975, 1, 1);
    params.not_after = rcgen::date_time_ymd(4096, 1, 1);
    let cert = params
        .self_signed(&key_pair)
        .map_err(IdentityError::Generate)?;

    let identity = Identity::from_parts(
        cert.der().clone(),
        PrivatePkcs8KeyDer::from(key_pair.serialize_der()),
        key_path,
        cert_path,
    )?;

    // The key goes in first: a crash between the two renames leaves a key without its
    // certificate, which the next start reports rather than silently replacing.
    write_new(home, key_path, key_pair.serialize_pem().as_bytes())?;
    write_new(home, cert_path, cert.pem().as_bytes())?;
    // Make the renames durable; some file systems cannot sync a directory, and the files
    // themselves are already synced, so a failure here is not worth refusing to start.
    if let Ok(dir) = File::open(home) {
        let _ = dir.sync_all();
    }
    Ok(identity)
}

/// Writes `contents` to `path` (mode 0600) through a temporary file renamed into place,
/// so `path` never holds a partial file.
fn write_new(home: &Path, path: &Path, contents: &[u8]) -> Result<(), IdentityError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = home.join(format!(".{file_name}.{:016x}.tmp", rand::random::<u64>()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| IdentityError::io("create", &tmp, e))?;
        file.write_all(contents)
            .and_then(|()| file.sync_all())
            .map_err(|e| IdentityError::io("write", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| IdentityError::io("rename into place", path, e))
    })();
    if result.is_err() {
        // Best effort: the temporary name is never read, so a leftover only costs space.
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn create_then_load_gives_the_same_identity() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("a/ferry");
        let (created, was_created) = Identity::load_or_create(&home).unwrap();
        assert!(was_created);
        let (loaded, was_created) = Identity::load_or_create(&home).unwrap();
        assert!(!was_created);
        assert_eq!(created.id(), loaded.id());
        assert_eq!(created.certificate(), loaded.certificate());
        assert_eq!(created.id(), NodeId::of_certificate(loaded.certificate()));
        assert_eq!(
            created.private_key().secret_der(),
            loaded.private_key().secret_der()
        );
        // No temporary files are left behind.
        let mut names: Vec<_> = fs::read_dir(&home)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, [CERT_FILE, KEY_FILE]);
    }

    #[test]
    fn two_homes_give_two_ids() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = Identity::load_or_create(&dir.path().join("a")).unwrap();
        let (b, _) = Identity::load_or_create(&dir.path().join("b")).unwrap();
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn files_and_home_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("parent/ferry");
        Identity::load_or_create(&home).unwrap();
        assert_eq!(mode(&home), 0o700);
        assert_eq!(mode(&dir.path().join("parent")), 0o700);
        assert_eq!(mode(&home.join(KEY_FILE)), 0o600);
        assert_eq!(mode(&home.join(CERT_FILE)), 0o600);
    }

    #[test]
    fn a_key_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("ferry");
        Identity::load_or_create(&home).unwrap();
        let key = home.join(KEY_FILE);
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::load_or_create(&home).unwrap_err();
        assert!(
            matches!(err, IdentityError::KeyPermissions { mode: 0o644, .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("node.key") && msg.contains("0644"), "{msg}");
        assert!(msg.contains("chmod 600"), "{msg}");
    }

    #[test]
    fn a_certificate_of_another_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        Identity::load_or_create(&a).unwrap();
        Identity::load_or_create(&b).unwrap();
        fs::copy(b.join(CERT_FILE), a.join(CERT_FILE)).unwrap();
        let err = Identity::load_or_create(&a).unwrap_err();
        assert!(matches!(err, IdentityError::Mismatch { .. }), "{err}");
        assert!(err.to_string().contains("does not belong"), "{err}");
    }

    #[test]
    fn a_missing_half_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("ferry");
        Identity::load_or_create(&home).unwrap();
        let cert = fs::read(home.join(CERT_FILE)).unwrap();

        fs::remove_file(home.join(CERT_FILE)).unwrap();
        let err = Identity::load_or_create(&home).unwrap_err();
        assert!(
            matches!(err, IdentityError::MissingCertificate { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("node.crt is missing"), "{err}");

        fs::write(home.join(CERT_FILE), cert).unwrap();
        fs::remove_file(home.join(KEY_FILE)).unwrap();
        let err = Identity::load_or_create(&home).unwrap_err();
        assert!(matches!(err, IdentityError::MissingKey { .. }), "{err}");
        assert!(err.to_string().contains("node.key is missing"), "{err}");
    }

    #[test]
    fn garbage_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("ferry");
        Identity::load_or_create(&home).unwrap();
        let cert = fs::read(home.join(CERT_FILE)).unwrap();

        fs::write(home.join(CERT_FILE), "not a certificate\n").unwrap();
        let err = Identity::load_or_create(&home).unwrap_err();
        assert!(
            matches!(
                err,
                IdentityError::BadPem {
                    what: "certificate",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("node.crt"), "{err}");

        fs::write(home.join(CERT_FILE), cert).unwrap();
        fs::write(
            home.join(KEY_FILE),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = Identity::load_or_create(&home).unwrap_err();
        assert!(matches!(err, IdentityError::BadPem { .. }), "{err}");
        assert!(err.to_string().contains("node.key"), "{err}");
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, _) = Identity::load_or_create(dir.path()).unwrap();
        let debug = format!("{identity:?}");
        assert!(debug.contains(&identity.id().to_string()), "{debug}");
        assert!(!debug.contains("key"), "{debug}");
    }

    #[test]
    fn home_follows_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            home_from(env(&[
                ("FERRY_HOME", "/f"),
                ("XDG_DATA_HOME", "/x"),
                ("HOME", "/h")
            ]))
            .unwrap(),
            PathBuf::from("/f")
        );
        assert_eq!(
            home_from(env(&[
                ("FERRY_HOME", ""),
                ("XDG_DATA_HOME", "/x"),
                ("HOME", "/h")
            ]))
            .unwrap(),
            PathBuf::from("/x/ferry")
        );
        assert_eq!(
            home_from(env(&[("XDG_DATA_HOME", "rel"), ("HOME", "/h")])).unwrap(),
            PathBuf::from("/h/.local/share/ferry")
        );
        assert_eq!(
            home_from(env(&[("HOME", "/h")])).unwrap(),
            PathBuf::from("/h/.local/share/ferry")
        );
        assert!(matches!(
            home_from(env(&[("HOME", "")])),
            Err(IdentityError::NoHome)
        ));
    }
}
