-- +goose Up
-- Progress through the exercises, in database lab beside the control plane's tables
-- (its own goose version table: exercises_goose_version). A run is one go at an
-- exercise, from start to completion or reset; progress survives a browser reload and a
-- dashboard restart because it lives here, not in the page or the process.
CREATE TABLE exercise_runs (
    id           bigserial PRIMARY KEY,
    exercise     text        NOT NULL,
    who          text        NOT NULL,            -- who started it: dashboard, lab exercise
    started_at   timestamptz NOT NULL,            -- evidence counts only if newer
    state        text        NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'completed', 'reset')),
    completed_at timestamptz,
    reset_at     timestamptz,
    -- The settings and faults in force before setup touched anything: what reset restores.
    snapshot     jsonb       NOT NULL,
    -- The faults setup injected, random draws resolved: what fault.* answers compare with.
    injected     jsonb       NOT NULL DEFAULT '[]',
    traffic      boolean     NOT NULL DEFAULT false, -- setup switched traffic on: reset stops it
    cleaned      boolean     NOT NULL DEFAULT false, -- cleanup has run
    revealed     boolean     NOT NULL DEFAULT false  -- the learner asked to see the diagnosis's fault
);
-- One run of an exercise at a time: starting again resets the one before.
CREATE UNIQUE INDEX exercise_runs_current ON exercise_runs (exercise) WHERE state <> 'reset';

-- Per step of a run: when it was done and the evidence that ticked it, hints revealed.
CREATE TABLE exercise_steps (
    run_id   bigint      NOT NULL REFERENCES exercise_runs ON DELETE CASCADE,
    step     text        NOT NULL,
    done_at  timestamptz,
    order_id text        NOT NULL DEFAULT '', -- the order whose evidence ticked it (same_order_as)
    evidence jsonb       NOT NULL DEFAULT '[]',
    hints    int         NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, step)
);

-- Every answer given, with its verdict: a wrong first try is part of the record.
CREATE TABLE exercise_answers (
    id       bigserial PRIMARY KEY,
    run_id   bigint      NOT NULL REFERENCES exercise_runs ON DELETE CASCADE,
    step     text        NOT NULL,
    answer   text        NOT NULL,
    correct  boolean     NOT NULL,
    given_at timestamptz NOT NULL
);
CREATE INDEX exercise_answers_run ON exercise_answers (run_id, step);

-- +goose Down
DROP TABLE exercise_answers;
DROP TABLE exercise_steps;
DROP TABLE exercise_runs;
