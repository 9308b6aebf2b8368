//! The labeling database: labelers (tokens stored as SHA-256 digests), tasks (a prompt and its K
//! responses), assignments (who was shown what, in which order) and submissions (rankings, flags,
//! comments), on SQLite (WAL, `synchronous=FULL`) or PostgreSQL through one code path (sqlx's
//! `Any` driver, `$n` parameters only, never string-built SQL).
//!
//! Durability: a submission returns only once committed, and a labeler's second submission of a
//! task is acknowledged as a duplicate (and refused by a unique key), so a retried request cannot
//! count twice.
//!
//! Not here: giving out tasks and taking submissions under locks (`assign.rs`), HTTP (`web.rs`),
//! what the numbers mean (`stats.rs`).

use std::collections::BTreeMap;

use rand::Rng;
use rlhf_data::{Ranking, SampleRecord};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyConnection, AnyPool, Connection, Executor, Row};

use crate::error::{LabelError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// InstructGPT's per-output metadata a labeler may tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// Contains a factual or logical error.
    Wrong,
    /// Harmful, toxic or inappropriate.
    Harmful,
    /// Does not do what the instruction asked.
    IgnoresInstruction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labeler {
    pub id: i64,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Task {
    pub id: i64,
    pub prompt: String,
    pub responses: Vec<String>,
}

/// What a labeler sends for a task.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSubmission {
    /// Indices into the task's responses, best first.
    pub ranking: Ranking,
    /// Response index → flags.
    pub flags: BTreeMap<usize, Vec<Flag>>,
    pub comment: String,
}

/// A stored submission with its task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Submission {
    pub id: i64,
    pub task_id: i64,
    pub labeler: String,
    pub prompt: String,
    pub responses: Vec<String>,
    pub ranking: Ranking,
    pub flags: BTreeMap<usize, Vec<Flag>>,
    pub comment: String,
    pub shown_ms: i64,
    pub submitted_ms: i64,
}

/// The answer to a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ack {
    pub id: i64,
    /// The labeler had already submitted this task; the first submission stands.
    pub duplicate: bool,
}

/// How far the labeling is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Tasks this labeler has submitted.
    pub mine: i64,
    /// Tasks this labeler can still get (not yet covered by `overlap` labelers, not theirs).
    pub available: i64,
    pub tasks: i64,
    /// Submissions from everyone, and how many the overlap asks for (tasks × overlap).
    pub submissions: i64,
    pub needed: i64,
}

/// The query for submissions with their task and labeler, completed by a literal clause (sqlx
/// accepts only static SQL: nothing a user sends can become part of a statement).
macro_rules! submissions {
    ($clause:literal) => {
        concat!(
            "SELECT s.id, s.task_id, l.name, t.prompt, t.responses, s.ranking, s.flags, \
             s.comment, s.shown_ms, s.submitted_ms FROM submissions s \
             JOIN tasks t ON t.id = s.task_id JOIN labelers l ON l.id = s.labeler_id ",
            $clause
        )
    };
}

pub struct Db {
    pub(crate) pool: AnyPool,
    backend: Backend,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| LabelError::Invalid(e.to_string()))
}

/// The database URL with its password (in the authority or a `password=` parameter) replaced by
/// `***`, for messages. Everything up to the last `@` counts as the user part, so a password
/// holding an unescaped `@`, `/` or `?` is hidden too.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (userinfo, host_and_path) = match rest.rsplit_once('@') {
        Some((user, tail)) => (Some(user), tail),
        None => (None, rest),
    };
    let user = userinfo.map(|u| match u.split_once(':') {
        Some((name, _)) => format!("{name}:***@"),
        None => format!("{u}@"),
    });
    let tail = match host_and_path.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => host_and_path.to_string(),
    };
    format!("{scheme}://{}{tail}", user.unwrap_or_default())
}

pub(crate) fn parse_json<T: for<'a> Deserialize<'a>>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| LabelError::Corrupt(format!("{what} is not valid JSON: {e}")))
}

impl Db {
    /// Connects (creating a SQLite file if needed) and applies the migrations.
    /// `sqlite://FILE` or `postgres://USER@HOST:PORT/DB`.
    pub async fn open(url: &str) -> Result<Db> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(LabelError::Invalid(format!(
                "database URL `{}`: expected sqlite://FILE or postgres://USER@HOST:PORT/DB",
                redact_url(url)
            )));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_string(),
        };
        let sqlite = backend == Backend::Sqlite;
        // One connection on its own first, so that a wrong host or password fails at once with
        // its reason (the pool would retry until its timeout and report only that).
        AnyConnection::connect(&url)
            .await
            .map_err(|e| LabelError::Connect(redact_url(&url), e))?
            .close()
            .await?;
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 8 } else { 16 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // WAL lets readers run beside the writer; FULL makes a commit durable
                        // before it returns; writers wait for each other instead of failing.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = FULL",
                            "PRAGMA busy_timeout = 30000",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            conn.execute(pragma).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|e| LabelError::Connect(redact_url(&url), e))?;
        let migrator = match backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("migrations/postgres"),
        };
        migrator.run(&pool).await?;
        Ok(Db { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Adds a labeler and returns their token (shown once; only its digest is stored).
    pub async fn add_labeler(&self, name: &str) -> Result<String> {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 {
            return Err(LabelError::Invalid(
                "a labeler name must have 1 to 100 characters".into(),
            ));
        }
        let bytes: [u8; 32] = rand::rng().random();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let done = sqlx::query(
            "INSERT INTO labelers (name, token_hash, created_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(sha256_hex(token.as_bytes()))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(LabelError::Invalid(format!(
                "a labeler named `{name}` already exists"
            )));
        }
        Ok(token)
    }

    /// The labeler a token belongs to, unless it was revoked.
    pub async fn labeler_by_token(&self, token: &str) -> Result<Option<Labeler>> {
        let row = sqlx::query(
            "SELECT id, name FROM labelers WHERE token_hash = $1 AND revoked_ms IS NULL",
        )
        .bind(sha256_hex(token.as_bytes()))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Labeler {
            id: r.get(0),
            name: r.get(1),
        }))
    }

    /// Revokes a labeler's token: it authenticates nothing from then on. Returns false when it
    /// was already revoked. Their submissions stay.
    pub async fn revoke_labeler(&self, name: &str) -> Result<bool> {
        let name = name.trim();
        let done = sqlx::query(
            "UPDATE labelers SET revoked_ms = $2 WHERE name = $1 AND revoked_ms IS NULL",
        )
        .bind(name)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        let exists = sqlx::query("SELECT 1 FROM labelers WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        match exists {
            Some(_) => Ok(false),
            None => Err(LabelError::NotFound(format!("no labeler named `{name}`"))),
        }
    }

    /// Adds the tasks not already present; returns (added, total tasks).
    pub async fn load_tasks(&self, records: &[SampleRecord]) -> Result<(usize, i64)> {
        let mut added = 0;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for r in records {
            if r.responses.len() < 2 {
                continue; // nothing to rank
            }
            let responses = json(&r.responses)?;
            let digest = sha256_hex(format!("{}\u{0}{responses}", r.prompt).as_bytes());
            let done = sqlx::query(
                "INSERT INTO tasks (digest, prompt, responses, created_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (digest) DO NOTHING",
            )
            .bind(digest)
            .bind(&r.prompt)
            .bind(responses)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            added += done.rows_affected() as usize;
        }
        tx.commit().await?;
        Ok((added, self.count("SELECT COUNT(*) FROM tasks").await?))
    }

    async fn count(&self, sql: &'static str) -> Result<i64> {
        Ok(sqlx::query(sql).fetch_one(&self.pool).await?.get(0))
    }

    pub(crate) async fn task(&self, id: i64) -> Result<Option<Task>> {
        let row = sqlx::query("SELECT id, prompt, responses FROM tasks WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(Task {
                id: r.get(0),
                prompt: r.get(1),
                responses: parse_json(&r.get::<String, _>(2), "tasks.responses")?,
            })
        })
        .transpose()
    }

    fn submission_from(row: &sqlx::any::AnyRow) -> Result<Submission> {
        let responses: Vec<String> = parse_json(&row.get::<String, _>(4), "tasks.responses")?;
        let groups: Vec<RankGroup> = parse_json(&row.get::<String, _>(5), "submissions.ranking")?;
        let groups = groups.into_iter().map(RankGroup::into_vec).collect();
        let ranking = Ranking::new(groups, responses.len())
            .map_err(|e| LabelError::Corrupt(format!("submissions.ranking: {e}")))?;
        Ok(Submission {
            id: row.get(0),
            task_id: row.get(1),
            labeler: row.get(2),
            prompt: row.get(3),
            responses,
            ranking,
            flags: parse_json(&row.get::<String, _>(6), "submissions.flags")?,
            comment: row.get(7),
            shown_ms: row.get(8),
            submitted_ms: row.get(9),
        })
    }

    /// One labeler's submissions, oldest first.
    pub async fn submissions_of(&self, labeler: &Labeler) -> Result<Vec<Submission>> {
        let sql = submissions!("WHERE s.labeler_id = $1 ORDER BY s.id");
        let rows = sqlx::query(sql)
            .bind(labeler.id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::submission_from).collect()
    }

    /// A submission, only if it is this labeler's.
    pub async fn submission_of(&self, labeler: &Labeler, id: i64) -> Result<Option<Submission>> {
        let sql = submissions!("WHERE s.id = $1 AND s.labeler_id = $2");
        let row = sqlx::query(sql)
            .bind(id)
            .bind(labeler.id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::submission_from).transpose()
    }

    /// Every submission, by task then labeler (export, statistics).
    pub async fn all_submissions(&self) -> Result<Vec<Submission>> {
        let sql = submissions!("ORDER BY s.task_id, s.id");
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        rows.iter().map(Self::submission_from).collect()
    }

    pub async fn progress(&self, labeler: &Labeler, overlap: i64) -> Result<Progress> {
        let mine = sqlx::query("SELECT COUNT(*) FROM submissions WHERE labeler_id = $1")
            .bind(labeler.id)
            .fetch_one(&self.pool)
            .await?
            .get(0);
        let available = sqlx::query(
            "SELECT COUNT(*) FROM tasks t WHERE NOT EXISTS (SELECT 1 FROM submissions s \
             WHERE s.task_id = t.id AND s.labeler_id = $1) \
             AND (SELECT COUNT(*) FROM submissions s WHERE s.task_id = t.id) < $2",
        )
        .bind(labeler.id)
        .bind(overlap)
        .fetch_one(&self.pool)
        .await?
        .get(0);
        let tasks = self.count("SELECT COUNT(*) FROM tasks").await?;
        Ok(Progress {
            mine,
            available,
            tasks,
            submissions: self.count("SELECT COUNT(*) FROM submissions").await?,
            needed: tasks * overlap,
        })
    }

    /// Labelers by name with their ids.
    pub async fn labelers(&self) -> Result<Vec<Labeler>> {
        let rows = sqlx::query("SELECT id, name FROM labelers ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| Labeler {
                id: r.get(0),
                name: r.get(1),
            })
            .collect())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A ranking entry as stored and as the page sends it: an index or a list of tied indices.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RankGroup {
    One(usize),
    Tied(Vec<usize>),
}

impl RankGroup {
    pub fn into_vec(self) -> Vec<usize> {
        match self {
            RankGroup::One(i) => vec![i],
            RankGroup::Tied(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redact_hides_the_password_and_keeps_the_rest() {
        let cases = [
            (
                "postgres://ann:s3cret@db.example:5432/labels",
                "postgres://ann:***@db.example:5432/labels",
            ),
            (
                "postgresql://ann:p%40ss@h/db?sslmode=require",
                "postgresql://ann:***@h/db?sslmode=require",
            ),
            // Unescaped `@`, `/` and `?` in the password: all of it up to the last `@` goes.
            (
                "postgres://ann:a@b/c?d@host/db",
                "postgres://ann:***@host/db",
            ),
            (
                "postgres://ann@h/db?sslmode=disable&password=x&user=ann",
                "postgres://ann@h/db?sslmode=disable&password=***&user=ann",
            ),
            ("postgres://h/db?PASSWORD=x", "postgres://h/db?PASSWORD=***"),
            ("postgres://ann@h:5432/db", "postgres://ann@h:5432/db"),
            ("sqlite://labels.db", "sqlite://labels.db"),
            ("sqlite:labels.db", "sqlite:labels.db"),
            ("", ""),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }
}
