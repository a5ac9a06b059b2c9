-- supabase-log-handler: what the `supabase-log ui` dashboard reads that PostgREST
-- cannot compute from the tables alone.
--
-- Two indexes (the log stream of one run in order, and recent ERROR rows) and four
-- read-only functions: the values the filters offer, errors grouped by script and
-- message, the step timeline of one run, and the services the calls went to. The functions run with the caller's rights (row level security applies)
-- and an empty search_path; `authenticated` and `service_role` may call them, `anon`
-- may not. Safe to apply more than once. Runs as one transaction, after the
-- migrations that create runs, logs and integration_logs.

-- A run's log rows in (timestamp, id) order, a page at a time, and its newest row
-- (the current step of a running run), without sorting all of the run's rows.
create index if not exists idx_logs_run_id_timestamp on public.logs (run_id, "timestamp", id);

-- ERROR rows of the last day or week, without reading the other levels.
create index if not exists idx_logs_errors on public.logs ("timestamp" desc) where level = 'ERROR';

-- Script names (every one, read from the index one name at a time) and the
-- triggered_by values of the newest 5,000 runs, for the filters of the runs page.
create or replace function public.dashboard_filter_values()
returns jsonb
language sql
stable
set search_path = ''
as $$
  with recursive names as (
    (select r.script_name from public.runs r order by r.script_name limit 1)
    union all
    select (select r.script_name from public.runs r
             where r.script_name > n.script_name order by r.script_name limit 1)
      from names n where n.script_name is not null
  ),
  recent as (
    select r.triggered_by from public.runs r order by r.started_at desc nulls last limit 5000
  )
  select jsonb_build_object(
    'scripts', coalesce((select jsonb_agg(n.script_name order by n.script_name)
                           from names n where n.script_name is not null), '[]'::jsonb),
    'triggers', coalesce((select jsonb_agg(distinct t.triggered_by)
                            from recent t where t.triggered_by is not null), '[]'::jsonb)
  )
$$;
comment on function public.dashboard_filter_values() is
  'For supabase-log ui: every script_name, and the triggered_by values of the newest 5,000 runs';

-- Failed runs (source 'run', by the first line of error_message) and ERROR rows
-- (source 'log', by the first line of message) since p_since, grouped by script and
-- message: how often, first and last time, the newest run. Newest groups first,
-- at most p_limit groups of each source.
create or replace function public.dashboard_errors(p_since timestamptz, p_limit integer default 100)
returns table (
  source text,
  script_name text,
  message text,
  occurrences bigint,
  first_at timestamptz,
  last_at timestamptz,
  last_run_id uuid
)
language sql
stable
set search_path = ''
as $$
  (select 'run'::text, g.script_name, g.message, g.occurrences, g.first_at, g.last_at, g.last_run_id
     from (select r.script_name,
                  left(split_part(coalesce(r.error_message, ''), E'\n', 1), 300) as message,
                  count(*) as occurrences,
                  min(r.started_at) as first_at,
                  max(r.started_at) as last_at,
                  (array_agg(r.id order by r.started_at desc, r.id desc))[1] as last_run_id
             from public.runs r
            where r.status = 'error' and r.started_at >= p_since
            group by 1, 2) g
    order by g.last_at desc, g.script_name, g.message
    limit greatest(p_limit, 0))
  union all
  (select 'log'::text, g.script_name, g.message, g.occurrences, g.first_at, g.last_at, g.last_run_id
     from (select r.script_name,
                  left(split_part(l.message, E'\n', 1), 300) as message,
                  count(*) as occurrences,
                  min(l."timestamp") as first_at,
                  max(l."timestamp") as last_at,
                  (array_agg(l.run_id order by l."timestamp" desc, l.id desc))[1] as last_run_id
             from public.logs l
             join public.runs r on r.id = l.run_id
            where l.level = 'ERROR' and l."timestamp" >= p_since
            group by 1, 2) g
    order by g.last_at desc, g.script_name, g.message
    limit greatest(p_limit, 0))
$$;
comment on function public.dashboard_errors(timestamptz, integer) is
  'For supabase-log ui: failed runs and ERROR log rows since p_since, grouped by script and first message line';

-- The step timeline of one run: for each step (in the order it first appears), its
-- first row, the end of its last stretch, the time spent in it, how many stretches,
-- rows, errors and warnings. A stretch is a run of consecutive rows (by timestamp,
-- id) with the same step; it lasts until the next stretch begins, the last one until
-- the run finished (or, while it runs, its newest row or heartbeat).
create or replace function public.dashboard_run_steps(p_run_id uuid)
returns table (
  step text,
  first_at timestamptz,
  ended_at timestamptz,
  spent_ms bigint,
  stretches bigint,
  rows_count bigint,
  errors bigint,
  warnings bigint
)
language sql
stable
set search_path = ''
as $$
  with ordered as (
    select l.step, l."timestamp" as ts, l.level, l.id,
           lag(l.step) over (order by l."timestamp", l.id) as prev
      from public.logs l
     where l.run_id = p_run_id
  ),
  marked as (  -- one pass in (timestamp, id) order, which the index gives without a sort
    select o.step, o.ts, o.level,
           count(*) filter (where o.prev is distinct from o.step)
             over (order by o.ts, o.id rows unbounded preceding) as stretch
      from ordered o
  ),
  stretches as (
    select m.step, m.stretch, min(m.ts) as started, count(*) as n,
           count(*) filter (where m.level = 'ERROR') as e,
           count(*) filter (where m.level = 'WARNING') as w
      from marked m
     group by m.step, m.stretch
  ),
  run_end as (
    select coalesce(
             (select r.finished_at from public.runs r where r.id = p_run_id),
             greatest((select r.heartbeat_at from public.runs r where r.id = p_run_id),
                      (select max(o.ts) from ordered o))) as at
  ),
  timed as (
    select s.*, coalesce(lead(s.started) over (order by s.stretch),
                         greatest((select e.at from run_end e), s.started)) as ended
      from stretches s
  )
  select t.step, min(t.started), max(t.ended),
         sum(round(extract(epoch from (t.ended - t.started)) * 1000))::bigint,
         count(*), sum(t.n)::bigint, sum(t.e)::bigint, sum(t.w)::bigint
    from timed t
   group by t.step
   order by min(t.stretch)
$$;
comment on function public.dashboard_run_steps(uuid) is
  'For supabase-log ui: per step of one run, its first row, end, time spent, stretches, rows, errors and warnings';

-- Every service_name of integration_logs (from its index, one name at a time), for
-- the filter of the calls page.
create or replace function public.dashboard_call_filter_values()
returns jsonb
language sql
stable
set search_path = ''
as $$
  with recursive names as (
    (select c.service_name from public.integration_logs c order by c.service_name limit 1)
    union all
    select (select c.service_name from public.integration_logs c
             where c.service_name > n.service_name order by c.service_name limit 1)
      from names n where n.service_name is not null
  )
  select jsonb_build_object(
    'services', coalesce((select jsonb_agg(n.service_name order by n.service_name)
                            from names n where n.service_name is not null), '[]'::jsonb)
  )
$$;
comment on function public.dashboard_call_filter_values() is
  'For supabase-log ui: every service_name of integration_logs';

-- Access: read-only, with the caller's rights; Supabase grants EXECUTE on new
-- functions to anon and authenticated by default, hence the revokes.
revoke all on function public.dashboard_filter_values(),
  public.dashboard_errors(timestamptz, integer),
  public.dashboard_run_steps(uuid),
  public.dashboard_call_filter_values()
  from public, anon, authenticated;
grant execute on function public.dashboard_filter_values(),
  public.dashboard_errors(timestamptz, integer),
  public.dashboard_run_steps(uuid),
  public.dashboard_call_filter_values()
  to authenticated, service_role;
