"""Redis store: every transition is one Lua script, so it is atomic across processes and hosts.

Layout under ``key_prefix`` (P):

- ``P rec:{id}``      hash: ``data`` (the record's JSON without history/version/notification_count),
  ``ver``, ``nc`` (notification_count, only ever bumped by ``finish_delivery`` and set by
  create), the lease ``lo``/``lu``, and the few derived fields the scripts index and count by
  (state, level, policy, incident, epoch times, ack/resolve durations in microseconds);
- ``P hist:{id}``     list of history events (JSON);
- ``P dlv:{id}``      delivery hash; ``P rec_dlv:{id}`` list of a record's delivery ids in order;
- indexes: ``P due`` (zset, next_escalation_at of open records), ``P open_dag`` /
  ``P last_closed_dag`` (hashes: incident, policy and DAG → id, the field length-prefixed so no
  two triples share one; ``P open`` / ``P last_closed`` hold ``incident\\x1fpolicy`` fields of
  records written before the key named the DAG: ``find_open`` still matches them for a record of
  the same DAG, and a record's next write moves it to the new hashes), ``P active`` and ``P active:{policy}`` (zsets by
  created_at), ``P incident:{incident_id}`` (set), ``P closed`` (zset by closed_at),
  ``P dlv_ready`` (pending deliveries without next_attempt_at, by created_at: due at once),
  ``P dlv_pending`` (pending retries, by next_attempt_at), ``P dlv_sending`` (by lease end);
- list_records indexes, zsets by created_at: ``P all``, ``P by_state:{state}``,
  ``P by_policy:{policy}``, ``P by_dag:{dag_id}`` and ``P no_dag`` (records of no DAG; filled
  for older records when the store opens);
- counters: ``P stats`` (totals, per state, ack/resolve sums, sent/failed), ``P stats:level``,
  ``P stats:policy``, ``P stats:target``; per DAG one hash, ``P stats_dag:{dag_id}`` (``P
  stats_nodag`` for records of no DAG: ``total``, ``st:``/``lvl:``/``pol:``/``tk:`` fields, the
  sums and outcomes), trusted once ``P stats_by_dag`` is set (by the first record of an empty
  store). Scripts keep them exact, so ``get_stats`` reads four hashes (one per DAG asked for)
  whatever the number of records.

Scripts touch keys they derive from ids, so they are not Redis Cluster safe unless every key
shares one hash slot (give a prefix with a hash tag, e.g. ``"{escalation}:"``).
"""

from __future__ import annotations

from collections import Counter
import re
from contextlib import contextmanager
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Callable, Iterator, NamedTuple, Sequence
from urllib.parse import urlsplit, urlunsplit

import redis

from airflow_escalation.core.models import Delivery, EscalationRecord, EscalationStats, StatsAccumulator
from airflow_escalation.core.timeutil import UTC, ensure_aware
from airflow_escalation.core.types import ACTIVE_STATE_VALUES, DeliveryState, EscalationState
from airflow_escalation.stores.base import BaseEscalationStore, DagIds, StoreCall, StoreError
from airflow_escalation.stores.json_documents import dump_json, load_json

_SEP = "\x1f"  # between incident id and policy name in the open / last_closed hashes
_UNKNOWN_ERROR = "the sender stopped while sending: outcome unknown, not re-sent"
_BATCH = 500  # ids per read pipeline / cleanup script run
_READ_FIELDS = ("data", "ver", "nc")

# --------------------------------------------------------------------------- Lua

# Shared helpers, prepended to every script. ARGV[1] is always the key prefix. Numbers handed to
# redis.call are strings built in Python or by tostring(), never raw Lua floats.
_LUA_LIB = r"""
local P = ARGV[1]
local SEP = string.char(31)

-- the one-open-record key of an incident, a policy and a DAG ('' = none), unambiguous
local function incident_key(inc, pol, dag)
  return string.len(inc) .. ':' .. inc .. string.len(pol) .. ':' .. pol .. dag
end
local REC_FIELDS = {'data','st','lvl','pol','inc','cre','nea','cls','ack','res','open','act','dag'}
local DLV_FIELDS = {'id','rid','data','st','att','upd','nat','nep','cep','sent','err','tk'}

local function neg(n)
  if n == '0' then return '0' end
  if string.sub(n, 1, 1) == '-' then return string.sub(n, 2) end
  return '-' .. n
end

-- HINCRBY that drops a field when it reaches zero (so per-level/policy hashes stay tidy)
local function bump(key, field, by)
  if redis.call('HINCRBY', key, field, by) == 0 then redis.call('HDEL', key, field) end
end

local function args_to(fields, i)
  local t = {}
  for j, name in ipairs(fields) do t[name] = ARGV[i + j - 1] end
  return t
end

local function load_record(id)
  local v = redis.call('HMGET', P .. 'rec:' .. id, unpack(REC_FIELDS, 2))
  if not v[1] then return nil end
  local f = {}
  for j = 2, #REC_FIELDS do f[REC_FIELDS[j]] = v[j - 1] or '' end
  return f
end

-- the counters of one DAG's records ('' = of no DAG), all in one hash
local function dag_stats(dag)
  if dag == '' then return P .. 'stats_nodag' end
  return P .. 'stats_dag:' .. dag
end

-- where a record with fields f is counted once: {hash, field} (every record, and its DAG's)
local function counted_at(f)
  local S, D = P .. 'stats', dag_stats(f.dag)
  return {
    {S, 'total'}, {S, 'st:' .. f.st}, {P .. 'stats:level', f.lvl}, {P .. 'stats:policy', f.pol},
    {D, 'total'}, {D, 'st:' .. f.st}, {D, 'lvl:' .. f.lvl}, {D, 'pol:' .. f.pol},
  }
end

-- a duration (d = 'ack' or 'res': d_n and d_us, microseconds) added to or taken from a hash
local function count_duration(key, d, us, one)
  if us ~= '' then
    bump(key, d .. '_n', one)
    bump(key, d .. '_us', one == '1' and us or neg(us))
  end
end

-- what StatsAccumulator.add_record counts for one record, added (one='1') or taken back ('-1')
local function count_record(f, one)
  for _, at in ipairs(counted_at(f)) do bump(at[1], at[2], one) end
  for _, key in ipairs({P .. 'stats', dag_stats(f.dag)}) do
    count_duration(key, 'ack', f.ack, one)
    count_duration(key, 'res', f.res, one)
  end
end

-- the sorted-set indexes a record with fields f belongs to: key (after P) and score, or nil
local ZSET_INDEXES = {
  function(f) if f.open == '1' and f.nea ~= '' then return 'due', f.nea end end,
  function(f) if f.act == '1' then return 'active', f.cre end end,
  function(f) if f.act == '1' then return 'active:' .. f.pol, f.cre end end,
  function(f) if f.cls ~= '' then return 'closed', f.cls end end,
  -- list_records indexes, all by created_at
  function(f) return 'all', f.cre end,
  function(f) return 'by_state:' .. f.st, f.cre end,
  function(f) return 'by_policy:' .. f.pol, f.cre end,
  function(f) if f.dag ~= '' then return 'by_dag:' .. f.dag, f.cre else return 'no_dag', f.cre end end,
}

-- move the record's index entries from its old fields (nil: a new record) to its new ones,
-- touching only the entries that change
local function reindex_record(id, old, f)
  local okey = incident_key(f.inc, f.pol, f.dag)
  if old and old.open == '1' then
    local old_okey = incident_key(old.inc, old.pol, old.dag)
    if (f.open ~= '1' or old_okey ~= okey) and redis.call('HGET', P .. 'open_dag', old_okey) == id then
      redis.call('HDEL', P .. 'open_dag', old_okey)
    end
    -- indexed before the key named the DAG: moves to open_dag now
    local legacy = old.inc .. SEP .. old.pol
    if redis.call('HGET', P .. 'open', legacy) == id then redis.call('HDEL', P .. 'open', legacy) end
  end
  if f.open == '1' then
    redis.call('HSET', P .. 'open_dag', okey, id)
  else
    -- last_closed keeps the latest closed_at (a missing closed_at counts as the epoch)
    local prev = redis.call('HGET', P .. 'last_closed_dag', okey)
    local take = (not prev) or prev == id
    if not take then
      local pv = redis.call('HMGET', P .. 'rec:' .. prev, 'st', 'cls')
      take = (not pv[1]) or (tonumber(f.cls) or 0) >= (tonumber(pv[2]) or 0)
    end
    if take then redis.call('HSET', P .. 'last_closed_dag', okey, id) end
  end
  if not old or old.inc ~= f.inc then
    if old then redis.call('SREM', P .. 'incident:' .. old.inc, id) end
    redis.call('SADD', P .. 'incident:' .. f.inc, id)
  end
  for _, index in ipairs(ZSET_INDEXES) do
    local old_key, old_score
    if old then old_key, old_score = index(old) end
    local key, score = index(f)
    if key ~= old_key or score ~= old_score then
      if old_key and old_key ~= key then redis.call('ZREM', P .. old_key, id) end
      if key then redis.call('ZADD', P .. key, score, id) end
    end
  end
end

-- move the record's counters from its old fields to its new ones: only those that change
local function recount_record(old, f)
  if not old then return count_record(f, '1') end
  local before, after = counted_at(old), counted_at(f)
  for j, at in ipairs(after) do
    if before[j][1] ~= at[1] or before[j][2] ~= at[2] then
      bump(before[j][1], before[j][2], '-1')
      bump(at[1], at[2], '1')
    end
  end
  local S = P .. 'stats'
  for _, keys in ipairs({{S, S}, {dag_stats(old.dag), dag_stats(f.dag)}}) do
    for _, d in ipairs({'ack', 'res'}) do  -- durations: ack_n/ack_us, res_n/res_us
      if old[d] ~= f[d] or keys[1] ~= keys[2] then
        count_duration(keys[1], d, old[d], '-1')
        count_duration(keys[2], d, f[d], '1')
      end
    end
  end
end

local function unindex_record(id, f, deleting)
  local okey = incident_key(f.inc, f.pol, f.dag)
  local legacy = f.inc .. SEP .. f.pol
  if redis.call('HGET', P .. 'open_dag', okey) == id then redis.call('HDEL', P .. 'open_dag', okey) end
  if redis.call('HGET', P .. 'open', legacy) == id then redis.call('HDEL', P .. 'open', legacy) end
  if deleting then
    if redis.call('HGET', P .. 'last_closed_dag', okey) == id then redis.call('HDEL', P .. 'last_closed_dag', okey) end
    if redis.call('HGET', P .. 'last_closed', legacy) == id then redis.call('HDEL', P .. 'last_closed', legacy) end
  end
  redis.call('ZREM', P .. 'due', id)
  redis.call('ZREM', P .. 'active', id)
  redis.call('ZREM', P .. 'active:' .. f.pol, id)
  redis.call('SREM', P .. 'incident:' .. f.inc, id)
  redis.call('ZREM', P .. 'closed', id)
  redis.call('ZREM', P .. 'all', id)
  redis.call('ZREM', P .. 'by_state:' .. f.st, id)
  redis.call('ZREM', P .. 'by_policy:' .. f.pol, id)
  if f.dag ~= '' then redis.call('ZREM', P .. 'by_dag:' .. f.dag, id) else redis.call('ZREM', P .. 'no_dag', id) end
end

-- replace the record's fields, moving its counters and index entries from old to new values
-- (old: its fields as load_record reads them, nil for a new record; extra: more hash fields to
-- set with them, as field, value, ...)
local function write_record(id, f, old, extra)
  local kv = extra or {}
  for _, name in ipairs(REC_FIELDS) do
    kv[#kv + 1] = name
    kv[#kv + 1] = f[name]
  end
  redis.call('HSET', P .. 'rec:' .. id, unpack(kv))
  recount_record(old, f)
  reindex_record(id, old, f)
end

local function push_history(id, i)
  local n = tonumber(ARGV[i])
  -- one RPUSH per slice of up to 1000 events (unpack's stack is bounded)
  for first = i + 1, i + n, 1000 do
    redis.call('RPUSH', P .. 'hist:' .. id, unpack(ARGV, first, math.min(first + 999, i + n)))
  end
  return i + n + 1
end

local function index_delivery(id, st, nep, cep)
  if st == 'pending' then
    if nep == '' then
      redis.call('ZADD', P .. 'dlv_ready', cep, id)
    else
      redis.call('ZADD', P .. 'dlv_pending', nep, id)
    end
  end
end

local function unindex_delivery(id)
  redis.call('ZREM', P .. 'dlv_ready', id)
  redis.call('ZREM', P .. 'dlv_pending', id)
  redis.call('ZREM', P .. 'dlv_sending', id)
end

-- a delivery's outcome counted for every record and for its record's DAG (dag: nil to read it
-- from the record rid)
local function count_delivery(st, tk, one, rid, dag)
  if st ~= 'sent' and st ~= 'failed' then return end
  local D = dag_stats(dag or redis.call('HGET', P .. 'rec:' .. rid, 'dag') or '')
  if st == 'sent' then
    bump(P .. 'stats', 'sent', one)
    bump(P .. 'stats:target', tk, one)
    bump(D, 'sent', one)
    bump(D, 'tk:' .. tk, one)
  else
    bump(P .. 'stats', 'failed', one)
    bump(D, 'failed', one)
  end
end

local function add_delivery(d)
  local k = P .. 'dlv:' .. d.id
  local old = redis.call('HMGET', k, 'st', 'tk')
  if old[1] then
    count_delivery(old[1], old[2], '-1', d.rid)
    unindex_delivery(d.id)
    redis.call('DEL', k)
  else
    redis.call('RPUSH', P .. 'rec_dlv:' .. d.rid, d.id)
  end
  local kv = {}
  for _, name in ipairs(DLV_FIELDS) do
    kv[#kv + 1] = name
    kv[#kv + 1] = d[name]
  end
  redis.call('HSET', k, unpack(kv))
  index_delivery(d.id, d.st, d.nep, d.cep)
  count_delivery(d.st, d.tk, '1', d.rid)
end

local function add_deliveries(i)
  local n = tonumber(ARGV[i])
  i = i + 1
  for _ = 1, n do
    add_delivery(args_to(DLV_FIELDS, i))
    i = i + #DLV_FIELDS
  end
  return i
end

local function remove_delivery(id, dag)
  local k = P .. 'dlv:' .. id
  local old = redis.call('HMGET', k, 'st', 'tk')
  if old[1] then count_delivery(old[1], old[2], '-1', nil, dag) end
  unindex_delivery(id)
  redis.call('DEL', k)
end

local function remove_record(id)
  local f = load_record(id)
  if not f then return 0 end
  count_record(f, '-1')
  unindex_record(id, f, true)
  redis.call('DEL', P .. 'rec:' .. id, P .. 'hist:' .. id)
  for _, did in ipairs(redis.call('LRANGE', P .. 'rec_dlv:' .. id, 0, -1)) do remove_delivery(did, f.dag) end
  redis.call('DEL', P .. 'rec_dlv:' .. id)
  return 1
end

local function record_reply(id)
  -- the fields of _READ_FIELDS in the Python module, then the history as one JSON array
  local history = redis.call('LRANGE', P .. 'hist:' .. id, 0, -1)
  return {redis.call('HMGET', P .. 'rec:' .. id, 'data', 'ver', 'nc'), '[' .. table.concat(history, ',') .. ']'}
end

-- a pending delivery with ``attempts`` so far to sending under a lease; from_index: the due
-- index it is in (after P), or nil to take it out of every delivery index
local function start_delivery(id, now_iso, owner, lease_until, attempts, from_index)
  local k = P .. 'dlv:' .. id
  redis.call('HSET', k, 'st', 'sending', 'att', tostring((tonumber(attempts) or 0) + 1),
             'upd', now_iso, 'lo', owner, 'lu', lease_until)
  if from_index then redis.call('ZREM', P .. from_index, id) else unindex_delivery(id) end
  redis.call('ZADD', P .. 'dlv_sending', lease_until, id)
  return redis.call('HGETALL', k)
end
"""


def _lua_lib_blocks() -> list[tuple[str, str]]:
    """``_LUA_LIB`` cut into its top-level definitions, in order: (name, text); the first block
    (``P``, ``SEP``) has the name ''."""
    blocks: list[tuple[str, list[str]]] = [("", [])]
    comments: list[str] = []  # go with the definition that follows them
    for line in _LUA_LIB.splitlines(keepends=True):
        if line.startswith("--"):
            comments.append(line)
            continue
        defined = re.match(r"local (?:function )?(\w+)", line)
        if defined and defined.group(1) not in ("P", "SEP"):
            blocks.append((defined.group(1), []))
        blocks[-1][1].extend(comments)
        blocks[-1][1].append(line)
        comments.clear()
    return [(name, "".join(lines)) for name, lines in blocks]


def _lua_lib_for(body: str) -> str:
    """The part of ``_LUA_LIB`` that ``body`` uses, with what that uses in turn, in the library's
    order. Redis runs a script's whole text at every call, so a script that reads one record
    does not define the two dozen functions and tables the writes need (~3.5 µs a call)."""
    blocks = _lua_lib_blocks()
    needed: set[str] = set()
    texts = [body]
    while texts:
        words = set(re.findall(r"\w+", texts.pop()))
        for name, text in blocks:
            if name and name in words and name not in needed:
                needed.add(name)
                texts.append(text)
    return "".join(text for name, text in blocks if not name or name in needed)


# Reads of one record and its history in one atomic step and one round trip.
# ARGV: P, id. Returns record_reply's {data/ver/nc (_READ_FIELDS), history}.
_LUA_GET = r"""
return record_reply(ARGV[2])
"""

# ARGV: P, incident, policy, DAG ('' = none). The open record as _LUA_GET returns it, or false.
_LUA_FIND_OPEN = r"""
local inc, pol, dag = ARGV[2], ARGV[3], ARGV[4]
local id = redis.call('HGET', P .. 'open_dag', incident_key(inc, pol, dag))
if not id then
  -- a record indexed before the key named the DAG is this one only if it is of this DAG
  id = redis.call('HGET', P .. 'open', inc .. SEP .. pol)
  if not id or (redis.call('HGET', P .. 'rec:' .. id, 'dag') or '') ~= dag then return false end
end
return record_reply(id)
"""

# ARGV: P, ids... Adds the records of no DAG among them to the no_dag index (older records).
_LUA_INDEX_NO_DAG = r"""
for j = 2, #ARGV do
  local v = redis.call('HMGET', P .. 'rec:' .. ARGV[j], 'dag', 'cre')
  if v[2] and (v[1] or '') == '' then redis.call('ZADD', P .. 'no_dag', v[2], ARGV[j]) end
end
return #ARGV - 1
"""

# ARGV: P, id, record fields (REC_FIELDS), notification_count, history (n, events...), deliveries (n, ...)
_LUA_CREATE = r"""
local id = ARGV[2]
local f = args_to(REC_FIELDS, 3)
local k = P .. 'rec:' .. id
-- the open-incident key is unique: the check and the write are one atomic step
if redis.call('EXISTS', k) == 1 or redis.call('HEXISTS', P .. 'open_dag', incident_key(f.inc, f.pol, f.dag)) == 1 then
  return 0
end
-- the first record of an empty store: every record is counted per DAG from here on
if redis.call('EXISTS', P .. 'stats') == 0 then redis.call('SET', P .. 'stats_by_dag', '1') end
write_record(id, f, nil, {'ver', '1', 'nc', ARGV[3 + #REC_FIELDS]})
redis.call('DEL', P .. 'hist:' .. id)
local i = push_history(id, 4 + #REC_FIELDS)
add_deliveries(i)
return 1
"""

# ARGV: P, id, expected_version, cancel_pending (1/0), cancel time, record fields (REC_FIELDS),
#       new events (n, ...), deliveries (n, ...)
_LUA_UPDATE = r"""
local id = ARGV[2]
local k = P .. 'rec:' .. id
-- the version and the fields load_record reads, in one call
local v = redis.call('HMGET', k, 'ver', unpack(REC_FIELDS, 2))
if v[1] ~= ARGV[3] then return 0 end
local old = {}
for j = 2, #REC_FIELDS do old[REC_FIELDS[j]] = v[j] or '' end
-- nc is left alone: only finish_delivery counts notifications
write_record(id, args_to(REC_FIELDS, 6), old, {'ver', tostring(tonumber(ARGV[3]) + 1)})
redis.call('HDEL', k, 'lo', 'lu')
local i = push_history(id, 6 + #REC_FIELDS)
if ARGV[4] == '1' then
  for _, did in ipairs(redis.call('LRANGE', P .. 'rec_dlv:' .. id, 0, -1)) do
    local dk = P .. 'dlv:' .. did
    if redis.call('HGET', dk, 'st') == 'pending' then
      redis.call('HSET', dk, 'st', 'cancelled', 'upd', ARGV[5])
      unindex_delivery(did)
    end
  end
end
add_deliveries(i)
return 1
"""

# ARGV: P, offset, limit, n, state..., policy, incident, dag ('' = no filter).
# Returns {total, {data/ver/nc, history}...}, newest first (ties: larger id first, as ZREVRANGE).
_LUA_LIST = r"""
local offset, limit, n = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tmp_states, tmp = P .. 'tmp:list_states', P .. 'tmp:list'  -- private: scripts never interleave
local base = P .. 'all'
if n == 1 then
  base = P .. 'by_state:' .. ARGV[5]
elseif n > 1 then
  local keys = {}
  for j = 1, n do keys[j] = P .. 'by_state:' .. ARGV[4 + j] end
  redis.call('ZUNIONSTORE', tmp_states, n, unpack(keys))
  base = tmp_states
end
-- intersect with the other filters; only the base carries the created_at score (weight 1)
local keys = {base}
local filters = {{'by_policy:', ARGV[5 + n]}, {'incident:', ARGV[6 + n]}, {'by_dag:', ARGV[7 + n]}}
for _, filter in ipairs(filters) do
  if filter[2] ~= '' then keys[#keys + 1] = P .. filter[1] .. filter[2] end
end
-- dag_ids: '-' = no filter, else a count and the DAG ids ('' = records of no DAG)
local tmp_dags = P .. 'tmp:list_dags'
if ARGV[8 + n] ~= '-' then
  local m = tonumber(ARGV[8 + n])
  if m == 0 then redis.call('DEL', tmp_states) return {0} end
  local dkeys = {}
  for j = 1, m do
    local d = ARGV[8 + n + j]
    dkeys[j] = (d == '') and (P .. 'no_dag') or (P .. 'by_dag:' .. d)
  end
  redis.call('ZUNIONSTORE', tmp_dags, m, unpack(dkeys))
  keys[#keys + 1] = tmp_dags
end
local source = base
if #keys > 1 then
  local args = {tmp, #keys}
  for _, key in ipairs(keys) do args[#args + 1] = key end
  args[#args + 1] = 'WEIGHTS'
  for j = 1, #keys do args[#args + 1] = (j == 1) and '1' or '0' end
  redis.call('ZINTERSTORE', unpack(args))
  source = tmp
end
local out = {redis.call('ZCARD', source)}
if limit > 0 then
  for _, id in ipairs(redis.call('ZREVRANGE', source, offset, offset + limit - 1)) do
    out[#out + 1] = record_reply(id)
  end
end
redis.call('DEL', tmp_states, tmp, tmp_dags)
return out
"""

# ARGV: P, id
_LUA_DELETE = r"""
return remove_record(ARGV[2])
"""

# ARGV: P, exclusive max closed_at ('(' .. epoch), batch size. Returns how many were deleted.
_LUA_CLEANUP = r"""
local ids = redis.call('ZRANGEBYSCORE', P .. 'closed', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do remove_record(id) end
return #ids
"""

# ARGV: P, now, limit, owner, lease_until. Returns {data/ver/nc, history} per claimed record.
_LUA_CLAIM_DUE = r"""
local now, limit, owner, lease_until = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
local out = {}
local offset = 0
local batch = math.max(limit, 100)
while #out < limit do
  local ids = redis.call('ZRANGEBYSCORE', P .. 'due', '-inf', ARGV[2], 'LIMIT', offset, batch)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    local k = P .. 'rec:' .. id
    local lease = redis.call('HMGET', k, 'lo', 'lu')
    -- skip records another engine holds under a live lease
    if not (lease[1] and lease[1] ~= owner and (tonumber(lease[2]) or 0) > now) then
      redis.call('HSET', k, 'lo', owner, 'lu', lease_until)
      out[#out + 1] = record_reply(id)
      if #out >= limit then break end
    end
  end
  offset = offset + #ids
end
return out
"""

# ARGV: P, id, owner
_LUA_RELEASE = r"""
local k = P .. 'rec:' .. ARGV[2]
if redis.call('HGET', k, 'lo') == ARGV[3] then redis.call('HDEL', k, 'lo', 'lu') end
return 1
"""

# ARGV: P, now, now_iso, limit, owner, lease_until. Returns the claimed delivery hashes.
_LUA_CLAIM_DELIVERIES = r"""
local limit = tonumber(ARGV[4])
local out = {}
local function take(ids)
  for _, id in ipairs(ids) do
    if #out >= limit then return end
    local d = redis.call('HMGET', P .. 'dlv:' .. id, 'st', 'att')
    if d[1] == 'pending' then
      out[#out + 1] = start_delivery(id, ARGV[3], ARGV[5], ARGV[6], d[2], nil)
    else
      unindex_delivery(id)  -- stale entry: never claim a non-pending delivery
    end
  end
end
-- deliveries without next_attempt_at are due at once; then retries whose time has come
take(redis.call('ZRANGE', P .. 'dlv_ready', 0, limit - 1))
if #out < limit then
  take(redis.call('ZRANGEBYSCORE', P .. 'dlv_pending', '-inf', ARGV[2], 'LIMIT', 0, limit - #out))
end
return out
"""

# ARGV: P, id, now_iso, owner, lease_until, now (epoch)
_LUA_START_DELIVERY = r"""
local d = redis.call('HMGET', P .. 'dlv:' .. ARGV[2], 'st', 'nep', 'att')
if d[1] ~= 'pending' then return false end
local retry = d[2] and d[2] ~= ''
-- a retry keeps its backoff: not before its next_attempt_at
if retry and tonumber(d[2]) > tonumber(ARGV[6]) then return false end
-- a pending delivery is in one due index (index_delivery): dlv_pending if it is a retry
return start_delivery(ARGV[2], ARGV[3], ARGV[4], ARGV[5], d[3], retry and 'dlv_pending' or 'dlv_ready')
"""

# ARGV: P, id, now_iso, sent (1/0), error (JSON), retry_at iso, retry_at epoch
_LUA_FINISH_DELIVERY = r"""
local id = ARGV[2]
local k = P .. 'dlv:' .. id
local d = redis.call('HMGET', k, 'st', 'rid', 'tk')
if d[1] ~= 'sending' then return false end
redis.call('ZREM', P .. 'dlv_sending', id)
redis.call('HDEL', k, 'lo', 'lu')
if ARGV[4] == '1' then
  redis.call('HSET', k, 'upd', ARGV[3], 'err', ARGV[5], 'st', 'sent', 'sent', ARGV[3])
  local rk = P .. 'rec:' .. d[2]
  if redis.call('EXISTS', rk) == 1 then redis.call('HINCRBY', rk, 'nc', 1) end
  count_delivery('sent', d[3], '1', d[2])
elseif ARGV[6] ~= '' then
  redis.call('HSET', k, 'upd', ARGV[3], 'err', ARGV[5], 'st', 'pending', 'nat', ARGV[6], 'nep', ARGV[7])
  redis.call('ZADD', P .. 'dlv_pending', ARGV[7], id)
else
  redis.call('HSET', k, 'upd', ARGV[3], 'err', ARGV[5], 'st', 'failed')
  count_delivery('failed', '', '1', d[2])
end
return redis.call('HGETALL', k)
"""

# ARGV: P, now, now_iso, error (JSON). Returns how many sends were marked unknown.
_LUA_EXPIRE_DELIVERIES = r"""
local ids = redis.call('ZRANGEBYSCORE', P .. 'dlv_sending', '-inf', ARGV[2])
local n = 0
for _, id in ipairs(ids) do
  local k = P .. 'dlv:' .. id
  if redis.call('HGET', k, 'st') == 'sending' then
    redis.call('HSET', k, 'st', 'unknown', 'err', ARGV[4], 'upd', ARGV[3])
    redis.call('HDEL', k, 'lo', 'lu')
    n = n + 1
  end
  redis.call('ZREM', P .. 'dlv_sending', id)
end
return n
"""

# Key families of one prefix, for clear(): everything else under a longer prefix is left alone.
_OWN_KEY = re.compile(
    r"(rec:|hist:|dlv:|rec_dlv:|active:|incident:|stats:|stats_dag:|by_state:|by_policy:|by_dag:|tmp:).*"
    r"|due|open|last_closed|open_dag|last_closed_dag|no_dag|no_dag_indexed|active|closed|all|dlv_ready|dlv_pending"
    r"|dlv_sending|stats|stats_nodag|stats_by_dag",
    re.DOTALL,
)


# --------------------------------------------------------------------------- helpers


def _ts(value: datetime | None) -> str:
    """Epoch seconds as an exact float string ('' for None): zset scores and lease times."""
    return repr(ensure_aware(value).timestamp()) if value is not None else ""


def _iso(value: datetime | None) -> str:
    return ensure_aware(value).isoformat() if value is not None else ""


def _micros(delta: timedelta) -> str:
    # integer microseconds: sums in HINCRBY never drift, unlike float increments
    return str(delta // timedelta(microseconds=1))


def _state(record: EscalationRecord) -> str:
    state = record.state
    return state.value if isinstance(state, Enum) else str(state)


def _record_args(record: EscalationRecord) -> list[str]:
    """The record's fields in the order of REC_FIELDS in the Lua library."""
    data = record.to_dict()
    for key in ("history", "version", "notification_count"):
        data.pop(key, None)
    state = _state(record)
    data["state"] = state
    ack = _micros(record.acknowledged_at - record.created_at) if record.acknowledged_at else ""
    resolved = state == EscalationState.RESOLVED.value and record.resolved_at is not None
    res = _micros(record.resolved_at - record.created_at) if resolved else ""
    return [
        dump_json(data),
        state,
        str(int(record.current_level)),
        record.policy_name,
        record.incident_id,
        _ts(record.created_at),
        _ts(record.next_escalation_at),
        _ts(record.closed_at),
        ack,
        res,
        "1" if record.is_open else "0",
        "1" if state in ACTIVE_STATE_VALUES else "0",
        record.dag_id or "",
    ]


def _incident_key(incident_id: str, policy_name: str, dag_id: str | None) -> str:
    """``incident_key`` of the Lua library: lengths in UTF-8 bytes, as Lua counts them."""
    return f"{len(incident_id.encode())}:{incident_id}{len(policy_name.encode())}:{policy_name}{dag_id or ''}"


def _dag_args(dag_ids: DagIds) -> list[str]:
    """The list script's dag_ids arguments: a count, then the ids ('' for no DAG)."""
    dags = sorted({d or "" for d in dag_ids})
    return [str(len(dags)), *dags]


def _history_args(events: Sequence[dict]) -> list[str]:
    return [str(len(events)), *(dump_json(e) for e in events)]


def _delivery_args(deliveries: Sequence[Delivery]) -> list[str]:
    """Count, then each delivery's fields in the order of DLV_FIELDS in the Lua library."""
    args = [str(len(deliveries))]
    for d in deliveries:
        args += [
            d.id,
            d.record_id,
            dump_json(
                {
                    "id": d.id,
                    "record_id": d.record_id,
                    "level": d.level,
                    "round": d.round,
                    "target": d.target.to_dict(),
                    "created_at": _iso(d.created_at),
                }
            ),
            DeliveryState(d.state).value,
            str(int(d.attempts)),
            _iso(d.updated_at),
            _iso(d.next_attempt_at),
            _ts(d.next_attempt_at),
            _ts(d.created_at),
            _iso(d.sent_at),
            dump_json(d.last_error),
            d.target.key,
        ]
    return args


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2]))


def _record_from(fields: dict[str, str], history: list[str] | str) -> EscalationRecord | None:
    """A record from its hash fields and its history: the list's JSON events, or one JSON array."""
    if not fields.get("data"):
        return None
    data = load_json(fields["data"])
    data["version"] = int(fields.get("ver") or 0)
    data["notification_count"] = int(fields.get("nc") or 0)
    data["history"] = load_json(history) if isinstance(history, str) else [load_json(e) for e in history]
    return EscalationRecord.from_dict(data)


def _delivery_from(fields: dict[str, str]) -> Delivery | None:
    if not fields.get("data"):
        return None
    data = load_json(fields["data"])
    data.update(
        state=fields["st"],
        attempts=int(fields.get("att") or 0),
        updated_at=fields.get("upd") or None,
        next_attempt_at=fields.get("nat") or None,
        sent_at=fields.get("sent") or None,
        last_error=load_json(fields.get("err") or "null"),
    )
    return Delivery.from_dict(data)


def _safe_url(url: str) -> str:
    """The URL without its password, for error messages."""
    try:
        parts = urlsplit(url)
        if parts.password:
            host = parts.hostname or ""
            if parts.port:
                host = f"{host}:{parts.port}"
            user = f"{parts.username}:***@" if parts.username else ":***@"
            return urlunsplit(parts._replace(netloc=user + host))
    except ValueError:
        pass
    return url


class _Call(NamedTuple):
    """A store call as one script run and the reading of its reply (what ``run_batch`` pipelines)."""

    script: Any  # redis.commands.core.Script
    action: str  # for error messages
    args: list[str]  # ARGV after the prefix
    parse: Callable[[Any], Any]


def _record_reply(reply: Any) -> EscalationRecord | None:
    """A record from ``{data/ver/nc, history}`` (see record_reply in the Lua library)."""
    if not reply:
        return None
    values, history = reply
    return _record_from(dict(zip(_READ_FIELDS, values)), history)


def _delivery_reply(reply: Any) -> Delivery | None:
    return _delivery_from(_pairs(reply)) if reply else None


# --------------------------------------------------------------------------- store


class RedisEscalationStore(BaseEscalationStore):
    """Escalation store on Redis (sync client); safe across threads, processes and hosts.

    ``client`` takes an existing ``redis.Redis`` (it must use ``decode_responses=True``); it is
    then left open by ``close()``, since its owner may still use it. Other keyword arguments go to
    ``redis.Redis.from_url``.
    """

    blocking = True

    def __init__(
        self,
        redis_url: str = "redis://localhost:6379",
        key_prefix: str = "escalation:",
        *,
        client: redis.Redis | None = None,
        name: str = "redis",
        **client_kwargs: Any,
    ) -> None:
        super().__init__(name)
        self._prefix = key_prefix
        self._url = _safe_url(redis_url)
        if client is None:
            client_kwargs["decode_responses"] = True
            # fail fast instead of hanging when the server is down
            client_kwargs.setdefault("socket_connect_timeout", 5)
            client_kwargs.setdefault("socket_timeout", 30)
            client = redis.Redis.from_url(redis_url, **client_kwargs)
            self._owns_client = True
        else:
            if not client.connection_pool.connection_kwargs.get("decode_responses"):
                raise ValueError("client: the Redis client must be created with decode_responses=True")
            self._owns_client = False
        self._client = client

        # register_script keeps the SHA and re-sends the body on NOSCRIPT (after a restart/flush)
        def script(body: str) -> Any:
            return client.register_script(_lua_lib_for(body) + body)

        self._get = script(_LUA_GET)
        self._find_open = script(_LUA_FIND_OPEN)
        self._index_no_dag_script = script(_LUA_INDEX_NO_DAG)
        self._no_dag_indexed = False  # _index_no_dag ran (on the first read filtered by DAG)
        self._counted_by_dag = False  # every record is counted per DAG (stats_by_dag is set)
        self._create = script(_LUA_CREATE)
        self._update = script(_LUA_UPDATE)
        self._delete = script(_LUA_DELETE)
        self._list = script(_LUA_LIST)
        self._cleanup = script(_LUA_CLEANUP)
        self._claim_due = script(_LUA_CLAIM_DUE)
        self._release = script(_LUA_RELEASE)
        self._claim_deliveries = script(_LUA_CLAIM_DELIVERIES)
        self._start_delivery = script(_LUA_START_DELIVERY)
        self._finish_delivery = script(_LUA_FINISH_DELIVERY)
        self._expire_deliveries = script(_LUA_EXPIRE_DELIVERIES)

    @property
    def key_prefix(self) -> str:
        return self._prefix

    @property
    def client(self) -> redis.Redis:
        return self._client

    # ------------------------------------------------------------------ helpers
    def _key(self, *parts: str) -> str:
        return self._prefix + "".join(parts)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreError(f"redis store: {action}: Redis at {self._url} is unreachable: {exc}") from exc
        except redis.RedisError as exc:
            raise StoreError(f"redis store: {action} failed on {self._url}: {exc}") from exc

    def _run(self, script: Any, action: str, *args: str) -> Any:
        with self._errors(action):
            return script(keys=[], args=[self._prefix, *args])

    def _pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write and read their replies (an error reply in its place).

        What ``Pipeline.execute(raise_on_error=False)`` does, without its bookkeeping per
        command (a good share of the client's time per store call); no retry either: a script
        must not run twice because a reply was lost.
        """
        pool = self._client.connection_pool
        try:
            conn = pool.get_connection()
        except TypeError:  # redis-py before 5.3 wants a command name (later ones warn about it)
            conn = pool.get_connection("EVALSHA")
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as error:
                    replies.append(error)
            return replies
        except BaseException:
            conn.disconnect()  # replies may be left unread: the connection cannot be reused
            raise
        finally:
            pool.release(conn)

    def _call(self, call: _Call) -> Any:
        return call.parse(self._run(call.script, call.action, *call.args))

    # the engine queues calls for a store that prefers batches; run_batch pipelines them, on two
    # threads: one batch is in Redis while the other's replies are read and the next one is built
    prefers_batches = True
    batch_threads = 2

    def run_batch(self, calls: Sequence[StoreCall]) -> list[tuple[Any, Exception | None]]:
        """Run ``calls`` (this store's bound methods, args, kwargs); their outcomes in order,
        ``(result, None)`` or ``(None, error)``.

        The engine's hot calls (``find_open``, ``create``, ``get``, ``update``, ``start_delivery``,
        ``finish_delivery``) go out together in one pipeline: one round trip and one read of the
        replies for all of them. Each is still its own atomic script, as when called alone; the
        other calls run one after another first.
        """
        outcomes: list[tuple[Any, Exception | None]] = [(None, None)] * len(calls)
        piped: list[tuple[int, _Call]] = []
        for i, (fn, args, kwargs) in enumerate(calls):
            prepare = _PIPELINED.get(getattr(fn, "__func__", None)) if getattr(fn, "__self__", None) is self else None
            try:
                if prepare is None:
                    outcomes[i] = (fn(*args, **kwargs), None)
                else:
                    piped.append((i, prepare(self, *args, **kwargs)))
            except Exception as exc:  # noqa: BLE001 - that call's outcome
                outcomes[i] = (None, exc)
        if not piped:
            return outcomes
        try:
            with self._errors("run a batch of calls"):
                replies = self._pipeline(
                    [("EVALSHA", call.script.sha, 0, self._prefix, *call.args) for _, call in piped]
                )
        except StoreError as exc:  # the connection failed: none of the piped calls has an outcome
            for i, _ in piped:
                outcomes[i] = (None, exc)
            return outcomes
        for (i, call), reply in zip(piped, replies):
            try:
                if isinstance(reply, redis.exceptions.NoScriptError):
                    # Redis restarted or its scripts were flushed: this call did not run; run it
                    # alone (register_script loads the script again)
                    reply = self._run(call.script, call.action, *call.args)
                elif isinstance(reply, Exception):
                    with self._errors(call.action):
                        raise reply
                outcomes[i] = (call.parse(reply), None)
            except Exception as exc:  # noqa: BLE001 - that call's outcome
                outcomes[i] = (None, exc)
        return outcomes

    def _load(self, ids: Sequence[str], with_history: bool = True) -> list[EscalationRecord]:
        """Records by id in that order, skipping the missing ones (each read is atomic)."""
        found: list[EscalationRecord] = []
        with self._errors("read records"):
            for start in range(0, len(ids), _BATCH):
                chunk = ids[start : start + _BATCH]
                pipe = self._client.pipeline(transaction=True)
                for record_id in chunk:
                    # only the fields a record is built from: replies parse faster than HGETALL
                    pipe.hmget(self._key("rec:", record_id), _READ_FIELDS)
                    if with_history:
                        pipe.lrange(self._key("hist:", record_id), 0, -1)
                replies = pipe.execute()
                pairs = zip(replies[::2], replies[1::2]) if with_history else ((v, []) for v in replies)
                for values, history in pairs:
                    record = _record_from(dict(zip(_READ_FIELDS, values)), history)
                    if record is not None:
                        found.append(record)
        return found

    def _first_score(self, key: str) -> float | None:
        first = self._client.zrange(key, 0, 0, withscores=True)
        return first[0][1] if first else None

    # ------------------------------------------------------------------ spec query API
    def get(self, record_id: str) -> EscalationRecord | None:
        return self._call(self._get_call(record_id))

    def _get_call(self, record_id: str) -> _Call:
        return _Call(self._get, "get", [record_id], _record_reply)

    def get_by_incident(self, incident_id: str) -> list[EscalationRecord]:
        with self._errors("get_by_incident"):
            ids = sorted(self._client.smembers(self._key("incident:", incident_id)))
        return sorted(self._load(ids), key=lambda r: r.created_at)

    def get_active(self, policy_name: str | None = None, *, with_history: bool = True) -> list[EscalationRecord]:
        key = self._key("active") if policy_name is None else self._key("active:", policy_name)
        with self._errors("get_active"):
            ids = self._client.zrange(key, 0, -1)
        # an index read and the record reads are separate steps: re-check what was read
        return [
            r
            for r in self._load(ids, with_history)
            if r.is_active and (policy_name is None or r.policy_name == policy_name)
        ]

    def count_active(self, policy_name: str | None = None) -> int:
        key = self._key("active") if policy_name is None else self._key("active:", policy_name)
        with self._errors("count_active"):
            return int(self._client.zcard(key))

    def list_records(
        self,
        *,
        states: Sequence[str] | None = None,
        policy_name: str | None = None,
        incident_id: str | None = None,
        dag_id: str | None = None,
        dag_ids: DagIds | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[EscalationRecord], int]:
        # Redis intersects the index zsets and pages them in one script: the page and the total
        # come from the same instant. A dag_id that is not a non-empty string is not indexed.
        wanted = sorted({s.value if isinstance(s, Enum) else str(s) for s in states or ()})
        dags = ["-"] if dag_ids is None else _dag_args(dag_ids)
        if dag_ids is not None and None in dag_ids:
            self._index_no_dag()
        reply = self._run(
            self._list,
            "list_records",
            str(max(0, int(offset))),
            str(max(0, int(limit))),
            str(len(wanted)),
            *wanted,
            policy_name or "",
            incident_id or "",
            dag_id or "",
            *dags,
        )
        records = (_record_from(dict(zip(_READ_FIELDS, values)), history) for values, history in reply[1:])
        return [r for r in records if r is not None], int(reply[0])

    def delete(self, record_id: str) -> bool:
        return bool(self._run(self._delete, "delete", record_id))

    def cleanup_resolved(self, older_than: timedelta, now: datetime | None = None) -> int:
        cutoff = (ensure_aware(now) if now is not None else datetime.now(UTC)) - older_than
        removed = 0
        while True:  # in batches, so no single script blocks Redis for long
            n = int(self._run(self._cleanup, "cleanup_resolved", "(" + _ts(cutoff), str(_BATCH)))
            removed += n
            if n < _BATCH:
                return removed

    def get_stats(self, dag_ids: DagIds | None = None) -> EscalationStats:
        if dag_ids is not None:
            return self._stats_of_dags(dag_ids)
        with self._errors("get_stats"):
            pipe = self._client.pipeline(transaction=True)
            for key in ("stats", "stats:level", "stats:policy", "stats:target"):
                pipe.hgetall(self._key(key))
            totals, by_level, by_policy, by_target = pipe.execute()
        n = {k: int(v) for k, v in totals.items()}
        active = sum(n.get(f"st:{s}", 0) for s in ACTIVE_STATE_VALUES)
        ack_n, res_n = n.get("ack_n", 0), n.get("res_n", 0)
        return EscalationStats(
            total_escalations=n.get("total", 0),
            active_escalations=active,
            acknowledged_count=n.get(f"st:{EscalationState.ACKNOWLEDGED.value}", 0),
            resolved_count=n.get(f"st:{EscalationState.RESOLVED.value}", 0),
            timed_out_count=n.get(f"st:{EscalationState.TIMED_OUT.value}", 0),
            cancelled_count=n.get(f"st:{EscalationState.CANCELLED.value}", 0),
            failed_count=n.get(f"st:{EscalationState.FAILED.value}", 0),
            avg_time_to_acknowledge_seconds=n.get("ack_us", 0) / 1e6 / ack_n if ack_n else 0.0,
            avg_time_to_resolve_seconds=n.get("res_us", 0) / 1e6 / res_n if res_n else 0.0,
            escalations_by_level={int(k): int(v) for k, v in by_level.items() if int(v)},
            escalations_by_policy={k: int(v) for k, v in by_policy.items() if int(v)},
            notifications_sent=n.get("sent", 0),
            notifications_by_target={k: int(v) for k, v in by_target.items() if int(v)},
            notifications_failed=n.get("failed", 0),
        )

    def _stats_of_dags(self, dag_ids: DagIds) -> EscalationStats:
        """Stats over the records of some DAGs: their DAGs' counters, when every record was
        counted per DAG (a store filled since its first record by this version), else counted
        from the records."""
        dags = set(dag_ids)
        with self._errors("get_stats"):
            if not self._counted_by_dag:
                self._counted_by_dag = bool(self._client.exists(self._key("stats_by_dag")))
            if not self._counted_by_dag:
                return self._stats_of_dags_loaded(dags)
            pipe = self._client.pipeline(transaction=True)
            for dag in dags:
                pipe.hgetall(self._key("stats_nodag") if dag is None else self._key("stats_dag:", dag))
            hashes = pipe.execute() if dags else []
        n: Counter[str] = Counter()
        for fields in hashes:
            n.update({k: int(v) for k, v in fields.items()})

        def group(prefix: str) -> dict[str, int]:
            return {k[len(prefix) :]: v for k, v in n.items() if k.startswith(prefix) and v}

        ack_n, res_n = n["ack_n"], n["res_n"]
        by_state = group("st:")
        return EscalationStats(
            total_escalations=n["total"],
            active_escalations=sum(by_state.get(s, 0) for s in ACTIVE_STATE_VALUES),
            acknowledged_count=by_state.get(EscalationState.ACKNOWLEDGED.value, 0),
            resolved_count=by_state.get(EscalationState.RESOLVED.value, 0),
            timed_out_count=by_state.get(EscalationState.TIMED_OUT.value, 0),
            cancelled_count=by_state.get(EscalationState.CANCELLED.value, 0),
            failed_count=by_state.get(EscalationState.FAILED.value, 0),
            avg_time_to_acknowledge_seconds=n["ack_us"] / 1e6 / ack_n if ack_n else 0.0,
            avg_time_to_resolve_seconds=n["res_us"] / 1e6 / res_n if res_n else 0.0,
            escalations_by_level={int(k): v for k, v in group("lvl:").items()},
            escalations_by_policy=group("pol:"),
            notifications_sent=n["sent"],
            notifications_by_target=group("tk:"),
            notifications_failed=n["failed"],
        )

    def _stats_of_dags_loaded(self, dag_ids: DagIds) -> EscalationStats:
        """Stats over the records of some DAGs counted from the records (without their histories)
        and their deliveries, read in pipelines: a store written before records were counted
        per DAG."""
        if None in dag_ids:
            self._index_no_dag()
        keys = [self._key("no_dag") if d is None else self._key(f"by_dag:{d}") for d in set(dag_ids)]
        acc = StatsAccumulator()
        with self._errors("get_stats"):
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.zrange(key, 0, -1)
            ids = sorted({i for found in (pipe.execute() if keys else []) for i in found})
        for chunk in range(0, len(ids), _BATCH):
            records = self._load(ids[chunk : chunk + _BATCH], with_history=False)  # stats need none
            for record in records:
                acc.add_record(record)
            with self._errors("get_stats"):  # the deliveries of the chunk's records: two round trips
                pipe = self._client.pipeline(transaction=False)
                for record in records:
                    pipe.lrange(self._key("rec_dlv:", record.id), 0, -1)
                delivery_ids = [i for found in (pipe.execute() if records else []) for i in found]
                pipe = self._client.pipeline(transaction=False)
                for delivery_id in delivery_ids:
                    pipe.hgetall(self._key("dlv:", delivery_id))
                replies = pipe.execute() if delivery_ids else []
            for delivery in map(_delivery_from, replies):
                if delivery is not None:
                    acc.add_delivery(delivery.target.key, delivery.state)
        return acc.result()

    def _index_no_dag(self) -> None:
        """Put records stored before the ``no_dag`` index existed into it (once per prefix)."""
        if self._no_dag_indexed:
            return
        marker = self._key("no_dag_indexed")
        with self._errors("open"):
            if self._client.exists(marker):
                self._no_dag_indexed = True
                return
            start = 0
            while True:
                ids = self._client.zrange(self._key("all"), start, start + _BATCH - 1)
                if ids:
                    self._run(self._index_no_dag_script, "open", *ids)
                if len(ids) < _BATCH:
                    break
                start += _BATCH
            self._client.set(marker, "1")
        self._no_dag_indexed = True

    def clear(self) -> None:
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self._prefix) + "*"
        size = len(self._prefix)
        with self._errors("clear"):
            batch: list[str] = []
            for key in self._client.scan_iter(match=pattern, count=1000):
                if _OWN_KEY.fullmatch(key[size:]):
                    batch.append(key)
                if len(batch) >= _BATCH:
                    self._client.unlink(*batch)
                    batch = []
            if batch:
                self._client.unlink(*batch)

    # ------------------------------------------------------------------ engine contract
    def create(self, record: EscalationRecord, deliveries: Sequence[Delivery] = ()) -> EscalationRecord | None:
        return self._call(self._create_call(record, deliveries))

    def _create_call(self, record: EscalationRecord, deliveries: Sequence[Delivery] = ()) -> _Call:
        def parse(created: Any) -> EscalationRecord | None:
            if not created:
                return None
            stored = record.clone()
            stored.version = 1
            return stored

        args = [
            record.id,
            *_record_args(record),
            str(int(record.notification_count)),
            *_history_args(record.history),
            *_delivery_args(deliveries),
        ]
        return _Call(self._create, "create", args, parse)

    def find_open(self, incident_id: str, policy_name: str, dag_id: str | None = None) -> EscalationRecord | None:
        return self._call(self._find_open_call(incident_id, policy_name, dag_id))

    def _find_open_call(self, incident_id: str, policy_name: str, dag_id: str | None = None) -> _Call:
        return _Call(self._find_open, "find_open", [incident_id, policy_name, dag_id or ""], _record_reply)

    def last_closed(self, incident_id: str, policy_name: str, dag_id: str | None = None) -> EscalationRecord | None:
        with self._errors("last_closed"):
            record_id = self._client.hget(self._key("last_closed_dag"), _incident_key(incident_id, policy_name, dag_id))
            legacy = (
                None if record_id else self._client.hget(self._key("last_closed"), incident_id + _SEP + policy_name)
            )
        if record_id:
            return self.get(record_id)
        record = self.get(legacy) if legacy else None
        # a record indexed before the key named the DAG counts only for its own DAG
        return record if record is not None and record.dag_id == dag_id else None

    def update(
        self,
        record: EscalationRecord,
        expected_version: int,
        new_events: Sequence[dict] = (),
        deliveries: Sequence[Delivery] = (),
        cancel_pending: bool = False,
    ) -> bool:
        return self._call(self._update_call(record, expected_version, new_events, deliveries, cancel_pending))

    def _update_call(
        self,
        record: EscalationRecord,
        expected_version: int,
        new_events: Sequence[dict] = (),
        deliveries: Sequence[Delivery] = (),
        cancel_pending: bool = False,
    ) -> _Call:
        def parse(updated: Any) -> bool:
            if not updated:
                return False
            record.version = expected_version + 1
            return True

        args = [
            record.id,
            str(int(expected_version)),
            "1" if cancel_pending else "0",
            _iso(record.updated_at),
            *_record_args(record),
            *_history_args(list(new_events)),
            *_delivery_args(deliveries),
        ]
        return _Call(self._update, "update", args, parse)

    def claim_due(self, now: datetime, limit: int, owner: str, lease: timedelta) -> list[EscalationRecord]:
        if limit <= 0:
            return []
        now = ensure_aware(now)
        replies = self._run(self._claim_due, "claim_due", _ts(now), str(int(limit)), owner, _ts(now + lease))
        records = (_record_from(dict(zip(_READ_FIELDS, values)), history) for values, history in replies)
        return [r for r in records if r is not None]

    def release(self, record_id: str, owner: str) -> None:
        self._run(self._release, "release", record_id, owner)

    def next_due_at(self) -> datetime | None:
        with self._errors("next_due_at"):
            score = self._first_score(self._key("due"))
        return datetime.fromtimestamp(score, UTC) if score is not None else None

    # ------------------------------------------------------------------ outbox
    def get_deliveries(self, record_id: str) -> list[Delivery]:
        with self._errors("get_deliveries"):
            ids = self._client.lrange(self._key("rec_dlv:", record_id), 0, -1)
            pipe = self._client.pipeline(transaction=True)
            for delivery_id in ids:
                pipe.hgetall(self._key("dlv:", delivery_id))
            replies = pipe.execute() if ids else []
        return [d for d in map(_delivery_from, replies) if d is not None]

    def claim_deliveries(self, now: datetime, limit: int, owner: str, lease: timedelta) -> list[Delivery]:
        if limit <= 0:
            return []
        now = ensure_aware(now)
        replies = self._run(
            self._claim_deliveries,
            "claim_deliveries",
            _ts(now),
            _iso(now),
            str(int(limit)),
            owner,
            _ts(now + lease),
        )
        return [d for d in (_delivery_from(_pairs(r)) for r in replies) if d is not None]

    def start_delivery(self, delivery_id: str, now: datetime, owner: str, lease: timedelta) -> Delivery | None:
        return self._call(self._start_delivery_call(delivery_id, now, owner, lease))

    def _start_delivery_call(self, delivery_id: str, now: datetime, owner: str, lease: timedelta) -> _Call:
        now = ensure_aware(now)
        args = [delivery_id, _iso(now), owner, _ts(now + lease), _ts(now)]
        return _Call(self._start_delivery, "start_delivery", args, _delivery_reply)

    def finish_delivery(
        self,
        delivery_id: str,
        now: datetime,
        *,
        sent: bool,
        error: str | None = None,
        retry_at: datetime | None = None,
    ) -> Delivery | None:
        return self._call(self._finish_delivery_call(delivery_id, now, sent=sent, error=error, retry_at=retry_at))

    def _finish_delivery_call(
        self,
        delivery_id: str,
        now: datetime,
        *,
        sent: bool,
        error: str | None = None,
        retry_at: datetime | None = None,
    ) -> _Call:
        args = [delivery_id, _iso(now), "1" if sent else "0", dump_json(error), _iso(retry_at), _ts(retry_at)]
        return _Call(self._finish_delivery, "finish_delivery", args, _delivery_reply)

    def expire_deliveries(self, now: datetime) -> int:
        return int(
            self._run(self._expire_deliveries, "expire_deliveries", _ts(now), _iso(now), dump_json(_UNKNOWN_ERROR))
        )

    def next_delivery_at(self) -> datetime | None:
        with self._errors("next_delivery_at"):
            pipe = self._client.pipeline(transaction=True)
            pipe.zrange(self._key("dlv_ready"), 0, 0, withscores=True)
            pipe.zrange(self._key("dlv_pending"), 0, 0, withscores=True)
            scores = [first[0][1] for first in pipe.execute() if first]
        return datetime.fromtimestamp(min(scores), UTC) if scores else None

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        if not self._owns_client:
            return
        with self._errors("close"):
            self._client.close()
            self._client.connection_pool.disconnect()


# the calls run_batch pipelines: a method of the store, and how it is made a _Call
_PIPELINED: dict[Callable[..., Any], Callable[..., _Call]] = {
    RedisEscalationStore.find_open: RedisEscalationStore._find_open_call,
    RedisEscalationStore.create: RedisEscalationStore._create_call,
    RedisEscalationStore.get: RedisEscalationStore._get_call,
    RedisEscalationStore.update: RedisEscalationStore._update_call,
    RedisEscalationStore.start_delivery: RedisEscalationStore._start_delivery_call,
    RedisEscalationStore.finish_delivery: RedisEscalationStore._finish_delivery_call,
}
