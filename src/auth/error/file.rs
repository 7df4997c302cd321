//! Naming a credentials file in a message: its path, how the proxy came to read it (so the
//! user knows which setting or variable to change), and what is wrong with the file as a
//! whole: it cannot be read, or it is not a credential at all.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::Origin;

/// How the credential was found: the ADC order, and which layer gave `credentials`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FoundBy {
    /// The `credentials` setting (a file, or `gcloud`), from this layer.
    Setting(Origin),
    /// `GOOGLE_APPLICATION_CREDENTIALS`.
    ApplicationCredentials,
    /// gcloud's application default credentials file.
    AdcFile,
    /// Nothing else was found and a metadata server answered.
    MetadataServer,
}

/// The variable of Google's libraries that names a credentials file.
pub(crate) const APPLICATION_CREDENTIALS: &str = "GOOGLE_APPLICATION_CREDENTIALS";

impl fmt::Display for FoundBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FoundBy::Setting(Origin::Default) => f.write_str("the credentials setting"),
            FoundBy::Setting(origin) => write!(f, "{origin}"),
            FoundBy::ApplicationCredentials => f.write_str(APPLICATION_CREDENTIALS),
            FoundBy::AdcFile => f.write_str("gcloud's application default credentials"),
            FoundBy::MetadataServer => f.write_str("metadata server probe"),
        }
    }
}

impl FoundBy {
    /// What to change so that another file is read.
    pub(crate) fn how_to_change(&self) -> String {
        match self {
            FoundBy::Setting(origin) => format!("{} (credentials)", origin.how_to_change()),
            FoundBy::ApplicationCredentials => format!(
                "point {APPLICATION_CREDENTIALS} at the right file, or unset it\n\
                 so that the proxy looks further (gcloud's ADC file, the metadata server)"
            ),
            FoundBy::AdcFile => "run `gcloud auth application-default login` again".into(),
            FoundBy::MetadataServer => "pass --credentials FILE".into(),
        }
    }
}

#[cfg(test)]
impl FoundBy {
    /// `--credentials`, for tests that read a file.
    pub(crate) fn flag() -> FoundBy {
        FoundBy::Setting(Origin::Flag("credentials"))
    }
}

/// A credentials file as messages name it: `credentials file PATH (from ORIGIN)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredPath {
    pub(crate) path: PathBuf,
    pub(crate) found_by: FoundBy,
}

impl fmt::Display for CredPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "credentials file {} (from {})",
            self.path.display(),
            self.found_by
        )
    }
}

/// Why a credentials file could not be read. Each says it once: no io error is kept as a
/// `source` as well, which would print it twice.
#[derive(Debug, thiserror::Error)]
pub enum FileAccess {
    #[error("does not exist")]
    Missing,
    #[error("is a directory, not a file")]
    Directory,
    /// The file's owner and mode and the process's ids, when they could be read.
    #[error("cannot be read: permission denied{}", denied_detail(.file, .process))]
    Denied {
        file: Option<Owner>,
        process: Option<Ids>,
    },
    #[error("cannot be read: {0}")]
    Other(std::io::Error),
}

/// A file's owner and permission bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mode: u32,
}

/// The uid and gid this process runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl FileAccess {
    /// Reads the owner of `path` and this process's ids for the permission case (gcloud
    /// writes keys 0600 for the user, and the container image runs as uid 65532).
    pub(crate) fn of(path: &Path, error: std::io::Error) -> FileAccess {
        match error.kind() {
            std::io::ErrorKind::NotFound => FileAccess::Missing,
            std::io::ErrorKind::IsADirectory => FileAccess::Directory,
            std::io::ErrorKind::PermissionDenied => FileAccess::Denied {
                file: std::fs::metadata(path).ok().map(|m| Owner {
                    uid: m.uid(),
                    gid: m.gid(),
                    mode: m.mode() & 0o7777,
                }),
                // /proc/self belongs to the process's effective ids: no libc call needed.
                process: std::fs::metadata("/proc/self").ok().map(|m| Ids {
                    uid: m.uid(),
                    gid: m.gid(),
                }),
            },
            _ => FileAccess::Other(error),
        }
    }
}

/// `.\nIt belongs to uid U (gid G) with mode M, and iap-proxy runs as uid P (gid Q)`, as
/// much of it as is known.
fn denied_detail(file: &Option<Owner>, process: &Option<Ids>) -> String {
    let owner = file.map(|o| {
        format!(
            "it belongs to uid {} (gid {}) with mode {:04o}",
            o.uid, o.gid, o.mode
        )
    });
    let me = process.map(|p| format!("iap-proxy runs as uid {} (gid {})", p.uid, p.gid));
    let said: Vec<String> = owner.into_iter().chain(me).collect();
    match said.join(", and ") {
        s if s.is_empty() => s,
        s => format!(".\n{}{}", s[..1].to_uppercase(), &s[1..]),
    }
}

/// A file that is some other Google artefact, not a credential. Each message says what it
/// is and which command makes the file the proxy needs. None quotes the content.
#[derive(Debug, thiserror::Error)]
pub enum WrongFile {
    #[error(
        "is an OAuth client secret file (its top-level key is `{section}`{}), not a credential:\n\
         it identifies an application, not an account that can get ID tokens.\n\
         Make a credential instead:\n\
         {NOT_FOUND_FIXES}\n  \
         - or sign in through this very OAuth client: \
         `gcloud auth application-default login --client-id-file=FILE`",
        .client_id.as_deref().map(|id| format!(", client {id}")).unwrap_or_default()
    )]
    OAuthClientSecret {
        /// `installed` (desktop app) or `web`.
        section: &'static str,
        /// The client's ID (an identifier, not a secret), when it has the shape of one.
        client_id: Option<String>,
    },
    #[error(
        "holds an OAuth access token (ya29.…), not a credential:\n\
         IAP needs an ID token, which the proxy mints (and renews) itself from a credential;\n\
         an access token also expires within the hour. Give it a credential instead:\n\
         {NOT_FOUND_FIXES}"
    )]
    AccessToken,
    #[error(
        "holds a token (a JWT, as `gcloud auth print-identity-token` prints), not a credential:\n\
         it expires within the hour and cannot be renewed.\n\
         Give the proxy what mints such tokens:\n\
         {NOT_FOUND_FIXES}"
    )]
    Jwt,
}

/// What gives the proxy a credential, one `  - …` line each: the fixes offered when none
/// is found, or when a file is something else.
pub(crate) const NOT_FOUND_FIXES: &str = "  - `gcloud auth application-default login` (then --impersonate-service-account SA, see README)\n  \
     - `gcloud iam service-accounts keys create key.json \\\n        \
     --iam-account=SA@PROJECT.iam.gserviceaccount.com`, then --credentials key.json\n  \
     - --credentials gcloud, to use the gcloud CLI's login\n  \
     - run on Google Cloud (GCE, GKE, Cloud Run), where the metadata server provides credentials";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_permission_details_are_named() {
        let file = CredPath {
            path: PathBuf::from("/key.json"),
            found_by: FoundBy::ApplicationCredentials,
        };
        assert_eq!(
            file.to_string(),
            "credentials file /key.json (from GOOGLE_APPLICATION_CREDENTIALS)"
        );
        let flag = FoundBy::Setting(Origin::Flag("credentials"));
        assert_eq!(flag.to_string(), "--credentials");
        assert!(flag.how_to_change().contains("--credentials"));
        assert!(
            FoundBy::ApplicationCredentials
                .how_to_change()
                .contains("unset it")
        );
        let denied = FileAccess::Denied {
            file: Some(Owner {
                uid: 1000,
                gid: 1000,
                mode: 0o600,
            }),
            process: Some(Ids {
                uid: 65532,
                gid: 65532,
            }),
        };
        assert_eq!(
            denied.to_string(),
            "cannot be read: permission denied.\nIt belongs to uid 1000 (gid 1000) with mode 0600, \
             and iap-proxy runs as uid 65532 (gid 65532)"
        );
    }

    /// The owner and mode come from the file itself and the ids from the process (a
    /// refused read cannot be provoked as root, so the io error is made here).
    #[test]
    fn permission_denied_reads_the_owner_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.json");
        std::fs::write(&key, "{}").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let FileAccess::Denied { file, process } = FileAccess::of(&key, denied) else {
            panic!("not Denied");
        };
        assert_eq!(file.map(|o| o.mode), Some(0o600));
        let me = std::fs::metadata("/proc/self").unwrap();
        assert_eq!(process.map(|p| p.uid), Some(me.uid()));
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert!(matches!(FileAccess::of(&key, missing), FileAccess::Missing));
    }
}
