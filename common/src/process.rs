//! What every rlvr binary does before its work: logging, and stopping on signals.

use tokio_util::sync::CancellationToken;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (on a terminal).
    #[default]
    Text,
    /// One JSON object per line (for Kubernetes log collectors).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("log format `{other}`: use `text` or `json`")),
        }
    }
}

/// Installs the tracing subscriber on stderr: `RUST_LOG` filters (default `info`).
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second init (tests) is not an error.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT (the process then stops at its next safe point);
/// a second signal exits at once. Call inside a tokio runtime.
pub fn stop_on_signals(shutdown: CancellationToken, what: &'static str) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                return;
            }
        };
        let signal = tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        eprintln!("{signal}: {what} stops at its next safe point (send it again to exit at once)");
        shutdown.cancel();
        let signal = tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        eprintln!("{signal} again: exiting now");
        std::process::exit(130);
    });
}

/// With `RLVR_PARSE_ONLY` set in the environment, prints the parsed command line and returns true, and
/// the binary then exits without doing anything: the deployment checks run every container's command
/// and args through the real parser this way (a bad argument still exits 2 with clap's message).
pub fn parse_only(parsed: &impl std::fmt::Debug) -> bool {
    if std::env::var_os("RLVR_PARSE_ONLY").is_none() {
        return false;
    }
    println!("{parsed:#?}");
    true
}

/// Why a [`probe`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("`{0}` is not an http://host:port/path URL")]
    Url(String),
    #[error("{url}: {stage} failed after {elapsed:?}: {source}")]
    Io { url: String, stage: &'static str, elapsed: std::time::Duration, source: std::io::Error },
    #[error("{url} answered `{status}`")]
    Status { url: String, status: String },
}

/// One HTTP/1.0 GET of `url` (plain `http://`, the address given as `host:port`), succeeding on a 2xx
/// status within `timeout`. The container images hold no curl: their healthchecks run
/// `rlvr probe http://127.0.0.1:PORT/readyz` (or `rlvr-verifier probe …`) instead.
pub fn probe(url: &str, timeout: std::time::Duration) -> Result<(), ProbeError> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let started = std::time::Instant::now();
    let bad_url = || ProbeError::Url(url.to_string());
    let rest = url.strip_prefix("http://").ok_or_else(bad_url)?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let io = |stage: &'static str| {
        move |source: std::io::Error| ProbeError::Io { url: url.to_string(), stage, elapsed: started.elapsed(), source }
    };
    let addr = authority.to_socket_addrs().map_err(|_| bad_url())?.next().ok_or_else(bad_url)?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(io("connect"))?;
    stream.set_read_timeout(Some(timeout)).map_err(io("connect"))?;
    stream.set_write_timeout(Some(timeout)).map_err(io("connect"))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n").map_err(io("request"))?;
    // The status line is all a probe needs; a few hundred bytes hold it.
    let mut head = [0u8; 256];
    let mut filled = 0;
    while filled < head.len() && !head[..filled].contains(&b'\n') {
        match stream.read(&mut head[filled..]).map_err(io("response"))? {
            0 => break,
            n => filled += n,
        }
    }
    let line = String::from_utf8_lossy(&head[..filled]);
    let status = line.lines().next().unwrap_or("").trim().to_string();
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if status.starts_with("HTTP/") && code.len() == 3 && code.starts_with('2') {
        Ok(())
    } else {
        Err(ProbeError::Status { url: url.to_string(), status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;

    /// Serves one connection with `response`, returning the URL to probe.
    fn serve_once(response: &'static str) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 512];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(response.as_bytes());
        });
        format!("http://{addr}/readyz")
    }

    #[test]
    fn probe_accepts_2xx_only() {
        probe(&serve_once("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"), Duration::from_secs(5)).unwrap();
        let err = probe(&serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n"), Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, ProbeError::Status { ref status, .. } if status.contains("503")), "{err}");
        let err = probe(&serve_once("garbage"), Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, ProbeError::Status { .. }), "{err}");
        assert!(matches!(probe("https://x:1/", Duration::from_secs(1)), Err(ProbeError::Url(_))));
        assert!(matches!(probe("http://no-port/", Duration::from_secs(1)), Err(ProbeError::Url(_))));
    }

    #[test]
    fn probe_of_a_closed_port_names_the_stage() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = probe(&format!("http://127.0.0.1:{port}/healthz"), Duration::from_secs(2)).unwrap_err();
        assert!(err.to_string().contains("connect failed"), "{err}");
    }
}
