//! `COPY` options and credentials, and the Redshift `COPY … FROM 's3://…'`
//! statement built from them.

use std::fmt;

use aws_sdk_s3::config::{ProvideCredentials, SharedCredentialsProvider};

use crate::error::Error;
use crate::manifest::parse_s3_url;
use crate::sql::{Identifier, TableName, quote_literal};

/// How the loaded files are formatted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CopyFormat {
    /// One JSON object per line, keys matched to column names: Redshift
    /// `JSON 'auto'` (the default).
    #[default]
    JsonAuto,
    /// One JSON object per line, columns taken from the JSONPaths file at
    /// this `s3://bucket/key` URL: Redshift `JSON 's3://…'`.
    JsonPaths(String),
    /// Comma-separated values with `"` quotes: Redshift `CSV`.
    Csv,
    /// Fields separated by this single ASCII character: Redshift
    /// `DELIMITER '<c>'` (e.g. `'|'` or `'\t'`).
    Delimited(char),
}

impl CopyFormat {
    /// A JSONPaths format reading its paths from `url` (`s3://bucket/key`).
    pub fn json_paths(url: impl Into<String>) -> Self {
        Self::JsonPaths(url.into())
    }

    /// Whether files are JSON lines.
    pub fn is_json(&self) -> bool {
        matches!(self, Self::JsonAuto | Self::JsonPaths(_))
    }

    fn validate(&self) -> Result<(), Error> {
        match self {
            Self::JsonAuto | Self::Csv => Ok(()),
            Self::JsonPaths(url) => {
                if parse_s3_url(url).is_none() {
                    return Err(Error::Config(format!(
                        "the JSONPaths file {url:?} is not an s3://bucket/key URL"
                    )));
                }
                quote_literal(url).map(drop)
            }
            Self::Delimited(c) => {
                let allowed = *c == '\t' || (c.is_ascii() && !c.is_ascii_control());
                if !allowed || matches!(c, '\'' | '\\' | '"' | '\n' | '\r') {
                    return Err(Error::Config(format!(
                        "delimiter {c:?} must be one printable ASCII character or a tab, and not a quote or backslash"
                    )));
                }
                Ok(())
            }
        }
    }

    /// The Redshift format clause.
    fn redshift(&self) -> Result<String, Error> {
        Ok(match self {
            Self::JsonAuto => "JSON 'auto'".to_owned(),
            Self::JsonPaths(url) => format!("JSON {}", quote_literal(url)?),
            Self::Csv => "CSV".to_owned(),
            Self::Delimited('\t') => "DELIMITER '\\t'".to_owned(),
            Self::Delimited(c) => format!("DELIMITER {}", quote_literal(&c.to_string())?),
        })
    }
}

/// The format and data-conversion options of a `COPY`.
///
/// ```
/// use kinesis_connectors_redshift::{CopyFormat, CopyOptions};
/// let options = CopyOptions::new(CopyFormat::Csv)
///     .gzip(true)
///     .time_format("auto")
///     .truncate_columns(true)
///     .max_error(10);
/// assert_eq!(options.max_error, Some(10));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CopyOptions {
    /// The file format (default [`CopyFormat::JsonAuto`]).
    pub format: CopyFormat,
    /// The files are gzip-compressed: `GZIP` (default off).
    pub gzip: bool,
    /// `TIMEFORMAT '<format>'`, e.g. `auto` or `epochmillisecs` (default none).
    pub time_format: Option<String>,
    /// `TRUNCATECOLUMNS`: cut strings to their column's width (default off).
    pub truncate_columns: bool,
    /// `MAXERROR <n>`: rows Redshift may skip before failing (default none:
    /// any bad row fails the load).
    pub max_error: Option<u32>,
}

impl CopyOptions {
    /// Options for `format`, everything else off.
    pub fn new(format: CopyFormat) -> Self {
        Self {
            format,
            ..Self::default()
        }
    }

    /// Whether the files are gzip-compressed.
    pub fn gzip(mut self, gzip: bool) -> Self {
        self.gzip = gzip;
        self
    }

    /// `TIMEFORMAT '<format>'`.
    pub fn time_format(mut self, format: impl Into<String>) -> Self {
        self.time_format = Some(format.into());
        self
    }

    /// `TRUNCATECOLUMNS`.
    pub fn truncate_columns(mut self, truncate: bool) -> Self {
        self.truncate_columns = truncate;
        self
    }

    /// `MAXERROR <n>`.
    pub fn max_error(mut self, max_error: u32) -> Self {
        self.max_error = Some(max_error);
        self
    }

    /// Checks every value that goes into the statement.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        self.format.validate()?;
        if let Some(format) = &self.time_format {
            if format.trim().is_empty() {
                return Err(Error::Config("the time format is empty".to_owned()));
            }
            quote_literal(format)?;
        }
        Ok(())
    }

    /// The clauses after the source and credentials: format, then options.
    fn redshift(&self) -> Result<String, Error> {
        let mut clause = self.format.redshift()?;
        if self.gzip {
            clause.push_str(" GZIP");
        }
        if let Some(format) = &self.time_format {
            clause.push_str(" TIMEFORMAT ");
            clause.push_str(&quote_literal(format)?);
        }
        if self.truncate_columns {
            clause.push_str(" TRUNCATECOLUMNS");
        }
        if let Some(max) = self.max_error {
            clause.push_str(&format!(" MAXERROR {max}"));
        }
        Ok(clause)
    }
}

/// How Redshift authenticates to S3 for a `COPY`.
///
/// Secrets never appear in `Debug` output, logs or errors: statements are
/// logged with `'<redacted>'` in their place.
#[derive(Clone)]
#[non_exhaustive]
pub enum Credentials {
    /// `IAM_ROLE '<arn>'`: a role attached to the cluster (recommended).
    IamRole(String),
    /// `IAM_ROLE default`: the cluster's default role.
    DefaultIamRole,
    /// `ACCESS_KEY_ID '…' SECRET_ACCESS_KEY '…' [SESSION_TOKEN '…']`, loaded
    /// from this provider (e.g. the SDK's default credential chain) for
    /// every `COPY`, so rotated and temporary credentials keep working.
    Provider(SharedCredentialsProvider),
}

impl Credentials {
    /// `IAM_ROLE '<arn>'`.
    pub fn iam_role(arn: impl Into<String>) -> Self {
        Self::IamRole(arn.into())
    }

    /// Access keys from `provider`, e.g. the SDK's default chain
    /// (`aws_config::default_provider::credentials::default_provider().await`),
    /// or `SdkConfig::credentials_provider()` wrapped in [`Credentials::Provider`].
    pub fn from_provider(provider: impl ProvideCredentials + 'static) -> Self {
        Self::Provider(SharedCredentialsProvider::new(provider))
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        match self {
            Self::IamRole(arn) => {
                if !arn.starts_with("arn:") {
                    return Err(Error::Config(format!(
                        "IAM role {arn:?} is not an ARN (arn:aws:iam::<account>:role/<name>)"
                    )));
                }
                quote_literal(arn).map(drop)
            }
            Self::DefaultIamRole | Self::Provider(_) => Ok(()),
        }
    }

    /// Loads what the statement needs (access keys from the provider).
    pub(crate) async fn resolve(&self) -> Result<ResolvedCredentials, Error> {
        Ok(match self {
            Self::IamRole(arn) => ResolvedCredentials::IamRole(arn.clone()),
            Self::DefaultIamRole => ResolvedCredentials::DefaultIamRole,
            Self::Provider(provider) => {
                let keys =
                    provider
                        .provide_credentials()
                        .await
                        .map_err(|error| Error::Credentials {
                            message: aws_sdk_s3::error::DisplayErrorContext(&error).to_string(),
                        })?;
                ResolvedCredentials::Keys {
                    access_key_id: keys.access_key_id().to_owned(),
                    secret_access_key: keys.secret_access_key().to_owned(),
                    session_token: keys.session_token().map(str::to_owned),
                }
            }
        })
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IamRole(arn) => f.debug_tuple("IamRole").field(arn).finish(),
            Self::DefaultIamRole => f.write_str("DefaultIamRole"),
            Self::Provider(_) => f.write_str("Provider(<redacted>)"),
        }
    }
}

/// Credentials ready to be written into a statement.
pub(crate) enum ResolvedCredentials {
    IamRole(String),
    DefaultIamRole,
    Keys {
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    },
}

impl ResolvedCredentials {
    /// The authorization clause; with `redact`, every key is `'<redacted>'`.
    fn clause(&self, redact: bool) -> Result<String, Error> {
        let secret = |value: &str| {
            if redact {
                Ok("'<redacted>'".to_owned())
            } else {
                quote_literal(value)
            }
        };
        Ok(match self {
            Self::IamRole(arn) => format!("IAM_ROLE {}", quote_literal(arn)?),
            Self::DefaultIamRole => "IAM_ROLE default".to_owned(),
            Self::Keys {
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                let mut clause = format!(
                    "ACCESS_KEY_ID {} SECRET_ACCESS_KEY {}",
                    secret(access_key_id)?,
                    secret(secret_access_key)?
                );
                if let Some(token) = session_token {
                    clause.push_str(" SESSION_TOKEN ");
                    clause.push_str(&secret(token)?);
                }
                clause
            }
        })
    }
}

/// The parts of a Redshift `COPY … FROM 's3://…'`.
pub(crate) struct RedshiftCopy<'a> {
    pub(crate) table: &'a TableName,
    pub(crate) columns: &'a [Identifier],
    /// The manifest or the single object.
    pub(crate) from: &'a str,
    pub(crate) manifest: bool,
    pub(crate) region: Option<&'a str>,
    pub(crate) options: &'a CopyOptions,
}

impl RedshiftCopy<'_> {
    /// `COPY <table> [(<columns>)] FROM '<url>' <credentials> [MANIFEST]
    /// [REGION '<r>'] <format> [GZIP] [TIMEFORMAT '<f>'] [TRUNCATECOLUMNS]
    /// [MAXERROR <n>]`; with `redact`, secrets are replaced.
    pub(crate) fn statement(
        &self,
        credentials: &ResolvedCredentials,
        redact: bool,
    ) -> Result<String, Error> {
        let mut sql = format!("COPY {}", self.table.quoted());
        if !self.columns.is_empty() {
            let columns: Vec<String> = self.columns.iter().map(Identifier::quoted).collect();
            sql.push_str(&format!(" ({})", columns.join(", ")));
        }
        sql.push_str(" FROM ");
        sql.push_str(&quote_literal(self.from)?);
        sql.push(' ');
        sql.push_str(&credentials.clause(redact)?);
        if self.manifest {
            sql.push_str(" MANIFEST");
        }
        if let Some(region) = self.region {
            sql.push_str(" REGION ");
            sql.push_str(&quote_literal(region)?);
        }
        sql.push(' ');
        sql.push_str(&self.options.redshift()?);
        Ok(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role() -> ResolvedCredentials {
        ResolvedCredentials::IamRole("arn:aws:iam::123456789012:role/loader".into())
    }

    fn keys(token: Option<&str>) -> ResolvedCredentials {
        ResolvedCredentials::Keys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG".into(),
            session_token: token.map(str::to_owned),
        }
    }

    fn copy<'a>(
        table: &'a TableName,
        columns: &'a [Identifier],
        options: &'a CopyOptions,
        manifest: bool,
    ) -> RedshiftCopy<'a> {
        RedshiftCopy {
            table,
            columns,
            from: if manifest {
                "s3://bucket/manifests/app/stream/shardId-000000000000/1-9.manifest"
            } else {
                "s3://bucket/data/shardId-000000000000-1-9.jsonl"
            },
            manifest,
            region: None,
            options,
        }
    }

    #[test]
    fn json_auto_manifest_with_an_iam_role() {
        let table = TableName::parse("public.events").unwrap();
        let options = CopyOptions::default();
        let sql = copy(&table, &[], &options, true)
            .statement(&role(), false)
            .unwrap();
        assert_eq!(
            sql,
            "COPY \"public\".\"events\" FROM 's3://bucket/manifests/app/stream/shardId-000000000000/1-9.manifest' \
             IAM_ROLE 'arn:aws:iam::123456789012:role/loader' MANIFEST JSON 'auto'"
        );
    }

    #[test]
    fn single_object_without_manifest() {
        let table = TableName::parse("events").unwrap();
        let options = CopyOptions::new(CopyFormat::Csv);
        let sql = copy(&table, &[], &options, false)
            .statement(&ResolvedCredentials::DefaultIamRole, false)
            .unwrap();
        assert_eq!(
            sql,
            "COPY \"events\" FROM 's3://bucket/data/shardId-000000000000-1-9.jsonl' IAM_ROLE default CSV"
        );
    }

    #[test]
    fn json_paths_with_every_option_and_columns() {
        let table = TableName::qualified("analytics", "clicks").unwrap();
        let columns = vec![
            Identifier::new("id").unwrap(),
            Identifier::new("user").unwrap(),
        ];
        let options = CopyOptions::new(CopyFormat::json_paths("s3://bucket/paths/clicks.json"))
            .gzip(true)
            .time_format("epochmillisecs")
            .truncate_columns(true)
            .max_error(10);
        options.validate().unwrap();
        let mut statement = copy(&table, &columns, &options, true);
        statement.region = Some("eu-west-1");
        let sql = statement.statement(&role(), false).unwrap();
        assert_eq!(
            sql,
            "COPY \"analytics\".\"clicks\" (\"id\", \"user\") \
             FROM 's3://bucket/manifests/app/stream/shardId-000000000000/1-9.manifest' \
             IAM_ROLE 'arn:aws:iam::123456789012:role/loader' MANIFEST REGION 'eu-west-1' \
             JSON 's3://bucket/paths/clicks.json' GZIP TIMEFORMAT 'epochmillisecs' TRUNCATECOLUMNS MAXERROR 10"
        );
    }

    #[test]
    fn delimiters() {
        let table = TableName::parse("t").unwrap();
        for (delimiter, clause) in [
            ('|', "DELIMITER '|'"),
            ('\t', "DELIMITER '\\t'"),
            (',', "DELIMITER ','"),
        ] {
            let options = CopyOptions::new(CopyFormat::Delimited(delimiter)).gzip(true);
            options.validate().unwrap();
            let sql = copy(&table, &[], &options, false)
                .statement(&ResolvedCredentials::DefaultIamRole, false)
                .unwrap();
            assert_eq!(
                sql,
                format!(
                    "COPY \"t\" FROM 's3://bucket/data/shardId-000000000000-1-9.jsonl' IAM_ROLE default {clause} GZIP"
                )
            );
        }
        for bad in ['\'', '\\', '\n', '\r', '\0', 'é', '"'] {
            assert!(
                CopyOptions::new(CopyFormat::Delimited(bad))
                    .validate()
                    .is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn access_keys_are_written_and_redacted() {
        let table = TableName::parse("t").unwrap();
        let options = CopyOptions::default();
        let statement = copy(&table, &[], &options, true);
        assert_eq!(
            statement.statement(&keys(Some("TOKEN")), false).unwrap(),
            "COPY \"t\" FROM 's3://bucket/manifests/app/stream/shardId-000000000000/1-9.manifest' \
             ACCESS_KEY_ID 'AKIDEXAMPLE' SECRET_ACCESS_KEY 'wJalrXUtnFEMI/K7MDENG' SESSION_TOKEN 'TOKEN' \
             MANIFEST JSON 'auto'"
        );
        assert_eq!(
            statement.statement(&keys(None), true).unwrap(),
            "COPY \"t\" FROM 's3://bucket/manifests/app/stream/shardId-000000000000/1-9.manifest' \
             ACCESS_KEY_ID '<redacted>' SECRET_ACCESS_KEY '<redacted>' MANIFEST JSON 'auto'"
        );
    }

    #[test]
    fn hostile_configuration_stays_inside_quotes() {
        let table = TableName::qualified("s", "t\"; DROP TABLE victim; --").unwrap();
        let columns = vec![Identifier::new("c\", \"d").unwrap()];
        let options = CopyOptions::new(CopyFormat::Csv).time_format("YYYY'; DROP TABLE victim; --");
        options.validate().unwrap();
        let statement = RedshiftCopy {
            table: &table,
            columns: &columns,
            from: "s3://b/it's",
            manifest: false,
            region: None,
            options: &options,
        };
        assert_eq!(
            statement
                .statement(
                    &ResolvedCredentials::IamRole("arn:aws:iam::1:role/x'--".into()),
                    false
                )
                .unwrap(),
            "COPY \"s\".\"t\"\"; DROP TABLE victim; --\" (\"c\"\", \"\"d\") FROM 's3://b/it''s' \
             IAM_ROLE 'arn:aws:iam::1:role/x''--' CSV TIMEFORMAT 'YYYY''; DROP TABLE victim; --'"
        );
        assert!(
            CopyOptions::new(CopyFormat::Csv)
                .time_format("\\'; DROP TABLE victim; --")
                .validate()
                .is_err()
        );
        assert!(
            Credentials::iam_role("arn:aws:iam::1:role/x\\")
                .validate()
                .is_err()
        );
        assert!(Credentials::iam_role("role/x").validate().is_err());
        assert!(
            CopyOptions::new(CopyFormat::json_paths("https://b/k"))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn debug_never_shows_secrets() {
        let provider = Credentials::from_provider(aws_sdk_s3::config::Credentials::new(
            "AKIDEXAMPLE",
            "SECRETSECRET",
            Some("TOKENTOKEN".into()),
            None,
            "test",
        ));
        let shown = format!("{provider:?}");
        assert_eq!(shown, "Provider(<redacted>)");
        assert_eq!(
            format!("{:?}", Credentials::iam_role("arn:aws:iam::1:role/r")),
            "IamRole(\"arn:aws:iam::1:role/r\")"
        );
    }

    #[tokio::test]
    async fn provider_credentials_are_loaded_for_each_statement() {
        let provider = Credentials::from_provider(aws_sdk_s3::config::Credentials::new(
            "AKIDEXAMPLE",
            "SECRETSECRET",
            None,
            None,
            "test",
        ));
        let resolved = provider.resolve().await.unwrap();
        assert_eq!(
            resolved.clause(false).unwrap(),
            "ACCESS_KEY_ID 'AKIDEXAMPLE' SECRET_ACCESS_KEY 'SECRETSECRET'"
        );
        assert_eq!(
            resolved.clause(true).unwrap(),
            "ACCESS_KEY_ID '<redacted>' SECRET_ACCESS_KEY '<redacted>'"
        );
    }
}
