//! Planning: which services a mode needs, and which endpoint serves each
//! AWS service once they run (an external LocalStack serves what it can,
//! the embedded emulators the rest).

use anyhow::{Context, Result};

use super::probe;
use super::state::{Routes, State, Svc};
use super::{Kind, Mode};
use crate::util::HttpUrl;

/// The services `mode` needs, plus what an external LocalStack serves.
pub(super) fn plan(mode: &Mode) -> Result<(Vec<Kind>, Vec<String>)> {
    match mode {
        Mode::Embedded => Ok((
            vec![Kind::Kinesis, Kind::Moto, Kind::Postgres, Kind::Redis],
            Vec::new(),
        )),
        Mode::LocalStackHost => Ok((
            vec![Kind::LocalStack, Kind::Moto, Kind::Postgres, Kind::Redis],
            Vec::new(),
        )),
        Mode::Bench => Ok((vec![Kind::Kinesalite, Kind::Moto, Kind::Redis], Vec::new())),
        Mode::LocalStackUrl(url) => {
            let available = probe::usable_localstack_services(url)?;
            let mut kinds = Vec::new();
            if !available.iter().any(|s| s == "kinesis") {
                kinds.push(Kind::Kinesis);
            }
            if !available.iter().any(|s| s == "s3") || !available.iter().any(|s| s == "dynamodb") {
                kinds.push(Kind::Moto);
            }
            kinds.extend([Kind::Postgres, Kind::Redis]);
            Ok((kinds, available))
        }
    }
}

/// Fills in the endpoint of each AWS service (and notes on fallbacks).
pub(super) fn route(state: &mut State, available: &[String]) -> Result<()> {
    let url_of = |k: Kind| {
        state
            .get(k)
            .map(Svc::url)
            .with_context(|| format!("{} is not running", k.name()))
    };
    let mut notes = Vec::new();
    let routes = match &state.mode {
        Mode::Embedded => {
            let moto = url_of(Kind::Moto)?;
            Routes {
                default: moto.clone(),
                kinesis: url_of(Kind::Kinesis)?,
                s3: moto.clone(),
                dynamodb: moto,
            }
        }
        Mode::Bench => {
            let moto = url_of(Kind::Moto)?;
            Routes {
                default: moto.clone(),
                kinesis: url_of(Kind::Kinesalite)?,
                s3: moto.clone(),
                dynamodb: moto,
            }
        }
        Mode::LocalStackHost => {
            let ls = url_of(Kind::LocalStack)?;
            notes.push(
                "DynamoDB goes to moto: the DynamoDB of a LocalStack started on the host does not work here"
                    .to_owned(),
            );
            Routes {
                default: ls.clone(),
                kinesis: ls.clone(),
                s3: ls,
                dynamodb: url_of(Kind::Moto)?,
            }
        }
        Mode::LocalStackUrl(url) => {
            let ls = HttpUrl::parse(url)?.base();
            let mut pick = |svc: &str, fallback: Kind| -> Result<String> {
                if available.iter().any(|a| a == svc) {
                    Ok(ls.clone())
                } else {
                    notes.push(format!(
                        "{svc} goes to {}: the LocalStack at {url} does not serve it \
                         (not available in its health, or a request to it failed)",
                        fallback.name()
                    ));
                    url_of(fallback)
                }
            };
            Routes {
                kinesis: pick("kinesis", Kind::Kinesis)?,
                s3: pick("s3", Kind::Moto)?,
                dynamodb: pick("dynamodb", Kind::Moto)?,
                default: ls.clone(),
            }
        }
    };
    state.routes = routes;
    state.notes = notes;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn routes_an_external_localstack() -> Result<()> {
        let svc = |kind, port| Svc {
            kind,
            pid: 1,
            start_time: 1,
            port,
            data_dir: None,
            log: PathBuf::new(),
        };
        let mut state = State {
            mode: Mode::LocalStackUrl("http://localhost:4566/".into()),
            services: vec![
                svc(Kind::Moto, 5000),
                svc(Kind::Postgres, 5432),
                svc(Kind::Redis, 6379),
            ],
            routes: Routes::default(),
            notes: Vec::new(),
        };
        route(&mut state, &["kinesis".to_owned(), "s3".to_owned()])?;
        assert_eq!(state.routes.kinesis, "http://localhost:4566");
        assert_eq!(state.routes.s3, "http://localhost:4566");
        assert_eq!(state.routes.dynamodb, "http://127.0.0.1:5000");
        assert_eq!(state.notes.len(), 1);
        let vars = state.env_vars()?;
        assert!(vars.contains(&("KC_STACK", "localstack".to_owned())));
        assert!(vars.contains(&("REDIS_URL", "redis://127.0.0.1:6379".to_owned())));
        Ok(())
    }
}
