//! A node's WireGuard key pair: made at its first start, the private half kept 0600
//! in the node's state dir across restarts, the public half published as WireGuard
//! prints it (base64 of 32 bytes).
use std::{fmt, path::Path, str::FromStr};

use base64::{engine::general_purpose::STANDARD, Engine};
use boringtun::x25519;

/// Where the private key lives, under the state dir.
pub const PRIVATE_FILE: &str = "wireguard/private.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0:?} is not a WireGuard key: {1}")]
    Malformed(String, &'static str),
    #[error("the private key {path}: {why}")]
    File { path: String, why: String },
}

/// A public key: a peer's identity.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode(s).map(PublicKey)
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn decode(s: &str) -> Result<[u8; 32], KeyError> {
    let bad = |why| KeyError::Malformed(s.to_string(), why);
    let bytes = STANDARD.decode(s.trim()).map_err(|_| bad("not base64"))?;
    bytes.try_into().map_err(|_| bad("not 32 bytes"))
}

/// A private key and its public half.
#[derive(Clone)]
pub struct KeyPair {
    pub private: x25519::StaticSecret,
    pub public: PublicKey,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({})", self.public)
    }
}

impl KeyPair {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        getrandom(&mut bytes);
        Self::from_private(bytes)
    }

    pub fn from_private(bytes: [u8; 32]) -> Self {
        let private = x25519::StaticSecret::from(bytes);
        let public = PublicKey(x25519::PublicKey::from(&private).to_bytes());
        Self { private, public }
    }

    pub fn private_base64(&self) -> String {
        STANDARD.encode(self.private.to_bytes())
    }

    /// The node's key pair: read from `state_dir`, or made and written there (0600)
    /// when it has none yet.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, KeyError> {
        let path = state_dir.join(PRIVATE_FILE);
        let err = |why: String| KeyError::File {
            path: path.display().to_string(),
            why,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => return decode(&text).map(Self::from_private),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e.to_string())),
        }
        let pair = Self::generate();
        pair.save(state_dir)?;
        Ok(pair)
    }

    /// Writes the private key (0600, atomically: a reader never sees half a key).
    pub fn save(&self, state_dir: &Path) -> Result<(), KeyError> {
        let path = state_dir.join(PRIVATE_FILE);
        let err = |e: std::io::Error| KeyError::File {
            path: path.display().to_string(),
            why: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let text = format!("{}\n", self.private_base64());
        crate::files::write_atomic_mode(&path, text.as_bytes(), true, 0o600).map_err(err)
    }

    /// The public key of the key pair kept in `state_dir`, if there is one.
    pub fn public_in(state_dir: &Path) -> Result<Option<PublicKey>, KeyError> {
        let path = state_dir.join(PRIVATE_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(Self::from_private(decode(&text)?).public)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(KeyError::File {
                path: path.display().to_string(),
                why: e.to_string(),
            }),
        }
    }
}

/// Key material from the kernel's random source.
fn getrandom(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: writes at most the rest of `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_pair_is_kept_private_and_read_back_the_same() {
        let dir = tempdir();
        let a = KeyPair::load_or_create(&dir).unwrap();
        let b = KeyPair::load_or_create(&dir).unwrap();
        assert_eq!(a.public, b.public);
        let mode = std::fs::metadata(dir.join(PRIVATE_FILE)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        assert_eq!(KeyPair::public_in(&dir).unwrap(), Some(a.public));
        assert_ne!(KeyPair::generate().public, a.public);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn public_keys_print_and_parse_as_wireguard_does() {
        // RFC 7748's test vector (Alice), in WireGuard's base64.
        let private = STANDARD
            .decode("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=")
            .unwrap();
        let pair = KeyPair::from_private(private.try_into().unwrap());
        assert_eq!(
            pair.public.to_string(),
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
        );
        assert_eq!(
            pair.public.to_string().parse::<PublicKey>().unwrap(),
            pair.public
        );
        assert!("abc".parse::<PublicKey>().is_err());
        assert!("AAAA".parse::<PublicKey>().is_err());
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "netpath-wgkeys-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }
}
