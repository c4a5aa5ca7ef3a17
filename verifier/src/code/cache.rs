//! The compiled-module cache. Compiling a runtime takes tens of seconds, so the compiled code is
//! stored on disk, but loading it means running native code that wasmtime trusts as its own
//! (`Module::deserialize*` is `unsafe`): whoever can write the cache directory could otherwise plant
//! code the verifier runs outside the sandbox. So every entry has a keyed hash beside it
//! (HMAC-SHA256, `<entry>.mac`), computed when we write the entry and checked, over the very file
//! handle that is then mapped, before loading; an entry without a valid hash is compiled afresh.
//!
//! The key is the verifier's, kept apart from the cache: `RLVR_SANDBOX_CACHE_KEY` (64 hex digits, e.g.
//! a Kubernetes secret), else the file `RLVR_SANDBOX_CACHE_KEY_FILE`, else
//! `$XDG_STATE_HOME/rlvr/sandbox-cache.key` or `~/.local/state/rlvr/sandbox-cache.key` (created
//! with mode 0600 on first use). With none of these (no home directory) the key is random per
//! process: entries written then are never trusted by another process.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use wasmtime::{Engine, Module};

use super::sandbox::{SandboxConfig, SandboxError, from_hex, hex, setup_err};

type HmacSha256 = Hmac<Sha256>;

/// The key's length in bytes.
const KEY_BYTES: usize = 32;

/// The compiled module: from the disk cache when it holds an entry for this wasmtime version, runtime
/// checksum and engine settings whose keyed hash checks out; otherwise compiled and stored
/// (atomically, then its hash) for next time.
pub(crate) fn load_module(engine: &Engine, config: &SandboxConfig, bytes: &[u8], sha: &str) -> Result<Module, SandboxError> {
    let dir = match &config.cache_dir {
        Some(d) => d.clone(),
        None => config.runtime.parent().unwrap_or(Path::new(".")).join("compiled"),
    };
    let fuel = if config.fuel { "-fuel" } else { "" };
    let path = dir.join(format!("{}-wasmtime{}{fuel}.cwasm", &sha[..16], wasmtime_version()));
    load_with_key(engine, &path, bytes, cache_key())
}

fn load_with_key(engine: &Engine, path: &Path, bytes: &[u8], key: &[u8]) -> Result<Module, SandboxError> {
    let load = || verified(path, key).and_then(|file| deserialize(engine, file).map_err(|e| format!("{e:#}")));
    if path.exists() {
        match load() {
            Ok(m) => return Ok(m),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "not loading the compiled-module cache entry; compiling"),
        }
    }
    let module = Module::new(engine, bytes).map_err(setup_err)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let stored = module.serialize().map_err(setup_err).and_then(|blob| {
        std::fs::create_dir_all(dir).map_err(setup_err)?;
        let tag = mac_of(key, &blob);
        write_atomically(dir, path, &blob)?;
        write_atomically(dir, &mac_path(path), tag.as_bytes())
    });
    if let Err(e) = stored {
        tracing::warn!(path = %path.display(), error = %e, "could not cache the compiled module");
    }
    // Prefer the cached file: it is memory-mapped, so the code and initial memory image are shared.
    Ok(load().unwrap_or(module))
}

fn mac_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".mac");
    path.with_file_name(name)
}

fn mac_of(key: &[u8], data: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    hex(&mac.finalize().into_bytes())
}

/// The entry, opened once, if its keyed hash matches: the handle returned is the one hashed, so a
/// file renamed over the entry after the check is not the one loaded.
fn verified(path: &Path, key: &[u8]) -> Result<File, String> {
    let want = std::fs::read_to_string(mac_path(path)).map_err(|e| format!("no keyed hash beside it ({e})"))?;
    let want = from_hex(want.trim()).ok_or("its keyed hash is not hex")?;
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        mac.update(&buf[..n]);
    }
    mac.verify_slice(&want).map_err(|_| "its keyed hash does not match (written with another key, or altered)".to_string())?;
    Ok(file)
}

fn write_atomically(dir: &Path, path: &Path, data: &[u8]) -> Result<(), SandboxError> {
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), unique()));
    std::fs::write(&tmp, data).map_err(setup_err)?;
    std::fs::rename(&tmp, path).map_err(setup_err)
}

/// The cache key (see the module documentation), read or made once per process.
fn cache_key() -> &'static [u8] {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    KEY.get_or_init(|| {
        if let Ok(text) = std::env::var("RLVR_SANDBOX_CACHE_KEY") {
            match parse_hex_key(&text) {
                Some(k) => return k,
                None => tracing::warn!("RLVR_SANDBOX_CACHE_KEY is not {KEY_BYTES} bytes of hex; using a per-process key"),
            }
        } else if let Some(path) = key_file() {
            match read_or_create_key(&path) {
                Ok(k) => return k,
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "no usable sandbox cache key; using a per-process key"),
            }
        } else {
            tracing::info!("no home directory for the sandbox cache key; using a per-process key");
        }
        rand::random::<[u8; KEY_BYTES]>().to_vec()
    })
}

fn parse_hex_key(text: &str) -> Option<Vec<u8>> {
    from_hex(text.trim()).filter(|k| k.len() == KEY_BYTES)
}

fn key_file() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("RLVR_SANDBOX_CACHE_KEY_FILE")
        .or_else(|| var("XDG_STATE_HOME").map(|d| d.join("rlvr/sandbox-cache.key")))
        .or_else(|| var("HOME").map(|d| d.join(".local/state/rlvr/sandbox-cache.key")))
}

fn read_or_create_key(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read(path) {
        Ok(k) if k.len() == KEY_BYTES => return Ok(k),
        Ok(k) => {
            return Err(std::io::Error::other(format!("the key file holds {} bytes, not {KEY_BYTES}", k.len())));
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let key = rand::random::<[u8; KEY_BYTES]>();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    match options.open(path) {
        Ok(mut f) => {
            f.write_all(&key)?;
            f.sync_all()?;
            Ok(key.to_vec())
        }
        // Another process made it first.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(path),
        Err(e) => Err(e),
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The version of the wasmtime crate we link (compiled code is only valid for it).
fn wasmtime_version() -> &'static str {
    "48.0.8"
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, file: File) -> wasmtime::Result<Module> {
    // SAFETY: `Module::deserialize_open_file` trusts the file to be wasmtime-compiled code. `file` is
    // the handle whose every byte was just checked against a keyed hash that only a holder of the
    // verifier's key could have written (we write it beside each entry we compile); wasmtime
    // additionally checks its header against this engine's version and configuration.
    unsafe { Module::deserialize_open_file(engine, file) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid module: compiles in microseconds.
    const EMPTY: &[u8] = b"\0asm\x01\0\0\0";

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rlvr-cache-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("m.cwasm")
    }

    #[test]
    fn entries_load_only_with_their_keyed_hash() {
        let engine = Engine::default();
        let (key, other) = ([7u8; KEY_BYTES], [8u8; KEY_BYTES]);
        let path = scratch("mac");
        load_with_key(&engine, &path, EMPTY, &key).expect("compiles and stores");
        assert!(verified(&path, &key).is_ok(), "the entry we wrote verifies");
        assert!(verified(&path, &other).is_err(), "another key's hash does not");

        // A planted entry (here: valid wasmtime code, but not hashed with our key) is not loaded,
        // and the cache is rewritten with a hashed entry of our own.
        let planted = Module::new(&engine, EMPTY).unwrap().serialize().unwrap();
        std::fs::write(&path, &planted).unwrap();
        std::fs::write(mac_path(&path), mac_of(&other, &planted)).unwrap();
        assert!(verified(&path, &key).is_err());
        load_with_key(&engine, &path, EMPTY, &key).expect("recompiles");
        assert!(verified(&path, &key).is_ok());

        // One flipped byte, or no hash file, and the entry is refused.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(verified(&path, &key).unwrap_err().contains("does not match"));
        std::fs::remove_file(mac_path(&path)).unwrap();
        assert!(verified(&path, &key).unwrap_err().contains("no keyed hash"));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn key_files_are_made_once_and_private() {
        let path = scratch("key").with_file_name("k/sandbox-cache.key");
        let a = read_or_create_key(&path).unwrap();
        let b = read_or_create_key(&path).unwrap();
        assert_eq!((a.len(), &a), (KEY_BYTES, &b));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(&path, b"short").unwrap();
        assert!(read_or_create_key(&path).is_err());
        assert_eq!(parse_hex_key(&"ab".repeat(KEY_BYTES)), Some(vec![0xab; KEY_BYTES]));
        assert_eq!(parse_hex_key("abc"), None);
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }
}
