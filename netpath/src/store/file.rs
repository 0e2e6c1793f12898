//! The spec file as a store: read once per version, looked at cheaply (its
//! identity) every few hundred milliseconds, and read again only when its bytes
//! changed or the agent asks (SIGHUP).
use std::{
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use tokio::sync::{mpsc, Notify};

use super::{Store, StoreKind, Update};
use crate::spec::{ClusterSpec, SpecError};

/// How often the file is looked at (a change reaches the maps well within 1 s).
const WATCH_EVERY: Duration = Duration::from_millis(200);

type Result<T> = std::result::Result<T, SpecError>;

/// A spec as read, with the records left out of it (each named with its field).
pub type Read = (ClusterSpec, Vec<String>);

pub struct SpecFile {
    pub path: PathBuf,
    /// Digest of the bytes last read (a 100 000-node spec is MBs).
    digest: u64,
    /// The file's identity when last read: unchanged, it is not read again.
    stamp: Option<FileStamp>,
}

impl SpecFile {
    /// Reads and validates the file: the spec (with what was left out of it), and
    /// the watcher that knows this version.
    pub fn open(path: &Path) -> Result<(Self, Read)> {
        let mut file = Self {
            path: path.to_path_buf(),
            digest: 0,
            stamp: None,
        };
        let spec = file.read()?;
        Ok((file, spec))
    }

    /// Reads the current version (once: the bytes read are the bytes parsed).
    pub fn read(&mut self) -> Result<Read> {
        // Stamp, then read: a change in between is seen on the next look.
        self.stamp = FileStamp::of(&self.path);
        let bytes = std::fs::read(&self.path);
        self.digest = bytes.as_deref().map_or(0, digest);
        let bytes = bytes.map_err(|error| SpecError::Read {
            path: self.path.clone(),
            error,
        })?;
        parse(&self.path, &bytes)
    }

    /// A version other than the one last read, parsed (`None`: none). Missing or
    /// unreadable counts as a new version whose reading failed.
    pub fn poll(&mut self) -> Option<Result<Read>> {
        let stamp = FileStamp::of(&self.path);
        if stamp.is_some() && stamp == self.stamp {
            return None;
        }
        self.stamp = stamp;
        match std::fs::read(&self.path) {
            Ok(bytes) if digest(&bytes) == self.digest => None,
            Ok(bytes) => {
                self.digest = digest(&bytes);
                Some(parse(&self.path, &bytes))
            }
            Err(error) => {
                self.digest = 0;
                Some(Err(SpecError::Read {
                    path: self.path.clone(),
                    error,
                }))
            }
        }
    }
}

/// Parses the spec on a thread of its own and keeps a copy made here. Parsing a large
/// spec allocates many times what it yields; the copy lands compactly in this thread's
/// heap and the parser's heap is freed whole, so the agent's memory follows the spec's
/// size (what a 100 000-node cluster costs), not the parser's peak.
fn parse(path: &Path, bytes: &[u8]) -> Result<Read> {
    let (parsed, left_out) = std::thread::scope(|s| {
        s.spawn(|| {
            ClusterSpec::from_bytes_admitting(path, bytes).map(|(spec, n)| (Box::new(spec), n))
        })
        .join()
        .map_err(|_| SpecError::Parse {
            path: path.to_path_buf(),
            message: "the spec parser panicked".into(),
        })
    })??;
    Ok((ClusterSpec::clone(&parsed), left_out))
}

/// The spec file followed: the first read in hand, then every new version sent.
pub struct FileStore {
    file: SpecFile,
    first: Read,
}

impl FileStore {
    /// Reads and checks the file: a bad one is an error here, with its field.
    pub fn open(path: &Path) -> Result<Self> {
        let read = std::time::Instant::now();
        let (file, first) = SpecFile::open(path)?;
        // A big cluster takes a while from here on: say early what it is.
        tracing::info!(
            "cluster spec {}: {} nodes, {} services, read in {:.1} s",
            path.display(),
            first.0.nodes.len(),
            first.0.services.len(),
            read.elapsed().as_secs_f64()
        );
        Ok(Self { file, first })
    }

    async fn follow(mut self, tx: mpsc::Sender<Update>, reread: Arc<Notify>) {
        let mut watch = tokio::time::interval(WATCH_EVERY);
        loop {
            let read = tokio::select! {
                _ = watch.tick() => match self.file.poll() {
                    Some(read) => read,
                    None => continue,
                },
                () = reread.notified() => self.file.read(),
            };
            let update = match read {
                Ok((spec, left_out)) => Update::Spec(spec, left_out),
                Err(e) => Update::Refused(e.to_string()),
            };
            if tx.send(update).await.is_err() {
                return;
            }
        }
    }
}

impl Store for FileStore {
    fn kind(&self) -> StoreKind {
        StoreKind::File
    }

    fn spec(&self) -> std::result::Result<Read, super::Error> {
        Ok(self.first.clone())
    }

    fn lost(&self) -> Option<String> {
        None
    }

    fn run(
        self: Box<Self>,
        tx: mpsc::Sender<Update>,
        reread: Arc<Notify>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(self.follow(tx, reread))
    }
}

fn digest(bytes: &[u8]) -> u64 {
    crate::files::fnv1a(bytes.iter().copied())
}

/// What tells a file's versions apart without reading it: a rename-into-place gives a
/// new inode, an edit a new modification time or length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    len: u64,
    modified: std::time::SystemTime,
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            ino: m.ino(),
            len: m.len(),
            modified: m.modified().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_read_once_and_a_change_is_seen() {
        let dir = std::env::temp_dir().join(format!("netpath-specfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("spec.toml");
        std::fs::write(&path, crate::spec::DEFAULT_SPEC).unwrap();
        let (mut f, (spec, _)) = SpecFile::open(&path).unwrap();
        assert_eq!(spec.nodes.len(), 3);
        assert!(f.poll().is_none(), "same version");
        // Same bytes through a rename: a new inode, but not a new version.
        crate::files::write_atomic(&path, crate::spec::DEFAULT_SPEC.as_bytes(), false).unwrap();
        assert!(f.poll().is_none(), "same bytes");
        let edited = crate::spec::DEFAULT_SPEC.replace("vni = 1", "vni = 7");
        assert_ne!(
            edited,
            crate::spec::DEFAULT_SPEC,
            "the default spec sets vni"
        );
        crate::files::write_atomic(&path, edited.as_bytes(), false).unwrap();
        assert_eq!(f.poll().unwrap().unwrap().0.settings.vni, 7);
        assert!(f.poll().is_none());
        std::fs::remove_file(&path).unwrap();
        assert!(
            f.poll().unwrap().is_err(),
            "a missing file is a failed version"
        );
        assert!(f.read().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
