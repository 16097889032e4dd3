//! Reading a registry's responses: headers, the message of an error body,
//! and whether (and when) a status is worth retrying.

use std::time::Duration;

use ureq::http::Response;

pub(super) fn header(resp: &Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The `message` of a registry's JSON error body, or the body itself.
pub(super) fn error_detail(resp: &mut Response<ureq::Body>) -> String {
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 10)
        .read_to_string()
        .unwrap_or_default();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
        && let Some(errors) = v["errors"].as_array()
    {
        let msgs: Vec<String> = errors
            .iter()
            .map(|e| {
                let code = e["code"].as_str().unwrap_or_default();
                let msg = e["message"].as_str().unwrap_or_default();
                if code.is_empty() {
                    msg.to_owned()
                } else {
                    format!("{code}: {msg}")
                }
            })
            .collect();
        if !msgs.is_empty() {
            return msgs.join("; ");
        }
    }
    let t = body.trim();
    if t.is_empty() {
        resp.status()
            .canonical_reason()
            .unwrap_or("no details")
            .to_owned()
    } else {
        t.chars().take(300).collect()
    }
}

pub(super) fn is_retryable(status: u16) -> bool {
    status == 429 || (500..600).contains(&status) && status != 501 && status != 505
}

pub(super) fn retry_after(resp: &Response<ureq::Body>) -> Option<Duration> {
    header(resp, "retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(30)))
}
