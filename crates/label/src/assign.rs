//! Who labels what: giving a labeler a place on a task (`next_task`) and accepting their
//! submission (`submit`). Each runs in a transaction that first locks the rows it decides on
//! (the labeler, the task), so that what it counts is what is committed: under PostgreSQL's READ
//! COMMITTED a count-then-insert lets two labelers both take a task's last place, and two
//! concurrent requests of one labeler both insert. An assignment older than the expiry holds no
//! place, is not served again and its submission is refused; both sides read the clock under the
//! task's lock, so a late submission and the place given away cannot both count.
//!
//! Not here: the schema, connections and the other queries (`db.rs`), HTTP (`web.rs`).

use rand::Rng;
use rlhf_data::Ranking;
use sqlx::Row;

use crate::db::{Ack, Db, Labeler, NewSubmission, Task, json, now_ms, parse_json};
use crate::error::{LabelError, Result};

/// Locks a row until the transaction ends with a write that changes nothing: the one locking
/// statement both dialects share (SQLite has no `SELECT … FOR UPDATE`). On PostgreSQL it is a row
/// lock (`FOR NO KEY UPDATE`, so foreign-key checks on the row go on beside it); on SQLite, as a
/// transaction's first statement, it takes the database's write lock at once, so what the
/// transaction reads next is the latest commit (a read first would pin an older snapshot and
/// make the later write fail with SQLITE_BUSY).
const LOCK_LABELER: &str = "UPDATE labelers SET created_ms = created_ms WHERE id = $1";
const LOCK_TASK: &str = "UPDATE tasks SET created_ms = created_ms WHERE id = $1";

/// Attempts of `next_task` before it gives up (503). An attempt fails only when the task it
/// picked filled up between its choice and its lock, i.e. when another labeler just got a place,
/// so with 32 labelers racing for the same tasks a few attempts suffice.
const ASSIGN_ATTEMPTS: usize = 64;

/// A query over the tasks `t` that labeler `$1` can be given: not given to them before, and
/// fewer than `$3` places held, a place being a submission or an assignment shown after `$2`
/// (older ones without a submission have expired).
macro_rules! open_tasks {
    ($head:literal, $tail:literal) => {
        concat!(
            $head,
            " NOT EXISTS (SELECT 1 FROM assignments a \
                          WHERE a.task_id = t.id AND a.labeler_id = $1) \
             AND (SELECT COUNT(*) FROM assignments a WHERE a.task_id = t.id \
                  AND (a.shown_ms > $2 OR EXISTS (SELECT 1 FROM submissions s \
                       WHERE s.task_id = a.task_id AND s.labeler_id = a.labeler_id))) < $3 ",
            $tail
        )
    };
}

/// What one attempt to give a labeler a task came to.
enum Attempt {
    /// A task (theirs already, or just given) and its display seed.
    Given(i64, i64),
    /// Every task is covered or theirs.
    Nothing,
    /// The task chosen filled up before it was locked: try again.
    Raced,
}

impl Db {
    /// The labeler's next task and its display seed: their open assignment if any (shown less
    /// than `expire_ms` ago, not submitted), else a new one on the first task that fewer than
    /// `overlap` labelers have submitted or hold. Concurrent calls of one labeler get the same
    /// assignment.
    pub async fn next_task(
        &self,
        labeler: &Labeler,
        overlap: i64,
        expire_ms: i64,
    ) -> Result<Option<(Task, i64)>> {
        for _ in 0..ASSIGN_ATTEMPTS {
            match self.try_assign(labeler, overlap, expire_ms).await? {
                Attempt::Given(task_id, seed) => {
                    return Ok(self.task(task_id).await?.map(|t| (t, seed)));
                }
                Attempt::Nothing => return Ok(None),
                Attempt::Raced => continue,
            }
        }
        Err(LabelError::Busy(format!(
            "every task chosen for you was taken first, {ASSIGN_ATTEMPTS} times: try again"
        )))
    }

    /// One transaction: lock the labeler (their concurrent requests queue here, and the second
    /// finds the first's assignment), pick a task, lock it, and take a place if one is still
    /// free once every other holder of the lock has committed.
    async fn try_assign(&self, labeler: &Labeler, overlap: i64, expire_ms: i64) -> Result<Attempt> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(LOCK_LABELER)
            .bind(labeler.id)
            .execute(&mut *tx)
            .await?;
        let open = sqlx::query(
            "SELECT a.task_id, a.shuffle_seed FROM assignments a \
             WHERE a.labeler_id = $1 AND a.shown_ms > $2 \
             AND NOT EXISTS (SELECT 1 FROM submissions s \
                             WHERE s.task_id = a.task_id AND s.labeler_id = a.labeler_id) \
             ORDER BY a.shown_ms, a.task_id LIMIT 1",
        )
        .bind(labeler.id)
        .bind(now_ms() - expire_ms)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = open {
            tx.rollback().await?; // nothing written but the lock
            return Ok(Attempt::Given(r.get(0), r.get(1)));
        }
        let sql = open_tasks!("SELECT t.id FROM tasks t WHERE", "ORDER BY t.id LIMIT 1");
        let chosen = sqlx::query(sql)
            .bind(labeler.id)
            .bind(now_ms() - expire_ms)
            .bind(overlap)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(task_id) = chosen.map(|r| r.get::<i64, _>(0)) else {
            tx.rollback().await?;
            return Ok(Attempt::Nothing);
        };
        sqlx::query(LOCK_TASK)
            .bind(task_id)
            .execute(&mut *tx)
            .await?;
        // The clock is read under the task's lock, as `submit` reads it: an assignment this
        // counts as expired is one that `submit` refuses.
        let now = now_ms();
        let seed: i64 = rand::rng().random_range(0..i64::MAX);
        let sql = open_tasks!(
            "INSERT INTO assignments (task_id, labeler_id, shown_ms, shuffle_seed) \
             SELECT t.id, $1, $4, $5 FROM tasks t WHERE t.id = $6 AND",
            ""
        );
        let taken = sqlx::query(sql)
            .bind(labeler.id)
            .bind(now - expire_ms)
            .bind(overlap)
            .bind(now)
            .bind(seed)
            .bind(task_id)
            .execute(&mut *tx)
            .await?;
        if taken.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Attempt::Raced);
        }
        tx.commit().await?;
        Ok(Attempt::Given(task_id, seed))
    }

    /// Stores a submission once committed. The labeler must have been given the task less than
    /// `expire_ms` ago (after that their place may have gone to someone else); a second
    /// submission of the same task is acknowledged as a duplicate and changes nothing.
    pub async fn submit(
        &self,
        labeler: &Labeler,
        task_id: i64,
        sub: &NewSubmission,
        expire_ms: i64,
    ) -> Result<Ack> {
        let assigned = sqlx::query(
            "SELECT t.responses FROM assignments a JOIN tasks t ON t.id = a.task_id \
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
        let responses: Vec<String> = parse_json(&row.get::<String, _>(0), "tasks.responses")?;
        check_submission(sub, responses.len())?;
        // Under the task's lock, as `next_task` takes places: a submission and the expiry of
        // its assignment cannot both count.
        let mut tx = self.pool.begin().await?;
        sqlx::query(LOCK_TASK)
            .bind(task_id)
            .execute(&mut *tx)
            .await?;
        let now = now_ms();
        let row = sqlx::query(
            "SELECT a.shown_ms, s.id FROM assignments a LEFT JOIN submissions s \
             ON s.task_id = a.task_id AND s.labeler_id = a.labeler_id \
             WHERE a.task_id = $1 AND a.labeler_id = $2",
        )
        .bind(task_id)
        .bind(labeler.id)
        .fetch_one(&mut *tx)
        .await?;
        let shown: i64 = row.get(0);
        if let Some(id) = row.get::<Option<i64>, _>(1) {
            tx.rollback().await?;
            return Ok(Ack {
                id,
                duplicate: true,
            });
        }
        if shown <= now - expire_ms {
            tx.rollback().await?;
            return Err(LabelError::Expired(format!(
                "task {task_id} expired: it was shown {} minutes ago, more than the {} allowed, \
                 and may have gone to someone else; ask for the next task",
                (now - shown) / 60_000,
                expire_ms / 60_000
            )));
        }
        let id = sqlx::query(
            "INSERT INTO submissions (task_id, labeler_id, ranking, flags, comment, shown_ms, \
             submitted_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(task_id)
        .bind(labeler.id)
        .bind(json(&sub.ranking)?)
        .bind(json(&sub.flags)?)
        .bind(&sub.comment)
        .bind(shown)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .get(0);
        tx.commit().await?;
        Ok(Ack {
            id,
            duplicate: false,
        })
    }
}

/// A submission that fits a task of `k` responses.
fn check_submission(sub: &NewSubmission, k: usize) -> Result<()> {
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
    Ok(())
}
