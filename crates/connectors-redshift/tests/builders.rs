//! Builder checks and what emitters report before touching the database:
//! no PostgreSQL or S3 is needed (the pool connects lazily and is never used).

// Test helpers may unwrap and panic like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kinesis_connectors_core::Utf8Transformer;
use kinesis_connectors_redshift::{
    CopyFormat, Credentials, Error, PostgresLoader, RedshiftBasicEmitter, RedshiftLoader,
    RedshiftManifestEmitter, TableName,
};
use kinesis_connectors_s3::S3Emitter;
use kinesis_connectors_testkit::{batch, shard_context};
use sqlx::postgres::{PgPool, PgPoolOptions};

fn pool() -> PgPool {
    PgPoolOptions::new()
        .connect_lazy("postgres://user:hunter2@127.0.0.1:1/db")
        .unwrap()
}

fn s3() -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "AKIDEXAMPLE",
            "SECRETSECRET",
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

fn role() -> RedshiftLoader {
    RedshiftLoader::new(Credentials::iam_role(
        "arn:aws:iam::123456789012:role/loader",
    ))
}

fn config_error(result: Result<impl std::fmt::Debug, Error>) -> String {
    match result {
        Err(Error::Config(message)) => message,
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[tokio::test]
async fn manifest_emitter_builds_and_names_manifests() {
    let emitter = RedshiftManifestEmitter::builder(pool(), s3(), "my-bucket")
        .data_table("analytics.events")
        .file_table(TableName::qualified("analytics", "loaded_files").unwrap())
        .manifest_prefix("loads/manifests")
        .format(CopyFormat::JsonAuto)
        .gzip(true)
        .loader(role())
        .build()
        .unwrap();
    let batch = batch(shard_context("shardId-000000000002"), vec!["s3://b/k"], 42);
    assert_eq!(
        emitter.manifest_key(&batch),
        "loads/manifests/test-app/test-stream/shardId-000000000002/42-42.manifest"
    );
    assert_eq!(
        emitter.file_table_ddl(),
        "CREATE TABLE IF NOT EXISTS \"analytics\".\"loaded_files\" (\"file\" VARCHAR(2048) NOT NULL PRIMARY KEY)"
    );
    let shown = format!("{emitter:?}");
    assert!(shown.contains("my-bucket"), "{shown}");
    assert!(
        !shown.contains("hunter2"),
        "the pool's password leaked: {shown}"
    );
}

#[tokio::test]
async fn manifest_emitter_configuration_errors() {
    let base = || {
        RedshiftManifestEmitter::builder(pool(), s3(), "bucket")
            .data_table("events")
            .file_table("files")
            .loader(role())
    };
    assert!(base().build().is_ok());
    let message = config_error(
        RedshiftManifestEmitter::builder(pool(), s3(), "bucket")
            .file_table("files")
            .loader(role())
            .build(),
    );
    assert!(message.contains("data_table"), "{message}");
    let message = config_error(
        RedshiftManifestEmitter::builder(pool(), s3(), "bucket")
            .data_table("events")
            .loader(role())
            .build(),
    );
    assert!(message.contains("file table"), "{message}");
    let message = config_error(
        RedshiftManifestEmitter::builder(pool(), s3(), "bucket")
            .data_table("events")
            .file_table("files")
            .build(),
    );
    assert!(message.contains("PostgresLoader"), "{message}");
    assert!(config_error(base().data_table("a.b.c").build()).contains("more than one"));
    assert!(config_error(base().file_table("events").build()).contains("both"));
    assert!(config_error(base().columns(["a", "a"]).build()).contains("twice"));
    assert!(config_error(base().columns([""]).build()).contains("empty"));
    assert!(config_error(base().file_column("").build()).contains("empty"));
    assert!(config_error(base().manifest_prefix("/abs").build()).contains("starts with"));
    assert!(config_error(base().manifest_prefix("a\\b").build()).contains("backslash"));
    assert!(config_error(base().format(CopyFormat::Delimited('\'')).build()).contains("delimiter"));
    assert!(config_error(base().time_format("").build()).contains("time format"));
    assert!(
        config_error(base().format(CopyFormat::json_paths("paths.json")).build())
            .contains("JSONPaths")
    );
    assert!(
        config_error(
            base()
                .loader(RedshiftLoader::new(Credentials::iam_role("my-role")))
                .build()
        )
        .contains("ARN")
    );
    assert!(config_error(base().loader(role().region(" ")).build()).contains("region"));
    for bucket in ["", "s3://bucket", "a/b", "a b"] {
        let result = RedshiftManifestEmitter::builder(pool(), s3(), bucket)
            .data_table("events")
            .file_table("files")
            .loader(role())
            .build();
        assert!(config_error(result).contains("bucket"), "{bucket:?}");
    }
}

#[tokio::test]
async fn hostile_names_are_accepted_as_names() {
    // Odd names are names: they are quoted, never interpreted.
    let emitter = RedshiftManifestEmitter::builder(pool(), s3(), "bucket")
        .data_table(TableName::new("events\"; DROP TABLE victim; --").unwrap())
        .file_table(TableName::qualified("s", "f\" --").unwrap())
        .file_column("file\"); DROP TABLE victim; --")
        .columns(["a\"b", "c d"])
        .loader(PostgresLoader::new(s3()))
        .build()
        .unwrap();
    assert_eq!(
        emitter.file_table_ddl(),
        "CREATE TABLE IF NOT EXISTS \"s\".\"f\"\" --\" (\"file\"\"); DROP TABLE victim; --\" VARCHAR(2048) NOT NULL PRIMARY KEY)"
    );
}

#[tokio::test]
async fn basic_emitter_builds_with_an_s3_emitter() {
    let upload = S3Emitter::builder(s3(), "bucket", Utf8Transformer)
        .suffix(".jsonl")
        .build()
        .unwrap();
    let emitter = RedshiftBasicEmitter::builder(upload, pool())
        .table("public.events")
        .file_table("public.loaded_files")
        .loader(RedshiftLoader::new(Credentials::DefaultIamRole))
        .build()
        .unwrap();
    assert_eq!(emitter.s3().bucket(), "bucket");
    assert!(
        emitter
            .file_table_ddl()
            .starts_with("CREATE TABLE IF NOT EXISTS \"public\".\"loaded_files\"")
    );

    let upload = S3Emitter::builder(s3(), "bucket", Utf8Transformer)
        .build()
        .unwrap();
    let message = config_error(
        RedshiftBasicEmitter::builder(upload, pool())
            .loader(role())
            .build(),
    );
    assert!(message.contains(".table("), "{message}");

    // A file table skips objects by key: the key must name both batch ends.
    let first_only = || {
        S3Emitter::builder(s3(), "bucket", Utf8Transformer)
            .key_template("{prefix}/{shard}/{first_seq}")
            .build()
            .unwrap()
    };
    let message = config_error(
        RedshiftBasicEmitter::builder(first_only(), pool())
            .table("public.events")
            .file_table("public.loaded_files")
            .loader(role())
            .build(),
    );
    assert!(
        message.contains("{first_seq}") && message.contains("{last_seq}"),
        "{message}"
    );
    // Without a file table (at-least-once loading) the template is fine.
    RedshiftBasicEmitter::builder(first_only(), pool())
        .table("public.events")
        .loader(role())
        .build()
        .unwrap();
}

#[tokio::test]
async fn credentials_never_show_in_debug_output() {
    let keys = Credentials::from_provider(aws_sdk_s3::config::Credentials::new(
        "AKIDEXAMPLE",
        "SECRETSECRET",
        Some("TOKENTOKEN".to_owned()),
        None,
        "test",
    ));
    let loader = RedshiftLoader::new(keys);
    let emitter = RedshiftManifestEmitter::builder(pool(), s3(), "bucket")
        .data_table("events")
        .file_table("files")
        .loader(loader.clone())
        .build()
        .unwrap();
    for shown in [format!("{loader:?}"), format!("{emitter:?}")] {
        for secret in ["AKIDEXAMPLE", "SECRETSECRET", "TOKENTOKEN", "hunter2"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }
}

#[tokio::test]
async fn empty_batches_touch_nothing() {
    // The pool points at a closed port: any database access would fail.
    let emitter = RedshiftManifestEmitter::builder(pool(), s3(), "bucket")
        .data_table("events")
        .file_table("files")
        .loader(role())
        .build()
        .unwrap();
    let empty = batch::<String>(shard_context("shardId-0"), Vec::new(), 1);
    let report = emitter.load(&empty).await.unwrap();
    assert!(report.loaded_files.is_empty() && report.source.is_none());
    // Items that are not S3 URLs are rejected one by one; nothing to load.
    let junk = batch(
        shard_context("shardId-0"),
        vec!["hello".to_owned(), "s3://only-bucket".to_owned()],
        1,
    );
    let report = emitter.load(&junk).await.unwrap();
    assert_eq!(
        report.rejected.iter().map(|r| r.index).collect::<Vec<_>>(),
        [0, 1]
    );
}
