//! What both emitter builders configure: the data table, its columns, the
//! file table, the `COPY` options and the loader.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::postgres::PgPool;

use crate::copy::{CopyFormat, CopyOptions};
use crate::error::Error;
use crate::loader::Loader;
use crate::sql::{Identifier, TableName};
use crate::target::{FileTable, Target};

/// The default name of the file table's column.
pub const DEFAULT_FILE_COLUMN: &str = "file";

/// A table name as given to a builder: checked when it was converted.
pub(crate) type GivenTable = Option<Result<TableName, Error>>;

/// Converts a builder argument into a table name, keeping the error for `build()`.
pub(crate) fn given_table<N>(table: N) -> GivenTable
where
    N: TryInto<TableName>,
    N::Error: Into<Error>,
{
    Some(table.try_into().map_err(Into::into))
}

pub(crate) struct TargetConfig {
    pub(crate) table: GivenTable,
    pub(crate) columns: Vec<String>,
    pub(crate) file_table: GivenTable,
    pub(crate) file_column: String,
    pub(crate) lock_file_table: bool,
    pub(crate) options: CopyOptions,
    pub(crate) loader: Option<Arc<dyn Loader>>,
}

impl Default for TargetConfig {
    fn default() -> Self {
        Self {
            table: None,
            columns: Vec::new(),
            file_table: None,
            file_column: DEFAULT_FILE_COLUMN.to_owned(),
            lock_file_table: true,
            options: CopyOptions::new(CopyFormat::JsonAuto),
            loader: None,
        }
    }
}

impl TargetConfig {
    /// Checks everything; `file_table_required` for the manifest emitter.
    pub(crate) fn build(
        self,
        pool: PgPool,
        table_method: &str,
        file_table_required: bool,
    ) -> Result<Target, Error> {
        let table = self.table.ok_or_else(|| {
            Error::Config(format!(
                "the data table is not set: call .{table_method}(\"schema.table\")"
            ))
        })??;
        let mut seen = HashSet::new();
        let mut columns = Vec::with_capacity(self.columns.len());
        for name in self.columns {
            if !seen.insert(name.clone()) {
                return Err(Error::Config(format!("column {name:?} is listed twice")));
            }
            columns.push(Identifier::new(name)?);
        }
        let files = match self.file_table {
            Some(file_table) => {
                let file_table = file_table?;
                if file_table == table {
                    return Err(Error::Config(format!(
                        "the file table and the data table are both {table}"
                    )));
                }
                Some(FileTable {
                    table: file_table,
                    column: Identifier::new(self.file_column)?,
                    lock: self.lock_file_table,
                })
            }
            None if file_table_required => {
                return Err(Error::Config(
                    "the file table is not set: call .file_table(\"schema.loaded_files\") \
                     (it is how replayed batches are recognised)"
                        .to_owned(),
                ));
            }
            None => None,
        };
        let loader = self.loader.ok_or_else(|| {
            Error::Config(
                "no loader: call .loader(RedshiftLoader::new(credentials)) to load into Redshift, \
                 or .loader(PostgresLoader::new(s3_client)) to load into PostgreSQL"
                    .to_owned(),
            )
        })?;
        loader.validate(&self.options)?;
        Ok(Target {
            pool,
            table,
            columns,
            options: self.options,
            loader,
            files,
        })
    }
}

/// The builder methods both emitter builders share, documented once.
macro_rules! target_methods {
    ($builder:ident $(<$param:ident : $bound:path>)?) => {
        impl$(<$param: $bound>)? $builder$(<$param>)? {
            /// The target columns, in the order the files hold them (default:
            /// every column of the table, in table order).
            pub fn columns<I, S>(mut self, columns: I) -> Self
            where
                I: IntoIterator<Item = S>,
                S: Into<String>,
            {
                self.target.columns = columns.into_iter().map(Into::into).collect();
                self
            }

            /// The column of the file table holding the loaded files' URLs
            /// (default `file`).
            pub fn file_column(mut self, column: impl Into<String>) -> Self {
                self.target.file_column = column.into();
                self
            }

            /// Whether each load starts with `LOCK <file table>` (default on),
            /// so that two workers loading the same files (a lease handed over
            /// mid-batch) take turns and the second finds the files loaded.
            /// Without it, PostgreSQL relies on the file table's primary key
            /// and Redshift on its serializable isolation; either way the
            /// loser gets a retryable error.
            pub fn lock_file_table(mut self, lock: bool) -> Self {
                self.target.lock_file_table = lock;
                self
            }

            /// The file format (default [`CopyFormat::JsonAuto`](crate::CopyFormat::JsonAuto)).
            pub fn format(mut self, format: $crate::CopyFormat) -> Self {
                self.target.options.format = format;
                self
            }

            /// Whether the files are gzip-compressed (`GZIP`; default off).
            pub fn gzip(mut self, gzip: bool) -> Self {
                self.target.options.gzip = gzip;
                self
            }

            /// `TIMEFORMAT '<format>'` (default none).
            pub fn time_format(mut self, format: impl Into<String>) -> Self {
                self.target.options.time_format = Some(format.into());
                self
            }

            /// `TRUNCATECOLUMNS` (default off).
            pub fn truncate_columns(mut self, truncate: bool) -> Self {
                self.target.options.truncate_columns = truncate;
                self
            }

            /// `MAXERROR <n>` (default none: any bad row fails the load).
            pub fn max_error(mut self, max_error: u32) -> Self {
                self.target.options.max_error = Some(max_error);
                self
            }

            /// Every `COPY` option at once, replacing what the methods above set.
            pub fn copy_options(mut self, options: $crate::CopyOptions) -> Self {
                self.target.options = options;
                self
            }

            /// How files get into the table: [`RedshiftLoader`](crate::RedshiftLoader)
            /// or [`PostgresLoader`](crate::PostgresLoader) (required).
            pub fn loader(mut self, loader: impl $crate::Loader + 'static) -> Self {
                self.target.loader = Some(std::sync::Arc::new(loader));
                self
            }
        }
    };
}

pub(crate) use target_methods;
