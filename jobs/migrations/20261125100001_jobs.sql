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
) WITH (fillfactor = 80);

-- Only runnable rows: the claim query reads nothing else, however large the history grows.
CREATE INDEX jobs_fetch_idx ON jobs (queue, priority, scheduled_at, id) WHERE state = 'available';
-- Jobs waiting for their time: promoted to available by the leader.
CREATE INDEX jobs_waiting_idx ON jobs (scheduled_at) WHERE state IN ('scheduled', 'retryable');
CREATE INDEX jobs_running_idx ON jobs (attempted_by) WHERE state = 'running';
-- A unique key holds while its job is live; a finished job frees it.
CREATE UNIQUE INDEX jobs_unique_key_idx ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('available', 'scheduled', 'running', 'retryable');
-- Admin listing and retention.
CREATE INDEX jobs_state_id_idx ON jobs (state, id);
CREATE INDEX jobs_finalized_idx ON jobs (finalized_at) WHERE finalized_at IS NOT NULL;
CREATE INDEX jobs_tag_idx ON jobs (tag) WHERE tag IS NOT NULL;

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
