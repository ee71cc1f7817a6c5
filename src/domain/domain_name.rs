//! Normalising the domains that accounts are matched by, as admins type them or systems store them.

/// Why a string is not a usable domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a domain name: {reason}")]
pub struct InvalidDomain {
    pub input: String,
    pub reason: &'static str,
}

/// `https://www.Northwind.io/about` → `northwind.io`: lowercase, no scheme, credentials, port,
/// path, `www.` or trailing dot.
pub fn normalize_domain(input: &str) -> Result<String, InvalidDomain> {
    let invalid = |reason| InvalidDomain {
        input: input.to_string(),
        reason,
    };
    let mut rest = input.trim();
    if let Some((_, after)) = rest.split_once("://") {
        rest = after;
    }
    let rest = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let rest = rest.split(':').next().unwrap_or_default();
    let lowered = rest.trim_end_matches('.').to_ascii_lowercase();
    let host = lowered.strip_prefix("www.").unwrap_or(&lowered);
    if host.is_empty() {
        return Err(invalid("it is empty"));
    }
    if !host.contains('.') {
        return Err(invalid("it has no dot"));
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(invalid(
            "labels must be letters, digits or inner hyphens, separated by dots",
        ));
    }
    Ok(host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_decorations_are_reduced_to_the_host() {
        for (input, want) in [
            ("https://www.northwind.io/", "northwind.io"),
            ("  Acme-Logistics.COM. ", "acme-logistics.com"),
            ("http://user@eu.northwind.io:8443/x?y#z", "eu.northwind.io"),
            ("globex.co.uk", "globex.co.uk"),
        ] {
            assert_eq!(normalize_domain(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn non_domains_are_refused_with_a_reason() {
        for bad in [
            "",
            "localhost",
            "exa mple.com",
            "-bad.com",
            "a..b.com",
            "https://",
        ] {
            assert!(normalize_domain(bad).is_err(), "{bad}");
        }
    }
}
