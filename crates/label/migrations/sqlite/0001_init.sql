-- The labeling database (SQLite). Timestamps are Unix milliseconds; JSON is stored as text.
CREATE TABLE labelers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL
);

-- One prompt with its K responses; `digest` makes loading the same samples file twice a no-op.
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    digest TEXT NOT NULL UNIQUE,
    prompt TEXT NOT NULL,
    responses TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

-- A task shown to a labeler (in the order `shuffle_seed` gives).
CREATE TABLE assignments (
    task_id BIGINT NOT NULL REFERENCES tasks(id),
    labeler_id BIGINT NOT NULL REFERENCES labelers(id),
    shown_ms BIGINT NOT NULL,
    shuffle_seed BIGINT NOT NULL,
    PRIMARY KEY (task_id, labeler_id)
);

-- A labeler's ranking of a task: indices into tasks.responses, best first, ties as nested lists.
CREATE TABLE submissions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id BIGINT NOT NULL REFERENCES tasks(id),
    labeler_id BIGINT NOT NULL REFERENCES labelers(id),
    ranking TEXT NOT NULL,
    flags TEXT NOT NULL,
    comment TEXT NOT NULL,
    shown_ms BIGINT NOT NULL,
    submitted_ms BIGINT NOT NULL,
    UNIQUE (task_id, labeler_id)
);

CREATE INDEX submissions_by_labeler ON submissions (labeler_id);
CREATE INDEX assignments_by_labeler ON assignments (labeler_id);
