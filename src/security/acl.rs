//! ACL files in mosquitto's syntax (issue 12, in progress: parsed and checked here, not
//! yet enforced by the broker):
//!
//! ```text
//! # comments and blank lines are skipped
//! topic read $SYS/#             # before the first `user` line: anonymous clients
//! user alice
//! topic readwrite sensors/#     # alice's own rules; the access defaults to readwrite
//! topic deny sensors/secret
//! pattern write devices/%c/up   # every client: %c is its client id, %u its user name
//! ```
//!
//! A client may do what one of its rules grants (its user's `topic` rules, or the
//! anonymous ones when it has no user name, and every `pattern`), unless one of them says
//! `deny` for it: denial wins. `%c` and `%u` stand for whole levels only, and a client id
//! or user name containing `/`, `+` or `#` never matches a pattern that uses it (it could
//! reach other clients' topics). A rule's topic is a filter; `$` topics are matched only by
//! rules that start with `$` [MQTT-4.7.2-1]. A SUBSCRIBE's filter is allowed to read when a
//! granting rule covers every topic it can match, and refused when it could match a topic
//! a `deny` rule names.
//!
//! **Owns:** parsing and checking. **Must not touch:** files, the broker.

use std::collections::HashMap;

use crate::protocol::matches;

/// What a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Receive messages (delivery, retained, SUBSCRIBE).
    Read,
    /// Publish.
    Write,
    /// Both.
    ReadWrite,
    /// Nothing: what it names is refused even if another rule grants it.
    Deny,
}

impl Access {
    fn grants(self, wanted: Access) -> bool {
        matches!(
            (self, wanted),
            (Access::ReadWrite, Access::Read | Access::Write)
                | (Access::Read, Access::Read)
                | (Access::Write, Access::Write)
        )
    }
}

/// One `topic` or `pattern` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: Access,
    filter: String,
    /// A `pattern` line (with `%c` / `%u` to substitute).
    pattern: bool,
}

/// Why an ACL file line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// Not `user NAME`, `topic [ACCESS] FILTER` or `pattern [ACCESS] FILTER`.
    #[error("line {0}: expected `user NAME`, `topic [read|write|readwrite|deny] FILTER` or `pattern ...`")]
    Syntax(usize),
    /// The filter is not a valid topic filter.
    #[error("line {0}: {1:?} is not a valid topic filter")]
    Filter(usize, String),
}

/// A parsed ACL file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

impl Acl {
    /// Parses a whole file's text.
    pub fn parse(text: &str) -> Result<Acl, AclError> {
        let mut acl = Acl::default();
        let mut user: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (word, rest) = line
                .split_once(char::is_whitespace)
                .ok_or(AclError::Syntax(n))?;
            let rest = rest.trim_start();
            match word {
                "user" => user = Some(rest.to_owned()),
                "topic" | "pattern" => {
                    let (access, filter) = match rest.split_once(char::is_whitespace) {
                        Some(("read", f)) => (Access::Read, f.trim_start()),
                        Some(("write", f)) => (Access::Write, f.trim_start()),
                        Some(("readwrite", f)) => (Access::ReadWrite, f.trim_start()),
                        Some(("deny", f)) => (Access::Deny, f.trim_start()),
                        _ => (Access::ReadWrite, rest),
                    };
                    if crate::protocol::TopicFilter::new(filter.to_owned()).is_err() {
                        return Err(AclError::Filter(n, filter.to_owned()));
                    }
                    let rule = Rule {
                        access,
                        filter: filter.to_owned(),
                        pattern: word == "pattern",
                    };
                    match (word, &user) {
                        ("pattern", _) => acl.patterns.push(rule),
                        (_, Some(u)) => acl.users.entry(u.clone()).or_default().push(rule),
                        (_, None) => acl.anonymous.push(rule),
                    }
                }
                _ => return Err(AclError::Syntax(n)),
            }
        }
        Ok(acl)
    }

    /// The rules that apply to a client, with patterns resolved (a pattern that cannot be
    /// resolved for it is left out).
    fn rules_for(&self, client_id: &str, username: Option<&str>) -> Vec<(Access, String)> {
        let own = match username {
            Some(u) => self.users.get(u).map(Vec::as_slice).unwrap_or_default(),
            None => &self.anonymous,
        };
        let mut out: Vec<(Access, String)> =
            own.iter().map(|r| (r.access, r.filter.clone())).collect();
        let safe = |s: &str| !s.is_empty() && !s.contains(['/', '+', '#']);
        for r in self.patterns.iter().filter(|r| r.pattern) {
            let mut levels = Vec::new();
            let mut ok = true;
            for level in r.filter.split('/') {
                match level {
                    "%c" if safe(client_id) => levels.push(client_id),
                    "%u" => match username.filter(|u| safe(u)) {
                        Some(u) => levels.push(u),
                        None => ok = false,
                    },
                    "%c" => ok = false,
                    l => levels.push(l),
                }
            }
            if ok {
                out.push((r.access, levels.join("/")));
            }
        }
        out
    }

    /// Whether the client may publish to (`Access::Write`) or receive from
    /// (`Access::Read`) `topic`.
    pub fn check(
        &self,
        client_id: &str,
        username: Option<&str>,
        topic: &str,
        wanted: Access,
    ) -> bool {
        let rules = self.rules_for(client_id, username);
        let mut granted = false;
        for (access, filter) in &rules {
            if matches(filter, topic) {
                if *access == Access::Deny {
                    return false;
                }
                granted |= access.grants(wanted);
            }
        }
        granted
    }

    /// Whether the client may subscribe to `filter` (the filter part of a `$share/...`
    /// one): a granting rule must cover everything it can match, and no `deny` rule may
    /// name something it can match.
    pub fn check_subscribe(&self, client_id: &str, username: Option<&str>, filter: &str) -> bool {
        let rules = self.rules_for(client_id, username);
        let mut granted = false;
        for (access, rule) in &rules {
            if *access == Access::Deny {
                if overlaps(rule, filter) {
                    return false;
                }
            } else if access.grants(Access::Read) && covers(rule, filter) {
                granted = true;
            }
        }
        granted
    }
}

/// Whether every topic `sub` can match is matched by `rule` (both filters).
fn covers(rule: &str, sub: &str) -> bool {
    if sub.starts_with('$') != rule.starts_with('$') && (rule.starts_with(['+', '#'])) {
        return false;
    }
    let mut r = rule.split('/');
    let mut s = sub.split('/');
    loop {
        match (r.next(), s.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(l)) if l != "#" => {}
            (Some(a), Some(b)) if a == b && a != "+" && a != "#" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some topic is matched by both filters.
fn overlaps(a: &str, b: &str) -> bool {
    if a.starts_with('$') != b.starts_with('$') {
        // A `$` topic needs a `$` level first in both (a wildcard first level never
        // matches one).
        let (d, w) = if a.starts_with('$') { (a, b) } else { (b, a) };
        if w.starts_with(['+', '#']) || !d.starts_with('$') {
            return false;
        }
    }
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(p), Some(q)) if p == q => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# anonymous clients
topic read public/#
topic read $SYS/broker/uptime

user alice
topic sensors/#
topic deny sensors/secret
topic write cmd/+

user bob
topic read sensors/+/temp

pattern readwrite devices/%c/#
pattern read users/%u/inbox
";

    #[test]
    fn rules_follow_mosquitto() {
        let acl = Acl::parse(FILE).unwrap();
        let can = |c: &str, u: Option<&str>, t: &str, a: Access| acl.check(c, u, t, a);
        // Anonymous: its own rules only, and patterns without %u.
        assert!(can("x", None, "public/a", Access::Read));
        assert!(!can("x", None, "public/a", Access::Write));
        assert!(!can("x", None, "sensors/a", Access::Read));
        assert!(can("x", None, "$SYS/broker/uptime", Access::Read));
        assert!(can("x", None, "devices/x/up", Access::Write));
        assert!(!can("x", None, "users/x/inbox", Access::Read));
        // alice: readwrite by default, deny wins.
        assert!(can("a1", Some("alice"), "sensors/k/temp", Access::Write));
        assert!(!can("a1", Some("alice"), "sensors/secret", Access::Read));
        assert!(can("a1", Some("alice"), "cmd/reboot", Access::Write));
        assert!(!can("a1", Some("alice"), "cmd/reboot", Access::Read));
        assert!(
            !can("a1", Some("alice"), "public/a", Access::Read),
            "not anonymous"
        );
        // Patterns: whole levels, and never with a wildcard or '/' in the name.
        assert!(can("a1", Some("alice"), "users/alice/inbox", Access::Read));
        assert!(!can("a1", Some("alice"), "users/bob/inbox", Access::Read));
        assert!(!can("a/b", None, "devices/a/b/x", Access::Write));
        assert!(!can("+", None, "devices/q/x", Access::Write));
        // Unknown user: patterns only.
        assert!(!can("m", Some("mallory"), "sensors/a", Access::Read));
        // `$` topics only through `$` rules.
        let all = Acl::parse("topic #\n").unwrap();
        assert!(all.check("x", None, "a/b", Access::Read));
        assert!(!all.check("x", None, "$SYS/x", Access::Read));
    }

    #[test]
    fn subscriptions_need_cover_and_no_denied_overlap() {
        let acl = Acl::parse(FILE).unwrap();
        let sub = |u: Option<&str>, f: &str| acl.check_subscribe("c", u, f);
        assert!(sub(Some("bob"), "sensors/k/temp"));
        assert!(sub(Some("bob"), "sensors/+/temp"));
        assert!(!sub(Some("bob"), "sensors/#"), "wider than bob's rule");
        assert!(!sub(Some("alice"), "sensors/#"), "reaches the denied topic");
        assert!(sub(Some("alice"), "sensors/k/#"));
        assert!(!sub(Some("alice"), "cmd/+"), "write only");
        assert!(sub(None, "public/#"));
        assert!(!sub(None, "#"));
        assert!(covers("a/#", "a/+/b") && covers("a/+", "a/b") && !covers("a/+", "a/#"));
        assert!(!covers("+/x", "$SYS/x"));
        assert!(overlaps("a/+", "a/b") && overlaps("#", "x") && !overlaps("a/b", "a/c"));
        assert!(!overlaps("#", "$SYS/x") && overlaps("$SYS/#", "$SYS/x"));
    }

    #[test]
    fn bad_lines_name_their_number() {
        assert_eq!(
            Acl::parse("user alice\ntopic read a/#/b\n"),
            Err(AclError::Filter(2, "a/#/b".into()))
        );
        assert_eq!(Acl::parse("\nallow all\n"), Err(AclError::Syntax(2)));
        assert_eq!(Acl::parse("topic\n"), Err(AclError::Syntax(1)));
    }
}
