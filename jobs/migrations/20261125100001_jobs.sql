-- The queue engine's tables. Applied by jobs::migrate with its own migrations table, so the
-- engine's schema history never mixes with the application's.

CREATE TABLE jobs (
    id           bigint      GENERATED ALWAYS AS IDENTITY,
    kind         text        NOT NULL,
    queue        text        NOT NULL DEFAULT 'default',
    args         jsonb       NOT NULL DEFAULT '{}',
    state        text        NOT NULL DEFAULT 'available',
    priority     smallint    NOT NULL DEFAULT 0,
    attempt      integer     NOT NULL DEFAULT 0,
    max_attempts integer     NOT NULL DEFAULT 20,
    timeout_ms   integer,
    -- Per-job override of the retry delay, in milliseconds.
    retry_delay_ms integer,
    unique_key   text,
    tag          text,
    scheduled_at timestamptz NOT NULL DEFAULT now(),
    attempted_at timestamptz,
    attempted_by text,
    finalized_at timestamptz,
    -- One object per failed attempt: {attempt, at, error}.
    errors       jsonb       NOT NULL DEFAULT '[]',
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT jobs_pkey PRIMARY KEY (id),
    CONSTRAINT jobs_state_check CHECK (state IN
        ('available', 'scheduled', 'running', 'retryable', 'completed', 'failed', 'cancelled')),
    CONSTRAINT jobs_max_attempts_check CHECK (max_attempts >= 1),
    CONSTRAINT jobs_kind_not_blank CHECK (kind <> ''),
    CONSTRAINT jobs_queue_not_blank CHECK (queue <> '')
) WITH (
    fillfactor = 80,
    -- A queue table churns: vacuum and analyze it far more often than the defaults (20 % / 10 %
    -- of the table), so dead tuples stay few and the planner's row counts stay current.
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000
);

-- Only runnable rows: the claim query reads nothing else, however large the history grows.
CREATE INDEX jobs_fetch_idx ON jobs (queue, priority, scheduled_at, id) WHERE state = 'available';
-- Jobs waiting for their time: promoted to available by the leader.
CREATE INDEX jobs_waiting_idx ON jobs (scheduled_at) WHERE state IN ('scheduled', 'retryable');
-- For the rescuer only. Its predicate names attempted_by so that the completion statement (which
-- filters on state = 'running' alone) can never pick it: with stale statistics the planner would
-- walk this index's dead entries once per completed job.
CREATE INDEX jobs_running_idx ON jobs (attempted_by) WHERE state = 'running' AND attempted_by IS NOT NULL;
-- A unique key holds while its job is live; a finished job frees it.
CREATE UNIQUE INDEX jobs_unique_key_idx ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('available', 'scheduled', 'running', 'retryable');
-- Deliberately no more indexes: every state change rewrites the row (state is in the partial
-- indexes' predicates, so no HOT update) and inserts into every full index. Admin filters and
-- retention scan instead; they are rare, the state changes are not.

-- Live worker processes; a stale heartbeat means the process is gone and its jobs are rescued.
CREATE TABLE job_workers (
    id           text        NOT NULL,
    hostname     text        NOT NULL,
    pid          integer     NOT NULL,
    queues       text[]      NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT job_workers_pkey PRIMARY KEY (id)
);

-- The maintenance leader: one lease row, taken when expired, renewed by its holder.
CREATE TABLE job_leader (
    name       text        NOT NULL,
    leader_id  text        NOT NULL,
    elected_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    CONSTRAINT job_leader_pkey PRIMARY KEY (name)
);

CREATE TABLE job_queues (
    name       text        NOT NULL,
    paused_at  timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT job_queues_pkey PRIMARY KEY (name)
);

-- The last tick enqueued per periodic schedule: advancing it and enqueueing the tick's job happen
-- in one transaction, so a tick produces one job however many leaders race.
CREATE TABLE job_schedules (
    name       text        NOT NULL,
    last_tick  timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT job_schedules_pkey PRIMARY KEY (name)
);
