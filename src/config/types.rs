//! Variable type constraints: `string`, `number`, `bool`, `any`, `list(T)`, `set(T)`, `map(T)`,
//! `object({ k = T })` (an attribute `optional(T)` may be left out: then it is null),
//! `tuple([T, ...])`, with the language's implicit conversions.

use std::collections::BTreeMap;
use std::fmt;

use hcl_edit::expr::{Expression, ObjectKey};
use kdeploy_provider::Value;

#[derive(Debug, Clone, PartialEq, Default)]
pub enum VarType {
    #[default]
    Any,
    String,
    Number,
    Bool,
    List(Box<VarType>),
    Set(Box<VarType>),
    Map(Box<VarType>),
    Object(BTreeMap<String, VarType>),
    Tuple(Vec<VarType>),
    /// `optional(T)`, an attribute of an object type that may be left out (then null).
    Optional(Box<VarType>),
}

impl fmt::Display for VarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VarType::Any => f.write_str("any"),
            VarType::String => f.write_str("string"),
            VarType::Number => f.write_str("number"),
            VarType::Bool => f.write_str("bool"),
            VarType::List(t) => write!(f, "list({t})"),
            VarType::Set(t) => write!(f, "set({t})"),
            VarType::Map(t) => write!(f, "map({t})"),
            VarType::Object(fields) => {
                let parts: Vec<String> = fields.iter().map(|(k, t)| format!("{k} = {t}")).collect();
                write!(f, "object({{ {} }})", parts.join(", "))
            }
            VarType::Tuple(items) => {
                let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
                write!(f, "tuple([{}])", parts.join(", "))
            }
            VarType::Optional(t) => write!(f, "optional({t})"),
        }
    }
}

impl VarType {
    /// Parses a type constraint expression.
    pub fn parse(expr: &Expression) -> Result<VarType, String> {
        const HINT: &str = "a type is string, number, bool, any, list(T), set(T), map(T), object({ name = T, other = optional(T) }) or tuple([T, ...])";
        match expr {
            Expression::Variable(v) => match v.as_str() {
                "string" => Ok(VarType::String),
                "number" => Ok(VarType::Number),
                "bool" => Ok(VarType::Bool),
                "any" => Ok(VarType::Any),
                "list" | "set" | "map" => Ok(match v.as_str() {
                    "list" => VarType::List(Box::new(VarType::Any)),
                    "set" => VarType::Set(Box::new(VarType::Any)),
                    _ => VarType::Map(Box::new(VarType::Any)),
                }),
                other => Err(format!("unknown type {other:?}; {HINT}")),
            },
            Expression::FuncCall(call) => {
                let name = call.name.name.as_str();
                let args: Vec<&Expression> = call.args.iter().collect();
                if args.len() != 1 {
                    return Err(format!("{name}(...) takes exactly one argument; {HINT}"));
                }
                match name {
                    "list" => Ok(VarType::List(Box::new(VarType::parse(args[0])?))),
                    "set" => Ok(VarType::Set(Box::new(VarType::parse(args[0])?))),
                    "map" => Ok(VarType::Map(Box::new(VarType::parse(args[0])?))),
                    "object" => match args[0] {
                        Expression::Object(obj) => {
                            let mut fields = BTreeMap::new();
                            for (k, v) in obj.iter() {
                                let key = match k {
                                    ObjectKey::Ident(id) => id.as_str().to_string(),
                                    ObjectKey::Expression(Expression::String(s)) => s.as_str().to_string(),
                                    _ => return Err("object field names must be plain names".into()),
                                };
                                fields.insert(key, VarType::field(v.expr())?);
                            }
                            Ok(VarType::Object(fields))
                        }
                        _ => Err("object(...) takes an object of field types, like object({ name = string })".into()),
                    },
                    "tuple" => match args[0] {
                        Expression::Array(items) => Ok(VarType::Tuple(items.iter().map(VarType::parse).collect::<Result<_, _>>()?)),
                        _ => Err("tuple(...) takes a list of types, like tuple([string, number])".into()),
                    },
                    "optional" => Err("optional(T) is for an attribute of an object type, like object({ name = optional(string) })".into()),
                    other => Err(format!("unknown type constructor {other:?}; {HINT}")),
                }
            }
            _ => Err(format!("not a type; {HINT}")),
        }
    }

    /// The type of an attribute of an object type: any type, or `optional(T)`.
    fn field(expr: &Expression) -> Result<VarType, String> {
        if let Expression::FuncCall(call) = expr
            && call.name.name.as_str() == "optional"
        {
            let args: Vec<&Expression> = call.args.iter().collect();
            return match args.as_slice() {
                [t] => Ok(VarType::Optional(Box::new(VarType::parse(t)?))),
                _ => Err("optional(T) takes one type (a default value is not supported: use a conditional where it is read)".into()),
            };
        }
        VarType::parse(expr)
    }

    /// Converts `value` to this type or says why it cannot be.
    pub fn convert(&self, value: &Value) -> Result<Value, String> {
        match (self, value) {
            (_, Value::Unknown(_)) | (_, Value::Null) | (VarType::Any, _) => Ok(value.clone()),
            (VarType::String, Value::String(_)) => Ok(value.clone()),
            (VarType::String, Value::Number(n)) => Ok(Value::String(n.to_string())),
            (VarType::String, Value::Bool(b)) => Ok(Value::String(b.to_string())),
            (VarType::Optional(t), v) => t.convert(v),
            (VarType::Number, Value::Number(_)) => Ok(value.clone()),
            (VarType::Number, Value::String(s)) => s.trim().parse::<f64>().map(Value::from_f64).map_err(|_| format!("a number is required, got {s:?}")),
            (VarType::Bool, Value::Bool(_)) => Ok(value.clone()),
            (VarType::Bool, Value::String(s)) if s == "true" || s == "false" => Ok(Value::Bool(s == "true")),
            (VarType::List(t), Value::List(items)) => {
                items.iter().enumerate().map(|(i, v)| t.convert(v).map_err(|e| format!("element {i}: {e}"))).collect::<Result<Vec<_>, _>>().map(Value::List)
            }
            (VarType::Set(t), Value::List(items)) => {
                let mut out: Vec<Value> = Vec::new();
                for (i, v) in items.iter().enumerate() {
                    let v = t.convert(v).map_err(|e| format!("element {i}: {e}"))?;
                    if !out.contains(&v) {
                        out.push(v);
                    }
                }
                Ok(Value::List(out))
            }
            (VarType::Map(t), Value::Map(items)) => {
                items.iter().map(|(k, v)| t.convert(v).map(|v| (k.clone(), v)).map_err(|e| format!("key {k:?}: {e}"))).collect::<Result<_, _>>().map(Value::Map)
            }
            (VarType::Object(fields), Value::Map(items)) => {
                let mut out = BTreeMap::new();
                for (name, t) in fields {
                    match items.get(name) {
                        Some(v) => {
                            out.insert(name.clone(), t.convert(v).map_err(|e| format!("attribute {name:?}: {e}"))?);
                        }
                        None if matches!(t, VarType::Optional(_)) => {
                            out.insert(name.clone(), Value::Null);
                        }
                        None => return Err(format!("attribute {name:?} is required")),
                    }
                }
                Ok(Value::Map(out))
            }
            (VarType::Tuple(types), Value::List(items)) => {
                if types.len() != items.len() {
                    return Err(format!("a tuple of {} elements is required, got {}", types.len(), items.len()));
                }
                types
                    .iter()
                    .zip(items)
                    .enumerate()
                    .map(|(i, (t, v))| t.convert(v).map_err(|e| format!("element {i}: {e}")))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::List)
            }
            (t, v) => Err(format!("{t} is required, got {}", v.type_name())),
        }
    }

    /// Whether a raw `-var`/environment string is taken literally (primitive types) or parsed
    /// as an HCL expression (collections).
    pub fn is_primitive(&self) -> bool {
        matches!(self, VarType::String | VarType::Number | VarType::Bool)
    }
}
