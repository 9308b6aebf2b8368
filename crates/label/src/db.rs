//! The labeling database: labelers (tokens stored as SHA-256 digests), tasks (a prompt and its K
//! responses), assignments (who was shown what, in which order) and submissions (rankings, flags,
//! comments), on SQLite (WAL, `synchronous=FULL`) or PostgreSQL through one code path (sqlx's
//! `Any` driver, `$n` parameters only, never string-built SQL).
//!
//! Durability: a submission is one `INSERT` that returns only once committed, and a labeler's
//! second submission of a task is refused by a unique key, so a retried request cannot count
//! twice.
//!
//! Not here: HTTP (`web.rs`), what the numbers mean (`stats.rs`).

use std::collections::BTreeMap;

use rand::Rng;
use rlhf_data::{Ranking, SampleRecord};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor, Row};

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
    pool: AnyPool,
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

fn json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| LabelError::Invalid(e.to_string()))
}

fn parse_json<T: for<'a> Deserialize<'a>>(text: &str, what: &str) -> Result<T> {
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
                "database URL `{url}`: expected sqlite://FILE or postgres://USER@HOST:PORT/DB"
            )));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_string(),
        };
        let sqlite = backend == Backend::Sqlite;
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
            .map_err(|e| LabelError::Connect(url.clone(), e))?;
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

    /// The labeler a token belongs to.
    pub async fn labeler_by_token(&self, token: &str) -> Result<Option<Labeler>> {
        let row = sqlx::query("SELECT id, name FROM labelers WHERE token_hash = $1")
            .bind(sha256_hex(token.as_bytes()))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| Labeler {
            id: r.get(0),
            name: r.get(1),
        }))
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

    async fn task(&self, id: i64) -> Result<Option<Task>> {
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

    /// The labeler's next task and its display seed: an open assignment of theirs if any, else
    /// a new one on the first task that fewer than `overlap` labelers have submitted or hold
    /// (assignments older than `expire_ms` without a submission no longer hold a place).
    pub async fn next_task(
        &self,
        labeler: &Labeler,
        overlap: i64,
        expire_ms: i64,
    ) -> Result<Option<(Task, i64)>> {
        let open = sqlx::query(
            "SELECT a.task_id, a.shuffle_seed FROM assignments a WHERE a.labeler_id = $1 \
             AND NOT EXISTS (SELECT 1 FROM submissions s \
                             WHERE s.task_id = a.task_id AND s.labeler_id = a.labeler_id) \
             ORDER BY a.shown_ms, a.task_id LIMIT 1",
        )
        .bind(labeler.id)
        .fetch_optional(&self.pool)
        .await?;
        let (task_id, seed) = match open {
            Some(r) => (r.get::<i64, _>(0), r.get::<i64, _>(1)),
            None => {
                let now = now_ms();
                // One statement: SQLite runs it under the write lock, so two labelers cannot
                // both take the last place of a task.
                let seed: i64 = rand::rng().random_range(0..i64::MAX);
                let row = sqlx::query(
                    "INSERT INTO assignments (task_id, labeler_id, shown_ms, shuffle_seed) \
                     SELECT t.id, $1, $2, $3 FROM tasks t \
                     WHERE NOT EXISTS (SELECT 1 FROM assignments a \
                                       WHERE a.task_id = t.id AND a.labeler_id = $1) \
                     AND (SELECT COUNT(*) FROM assignments a WHERE a.task_id = t.id \
                          AND (a.shown_ms > $4 OR EXISTS (SELECT 1 FROM submissions s \
                               WHERE s.task_id = a.task_id AND s.labeler_id = a.labeler_id))) < $5 \
                     ORDER BY t.id LIMIT 1 \
                     RETURNING task_id",
                )
                .bind(labeler.id)
                .bind(now)
                .bind(seed)
                .bind(now - expire_ms)
                .bind(overlap)
                .fetch_optional(&self.pool)
                .await?;
                match row {
                    Some(r) => (r.get::<i64, _>(0), seed),
                    None => return Ok(None),
                }
            }
        };
        Ok(self.task(task_id).await?.map(|t| (t, seed)))
    }

    /// Stores a submission once committed. The labeler must have been given the task; a second
    /// submission of the same task is acknowledged as a duplicate and changes nothing.
    pub async fn submit(
        &self,
        labeler: &Labeler,
        task_id: i64,
        sub: &NewSubmission,
    ) -> Result<Ack> {
        let assigned = sqlx::query(
            "SELECT a.shown_ms, t.responses FROM assignments a JOIN tasks t ON t.id = a.task_id \
             WHERE a.task_id = $1 AND a.labeler_id = $2",
        )
        .bind(task_id)
        .bind(labeler.id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = assigned else {
            return Err(LabelError::NotFound(format!(
                "task {task_id} was not given to you"
            )));
        };
        let shown: i64 = row.get(0);
        let responses: Vec<String> = parse_json(&row.get::<String, _>(1), "tasks.responses")?;
        let k = responses.len();
        Ranking::new(sub.ranking.groups().to_vec(), k)
            .map_err(|e| LabelError::Invalid(e.to_string()))?;
        if let Some(i) = sub.flags.keys().find(|&&i| i >= k) {
            return Err(LabelError::Invalid(format!(
                "flags: response {i} does not exist (the task has {k})"
            )));
        }
        if sub.comment.len() > 10_000 {
            return Err(LabelError::Invalid("comment: at most 10000 bytes".into()));
        }
        let inserted = sqlx::query(
            "INSERT INTO submissions (task_id, labeler_id, ranking, flags, comment, shown_ms, \
             submitted_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (task_id, labeler_id) DO NOTHING RETURNING id",
        )
        .bind(task_id)
        .bind(labeler.id)
        .bind(json(&sub.ranking)?)
        .bind(json(&sub.flags)?)
        .bind(&sub.comment)
        .bind(shown)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        if let Some(r) = inserted {
            return Ok(Ack {
                id: r.get(0),
                duplicate: false,
            });
        }
        let id = sqlx::query("SELECT id FROM submissions WHERE task_id = $1 AND labeler_id = $2")
            .bind(task_id)
            .bind(labeler.id)
            .fetch_one(&self.pool)
            .await?
            .get(0);
        Ok(Ack {
            id,
            duplicate: true,
        })
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
