-- supabase-log-handler: watching the jobs.
--
-- Adds what `supabase-log check`, `prune`, `stats` and pg_cron need, next to
-- the `runs` and `logs` tables: a heartbeat column on runs and the function that
-- closes runs whose heartbeat stopped; the expected schedules of jobs and one
-- row per open problem (incident), so several checkers never alert twice;
-- retention functions; statistics views. Safe to apply more than once. Runs as
-- one transaction. Every function names its tables with their schema and runs
-- with an empty search_path.

-- Heartbeats ----------------------------------------------------------------------------
alter table public.runs add column if not exists heartbeat_at timestamptz;
comment on column public.runs.heartbeat_at is
  'Last time the running job reported it was alive (every metadata.heartbeat_interval_s); null when the job does not send heartbeats';
create index if not exists idx_runs_running_heartbeat on public.runs (heartbeat_at)
  where status = 'running';

-- A run whose heartbeat stopped for longer than `multiple` heartbeat intervals is
-- closed as an error. A run without heartbeat_at (a job that does not send
-- heartbeats, or an older handler) is never touched: nothing says it is dead.
create or replace function public.reap_stale_runs(
  multiple numeric default 3,
  default_interval_s numeric default 30,
  as_of timestamptz default now()
)
returns table (id uuid, script_name text, started_at timestamptz, heartbeat_at timestamptz)
language sql
volatile
set search_path = ''
as $$
  update public.runs r
     set status = 'error',
         finished_at = r.heartbeat_at,
         duration_ms = greatest(0, (extract(epoch from (r.heartbeat_at - coalesce(r.started_at, r.heartbeat_at))) * 1000)::bigint)::integer,
         error_message = 'lost: no heartbeat since '
           || to_char(r.heartbeat_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC'
   where r.status = 'running'
     and r.heartbeat_at is not null
     and r.heartbeat_at < as_of - (multiple * coalesce(
           case when r.metadata ->> 'heartbeat_interval_s' ~ '^[0-9]+(\.[0-9]+)?$'
                then nullif((r.metadata ->> 'heartbeat_interval_s')::numeric, 0) end,
           default_interval_s)) * interval '1 second'
  returning r.id, r.script_name, r.started_at, r.heartbeat_at
$$;
comment on function public.reap_stale_runs(numeric, numeric, timestamptz) is
  'Marks running runs whose heartbeat_at is older than multiple x metadata.heartbeat_interval_s (else default_interval_s) as error "lost: no heartbeat since ..."; runs without heartbeat_at are never touched. Returns the runs it closed.';

-- Schedules -----------------------------------------------------------------------------
create table if not exists public.job_schedules (
  script_name text primary key,
  cron text,
  interval_s integer check (interval_s > 0),
  timezone text not null default 'UTC',
  grace_s integer not null default 300 check (grace_s >= 0),
  max_runtime_s integer check (max_runtime_s > 0),
  min_runtime_s integer check (min_runtime_s >= 0),
  channels text[],
  enabled boolean not null default true,
  declared_in text not null default 'cli' check (declared_in in ('cli', 'code', 'sql')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint job_schedules_cron_or_interval check ((cron is null) <> (interval_s is null))
);
comment on table public.job_schedules is 'When each job is expected to run; read by `supabase-log check`';
comment on column public.job_schedules.script_name is 'The runs.script_name this schedule watches';
comment on column public.job_schedules.cron is 'Cron expression (5 fields, minute first) in `timezone`; null when interval_s is set';
comment on column public.job_schedules.interval_s is 'Or: expected seconds between run starts; null when cron is set';
comment on column public.job_schedules.timezone is 'IANA time zone the cron expression is read in (Europe/Moscow, UTC, ...)';
comment on column public.job_schedules.grace_s is 'Seconds a run may start after its expected time before it is late';
comment on column public.job_schedules.max_runtime_s is 'A run taking longer is reported as running too long; null: not checked';
comment on column public.job_schedules.min_runtime_s is 'A successful run shorter than this is reported as finished too fast; null: not checked';
comment on column public.job_schedules.channels is 'Alert channel names (slack, telegram, webhook, email); null: every configured channel. Secrets never live here';
comment on column public.job_schedules.enabled is 'false: the schedule is kept but not checked';
comment on column public.job_schedules.declared_in is 'Who set it: cli (supabase-log schedule set), code (declare_schedule / start_run) or sql';

-- Create or update a schedule; returns 'created', 'updated' or 'unchanged'.
create or replace function public.declare_job_schedule(
  p_script_name text,
  p_cron text default null,
  p_interval_s integer default null,
  p_timezone text default 'UTC',
  p_grace_s integer default 300,
  p_max_runtime_s integer default null,
  p_min_runtime_s integer default null,
  p_channels text[] default null,
  p_enabled boolean default true,
  p_declared_in text default 'cli'
)
returns text
language plpgsql
set search_path = ''
as $$
declare
  inserted boolean;
begin
  insert into public.job_schedules as s
    (script_name, cron, interval_s, timezone, grace_s, max_runtime_s, min_runtime_s, channels, enabled, declared_in)
  values
    (p_script_name, p_cron, p_interval_s, coalesce(p_timezone, 'UTC'), coalesce(p_grace_s, 300),
     p_max_runtime_s, p_min_runtime_s, p_channels, coalesce(p_enabled, true), coalesce(p_declared_in, 'cli'))
  on conflict (script_name) do update
    set cron = excluded.cron, interval_s = excluded.interval_s, timezone = excluded.timezone,
        grace_s = excluded.grace_s, max_runtime_s = excluded.max_runtime_s,
        min_runtime_s = excluded.min_runtime_s, channels = excluded.channels,
        enabled = excluded.enabled, declared_in = excluded.declared_in, updated_at = now()
    where (s.cron, s.interval_s, s.timezone, s.grace_s, s.max_runtime_s, s.min_runtime_s, s.channels, s.enabled, s.declared_in)
          is distinct from
          (excluded.cron, excluded.interval_s, excluded.timezone, excluded.grace_s, excluded.max_runtime_s,
           excluded.min_runtime_s, excluded.channels, excluded.enabled, excluded.declared_in)
  returning (xmax = 0) into inserted;
  if inserted is null then
    return 'unchanged';
  end if;
  return case when inserted then 'created' else 'updated' end;
end
$$;
comment on function public.declare_job_schedule(text, text, integer, text, integer, integer, integer, text[], boolean, text) is
  'Creates or updates the schedule of a job, touching updated_at only when something changed; returns created, updated or unchanged.';

-- Incidents -----------------------------------------------------------------------------
create table if not exists public.job_incidents (
  id uuid primary key default gen_random_uuid(),
  script_name text not null,
  kind text not null check (kind in ('late', 'missed', 'too_long', 'too_fast', 'failed', 'lost')),
  period text not null,
  run_id uuid,
  event_at timestamptz not null,
  detail jsonb not null default '{}',
  opened_at timestamptz not null default now(),
  last_alert_at timestamptz,
  alerts integer not null default 0,
  sent_at timestamptz,
  resolved_at timestamptz,
  recovery_sent_at timestamptz,
  constraint job_incidents_once unique (script_name, kind, period)
);
-- At most one open incident per job and kind: a job failing every minute is one incident.
create unique index if not exists job_incidents_one_open on public.job_incidents (script_name, kind)
  where resolved_at is null;
comment on table public.job_incidents is 'One row per problem of a job (late, missed, too long, too fast, failed, lost), so each is alerted once';
comment on column public.job_incidents.kind is 'late, missed, too_long, too_fast, failed or lost';
comment on column public.job_incidents.period is 'What the problem is about: the expected start (UTC, ISO 8601) for late/missed, else the run id';
comment on column public.job_incidents.run_id is 'The run concerned, when there is one (runs.id; not a foreign key, so pruning runs keeps incidents)';
comment on column public.job_incidents.event_at is 'When the problem began: the expected start, or the run''s start';
comment on column public.job_incidents.detail is 'What the alert said (no secrets): times, duration, error message';
comment on column public.job_incidents.last_alert_at is 'When an alert was last claimed for it (claims are atomic: two checkers never both send)';
comment on column public.job_incidents.alerts is 'How many alerts were claimed for it (first alert and re-alerts)';
comment on column public.job_incidents.sent_at is 'When the first alert reached a channel; null while not yet delivered';
comment on column public.job_incidents.resolved_at is 'When a later good run closed it; null while open';
comment on column public.job_incidents.recovery_sent_at is 'When the recovery message went out';

-- Claim the right to alert about a problem. Returns the incident row when the caller
-- must send (a new incident, a re-alert that is due, or a first alert whose sending
-- failed more than p_retry_s ago), and nothing otherwise. Concurrent callers for the
-- same job and kind queue on an advisory lock, so exactly one of them gets the row.
create or replace function public.claim_job_incident(
  p_script_name text,
  p_kind text,
  p_period text,
  p_event_at timestamptz,
  p_run_id uuid default null,
  p_detail jsonb default '{}',
  p_now timestamptz default now(),
  p_realert_s numeric default null,
  p_retry_s numeric default 300
)
returns setof public.job_incidents
language plpgsql
set search_path = ''
as $$
declare
  open_row public.job_incidents;
begin
  perform pg_catalog.pg_advisory_xact_lock(
    pg_catalog.hashtextextended('supabase-log incident ' || p_script_name || ' ' || p_kind, 0));
  select * into open_row from public.job_incidents i
   where i.script_name = p_script_name and i.kind = p_kind and i.resolved_at is null;
  if found then
    if (open_row.sent_at is null
          and open_row.last_alert_at <= p_now - coalesce(p_retry_s, 300) * interval '1 second')
       or (open_row.sent_at is not null and coalesce(p_realert_s, 0) > 0
          and open_row.last_alert_at <= p_now - p_realert_s * interval '1 second') then
      update public.job_incidents i
         set last_alert_at = p_now, alerts = i.alerts + 1, detail = coalesce(p_detail, '{}')
       where i.id = open_row.id
      returning i.* into open_row;
      return next open_row;
    end if;
    return;
  end if;
  return query
    insert into public.job_incidents as i
      (script_name, kind, period, run_id, event_at, detail, opened_at, last_alert_at, alerts)
    values
      (p_script_name, p_kind, p_period, p_run_id, p_event_at, coalesce(p_detail, '{}'), p_now, p_now, 1)
    on conflict do nothing
    returning i.*;
end
$$;
comment on function public.claim_job_incident(text, text, text, timestamptz, uuid, jsonb, timestamptz, numeric, numeric) is
  'Atomically claims the alert for a problem: returns the incident when this caller must send, nothing when another caller has it or it is already known.';

-- Close a job's open incidents that began before a good run; returns the closed rows
-- (to exactly one caller: a concurrent caller finds them closed already).
create or replace function public.resolve_job_incidents(
  p_script_name text,
  p_before timestamptz,
  p_except_run uuid default null,
  p_now timestamptz default now()
)
returns setof public.job_incidents
language sql
volatile
set search_path = ''
as $$
  update public.job_incidents i
     set resolved_at = p_now
   where i.script_name = p_script_name
     and i.resolved_at is null
     and i.event_at < p_before
     and (p_except_run is null or i.run_id is distinct from p_except_run)
  returning i.*
$$;
comment on function public.resolve_job_incidents(text, timestamptz, uuid, timestamptz) is
  'Closes the open incidents of a job that began before p_before (a good run''s start), except the one about p_except_run; returns them once.';

-- Retention -----------------------------------------------------------------------------
-- Each call deletes at most max_rows rows, so each transaction is short and locks
-- few rows; callers repeat until a call returns fewer than max_rows.
-- dry_run returns how many rows the whole window holds, deleting nothing.
create or replace function public.prune_logs(
  older_than_days numeric default 90,
  max_rows integer default 5000,
  dry_run boolean default false,
  as_of timestamptz default now()
)
returns bigint
language plpgsql
set search_path = ''
as $$
declare
  cutoff timestamptz;
  n bigint;
begin
  if older_than_days is null or older_than_days < 0 or max_rows is null or max_rows < 1 then
    raise exception 'prune_logs: older_than_days must be >= 0 and max_rows >= 1'
      using errcode = '22023';
  end if;
  cutoff := as_of - older_than_days * interval '1 day';
  if dry_run then
    select count(*) into n from public.logs l where l."timestamp" < cutoff;
    return n;
  end if;
  delete from public.logs l
   where l.id in (select x.id from public.logs x where x."timestamp" < cutoff limit max_rows);
  get diagnostics n = row_count;
  return n;
end
$$;
comment on function public.prune_logs(numeric, integer, boolean, timestamptz) is
  'Deletes up to max_rows logs rows older than older_than_days (default 90, as the original documents planned); dry_run counts them instead.';

create or replace function public.prune_runs(
  success_days numeric default 90,
  failed_days numeric default 180,
  max_rows integer default 1000,
  dry_run boolean default false,
  as_of timestamptz default now()
)
returns bigint
language plpgsql
set search_path = ''
as $$
declare
  success_cutoff timestamptz;
  other_cutoff timestamptz;
  n bigint;
begin
  if success_days is null or success_days < 0 or failed_days is null or failed_days < 0
     or max_rows is null or max_rows < 1 then
    raise exception 'prune_runs: success_days and failed_days must be >= 0 and max_rows >= 1'
      using errcode = '22023';
  end if;
  success_cutoff := as_of - success_days * interval '1 day';
  other_cutoff := as_of - failed_days * interval '1 day';
  if dry_run then
    select count(*) into n from public.runs r
     where (r.status = 'success' and r.started_at < success_cutoff)
        or (r.status <> 'success' and r.started_at < other_cutoff);
    return n;
  end if;
  delete from public.runs r
   where r.id in (
     select x.id from public.runs x
      where (x.status = 'success' and x.started_at < success_cutoff)
         or (x.status <> 'success' and x.started_at < other_cutoff)
      limit max_rows);
  get diagnostics n = row_count;
  return n;
end
$$;
comment on function public.prune_runs(numeric, numeric, integer, boolean, timestamptz) is
  'Deletes up to max_rows runs (and their logs) started before the window: success_days (default 90) for successful runs, failed_days (default 180) for the others; dry_run counts them instead.';

-- For pg_cron: every batch in its own transaction.
create or replace procedure public.run_log_retention(
  logs_days numeric default 90,
  success_runs_days numeric default 90,
  failed_runs_days numeric default 180,
  batch_rows integer default 5000
)
language plpgsql
-- No SET clause: a procedure with one cannot COMMIT. Every name below is qualified.
as $$
declare
  n bigint;
begin
  loop
    n := public.prune_logs(logs_days, batch_rows);
    commit;
    exit when n < batch_rows;
  end loop;
  loop
    n := public.prune_runs(success_runs_days, failed_runs_days, greatest(batch_rows / 5, 1));
    commit;
    exit when n < greatest(batch_rows / 5, 1);
  end loop;
end
$$;
comment on procedure public.run_log_retention(numeric, numeric, numeric, integer) is
  'Prunes logs and runs in batches, committing after each (call it at top level, as pg_cron does).';

-- Statistics ----------------------------------------------------------------------------
create or replace view public.run_stats_daily with (security_invoker = true) as
select
  r.script_name,
  (r.started_at at time zone 'UTC')::date as day,
  count(*) as runs,
  count(*) filter (where r.status = 'success') as successes,
  count(*) filter (where r.status = 'error') as failures,
  count(*) filter (where r.status = 'running') as running,
  round(100.0 * count(*) filter (where r.status = 'success')
        / nullif(count(*) filter (where r.status <> 'running'), 0), 1) as success_rate,
  percentile_cont(0.5) within group (order by r.duration_ms) as p50_duration_ms,
  percentile_cont(0.95) within group (order by r.duration_ms) as p95_duration_ms,
  max(r.duration_ms) as max_duration_ms,
  sum(r.records_fetched) as records_fetched,
  sum(r.records_inserted) as records_inserted,
  sum(r.records_updated) as records_updated,
  sum(r.records_failed) as records_failed,
  sum(r.calls_analyzed) as calls_analyzed,
  sum(r.api_cost) as api_cost
from public.runs r
group by r.script_name, (r.started_at at time zone 'UTC')::date;
comment on view public.run_stats_daily is
  'Per job and UTC day: runs, successes, failures, success rate (% of finished runs), p50/p95/max duration (ms, finished runs), record sums and API cost';

create or replace view public.log_volume_hourly with (security_invoker = true) as
select
  date_trunc('hour', l."timestamp") as hour,
  l.level,
  count(*) as rows
from public.logs l
where l."timestamp" >= date_trunc('hour', now()) - interval '7 days'
group by 1, 2;
comment on view public.log_volume_hourly is 'Log rows per hour (UTC) and level over the last 7 days';

-- Access ---------------------------------------------------------------------------------
alter table public.job_schedules enable row level security;
alter table public.job_incidents enable row level security;
revoke all on table public.job_schedules, public.job_incidents from anon, authenticated;
grant select on table public.job_schedules, public.job_incidents to authenticated;
grant select, insert, update, delete on table public.job_schedules, public.job_incidents to service_role;

drop policy if exists "service_role full access to job_schedules" on public.job_schedules;
create policy "service_role full access to job_schedules" on public.job_schedules
  for all to service_role using (true) with check (true);
drop policy if exists "authenticated can read job_schedules" on public.job_schedules;
create policy "authenticated can read job_schedules" on public.job_schedules
  for select to authenticated using (true);
drop policy if exists "service_role full access to job_incidents" on public.job_incidents;
create policy "service_role full access to job_incidents" on public.job_incidents
  for all to service_role using (true) with check (true);
drop policy if exists "authenticated can read job_incidents" on public.job_incidents;
create policy "authenticated can read job_incidents" on public.job_incidents
  for select to authenticated using (true);

revoke all on table public.run_stats_daily, public.log_volume_hourly from anon, authenticated;
grant select on table public.run_stats_daily, public.log_volume_hourly to authenticated, service_role;

-- Supabase grants EXECUTE on new functions to anon and authenticated by default.
revoke all on function public.reap_stale_runs(numeric, numeric, timestamptz),
  public.declare_job_schedule(text, text, integer, text, integer, integer, integer, text[], boolean, text),
  public.claim_job_incident(text, text, text, timestamptz, uuid, jsonb, timestamptz, numeric, numeric),
  public.resolve_job_incidents(text, timestamptz, uuid, timestamptz),
  public.prune_logs(numeric, integer, boolean, timestamptz),
  public.prune_runs(numeric, numeric, integer, boolean, timestamptz)
  from public, anon, authenticated;
grant execute on function public.reap_stale_runs(numeric, numeric, timestamptz),
  public.declare_job_schedule(text, text, integer, text, integer, integer, integer, text[], boolean, text),
  public.claim_job_incident(text, text, text, timestamptz, uuid, jsonb, timestamptz, numeric, numeric),
  public.resolve_job_incidents(text, timestamptz, uuid, timestamptz),
  public.prune_logs(numeric, integer, boolean, timestamptz),
  public.prune_runs(numeric, numeric, integer, boolean, timestamptz)
  to service_role;
revoke all on procedure public.run_log_retention(numeric, numeric, numeric, integer)
  from public, anon, authenticated;

-- pg_cron --------------------------------------------------------------------------------
-- When the pg_cron extension is installed, schedule the reaper (every minute) and the
-- retention (daily, 03:17 UTC), once: a job already present, perhaps changed by hand,
-- is left as it is. Returns the names of the jobs it scheduled now, or null without
-- pg_cron. `supabase-log migrate` calls it on every run, so enabling pg_cron later and
-- running migrate again is enough.
create or replace function public.ensure_log_maintenance_jobs()
returns text[]
language plpgsql
set search_path = ''
as $$
declare
  scheduled text[] := '{}';
  job record;
begin
  if not exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron') then
    return null;
  end if;
  for job in
    select * from (values
      ('supabase-log-reap-stale-runs', '* * * * *', 'select count(*) from public.reap_stale_runs()'),
      ('supabase-log-retention', '17 3 * * *', 'call public.run_log_retention()')
    ) as j (name, schedule, command)
  loop
    if not exists (select 1 from cron.job c where c.jobname = job.name) then
      perform cron.schedule(job.name, job.schedule, job.command);
      scheduled := scheduled || job.name;
    end if;
  end loop;
  return scheduled;
end
$$;
comment on function public.ensure_log_maintenance_jobs() is
  'Schedules reap_stale_runs (every minute) and run_log_retention (daily) with pg_cron when it is installed; returns the jobs scheduled now, or null without pg_cron.';
revoke all on function public.ensure_log_maintenance_jobs() from public, anon, authenticated;

select public.ensure_log_maintenance_jobs();
