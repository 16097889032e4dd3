//! The auth dance: `WWW-Authenticate` challenges, and the `Authorization`
//! value for a host and scope — Basic credentials, or a Bearer token from
//! the realm (anonymous, basic credentials or an OAuth2 refresh token),
//! cached per host and scope.

use std::collections::HashMap;

use crate::auth::Credential;
use crate::error::RegistryError;

use super::response::error_detail;
use super::url::{url_encode, url_host};
use super::{Challenge, Client, Target, lock};

/// Parses `Bearer realm="…",service="…"` / `Basic realm="…"`.
pub(super) fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        params.insert(key.trim().to_ascii_lowercase(), value);
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service").unwrap_or_default(),
    })
}

impl Client {
    /// The `Authorization` value to send to `host` for `scope`, if known.
    pub(super) fn authorization(
        &self,
        host: &str,
        scope: &str,
    ) -> Result<Option<String>, RegistryError> {
        let challenge = lock(&self.inner.challenges).get(host).cloned();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.basic(host)?),
            Some(Challenge::Bearer { .. }) => Ok(lock(&self.inner.tokens)
                .get(&(host.to_owned(), scope.to_owned()))
                .cloned()),
        }
    }

    pub(super) fn basic(&self, host: &str) -> Result<Option<String>, RegistryError> {
        use base64::Engine as _;
        Ok(match self.inner.auth.credential(host)? {
            Some(Credential::Basic { username, password }) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            _ => None,
        })
    }

    /// Answers a challenge: gets a token (Bearer) or checks there are
    /// credentials (Basic).
    pub(super) fn authenticate(
        &self,
        t: &Target<'_>,
        scope: &str,
        challenge: Challenge,
    ) -> Result<(), RegistryError> {
        lock(&self.inner.challenges).insert(t.host.to_owned(), challenge.clone());
        let Challenge::Bearer { realm, service } = challenge else {
            return Ok(());
        };
        let cred = self.inner.auth.credential(t.host)?;
        let mut query = vec![format!("service={}", url_encode(&service))];
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            query.push(format!("scope={}", url_encode(s)));
        }
        let realm_host = url_host(&realm).to_owned();
        let agent = self.agent(&realm_host)?;
        let unauthorized = |detail: String| RegistryError::Unauthorized {
            host: t.host.to_owned(),
            repository: t.repo.to_owned(),
            detail,
        };
        let mut resp = match &cred {
            Some(Credential::IdentityToken { token, .. }) => {
                let mut form = vec![
                    ("grant_type".to_owned(), "refresh_token".to_owned()),
                    ("refresh_token".to_owned(), token.clone()),
                    ("service".to_owned(), service.clone()),
                    ("client_id".to_owned(), "kiln".to_owned()),
                ];
                if !scope.is_empty() {
                    form.push(("scope".to_owned(), scope.to_owned()));
                }
                agent.post(&realm).send_form(form)
            }
            _ => {
                let url = format!(
                    "{realm}{}{}",
                    if realm.contains('?') { "&" } else { "?" },
                    query.join("&")
                );
                let mut req = agent.get(&url);
                if let Some(Credential::Basic { username, .. }) = &cred {
                    req = req.query("account", username);
                }
                if let Some(b) = self.basic(t.host)? {
                    req = req.header("Authorization", &b);
                }
                req.call()
            }
        }
        .map_err(|e| self.transport_error(&realm_host, &e))?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(unauthorized(format!(
                "the token service {realm} refused the credentials: {}",
                error_detail(&mut resp)
            )));
        }
        if status != 200 {
            return Err(RegistryError::Status {
                host: realm_host,
                method: "GET".to_owned(),
                path: realm.clone(),
                status,
                detail: error_detail(&mut resp),
            });
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| self.transport_error(&realm_host, &e))?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                host: realm_host.clone(),
                detail: format!("token response: {e}"),
            })?;
        let token = v["token"]
            .as_str()
            .or_else(|| v["access_token"].as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Protocol {
                host: realm_host.clone(),
                detail: "token response without a token".to_owned(),
            })?;
        lock(&self.inner.tokens).insert(
            (t.host.to_owned(), scope.to_owned()),
            format!("Bearer {token}"),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: "registry.docker.io".into()
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="basic-realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }
}
