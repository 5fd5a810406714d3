//! Addresses: the names of components, printed exactly as users write them in references,
//! e.g. `vault.main`, `agent.cam["front"]`, `module.site.agent.cam[0]`.

use std::fmt;
use std::str::FromStr;

use crate::schema::Kind;
use serde::{Deserialize, Serialize};

/// The key of one instance created by `for_each` (string) or `count` (number).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InstanceKey {
    Int(u64),
    Str(String),
}

impl InstanceKey {
    /// The key an index value names (`x[KEY]`): a string (`for_each`) or a whole, non-negative
    /// number (`count`); None for anything else.
    pub fn from_value(v: &crate::value::Value) -> Option<InstanceKey> {
        match v {
            crate::value::Value::String(s) => Some(InstanceKey::Str(s.clone())),
            n @ crate::value::Value::Number(_) => n.as_i64().and_then(|i| u64::try_from(i).ok()).map(InstanceKey::Int),
            _ => None,
        }
    }
}

impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstanceKey::Int(n) => write!(f, "[{n}]"),
            InstanceKey::Str(s) => write!(f, "[{}]", serde_json::to_string(s).map_err(|_| fmt::Error)?),
        }
    }
}

/// One `module.NAME[KEY]` step of a module path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModuleStep {
    pub name: String,
    pub key: Option<InstanceKey>,
}

/// The path of a module instance; empty for the root module.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ModulePath(pub Vec<ModuleStep>);

impl ModulePath {
    pub fn root() -> ModulePath {
        ModulePath(Vec::new())
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn child(&self, name: &str, key: Option<InstanceKey>) -> ModulePath {
        let mut steps = self.0.clone();
        steps.push(ModuleStep { name: name.to_string(), key });
        ModulePath(steps)
    }
}

impl fmt::Display for ModulePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "module.{}", step.name)?;
            if let Some(k) = &step.key {
                write!(f, "{k}")?;
            }
        }
        Ok(())
    }
}

/// The address of one component instance.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub module: ModulePath,
    pub kind: Kind,
    pub name: String,
    pub key: Option<InstanceKey>,
}

impl Address {
    pub fn new(kind: Kind, name: &str) -> Address {
        Address { module: ModulePath::root(), kind, name: name.to_string(), key: None }
    }

    pub fn in_module(mut self, module: ModulePath) -> Address {
        self.module = module;
        self
    }

    /// The address of the block this instance came from (no instance key).
    pub fn config_addr(&self) -> Address {
        Address { key: None, ..self.clone() }
    }

    /// The slug object names are made of: the printed address without its `module.` markers
    /// (`module.site.agent.cam["Front"]` → `site-agent-cam-front`); see [`crate::names::slug`].
    pub fn slug(&self) -> String {
        crate::names::slug(&self.to_string().replace("module.", ""))
    }

    /// The short name of one instance: its key, else its block label (`object_storage.rec` →
    /// `rec`, `broker.q["eu"]` → `eu`, `agent.cam[2]` → `2`).
    pub fn instance_name(&self) -> String {
        match &self.key {
            Some(InstanceKey::Str(s)) => s.clone(),
            Some(InstanceKey::Int(n)) => n.to_string(),
            None => self.name.clone(),
        }
    }

    /// True when `self` is `target` or one of its instances, or lies in the module `target`
    /// names. Used by `-target` and `state rm`.
    pub fn matches(&self, target: &Target) -> bool {
        match target {
            Target::Component(a) => {
                if a.key.is_some() {
                    self == a
                } else {
                    self.config_addr() == *a
                }
            }
            Target::Module(m) => {
                m.0.len() <= self.module.0.len()
                    && m.0.iter().zip(&self.module.0).all(|(want, have)| want.name == have.name && (want.key.is_none() || want.key == have.key))
            }
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.module.is_root() {
            write!(f, "{}.", self.module)?;
        }
        write!(f, "{}.{}", self.kind.keyword(), self.name)?;
        if let Some(k) = &self.key {
            write!(f, "{k}")?;
        }
        Ok(())
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What `-target`, `-replace` and `state rm` accept: a component (all instances or one), or a
/// whole module instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Component(Address),
    Module(ModulePath),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Component(a) => a.fmt(f),
            Target::Module(m) => m.fmt(f),
        }
    }
}

/// Why an address did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {input:?}: {reason}")]
pub struct AddrParseError {
    pub input: String,
    pub reason: String,
}

struct Cursor<'a> {
    input: &'a str,
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn err(&self, reason: impl Into<String>) -> AddrParseError {
        AddrParseError { input: self.input.to_string(), reason: reason.into() }
    }

    fn ident(&mut self) -> Result<&'a str, AddrParseError> {
        let end = self.rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')).unwrap_or(self.rest.len());
        if end == 0 {
            return Err(self.err(format!("expected a name at {:?}", self.rest)));
        }
        let (id, rest) = self.rest.split_at(end);
        self.rest = rest;
        Ok(id)
    }

    fn eat(&mut self, s: &str) -> bool {
        if let Some(rest) = self.rest.strip_prefix(s) {
            self.rest = rest;
            true
        } else {
            false
        }
    }

    fn key(&mut self) -> Result<Option<InstanceKey>, AddrParseError> {
        if !self.eat("[") {
            return Ok(None);
        }
        let key = if self.rest.starts_with('"') {
            let mut de = serde_json::Deserializer::from_str(self.rest).into_iter::<String>();
            let s = de.next().and_then(Result::ok).ok_or_else(|| self.err("unterminated string key"))?;
            self.rest = &self.rest[de.byte_offset()..];
            InstanceKey::Str(s)
        } else {
            let end = self.rest.find(']').ok_or_else(|| self.err("missing ]"))?;
            let n = self.rest[..end].parse::<u64>().map_err(|_| self.err("an index must be a number or a quoted string"))?;
            self.rest = &self.rest[end..];
            InstanceKey::Int(n)
        };
        if !self.eat("]") {
            return Err(self.err("missing ]"));
        }
        Ok(Some(key))
    }
}

impl FromStr for Target {
    type Err = AddrParseError;

    fn from_str(input: &str) -> Result<Target, AddrParseError> {
        let mut c = Cursor { input, rest: input.trim() };
        let mut module = ModulePath::root();
        loop {
            let word = c.ident()?;
            if word == "module" {
                if !c.eat(".") {
                    return Err(c.err("expected module.NAME"));
                }
                let name = c.ident()?.to_string();
                let key = c.key()?;
                module.0.push(ModuleStep { name, key });
                if c.rest.is_empty() {
                    return Ok(Target::Module(module));
                }
                if !c.eat(".") {
                    return Err(c.err(format!("unexpected {:?}", c.rest)));
                }
                continue;
            }
            let kind = Kind::from_keyword(word).ok_or_else(|| {
                let kinds: Vec<_> = Kind::ALL.iter().map(|k| k.keyword()).collect();
                c.err(format!("{word:?} is not a component kind (expected one of {})", kinds.join(", ")))
            })?;
            if !c.eat(".") {
                return Err(c.err(format!("expected {word}.NAME")));
            }
            let mut name = c.ident()?.to_string();
            // A data source is `data.TYPE.NAME`: its name is `TYPE.NAME`.
            if kind == Kind::Data {
                if !c.eat(".") {
                    return Err(c.err("expected data.TYPE.NAME"));
                }
                name = format!("{name}.{}", c.ident()?);
            }
            let key = c.key()?;
            if !c.rest.is_empty() {
                return Err(c.err(format!("unexpected {:?}", c.rest)));
            }
            return Ok(Target::Component(Address { module, kind, name, key }));
        }
    }
}

impl FromStr for Address {
    type Err = AddrParseError;

    fn from_str(input: &str) -> Result<Address, AddrParseError> {
        match input.parse::<Target>()? {
            Target::Component(a) => Ok(a),
            Target::Module(_) => Err(AddrParseError { input: input.to_string(), reason: "this names a module, not a component".into() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_instance_names() {
        let a = |t: &str| t.parse::<Address>().unwrap();
        assert_eq!(a("module.site.agent.cam[\"Front\"]").slug(), "site-agent-cam-front");
        assert_eq!(a("vault.main").slug(), "vault-main");
        assert_eq!(a("object_storage.rec").instance_name(), "rec");
        assert_eq!(a("broker.q[\"eu\"]").instance_name(), "eu");
        assert_eq!(a("agent.cam[2]").instance_name(), "2");
    }

    #[test]
    fn addresses_round_trip_through_their_printed_form() {
        for text in
            ["vault.main", "agent.cam[\"front door\"]", "agent.cam[3]", "module.site.agent.cam[\"a\"]", "module.site[\"x\"].module.inner.object_storage.rec"]
        {
            let a: Address = text.parse().unwrap();
            assert_eq!(a.to_string(), text);
        }
    }

    #[test]
    fn targets_match_instances_and_modules() {
        let inst: Address = "module.site.agent.cam[\"a\"]".parse().unwrap();
        assert!(inst.matches(&"module.site.agent.cam".parse().unwrap()));
        assert!(inst.matches(&"module.site".parse().unwrap()));
        assert!(!inst.matches(&"module.other".parse().unwrap()));
        assert!(!inst.matches(&"module.site.agent.cam[\"b\"]".parse().unwrap()));
        assert!(!inst.matches(&"agent.cam".parse().unwrap()));
    }

    #[test]
    fn bad_addresses_say_why() {
        let e = "vaults.main".parse::<Address>().unwrap_err();
        assert!(e.reason.contains("not a component kind"), "{e}");
        assert!("agent.cam[".parse::<Address>().is_err());
        assert!("module.site".parse::<Address>().is_err());
    }

    #[test]
    fn order_is_stable_and_groups_instances() {
        let mut v: Vec<Address> = ["vault.b", "agent.cam[1]", "agent.cam[0]", "cluster.edge"].iter().map(|s| s.parse().unwrap()).collect();
        v.sort();
        let printed: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(printed, ["cluster.edge", "vault.b", "agent.cam[0]", "agent.cam[1]"]);
    }
}
