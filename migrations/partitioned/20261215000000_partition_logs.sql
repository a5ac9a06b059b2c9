-- supabase-log-handler: `logs` and `integration_logs` partitioned by month (opt-in).
--
-- Applied only by `supabase-log migrate --partitioned` (or pasted from
-- `supabase-log migrate --print --partitioned`), after the other migrations. Safe
-- to apply more than once: a table that is partitioned already is left as it is.
--
-- Each table becomes a range-partitioned table on its time column (`logs.timestamp`,
-- `integration_logs.created_at`): one partition per UTC month, `<table>_pYYYY_MM`,
-- plus `<table>_default`, which takes any row whose time falls outside every month
-- made so far (a clock far off, a very old replay), so such a row is stored, never
-- refused. A partitioned table's primary key must contain its partition key, so it
-- becomes (id, <time column>). Ids stay unique because the client makes them
-- (time-ordered UUIDs) and a row's time never changes between its sends: a retry,
-- a replay or a second push carries the same (id, time) and meets the same key.
-- The foreign keys to `runs` are kept as they were (PostgreSQL 12+ allows them
-- from a partitioned table), so deleting a run still deletes its logs.
--
-- An existing table is converted in this one transaction: its rows are copied
-- into the new partitions (an `integration_logs` row without `created_at` gets
-- its `updated_at`, else now), the views that read it are dropped and made again
-- with their options, grants and comments, and its grants, row level security,
-- policies, indexes, checks and foreign keys are carried over. The table is
-- locked meanwhile: plan a quiet moment for a large one (docs/scale.md).
--
-- Maintenance: `ensure_log_partitions()` makes this month's and the next months'
-- partitions (moving rows out of the default partition when they belong to a new
-- month); `drop_expired_log_partitions()` drops whole months past the retention
-- windows (90 days for logs, 180 for calls, as `prune` and the cleanup function
-- use), instead of deleting row by row. pg_cron runs both daily when installed;
-- `supabase-log check` calls the first. A table registered with pg_partman
-- (partman.part_config) is left to it: `ensure_log_partitions` calls its
-- `run_maintenance` for that table instead (see docs/scale.md).

-- One month's partition of `parent`; null when it exists. Rows of that month
-- waiting in the default partition move into it first (otherwise PostgreSQL
-- refuses to create it).
create or replace function public.slh_create_month_partition(parent regclass, month_start timestamptz)
returns text
language plpgsql
set search_path = ''
as $$
declare
  nsp text;
  rel text;
  keycol text;
  def regclass;
  lo timestamptz := date_trunc('month', month_start, 'UTC');
  hi timestamptz := (date_trunc('month', month_start, 'UTC') at time zone 'UTC' + interval '1 month') at time zone 'UTC';
  part text;
  waiting boolean := false;
begin
  select n.nspname, c.relname into nsp, rel
    from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
   where c.oid = parent;
  select a.attname, nullif(p.partdefid, 0)::regclass into keycol, def
    from pg_catalog.pg_partitioned_table p
    join pg_catalog.pg_attribute a on a.attrelid = p.partrelid and a.attnum = p.partattrs[0]
   where p.partrelid = parent;
  part := rel || '_p' || to_char(lo at time zone 'UTC', 'YYYY_MM');
  if to_regclass(format('%I.%I', nsp, part)) is not null then
    return null;
  end if;
  if def is not null then
    execute format('select exists (select 1 from %s where %I >= $1 and %I < $2)', def, keycol, keycol)
      into waiting using lo, hi;
  end if;
  if waiting then
    execute format('create table %I.%I (like %s including defaults including constraints)', nsp, part, parent);
    execute format('with moved as (delete from %s where %I >= $1 and %I < $2 returning *) '
                   'insert into %I.%I select * from moved', def, keycol, keycol, nsp, part) using lo, hi;
    execute format('alter table %s attach partition %I.%I for values from (%L) to (%L)', parent, nsp, part, lo, hi);
  else
    execute format('create table %I.%I partition of %s for values from (%L) to (%L)', nsp, part, parent, lo, hi);
  end if;
  perform public.slh_lock_down_partition(format('%I.%I', nsp, part)::regclass);
  return part;
end
$$;

-- A partition is read and written through its parent only: row level security on
-- (no policy: nobody but the owner and BYPASSRLS roles), no grants to the API roles.
create or replace function public.slh_lock_down_partition(part regclass)
returns void
language plpgsql
set search_path = ''
as $$
declare
  r text;
begin
  execute format('alter table %s enable row level security', part);
  foreach r in array array['anon', 'authenticated'] loop
    if exists (select 1 from pg_catalog.pg_roles where rolname = r) then
      execute format('revoke all on table %s from %I', part, r);
    end if;
  end loop;
end
$$;

-- Partitions for the month of `as_of` and the `months_ahead` after it, for every
-- partitioned log table; returns the names made now. Tables managed by pg_partman
-- are left to `partman.run_maintenance`, called here for them.
create or replace function public.ensure_log_partitions(
  months_ahead integer default 3,
  as_of timestamptz default now()
)
returns text[]
language plpgsql
security definer
set search_path = ''
as $$
declare
  made text[] := '{}';
  t regclass;
  m integer;
  name text;
begin
  if months_ahead is null or months_ahead < 0 or months_ahead > 120 then
    raise exception 'ensure_log_partitions: months_ahead must be 0..120, got %', months_ahead
      using errcode = '22023';
  end if;
  for t in select p.partrelid::regclass from pg_catalog.pg_partitioned_table p
            where p.partrelid in (select to_regclass('public.logs') union select to_regclass('public.integration_logs'))
  loop
    if public.slh_partman_manages(t) then
      execute 'select partman.run_maintenance($1)' using t::text;
      continue;
    end if;
    for m in 0..months_ahead loop
      name := public.slh_create_month_partition(
        t, (date_trunc('month', as_of, 'UTC') at time zone 'UTC' + make_interval(months => m)) at time zone 'UTC');
      if name is not null then
        made := made || name;
      end if;
    end loop;
  end loop;
  return made;
end
$$;
comment on function public.ensure_log_partitions(integer, timestamptz) is
  'Creates the monthly partitions of logs and integration_logs for the month of as_of and the months_ahead after it (default 3); returns the partitions made now. Called by pg_cron, supabase-log check and migrate --partitioned.';

create or replace function public.slh_partman_manages(t regclass)
returns boolean
language plpgsql
set search_path = ''
as $$
declare
  yes boolean := false;
begin
  if to_regclass('partman.part_config') is null then
    return false;
  end if;
  execute 'select exists (select 1 from partman.part_config where parent_table = $1)' into yes using t::text;
  return yes;
end
$$;

-- Retention by whole months: a partition goes when every moment it can hold is
-- older than its table's window (logs_days for logs, integration_logs_days for
-- integration_logs; null keeps everything). Rows in the default partition and in
-- a month that is only partly expired are left to prune_logs and
-- cleanup_old_integration_logs. Returns the partitions dropped.
create or replace function public.drop_expired_log_partitions(
  logs_days numeric default 90,
  integration_logs_days numeric default 180,
  as_of timestamptz default now()
)
returns text[]
language plpgsql
security definer
set search_path = ''
as $$
declare
  dropped text[] := '{}';
  part record;
  days numeric;
begin
  if coalesce(logs_days, 0) < 0 or coalesce(integration_logs_days, 0) < 0 then
    raise exception 'drop_expired_log_partitions: the windows must be days >= 0'
      using errcode = '22023';
  end if;
  for part in
    select c.oid::regclass as rel, c.relname, i.inhparent::regclass as parent,
           pg_catalog.pg_get_expr(c.relpartbound, c.oid) as bound
      from pg_catalog.pg_inherits i join pg_catalog.pg_class c on c.oid = i.inhrelid
     where i.inhparent in (select to_regclass('public.logs') union select to_regclass('public.integration_logs'))
       and c.relispartition
  loop
    days := case when part.parent = to_regclass('public.logs') then logs_days else integration_logs_days end;
    continue when days is null or part.bound = 'DEFAULT';
    -- FOR VALUES FROM ('...') TO ('...'): the upper bound is the second literal
    if (regexp_match(part.bound, $re$TO \('([^']+)'\)$re$))[1]::timestamptz
         <= as_of - days * interval '1 day' then
      dropped := dropped || part.relname::text;
      execute format('alter table %s detach partition %s', part.parent, part.rel);
      execute format('drop table %s', part.rel);
    end if;
  end loop;
  return dropped;
end
$$;
comment on function public.drop_expired_log_partitions(numeric, numeric, timestamptz) is
  'Drops the monthly partitions of logs older than logs_days (90) and of integration_logs older than integration_logs_days (180), whole; returns their names.';

-- Turns `public.<tbl>` into a table partitioned by month on `keycol`, keeping its
-- rows, columns, checks, defaults, comments, indexes, foreign keys, grants, row
-- level security, policies and the views that read it. Does nothing to a table
-- that is partitioned already or does not exist.
create or replace function public.slh_partition_table(tbl text, keycol text, months_ahead integer default 3)
returns text
language plpgsql
set search_path = ''
as $$
declare
  old regclass := to_regclass(format('public.%I', tbl));
  oldname text := tbl || '_unpartitioned';
  target text := format('public.%I', tbl);
  v record;
  x record;
  first_month timestamptz;
  m timestamptz;
  copied bigint;
begin
  if old is null then
    return format('%s: no such table', target);
  end if;
  if exists (select 1 from pg_catalog.pg_partitioned_table where partrelid = old) then
    return format('%s: partitioned already', target);
  end if;
  execute format('lock table %s in access exclusive mode', old);

  create temp table slh_views on commit drop as
    select distinct c.oid, n.nspname, c.relname, pg_catalog.pg_get_viewdef(c.oid) as def, c.reloptions,
           c.relacl, pg_catalog.obj_description(c.oid, 'pg_class') as note
      from pg_catalog.pg_depend d
      join pg_catalog.pg_rewrite r on r.oid = d.objid
      join pg_catalog.pg_class c on c.oid = r.ev_class
      join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     where d.refobjid = old and c.oid <> old and c.relkind = 'v';
  create temp table slh_saved on commit drop as
    select 'index' as kind, pg_catalog.pg_get_indexdef(i.indexrelid) as def
      from pg_catalog.pg_index i where i.indrelid = old and not i.indisprimary
    union all
    select 'fkey', format('alter table %s add constraint %I %s', target, c.conname, pg_catalog.pg_get_constraintdef(c.oid))
      from pg_catalog.pg_constraint c where c.conrelid = old and c.contype = 'f'
    union all
    select 'policy', format('create policy %I on %s as %s for %s to %s%s%s', p.policyname, target, p.permissive,
           p.cmd, array_to_string(array(select case when r = 'public' then r else quote_ident(r) end from unnest(p.roles) r), ', '),
           coalesce(' using (' || p.qual || ')', ''), coalesce(' with check (' || p.with_check || ')', ''))
      from pg_catalog.pg_policies p where p.schemaname = 'public' and p.tablename = tbl
    union all
    select 'grant', format('grant %s on table %s to %s', a.privilege_type, target,
           case when a.grantee = 0 then 'public' else quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) end)
      from pg_catalog.pg_class c, aclexplode(c.relacl) a where c.oid = old
    union all
    select 'note', format('comment on table %s is %L', target, pg_catalog.obj_description(old, 'pg_class'))
     where pg_catalog.obj_description(old, 'pg_class') is not null;

  for v in select * from slh_views loop
    execute format('drop view %I.%I', v.nspname, v.relname);
  end loop;
  execute format('alter table %s rename to %I', old, oldname);
  for x in select i.indexrelid::regclass as idx, c.relname from pg_catalog.pg_index i
             join pg_catalog.pg_class c on c.oid = i.indexrelid where i.indrelid = old loop
    execute format('alter index %s rename to %I', x.idx, left(x.relname, 50) || '_unpartitioned');
  end loop;

  execute format('create table %s (like %s including defaults including constraints including comments '
                 'including storage including compression) partition by range (%I)', target, old, keycol);
  execute format('alter table %s alter column %I set not null', target, keycol);
  execute format('alter table %s add constraint %I primary key (id, %I)', target, tbl || '_pkey', keycol);
  for x in select def from slh_saved where kind in ('index', 'fkey') loop
    execute x.def;
  end loop;
  execute format('create table %I.%I partition of %s default', 'public', tbl || '_default', target);
  perform public.slh_lock_down_partition(format('public.%I', tbl || '_default')::regclass);

  execute format('select date_trunc(''month'', min(%I), ''UTC'') from %s', keycol, old) into first_month;
  m := least(coalesce(first_month, now()), date_trunc('month', now(), 'UTC'));
  while m < (date_trunc('month', now(), 'UTC') at time zone 'UTC' + make_interval(months => months_ahead + 1)) at time zone 'UTC' loop
    perform public.slh_create_month_partition(target::regclass, m);
    m := (m at time zone 'UTC' + interval '1 month') at time zone 'UTC';
  end loop;
  if tbl = 'integration_logs' then  -- a call without created_at: its last change, else now
    execute format('update %s set created_at = coalesce(updated_at, now()) where created_at is null', old);
  end if;
  execute format('insert into %s select * from %s', target, old);
  get diagnostics copied = row_count;

  execute format('alter table %s enable row level security', target);
  execute format('revoke all on table %s from public', target);
  for x in select def from slh_saved where kind in ('policy', 'grant', 'note') loop
    execute x.def;
  end loop;
  execute format('drop table %s', old);
  for v in select * from slh_views order by oid loop
    execute format('create view %I.%I%s as %s', v.nspname, v.relname,
                   coalesce(' with (' || array_to_string(v.reloptions, ', ') || ')', ''), v.def);
    for x in select a.privilege_type, a.grantee from aclexplode(v.relacl) a loop
      execute format('grant %s on %I.%I to %s', x.privilege_type, v.nspname, v.relname,
                     case when x.grantee = 0 then 'public' else quote_ident(pg_catalog.pg_get_userbyid(x.grantee)) end);
    end loop;
    if v.note is not null then
      execute format('comment on view %I.%I is %L', v.nspname, v.relname, v.note);
    end if;
  end loop;
  drop table slh_views;
  drop table slh_saved;
  return format('%s: partitioned by month on %s, %s rows kept', target, keycol, copied);
end
$$;

select public.slh_partition_table('logs', 'timestamp');
select public.slh_partition_table('integration_logs', 'created_at');
select public.ensure_log_partitions();

revoke all on function public.slh_create_month_partition(regclass, timestamptz),
  public.slh_lock_down_partition(regclass), public.slh_partman_manages(regclass),
  public.slh_partition_table(text, text, integer),
  public.ensure_log_partitions(integer, timestamptz),
  public.drop_expired_log_partitions(numeric, numeric, timestamptz)
  from public, anon, authenticated;
grant execute on function public.ensure_log_partitions(integer, timestamptz),
  public.drop_expired_log_partitions(numeric, numeric, timestamptz)
  to service_role;

-- pg_cron, when installed: make partitions ahead and drop expired months, daily.
do $$
begin
  if not exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron') then
    return;
  end if;
  if not exists (select 1 from cron.job where jobname = 'supabase-log-partitions') then
    perform cron.schedule('supabase-log-partitions', '7 2 * * *',
      'select public.ensure_log_partitions(); select public.drop_expired_log_partitions();');
  end if;
end
$$;
