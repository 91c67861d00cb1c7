//! ACL files in mosquitto's syntax (`acl_file`):
//!
//! ```text
//! # Comments are whole lines. Rules before the first `user` line: anonymous clients.
//! topic read $SYS/#
//! user alice
//! # alice's own rules; the access defaults to readwrite
//! topic sensors/#
//! topic deny sensors/secret
//! # every client: %c is its client id, %u its user name
//! pattern write devices/%c/up
//! ```
//!
//! As in mosquitto, a filter may contain spaces only after an access word: a line whose
//! second word is not `read`, `write`, `readwrite` or `deny` but goes on is refused (a
//! mistyped `deny` must not become a readwrite rule).
//!
//! A client may do what one of its rules grants (its user's `topic` rules, or the
//! anonymous ones when it has no user name, and every `pattern`), unless one of them says
//! `deny` for it: denial wins. `%c` and `%u` stand for whole levels only, and a client id
//! or user name containing `/`, `+` or `#` never matches a pattern that uses it (it could
//! reach other clients' topics). A rule's topic is a filter; `$` topics are matched only by
//! rules that start with `$` [MQTT-4.7.2-1].
//!
//! A SUBSCRIBE's filter is allowed when a rule granting read covers every topic it can
//! match (as EMQX and HiveMQ decide; mosquitto 2.0 does not check subscriptions), unless a
//! `deny` rule covers it all; each delivery is checked too, so a `deny` rule inside a
//! granted filter holds back just those topics.
//!
//! The broker resolves a client's rules once, at CONNECT ([`Acl::client`]): its user's
//! rules are a trie shared by every client of that user, so a check costs one walk of the
//! topic's levels however long the file, plus one match per `pattern` line.
//!
//! **Owns:** parsing and checking. **Must not touch:** files, the broker.

use std::collections::HashMap;
use std::sync::Arc;

use crate::index::{Slot, Trie};
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

const READ: u8 = 1;
const WRITE: u8 = 2;
const DENY: u8 = 4;

impl Access {
    fn bits(self) -> u8 {
        match self {
            Access::Read => READ,
            Access::Write => WRITE,
            Access::ReadWrite => READ | WRITE,
            Access::Deny => DENY,
        }
    }
}

/// What the rules naming one filter grant, OR-ed (a trie slot).
#[derive(Debug, Default, Clone, Copy)]
struct Bits(u8);

impl Slot for Bits {
    fn is_empty(&self) -> bool {
        self.0 == 0
    }
}

/// The `topic` rules of one user (or of the anonymous clients), compiled once per file:
/// a trie, so a check costs O(levels of the topic) whatever the number of rules, and the
/// list, for SUBSCRIBE checks (filter against filter) and for printing.
#[derive(Default)]
struct Rules {
    trie: Trie<Bits>,
    list: Vec<(u8, Box<str>)>,
}

impl Rules {
    fn build(list: Vec<(u8, Box<str>)>) -> Rules {
        let mut trie: Trie<Bits> = Trie::default();
        for (bits, filter) in &list {
            trie.get_or_create(filter).0 |= bits;
        }
        Rules { trie, list }
    }
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.list).finish()
    }
}

/// Why an ACL file line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// Not `user NAME`, `topic [ACCESS] FILTER` or `pattern [ACCESS] FILTER`.
    #[error("line {0}: expected `user NAME`, `topic [read|write|readwrite|deny] FILTER` or `pattern ...`")]
    Syntax(usize),
    /// `topic WORD FILTER` where WORD is not an access.
    #[error("line {0}: the access must be read, write, readwrite or deny")]
    Access(usize),
    /// The filter is not a valid topic filter.
    #[error("line {0}: {1:?} is not a valid topic filter")]
    Filter(usize, String),
}

/// A parsed ACL file. Immutable: a reload parses a new one.
#[derive(Debug, Default)]
pub struct Acl {
    anonymous: Arc<Rules>,
    users: HashMap<Box<str>, Arc<Rules>>,
    /// `pattern` lines, in file order.
    patterns: Vec<(u8, Box<str>)>,
    /// The rules of a user the file does not name: none.
    nobody: Arc<Rules>,
    rules: usize,
}

impl Acl {
    /// Parses a whole file's text.
    pub fn parse(text: &str) -> Result<Acl, AclError> {
        let mut anonymous = Vec::new();
        let mut users: HashMap<Box<str>, Vec<(u8, Box<str>)>> = HashMap::new();
        let mut patterns = Vec::new();
        let mut user: Option<Box<str>> = None;
        let mut rules = 0;
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
                "user" => user = Some(Box::from(rest)),
                "topic" | "pattern" => {
                    let (access, filter) = match rest.split_once(char::is_whitespace) {
                        Some(("read", f)) => (Access::Read, f.trim_start()),
                        Some(("write", f)) => (Access::Write, f.trim_start()),
                        Some(("readwrite", f)) => (Access::ReadWrite, f.trim_start()),
                        Some(("deny", f)) => (Access::Deny, f.trim_start()),
                        Some(_) => return Err(AclError::Access(n)),
                        None => (Access::ReadWrite, rest),
                    };
                    if crate::protocol::TopicFilter::new(filter.to_owned()).is_err() {
                        return Err(AclError::Filter(n, filter.to_owned()));
                    }
                    let rule = (access.bits(), Box::from(filter));
                    rules += 1;
                    match (word, &user) {
                        ("pattern", _) => patterns.push(rule),
                        (_, Some(u)) => users.entry(u.clone()).or_default().push(rule),
                        (_, None) => anonymous.push(rule),
                    }
                }
                _ => return Err(AclError::Syntax(n)),
            }
        }
        Ok(Acl {
            anonymous: Arc::new(Rules::build(anonymous)),
            users: users
                .into_iter()
                .map(|(u, list)| (u, Arc::new(Rules::build(list))))
                .collect(),
            patterns,
            nobody: Arc::default(),
            rules,
        })
    }

    /// How many `topic` and `pattern` lines the file has.
    pub fn len(&self) -> usize {
        self.rules
    }

    /// Whether the file has no rule (every client is refused everything).
    pub fn is_empty(&self) -> bool {
        self.rules == 0
    }

    /// The rules that apply to one client, resolved for it once (its connection keeps
    /// them): its user's `topic` rules, or the anonymous ones when it has no user name,
    /// shared with every client of that user; and every `pattern` with `%c` / `%u`
    /// replaced (a pattern that cannot be resolved for it is left out).
    pub fn client(&self, client_id: &str, username: Option<&str>) -> ClientAcl {
        let own = match username {
            Some(u) => self.users.get(u).unwrap_or(&self.nobody),
            None => &self.anonymous,
        };
        // A name that is not one whole ordinary level would reach further than its own
        // topics: `a/b` other levels, `+` / `#` everything, `$SYS` the server's topics.
        let safe = |s: &str| !s.is_empty() && !s.contains(['/', '+', '#']) && !s.starts_with('$');
        let mut patterns = Vec::new();
        for (bits, filter) in &self.patterns {
            let mut levels = Vec::new();
            let mut ok = true;
            for level in filter.split('/') {
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
                patterns.push(Pattern::new(*bits, levels.join("/")));
            }
        }
        ClientAcl {
            own: own.clone(),
            patterns: patterns.into_boxed_slice(),
        }
    }

    /// Whether the client may publish to (`Access::Write`) or receive from
    /// (`Access::Read`) `topic`. (The broker asks a [`ClientAcl`] it keeps instead.)
    pub fn check(
        &self,
        client_id: &str,
        username: Option<&str>,
        topic: &str,
        wanted: Access,
    ) -> bool {
        self.client(client_id, username).may(topic, wanted)
    }

    /// Whether the client may subscribe to `filter` (see [`ClientAcl::may_subscribe`]).
    pub fn check_subscribe(&self, client_id: &str, username: Option<&str>, filter: &str) -> bool {
        self.client(client_id, username).may_subscribe(filter)
    }
}

/// A `pattern` line resolved for one client.
#[derive(Debug)]
struct Pattern {
    bits: u8,
    filter: Box<str>,
    /// The filter's literal levels before its first wildcard, as text: a topic that does
    /// not start with it cannot match, which rejects most patterns with one compare
    /// instead of a level-by-level match (measured: the match was 40% of a delivery with
    /// nine patterns).
    prefix: usize,
}

impl Pattern {
    fn new(bits: u8, filter: String) -> Pattern {
        let prefix = filter
            .split('/')
            .take_while(|l| *l != "+" && *l != "#")
            .map(|l| l.len() + 1)
            .sum::<usize>()
            .saturating_sub(1)
            .min(filter.len());
        Pattern {
            bits,
            filter: filter.into_boxed_str(),
            prefix,
        }
    }

    fn matches(&self, topic: &str) -> bool {
        let prefix = self
            .filter
            .as_bytes()
            .get(..self.prefix)
            .unwrap_or_default();
        topic.as_bytes().starts_with(prefix) && matches(&self.filter, topic)
    }
}

/// The rules of one client (see [`Acl::client`]).
#[derive(Debug)]
pub struct ClientAcl {
    own: Arc<Rules>,
    patterns: Box<[Pattern]>,
}

impl ClientAcl {
    /// What the rules matching `topic` say, OR-ed.
    fn bits(&self, topic: &str) -> u8 {
        let mut bits = 0;
        self.own.trie.for_each_match(topic, |b| bits |= b.0);
        for p in self.patterns.iter() {
            if p.matches(topic) {
                bits |= p.bits;
            }
        }
        bits
    }

    /// Whether the client may publish to (`Access::Write`) or receive from
    /// (`Access::Read`) `topic`: a matching rule grants it and none says `deny`.
    pub fn may(&self, topic: &str, wanted: Access) -> bool {
        let bits = self.bits(topic);
        bits & DENY == 0 && bits & wanted.bits() == wanted.bits()
    }

    /// Whether the client may subscribe to `filter` (the filter part of a `$share/...`
    /// one): a rule granting read must cover every topic the filter can match, and no
    /// `deny` rule may cover it all (nothing could ever be delivered). A `deny` rule
    /// naming only part of it does not refuse it: those deliveries are refused one by
    /// one (`may(topic, Read)`).
    pub fn may_subscribe(&self, filter: &str) -> bool {
        let own = self.own.list.iter().map(|(b, f)| (*b, &**f));
        let rules = own.chain(self.patterns.iter().map(|p| (p.bits, &*p.filter)));
        let mut granted = false;
        for (bits, rule) in rules {
            if bits & DENY != 0 {
                if covers(rule, filter) {
                    return false;
                }
            } else if bits & READ != 0 && covers(rule, filter) {
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
        let p = |f: &str| Pattern::new(READ, f.into());
        assert!(p("a/b/#").matches("a/b") && p("a/b/#").matches("a/b/c"));
        assert!(!p("a/b/#").matches("a/bc") && !p("a/b").matches("a/b/c"));
        assert!(p("a/+/c").matches("a/x/c") && !p("a/+/c").matches("ab/x/c"));
        assert!(p("+/x").matches("q/x") && !p("#").matches("$SYS/x"));
        let sys = Acl::parse("pattern readwrite %c/#\n").unwrap();
        assert!(!sys.check("$SYS", None, "$SYS/broker/x", Access::Read));
        assert!(sys.check("dev", None, "dev/x", Access::Read));
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
        // A deny inside a granted filter: the deliveries are checked one by one.
        assert!(sub(Some("alice"), "sensors/#"));
        assert!(!sub(Some("alice"), "sensors/secret"), "all of it denied");
        assert!(sub(Some("alice"), "sensors/k/#"));
        assert!(!sub(Some("alice"), "cmd/+"), "write only");
        assert!(sub(None, "public/#"));
        assert!(!sub(None, "#"));
        assert!(covers("a/#", "a/+/b") && covers("a/+", "a/b") && !covers("a/+", "a/#"));
        assert!(!covers("+/x", "$SYS/x"));
    }

    #[test]
    fn bad_lines_name_their_number() {
        assert_eq!(
            Acl::parse("user alice\ntopic read a/#/b\n").err(),
            Some(AclError::Filter(2, "a/#/b".into()))
        );
        assert_eq!(Acl::parse("\nallow all\n").err(), Some(AclError::Syntax(2)));
        assert_eq!(Acl::parse("topic\n").err(), Some(AclError::Syntax(1)));
        assert_eq!(
            Acl::parse("topic denyy sensors/secret\n").err(),
            Some(AclError::Access(1))
        );
        let spaced = Acl::parse("topic read a b/c\n").unwrap();
        assert!(spaced.check("x", None, "a b/c", Access::Read));
    }
}
