//! API tokens: the local default way to authenticate. Only each token's SHA-256 is configured (a file
//! or the environment, YAML or JSON), never the token itself, so the configuration leaks nothing usable.
//! Tokens are random (`cp-api --new-token` prints one with its entry), so a plain hash is enough: there
//! is nothing to guess that a slow hash would protect.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{Principal, Role, Unauthenticated};

/// One configured token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// the token's name, recorded in events beside the subject
    pub name: String,
    /// hex SHA-256 of the token
    pub sha256: String,
    /// who uses it
    pub subject: String,
    /// may register clusters and change the catalog
    #[serde(default)]
    pub platform_admin: bool,
    /// role per project; `*` for every project
    #[serde(default)]
    pub projects: BTreeMap<String, Role>,
}

/// Why the token configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// not in the format
    #[error("API tokens: {0}")]
    Format(String),
    /// an entry breaks a rule
    #[error("API token {name:?}: {problem}")]
    Entry {
        /// the entry's name
        name: String,
        /// what is wrong
        problem: String,
    },
    /// a `--grant` of `cp-api --new-token` breaks a rule
    #[error("grant {grant:?}: {problem}")]
    Grant {
        /// the grant as given
        grant: String,
        /// what is wrong
        problem: String,
    },
}

/// The configured tokens, by hash.
#[derive(Debug, Clone, Default)]
pub struct ApiTokens {
    by_hash: HashMap<[u8; 32], Principal>,
}

/// A new random token: `cpat_` and 40 alphanumerics (about 238 bits).
pub fn new_token() -> String {
    use rand::Rng as _;
    let random: String =
        rand::rng().sample_iter(rand::distr::Alphanumeric).take(40).map(char::from).collect();
    format!("cpat_{random}")
}

/// The SHA-256 of a token, hex encoded: what a [`TokenEntry`] holds.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl ApiTokens {
    /// No tokens: every request that needs one is refused.
    pub fn none() -> Self {
        Self::default()
    }

    /// Tokens from a YAML (or JSON) list of [`TokenEntry`].
    pub fn parse(text: &str) -> Result<Self, TokensError> {
        let entries: Vec<TokenEntry> =
            serde_saphyr::from_str(text).map_err(|e| TokensError::Format(e.to_string()))?;
        Self::from_entries(entries)
    }

    /// Tokens from entries, each checked.
    pub fn from_entries(entries: Vec<TokenEntry>) -> Result<Self, TokensError> {
        let mut by_hash = HashMap::new();
        for entry in entries {
            let problem =
                |problem: &str| TokensError::Entry { name: entry.name.clone(), problem: problem.into() };
            let hash: [u8; 32] = hex::decode(&entry.sha256)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| problem("sha256 is not 64 hex digits"))?;
            if entry.subject.is_empty() {
                return Err(problem("subject is empty"));
            }
            // Both go into every event this token causes, and into message headers.
            if entry.subject.chars().chain(entry.name.chars()).any(char::is_control) {
                return Err(problem(
                    "name and subject may not hold control characters (line breaks among them)",
                ));
            }
            let principal = Principal {
                subject: entry.subject.clone(),
                token_name: Some(entry.name.clone()),
                platform_admin: entry.platform_admin,
                projects: entry.projects.clone(),
            };
            if by_hash.insert(hash, principal).is_some() {
                return Err(problem("the same token is configured twice"));
            }
        }
        Ok(Self { by_hash })
    }

    /// Whether no token is configured.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Adds every token of `other`.
    pub fn merge(mut self, other: ApiTokens) -> Self {
        self.by_hash.extend(other.by_hash);
        self
    }

    /// The caller a bearer token names.
    pub(super) fn authenticate(&self, token: &str) -> Result<Principal, Unauthenticated> {
        // The lookup is by the token's SHA-256, which a caller cannot steer, so its timing tells nothing.
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_hash.get(&hash).cloned().ok_or(Unauthenticated::Invalid)
    }
}

/// The grants of `cp-api --new-token`: `PROJECT=ROLE` each (`*` for every project), or
/// `platform-admin`. An empty list is refused: a token should hold what its holder needs, named.
pub fn parse_grants(grants: &[String]) -> Result<(bool, BTreeMap<String, Role>), TokensError> {
    let refused = |grant: &str, problem: &str| TokensError::Grant {
        grant: grant.to_owned(),
        problem: problem.to_owned(),
    };
    if grants.is_empty() {
        return Err(refused("", "name at least one grant (PROJECT=ROLE or platform-admin)"));
    }
    let (mut platform_admin, mut projects) = (false, BTreeMap::new());
    for grant in grants {
        if grant == "platform-admin" {
            platform_admin = true;
            continue;
        }
        let (project, role) = grant.split_once('=').ok_or_else(|| refused(grant, "expected PROJECT=ROLE"))?;
        let role = match role {
            "viewer" => Role::Viewer,
            "editor" => Role::Editor,
            "admin" => Role::Admin,
            _ => return Err(refused(grant, "the role is viewer, editor or admin")),
        };
        if project.is_empty() || project.chars().any(char::is_control) {
            return Err(refused(grant, "the project is a name or *"));
        }
        projects.insert(project.to_owned(), role);
    }
    Ok((platform_admin, projects))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_known_by_its_hash_and_nothing_else_authenticates() {
        let yaml = format!(
            "- name: ci\n  sha256: {}\n  subject: robot\n  projects: {{acme: editor}}\n",
            hash_token("s3cret-token")
        );
        let tokens = ApiTokens::parse(&yaml).unwrap();
        let principal = tokens.authenticate("s3cret-token").unwrap();
        assert_eq!(principal.actor(), "robot (token ci)");
        assert_eq!(principal.role_in("acme"), Some(Role::Editor));
        assert_eq!(tokens.authenticate("other"), Err(Unauthenticated::Invalid));
    }

    #[test]
    fn a_new_token_holds_exactly_the_grants_named() {
        let grants = ["acme=admin".to_owned(), "*=viewer".to_owned()];
        let (admin, projects) = parse_grants(&grants).unwrap();
        assert!(!admin);
        assert_eq!(projects, [("acme".to_owned(), Role::Admin), ("*".to_owned(), Role::Viewer)].into());
        assert!(parse_grants(&["platform-admin".to_owned()]).unwrap().0);
        assert!(parse_grants(&[]).is_err(), "no grant is no default");
        assert!(
            parse_grants(&["acme=owner".to_owned()])
                .unwrap_err()
                .to_string()
                .contains("viewer, editor or admin")
        );
    }

    #[test]
    fn a_name_or_subject_with_a_line_break_is_refused_at_configuration() {
        for (name, subject) in [("ci\r\nCp-Actor: admin", "robot"), ("ci", "robot\n")] {
            let entry = TokenEntry {
                name: name.into(),
                sha256: hash_token("t"),
                subject: subject.into(),
                platform_admin: false,
                projects: Default::default(),
            };
            let error = ApiTokens::from_entries(vec![entry]).unwrap_err().to_string();
            assert!(error.contains("control characters"), "{error}");
        }
    }

    #[test]
    fn a_malformed_entry_is_refused_naming_it() {
        let error = ApiTokens::parse("- {name: ci, sha256: abc, subject: robot}").unwrap_err();
        assert_eq!(error.to_string(), r#"API token "ci": sha256 is not 64 hex digits"#);
    }
}
