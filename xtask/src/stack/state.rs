//! `target/stack/state.json`: what the stack runs (each service's pid,
//! process start time, port and log) and where each AWS service is routed,
//! so that `down`, `status`, `env` and a later `up` act on exactly what `up`
//! started.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{ACCESS_KEY, Kind, Mode, REGION, SECRET_KEY, TEST_DATABASE};
use crate::util::{self, say};

/// A started service as recorded in the state file.
#[derive(Debug, Clone)]
pub(super) struct Svc {
    pub(super) kind: Kind,
    pub(super) pid: u32,
    /// Process start time (from `/proc`), to tell our process from a reused pid.
    pub(super) start_time: u64,
    pub(super) port: u16,
    /// PostgreSQL's data directory.
    pub(super) data_dir: Option<PathBuf>,
    pub(super) log: PathBuf,
}

impl Svc {
    pub(super) fn alive(&self) -> bool {
        util::is_alive(self.pid, self.start_time)
    }

    pub(super) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn to_json(&self) -> Value {
        json!({
            "name": self.kind.name(),
            "pid": self.pid,
            "start_time": self.start_time,
            "port": self.port,
            "data_dir": self.data_dir.as_ref().map(|d| d.display().to_string()),
            "log": self.log.display().to_string(),
        })
    }

    fn from_json(v: &Value) -> Result<Self> {
        let name = v["name"].as_str().context("state: service without name")?;
        let int = |key: &str| {
            v[key]
                .as_u64()
                .with_context(|| format!("state: {name} without {key}"))
        };
        Ok(Svc {
            kind: Kind::from_name(name)
                .with_context(|| format!("state: unknown service {name}"))?,
            pid: u32::try_from(int("pid")?)?,
            start_time: int("start_time")?,
            port: u16::try_from(int("port")?)?,
            data_dir: v["data_dir"].as_str().map(PathBuf::from),
            log: PathBuf::from(v["log"].as_str().unwrap_or_default()),
        })
    }
}

/// Which endpoint serves each AWS service.
#[derive(Debug, Clone, Default)]
pub(super) struct Routes {
    pub(super) default: String,
    pub(super) kinesis: String,
    pub(super) s3: String,
    pub(super) dynamodb: String,
}

/// What `target/stack/state.json` holds.
#[derive(Debug, Clone)]
pub(crate) struct State {
    pub(super) mode: Mode,
    pub(super) services: Vec<Svc>,
    pub(super) routes: Routes,
    pub(super) notes: Vec<String>,
}

pub(super) fn state_path() -> PathBuf {
    util::stack_dir().join("state.json")
}

impl State {
    pub(super) fn load() -> Result<Option<State>> {
        let path = state_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let services = v["services"]
            .as_array()
            .map(|a| a.iter().map(Svc::from_json).collect::<Result<Vec<_>>>())
            .transpose()?
            .unwrap_or_default();
        let route = |k: &str| v["routes"][k].as_str().unwrap_or_default().to_owned();
        Ok(Some(State {
            mode: Mode::from_json(&v["mode"])?,
            services,
            routes: Routes {
                default: route("default"),
                kinesis: route("kinesis"),
                s3: route("s3"),
                dynamodb: route("dynamodb"),
            },
            notes: v["notes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|n| n.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        }))
    }

    pub(super) fn save(&self) -> Result<()> {
        let v = json!({
            "mode": self.mode.to_json(),
            "services": self.services.iter().map(Svc::to_json).collect::<Vec<_>>(),
            "routes": {
                "default": self.routes.default,
                "kinesis": self.routes.kinesis,
                "s3": self.routes.s3,
                "dynamodb": self.routes.dynamodb,
            },
            "notes": self.notes,
        });
        let path = state_path();
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    pub(super) fn get(&self, kind: Kind) -> Option<&Svc> {
        self.services.iter().find(|s| s.kind == kind)
    }

    /// The environment variables the tests read, in `export` order.
    pub(crate) fn env_vars(&self) -> Result<Vec<(&'static str, String)>> {
        let redis = self.get(Kind::Redis).context("the stack has no redis")?;
        let mut vars = vec![
            ("KC_STACK", self.mode.kc_stack().to_owned()),
            ("AWS_ENDPOINT_URL", self.routes.default.clone()),
            ("AWS_ENDPOINT_URL_KINESIS", self.routes.kinesis.clone()),
            ("AWS_ENDPOINT_URL_S3", self.routes.s3.clone()),
            ("AWS_ENDPOINT_URL_DYNAMODB", self.routes.dynamodb.clone()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_DEFAULT_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("REDIS_URL", format!("redis://127.0.0.1:{}", redis.port)),
        ];
        // Every mode but the benchmark's runs PostgreSQL.
        if let Some(pg) = self.get(Kind::Postgres) {
            vars.push((
                "DATABASE_URL",
                format!("postgres://postgres@127.0.0.1:{}/{TEST_DATABASE}", pg.port),
            ));
        } else if self.mode != Mode::Bench {
            bail!("the stack has no postgres");
        }
        match &self.mode {
            Mode::Embedded | Mode::Bench => {}
            Mode::LocalStackHost | Mode::LocalStackUrl(_) => {
                vars.push(("KC_LOCALSTACK_URL", self.routes.default.clone()));
            }
        }
        Ok(vars)
    }

    /// Prints where each AWS service goes and why.
    pub(crate) fn print_routes(&self) {
        say(format!("stack: {}", self.mode.describe()));
        say(format!("  Kinesis  → {}", self.routes.kinesis));
        say(format!("  S3       → {}", self.routes.s3));
        say(format!("  DynamoDB → {}", self.routes.dynamodb));
        for note in &self.notes {
            say(format!("  note: {note}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() -> Result<()> {
        let svc = Svc {
            kind: Kind::Postgres,
            pid: 42,
            start_time: 7,
            port: 5432,
            data_dir: Some(PathBuf::from("/tmp/x")),
            log: PathBuf::from("/tmp/x.log"),
        };
        let back = Svc::from_json(&svc.to_json())?;
        assert_eq!(
            (back.kind, back.pid, back.start_time, back.port),
            (Kind::Postgres, 42, 7, 5432)
        );
        assert_eq!(back.data_dir, svc.data_dir);
        for mode in [
            Mode::Embedded,
            Mode::LocalStackHost,
            Mode::LocalStackUrl("http://h:1".into()),
        ] {
            assert_eq!(Mode::from_json(&mode.to_json())?, mode);
        }
        Ok(())
    }
}
