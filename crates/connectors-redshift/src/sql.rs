//! Identifiers and literals: everything the configuration puts into SQL goes
//! through here, so no table name, column name or option value can change the
//! statement it is part of.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// The longest identifier Redshift accepts, in bytes (PostgreSQL truncates
/// names longer than 63 bytes).
pub const MAX_IDENTIFIER_BYTES: usize = 127;

/// A table, schema or column name, always written to SQL as a quoted
/// identifier (`"name"`, with `"` doubled), so any name is taken literally:
/// `evil"; DROP TABLE t; --` names a table with that odd name, nothing more.
///
/// Names must be 1 to 127 bytes without control characters. Redshift folds
/// even quoted identifiers to lower case unless
/// `enable_case_sensitive_identifier` is on; PostgreSQL keeps them as given.
///
/// ```
/// use kinesis_connectors_redshift::Identifier;
/// let column = Identifier::new("user id")?;
/// assert_eq!(column.quoted(), r#""user id""#);
/// let hostile = Identifier::new(r#"x"; DROP TABLE t; --"#)?;
/// assert_eq!(hostile.quoted(), r#""x""; DROP TABLE t; --""#);
/// # Ok::<(), kinesis_connectors_redshift::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Identifier(String);

impl Identifier {
    /// Checks `name`: not empty, at most [`MAX_IDENTIFIER_BYTES`], no control
    /// characters. Fails with [`Error::Config`].
    pub fn new(name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        if name.is_empty() {
            return Err(Error::Config("an identifier is empty".to_owned()));
        }
        if name.len() > MAX_IDENTIFIER_BYTES {
            return Err(Error::Config(format!(
                "identifier {name:?} is {} bytes long; Redshift allows at most {MAX_IDENTIFIER_BYTES}",
                name.len()
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(Error::Config(format!(
                "identifier {name:?} contains a control character"
            )));
        }
        Ok(Self(name))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a quoted SQL identifier.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0.replace('"', "\"\""))
    }
}

impl fmt::Debug for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Identifier").field(&self.0).finish()
    }
}

/// Writes the quoted identifier.
impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.quoted())
    }
}

/// A table name, optionally schema-qualified, written to SQL as quoted
/// identifiers (`"schema"."table"`).
///
/// ```
/// use kinesis_connectors_redshift::TableName;
/// assert_eq!(TableName::parse("public.events")?.quoted(), r#""public"."events""#);
/// assert_eq!(TableName::parse("events")?.quoted(), r#""events""#);
/// // Names with dots or quotes: give the parts.
/// let odd = TableName::qualified("my.schema", r#"a "table""#)?;
/// assert_eq!(odd.quoted(), r#""my.schema"."a ""table""""#);
/// # Ok::<(), kinesis_connectors_redshift::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    schema: Option<Identifier>,
    name: Identifier,
}

impl TableName {
    /// An unqualified table name (found through the `search_path`), taken
    /// verbatim: dots and quotes are part of the name.
    pub fn new(name: impl Into<String>) -> Result<Self, Error> {
        Ok(Self {
            schema: None,
            name: Identifier::new(name)?,
        })
    }

    /// `schema.name`, each part taken verbatim.
    pub fn qualified(schema: impl Into<String>, name: impl Into<String>) -> Result<Self, Error> {
        Ok(Self {
            schema: Some(Identifier::new(schema)?),
            name: Identifier::new(name)?,
        })
    }

    /// Parses `table` or `schema.table`. Names containing `.` or `"` cannot
    /// be parsed unambiguously: give them to [`qualified`](Self::qualified)
    /// or [`new`](Self::new) instead.
    pub fn parse(text: &str) -> Result<Self, Error> {
        if text.contains('"') {
            return Err(Error::Config(format!(
                "table name {text:?} contains `\"`: pass the unquoted parts to TableName::qualified or TableName::new"
            )));
        }
        let mut parts = text.split('.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(name), None, None) => Self::new(name),
            (Some(schema), Some(name), None) => Self::qualified(schema, name),
            _ => Err(Error::Config(format!(
                "table name {text:?} has more than one `.`: pass the parts to TableName::qualified"
            ))),
        }
    }

    /// The schema, if the name is qualified.
    pub fn schema(&self) -> Option<&Identifier> {
        self.schema.as_ref()
    }

    /// The table's own name.
    pub fn name(&self) -> &Identifier {
        &self.name
    }

    /// The name as SQL: `"schema"."table"` or `"table"`.
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", schema.quoted(), self.name.quoted()),
            None => self.name.quoted(),
        }
    }
}

impl fmt::Debug for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TableName({})", self.quoted())
    }
}

/// Writes the quoted name.
impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.quoted())
    }
}

impl FromStr for TableName {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        Self::parse(text)
    }
}

impl TryFrom<&str> for TableName {
    type Error = Error;

    fn try_from(text: &str) -> Result<Self, Error> {
        Self::parse(text)
    }
}

impl TryFrom<String> for TableName {
    type Error = Error;

    fn try_from(text: String) -> Result<Self, Error> {
        Self::parse(&text)
    }
}

impl TryFrom<&String> for TableName {
    type Error = Error;

    fn try_from(text: &String) -> Result<Self, Error> {
        Self::parse(text)
    }
}

/// `value` as a SQL string literal: in single quotes, `'` doubled.
///
/// Backslashes and NUL characters are refused ([`Error::Config`]) rather
/// than escaped: Redshift treats a backslash in a literal as an escape
/// character while PostgreSQL (with `standard_conforming_strings`, the
/// default) does not, and no escaping is right for both. None of the values
/// that go into literals here (S3 URLs of manifests and objects the
/// emitters name, IAM role ARNs, regions, time formats) needs one.
///
/// ```
/// use kinesis_connectors_redshift::quote_literal;
/// assert_eq!(quote_literal("s3://b/k")?, "'s3://b/k'");
/// assert_eq!(quote_literal("it's")?, "'it''s'");
/// assert!(quote_literal(r"a\'; DROP TABLE t; --").is_err());
/// # Ok::<(), kinesis_connectors_redshift::Error>(())
/// ```
pub fn quote_literal(value: &str) -> Result<String, Error> {
    if value.contains('\\') {
        return Err(Error::Config(format!(
            "{value:?} contains a backslash, which cannot be written as a SQL literal portable between Redshift and PostgreSQL"
        )));
    }
    if value.contains('\0') {
        return Err(Error::Config(format!("{value:?} contains a NUL character")));
    }
    Ok(format!("'{}'", value.replace('\'', "''")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_checked() {
        let plain = Identifier::new("events").unwrap();
        assert_eq!(plain.quoted(), "\"events\"");
        assert_eq!(plain.to_string(), "\"events\"");
        assert_eq!(format!("{plain:?}"), "Identifier(\"events\")");
        let hostile = Identifier::new("t\"; DROP TABLE victim; --").unwrap();
        assert_eq!(hostile.quoted(), "\"t\"\"; DROP TABLE victim; --\"");
        assert_eq!(
            Identifier::new("\"").unwrap().quoted(),
            "\"\"\"\"",
            "a lone quote is doubled inside the quotes"
        );
        assert!(Identifier::new("").is_err());
        assert!(Identifier::new("a\0b").is_err());
        assert!(Identifier::new("a\nb").is_err());
        assert!(Identifier::new("x".repeat(MAX_IDENTIFIER_BYTES)).is_ok());
        assert!(Identifier::new("x".repeat(MAX_IDENTIFIER_BYTES + 1)).is_err());
        // Multi-byte names count bytes.
        assert!(Identifier::new("é".repeat(64)).is_err());
    }

    #[test]
    fn table_names_parse_and_quote() {
        assert_eq!(TableName::parse("a.b").unwrap().quoted(), "\"a\".\"b\"");
        assert_eq!(TableName::parse("b").unwrap().quoted(), "\"b\"");
        assert_eq!("s.t".parse::<TableName>().unwrap().quoted(), "\"s\".\"t\"");
        assert_eq!(
            TableName::try_from("s.t")
                .unwrap()
                .schema()
                .map(Identifier::as_str),
            Some("s")
        );
        assert!(TableName::parse("a.b.c").is_err());
        assert!(TableName::parse("a.").is_err());
        assert!(TableName::parse(".b").is_err());
        assert!(TableName::parse("").is_err());
        assert!(TableName::parse("\"quoted\"").is_err());
        let hostile = TableName::qualified("s\"", "t\"; DROP TABLE victim; --").unwrap();
        assert_eq!(
            hostile.quoted(),
            "\"s\"\"\".\"t\"\"; DROP TABLE victim; --\""
        );
        assert_eq!(TableName::new("with.dot").unwrap().quoted(), "\"with.dot\"");
    }

    #[test]
    fn literals_double_quotes_and_refuse_backslashes() {
        assert_eq!(quote_literal("").unwrap(), "''");
        assert_eq!(quote_literal("a'b").unwrap(), "'a''b'");
        assert_eq!(
            quote_literal("'; DROP TABLE victim; --").unwrap(),
            "'''; DROP TABLE victim; --'"
        );
        assert!(quote_literal("a\\b").is_err());
        assert!(quote_literal("a\0b").is_err());
        assert_eq!(quote_literal("tab\there").unwrap(), "'tab\there'");
    }
}
