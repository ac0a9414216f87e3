//! The configuration as layers: the file's TOML values, with environment values laid over them
//! key by key. An environment value is raw text that the config struct types: the field being
//! read decides how it is parsed (a string field takes the text as it is, a number field parses
//! a number, a list or table field parses a TOML inline value), so `BERTH_SERVER__API_KEY=123456`
//! is the string `"123456"`, never an integer. See ARCHITECTURE.md, "Configuration".

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};

/// Why a layer cannot be read as the requested type; the caller adds the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct LayerError(String);

impl de::Error for LayerError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Self(message.to_string())
    }
}

impl From<toml::de::Error> for LayerError {
    fn from(e: toml::de::Error) -> Self {
        Self(e.message().trim_end().to_owned())
    }
}

/// One node of the layered tree.
#[derive(Debug)]
pub(super) enum Layer {
    /// A table whose keys may come from different layers (the root and each `[section]`).
    Table(BTreeMap<String, Layer>),
    /// A value from the file, read as TOML reads it.
    File(toml::Value),
    /// A value from the environment: `name` is the variable, `raw` its text.
    Env {
        /// The variable, e.g. `BERTH_SERVER__PORT` (errors name it).
        name: String,
        /// Its text, typed only when the target field is known.
        raw: String,
    },
}

impl Layer {
    /// The file's top level, with each `[section]` open for environment keys.
    pub(super) fn from_file(table: toml::Table) -> Self {
        Self::Table(
            table
                .into_iter()
                .map(|(key, value)| {
                    let node = match value {
                        toml::Value::Table(section) => Self::Table(
                            section
                                .into_iter()
                                .map(|(k, v)| (k, Self::File(v)))
                                .collect(),
                        ),
                        other => Self::File(other),
                    };
                    (key, node)
                })
                .collect(),
        )
    }

    /// Lays `raw` (from variable `name`) over `section.key`. Errors when the file made `section`
    /// something other than a table.
    pub(super) fn set_env(
        &mut self,
        section: String,
        key: String,
        name: String,
        raw: String,
    ) -> Result<(), String> {
        let Self::Table(root) = self else {
            return Err("the configuration root is not a table".into());
        };
        let section_node = root
            .entry(section.clone())
            .or_insert_with(|| Self::Table(BTreeMap::new()));
        let Self::Table(entries) = section_node else {
            return Err(format!("[{section}] is not a section"));
        };
        entries.insert(key, Self::Env { name, raw });
        Ok(())
    }
}

/// Reads a file value with toml's own deserializer, converting its error.
macro_rules! forward_to_file {
    ($($method:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
            match self {
                Layer::File(value) => Ok(value.$method(visitor)?),
                other => other.deserialize_any(visitor),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Layer {
    type Error = LayerError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        match self {
            Self::Table(entries) => visitor.visit_map(Entries {
                entries: entries.into_iter(),
                next_value: None,
            }),
            Self::File(value) => Ok(value.deserialize_any(visitor)?),
            // Nothing tells the type: the text as it is.
            Self::Env { name, raw } => EnvText { name: &name, raw }.string(visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        match self {
            Self::Env { name, raw } => EnvText { name: &name, raw }.bool(visitor),
            Self::File(value) => Ok(value.deserialize_bool(visitor)?),
            table => table.deserialize_any(visitor),
        }
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        self.integer(visitor)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        self.integer(visitor)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        self.integer(visitor)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        self.integer(visitor)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        self.integer(visitor)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        self.integer(visitor)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        self.integer(visitor)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        self.integer(visitor)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        self.float(visitor)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        self.float(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        match self {
            Self::File(value) => Ok(value.deserialize_option(visitor)?),
            // A key that is present has a value (TOML has no null); an empty environment value
            // is the empty string, which the checks refuse where it makes no sense.
            present => visitor.visit_some(present),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, LayerError> {
        match self {
            Self::File(value) => Ok(value.deserialize_newtype_struct(name, visitor)?),
            other => visitor.visit_newtype_struct(other),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, LayerError> {
        match self {
            Self::File(value) => Ok(value.deserialize_enum(name, variants, visitor)?),
            // Unit variants only: the text names the variant.
            Self::Env { name, raw } => {
                let text: de::value::StringDeserializer<LayerError> = raw.into_deserializer();
                visitor
                    .visit_enum(text)
                    .map_err(|e| EnvText::blame(&name, e))
            }
            table => table.deserialize_any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, LayerError> {
        match self {
            Self::File(value) => Ok(value.deserialize_struct(name, fields, visitor)?),
            Self::Env { name, raw } => EnvText { name: &name, raw }.inline(visitor),
            table => table.deserialize_any(visitor),
        }
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, LayerError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, LayerError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        match self {
            Self::Env { name, raw } => EnvText { name: &name, raw }.inline(visitor),
            Self::File(value) => Ok(value.deserialize_seq(visitor)?),
            table => table.deserialize_any(visitor),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        match self {
            Self::Env { name, raw } => EnvText { name: &name, raw }.inline(visitor),
            Self::File(value) => Ok(value.deserialize_map(visitor)?),
            table => table.deserialize_any(visitor),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        match self {
            Self::Env { name, raw } => EnvText { name: &name, raw }.string(visitor),
            Self::File(value) => Ok(value.deserialize_string(visitor)?),
            table => table.deserialize_any(visitor),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        visitor.visit_unit()
    }

    forward_to_file!(deserialize_bytes, deserialize_byte_buf, deserialize_unit);

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, LayerError> {
        self.deserialize_unit(visitor)
    }
}

impl Layer {
    fn integer<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        match self {
            Self::Env { name, raw } => EnvText { name: &name, raw }.integer(visitor),
            Self::File(value) => Ok(de::Deserializer::deserialize_any(value, visitor)?),
            table => de::Deserializer::deserialize_any(table, visitor),
        }
    }

    fn float<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        match self {
            Self::Env { name, raw } => EnvText { name: &name, raw }.float(visitor),
            Self::File(value) => Ok(de::Deserializer::deserialize_any(value, visitor)?),
            table => de::Deserializer::deserialize_any(table, visitor),
        }
    }
}

/// An environment value being typed by the field it is read into.
struct EnvText<'a> {
    name: &'a str,
    raw: String,
}

impl EnvText<'_> {
    /// Adds the variable to a message about its value.
    fn blame(name: &str, e: LayerError) -> LayerError {
        LayerError(format!("{} (from {name})", e.0))
    }

    fn string<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        let name = self.name;
        visitor
            .visit_string(self.raw)
            .map_err(|e| Self::blame(name, e))
    }

    fn bool<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        let result = match self.raw.trim() {
            "true" => visitor.visit_bool(true),
            "false" => visitor.visit_bool(false),
            other => Err(de::Error::invalid_value(
                de::Unexpected::Str(other),
                &"true or false",
            )),
        };
        result.map_err(|e| Self::blame(self.name, e))
    }

    fn integer<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        let text = self.raw.trim();
        // The visitor checks the range of its own type (u16 for a port, ...).
        let result = if let Ok(n) = text.parse::<u64>() {
            visitor.visit_u64(n)
        } else if let Ok(n) = text.parse::<i64>() {
            visitor.visit_i64(n)
        } else {
            Err(de::Error::invalid_type(de::Unexpected::Str(text), &visitor))
        };
        result.map_err(|e| Self::blame(self.name, e))
    }

    fn float<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        let text = self.raw.trim();
        let result = match text.parse::<f64>() {
            Ok(n) => visitor.visit_f64(n),
            Err(_) => Err(de::Error::invalid_type(de::Unexpected::Str(text), &visitor)),
        };
        result.map_err(|e| Self::blame(self.name, e))
    }

    /// A list or table: the text is a TOML inline value (`["/data"]`, `{ a = "b" }`).
    fn inline<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, LayerError> {
        // Exactly one key: text that smuggles in a second line is not one inline value.
        let parsed = format!("value = {}", self.raw)
            .parse::<toml::Table>()
            .ok()
            .filter(|t| t.len() == 1)
            .and_then(|mut t| t.remove("value"));
        let Some(value) = parsed else {
            return Err(LayerError(format!(
                "{:?} is not a TOML inline array or table (e.g. [\"a\", \"b\"] or {{ a = \"b\" }}) (from {})",
                self.raw, self.name
            )));
        };
        de::Deserializer::deserialize_any(value, visitor)
            .map_err(|e| Self::blame(self.name, e.into()))
    }
}

/// The entries of a table node, for `visit_map`.
struct Entries {
    entries: std::collections::btree_map::IntoIter<String, Layer>,
    next_value: Option<Layer>,
}

impl<'de> MapAccess<'de> for Entries {
    type Error = LayerError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, LayerError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.next_value = Some(value);
        let key: de::value::StringDeserializer<LayerError> = key.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, LayerError> {
        let value = self
            .next_value
            .take()
            .ok_or_else(|| LayerError("a table value was read before its key".into()))?;
        seed.deserialize(value)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}
