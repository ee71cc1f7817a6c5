//! Account matching: which of a tenant's customer accounts an external record belongs to, by
//! email domain (exact, then registrable via the public suffix list), then by company name.
//!
//! Free-mail and disposable domains (vendored list, `data/free_email_domains.txt`), the tenant's
//! own domains and its excluded domains never match. Two accounts claiming one domain or name is
//! ambiguous: neither is chosen and the record says why. Unmatched is a result, not a failure.

use std::{
    collections::{HashMap, HashSet},
    sync::LazyLock,
};

use uuid::Uuid;

use crate::domain::domain_name::normalize_domain;

static FREE_MAIL: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/free_email_domains.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
});

/// Whether `domain` (normalised, with its registrable part) is a free-mail or disposable
/// provider, or a subdomain of one.
fn free_mail(domain: &str, registrable: Option<&str>) -> bool {
    FREE_MAIL.contains(domain) || registrable.is_some_and(|r| FREE_MAIL.contains(r))
}

/// The domain of an email address, normalised: trimmed, lowercased, no trailing dot; the local
/// part's `+tag` is irrelevant here. `None` when it is not an address.
pub fn email_domain(email: &str) -> Option<String> {
    let (local, domain) = email.trim().rsplit_once('@')?;
    if local.is_empty() {
        return None;
    }
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    (domain.contains('.') && !domain.starts_with('.') && !domain.contains(char::is_whitespace))
        .then_some(domain)
}

/// The registrable domain (`eu.northwind.io` → `northwind.io`, `x.globex.co.uk` → `globex.co.uk`),
/// `None` for a bare public suffix such as `co.uk`.
pub fn registrable(domain: &str) -> Option<&str> {
    psl::domain_str(domain)
}

/// How a record matched: the domain's vocabulary, so what is stored is what is read back.
pub use crate::domain::MatchMethod as Method;

/// The outcome for one record; `reason` says why nothing matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub account_id: Option<Uuid>,
    pub method: Method,
    pub reason: Option<&'static str>,
}

impl Match {
    fn none(reason: &'static str) -> Self {
        Self {
            account_id: None,
            method: Method::None,
            reason: Some(reason),
        }
    }
}

/// What a record offers for matching.
#[derive(Debug, Clone, Default)]
pub struct Clues<'a> {
    pub email: Option<&'a str>,
    /// A company website or domain (deals); used when the email is missing or free-mail.
    pub website: Option<&'a str>,
    pub company_name: Option<&'a str>,
}

/// One tenant's accounts, indexed for matching a whole chunk.
pub struct Matcher {
    by_domain: HashMap<String, Vec<Uuid>>,
    by_name: HashMap<String, Vec<Uuid>>,
    blocked: HashSet<String>,
}

fn name_key(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

impl Matcher {
    /// `accounts`: (id, name, domains); `blocked`: the tenant's own and excluded domains.
    pub fn new<'a>(
        accounts: impl IntoIterator<Item = (Uuid, &'a str, &'a [String])>,
        blocked: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut by_domain: HashMap<String, Vec<Uuid>> = HashMap::new();
        let mut by_name: HashMap<String, Vec<Uuid>> = HashMap::new();
        for (id, name, domains) in accounts {
            for d in domains {
                if let Ok(d) = normalize_domain(d) {
                    let ids = by_domain.entry(d).or_default();
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
            let key = name_key(name);
            if !key.is_empty() {
                by_name.entry(key).or_default().push(id);
            }
        }
        Self {
            by_domain,
            by_name,
            blocked: blocked
                .into_iter()
                .filter_map(|d| normalize_domain(d).ok())
                .collect(),
        }
    }

    /// Matches by one domain: exact first, then registrable. `Err(reason)` when it cannot match.
    fn by_domain(&self, domain: &str) -> Result<Option<Match>, &'static str> {
        // One public-suffix lookup, borrowed, serves every check below.
        let registrable = registrable(domain);
        if free_mail(domain, registrable) {
            return Err("free_mail_domain");
        }
        if self.blocked.contains(domain) || registrable.is_some_and(|r| self.blocked.contains(r)) {
            return Err("excluded_domain");
        }
        let pick = |ids: &Vec<Uuid>, method| {
            if ids.len() == 1 {
                Ok(Some(Match {
                    account_id: Some(ids[0]),
                    method,
                    reason: None,
                }))
            } else {
                Err("ambiguous_domain")
            }
        };
        if let Some(ids) = self.by_domain.get(domain) {
            return pick(ids, Method::ExactDomain);
        }
        if let Some(reg) = registrable
            && reg != domain
            && let Some(ids) = self.by_domain.get(reg)
        {
            return pick(ids, Method::RegistrableDomain);
        }
        Ok(None)
    }

    pub fn find(&self, clues: &Clues<'_>) -> Match {
        let mut reason = None;
        let email_domain = clues.email.and_then(email_domain);
        let website = clues.website.and_then(|w| normalize_domain(w).ok());
        for domain in email_domain.iter().chain(website.iter()) {
            match self.by_domain(domain) {
                Ok(Some(m)) => return m,
                Ok(None) => reason = reason.or(Some("no_account_for_domain")),
                // An ambiguity is the strongest reason to report.
                Err("ambiguous_domain") => return Match::none("ambiguous_domain"),
                Err(r) => reason = reason.or(Some(r)),
            }
        }
        if let Some(name) = clues.company_name.map(name_key).filter(|n| !n.is_empty()) {
            match self.by_name.get(&name) {
                Some(ids) if ids.len() == 1 => {
                    return Match {
                        account_id: Some(ids[0]),
                        method: Method::Name,
                        reason: None,
                    };
                }
                Some(_) => return Match::none("ambiguous_name"),
                None => reason = reason.or(Some("no_account_for_name")),
            }
        }
        Match::none(reason.unwrap_or("no_email_or_company"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (Uuid, Uuid, Uuid) {
        (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4())
    }

    #[test]
    fn domains_match_exactly_then_by_registrable_domain() {
        let (northwind, globex, _) = ids();
        let nd = ["https://www.northwind.io/".to_string()];
        let gd = ["globex.co.uk".to_string(), "support.globex.com".to_string()];
        let m = Matcher::new(
            [
                (northwind, "Northwind", &nd[..]),
                (globex, "Globex", &gd[..]),
            ],
            [],
        );
        let find = |email: &str| {
            m.find(&Clues {
                email: Some(email),
                ..Default::default()
            })
        };
        assert_eq!(find("dana@northwind.io").method, Method::ExactDomain);
        assert_eq!(
            find("  Dana+crm@NorthWind.IO. ").account_id,
            Some(northwind)
        );
        let sub = find("dana@eu.northwind.io");
        assert_eq!(
            (sub.account_id, sub.method),
            (Some(northwind), Method::RegistrableDomain)
        );
        assert_eq!(find("it@MARCO.GLOBEX.CO.UK").account_id, Some(globex));
        assert_eq!(find("x@support.globex.com").method, Method::ExactDomain);
        // co.uk is a public suffix, never a company.
        assert_eq!(find("a@other.co.uk").reason, Some("no_account_for_domain"));
    }

    #[test]
    fn free_mail_own_domains_and_ambiguity_never_match() {
        let (a, b, c) = ids();
        let shared = ["shared.io".to_string()];
        let own = ["acme-cs.com".to_string()];
        let gmail = ["gmail.com".to_string()];
        let m = Matcher::new(
            [
                (a, "A", &shared[..]),
                (b, "B", &shared[..]),
                (c, "Gmail Inc", &gmail[..]),
                (Uuid::new_v4(), "Us", &own[..]),
            ],
            ["acme-cs.com"],
        );
        let find = |email: &str| {
            m.find(&Clues {
                email: Some(email),
                ..Default::default()
            })
        };
        assert_eq!(find("x@gmail.com").reason, Some("free_mail_domain"));
        assert_eq!(find("x@mailinator.com").reason, Some("free_mail_domain"));
        assert_eq!(find("x@hotmail.fr").reason, Some("free_mail_domain"));
        assert_eq!(find("x@acme-cs.com").reason, Some("excluded_domain"));
        assert_eq!(find("x@eu.acme-cs.com").reason, Some("excluded_domain"));
        assert_eq!(find("x@shared.io").reason, Some("ambiguous_domain"));
        assert_eq!(find("not an email").reason, Some("no_email_or_company"));
    }

    #[test]
    fn free_mail_falls_back_to_website_then_name() {
        let (a, b, _) = ids();
        let ad = ["acme-logistics.com".to_string()];
        let none: [String; 0] = [];
        let m = Matcher::new(
            [
                (a, "Acme Logistics", &ad[..]),
                (b, "Globex  Ltd", &none[..]),
            ],
            [],
        );
        let by_site = m.find(&Clues {
            email: Some("ravi@gmail.com"),
            website: Some("https://www.acme-logistics.com/about"),
            company_name: None,
        });
        assert_eq!(by_site.account_id, Some(a));
        let by_name = m.find(&Clues {
            email: Some("ravi@gmail.com"),
            website: None,
            company_name: Some("globex ltd"),
        });
        assert_eq!(
            (by_name.account_id, by_name.method),
            (Some(b), Method::Name)
        );
    }
}
