//! The judge hook: an OpenAI-compatible chat endpoint (`POST {url}/chat/completions`) asked to grade
//! a response as CORRECT, INCORRECT or NOT_ATTEMPTED (SimpleQA's grader labels). Plain HTTP only
//! (a judge runs beside the verifier, e.g. a vLLM server in the same pod or cluster).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JudgeLabel {
    Correct,
    Incorrect,
    NotAttempted,
}

/// Anything that can grade a response.
pub trait Judge: Send + Sync {
    fn judge(&self, question: &str, response: &str, accepted: &[String]) -> Result<JudgeLabel, String>;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JudgeConfig {
    /// Base URL, e.g. `http://judge:8000/v1`.
    pub url: String,
    pub model: String,
    /// Name of the environment variable holding a bearer token, if the endpoint needs one.
    pub api_key_env: Option<String>,
    pub timeout_ms: u64,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig { url: String::new(), model: "judge".into(), api_key_env: None, timeout_ms: 30_000 }
    }
}

#[derive(Debug, Clone)]
pub struct HttpJudge {
    cfg: JudgeConfig,
}

impl HttpJudge {
    pub fn new(cfg: JudgeConfig) -> Self {
        HttpJudge { cfg }
    }

    fn prompt(question: &str, response: &str, accepted: &[String]) -> String {
        format!(
            "Grade the predicted answer against the gold answers.\nQuestion: {question}\nGold answers: {}\n\
             Predicted answer: {response}\n\nReply with exactly one word: CORRECT (it gives a gold answer without \
             contradicting it), INCORRECT (it gives a different answer), or NOT_ATTEMPTED (it declines or does not \
             commit to an answer).",
            accepted.join(" | ")
        )
    }

    fn post(&self, path: &str, body: &str) -> Result<String, String> {
        let rest = self.cfg.url.strip_prefix("http://").ok_or("judge url must start with http://")?;
        let (host_port, base_path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let timeout = Duration::from_millis(self.cfg.timeout_ms.max(1));
        let addr = host_port
            .to_socket_addrs()
            .map_err(|e| format!("while resolving {host_port}: {e}"))?
            .next()
            .ok_or("judge host has no address")?;
        let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("while connecting: {e}"))?;
        stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        let auth = match self.cfg.api_key_env.as_deref().and_then(|k| std::env::var(k).ok()) {
            Some(key) => format!("Authorization: Bearer {key}\r\n"),
            None => String::new(),
        };
        let req = format!(
            "POST {base_path}{path} HTTP/1.1\r\nHost: {host_port}\r\nContent-Type: application/json\r\n{auth}\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(req.as_bytes()).map_err(|e| format!("while sending: {e}"))?;
        let mut buf = Vec::new();
        stream.take(8 << 20).read_to_end(&mut buf).map_err(|e| format!("while reading: {e}"))?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n").ok_or("malformed HTTP response")?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            return Err(format!("judge answered {}", head.lines().next().unwrap_or("")));
        }
        Ok(body.to_string())
    }
}

impl Judge for HttpJudge {
    fn judge(&self, question: &str, response: &str, accepted: &[String]) -> Result<JudgeLabel, String> {
        let body = serde_json::json!({
            "model": self.cfg.model,
            "temperature": 0,
            "max_tokens": 8,
            "messages": [{ "role": "user", "content": Self::prompt(question, response, accepted) }],
        });
        let raw = self.post("/chat/completions", &body.to_string())?;
        // Chunked bodies are not expected with Content-Length replies; take the JSON object.
        let json_start = raw.find('{').ok_or("judge reply has no JSON")?;
        let json_end = raw.rfind('}').ok_or("judge reply has no JSON")?;
        let v: serde_json::Value =
            serde_json::from_str(&raw[json_start..=json_end]).map_err(|e| format!("judge reply: {e}"))?;
        let content = v["choices"][0]["message"]["content"].as_str().unwrap_or("").to_uppercase();
        if content.contains("NOT_ATTEMPTED") || content.contains("NOT ATTEMPTED") {
            Ok(JudgeLabel::NotAttempted)
        } else if content.contains("INCORRECT") {
            Ok(JudgeLabel::Incorrect)
        } else if content.contains("CORRECT") {
            Ok(JudgeLabel::Correct)
        } else {
            Err(format!("judge gave no label: {content:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn talks_to_an_openai_compatible_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 8192];
            let n = s.read(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let body = r#"{"choices":[{"message":{"role":"assistant","content":"NOT_ATTEMPTED"}}]}"#;
            let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            s.write_all(resp.as_bytes()).unwrap();
            req
        });
        let judge = HttpJudge::new(JudgeConfig { url: format!("http://{addr}/v1"), ..JudgeConfig::default() });
        let label = judge.judge("q?", "hmm", &["x".into()]).unwrap();
        assert_eq!(label, JudgeLabel::NotAttempted);
        let req = server.join().unwrap();
        assert!(req.starts_with("POST /v1/chat/completions HTTP/1.1"));
    }
}
