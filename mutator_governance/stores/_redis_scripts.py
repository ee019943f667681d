"""Lua scripts of the Redis backend: every compare-and-set and every multi-key write.

Redis runs a script atomically, so a check and the writes that depend on it can never be
interleaved with another client's commands. Each script reads its arguments with two
cursors, ``key()`` over ``KEYS`` and ``arg()`` over ``ARGV``, in the order
:mod:`mutator_governance.stores._redis` pushes them. Every key a script writes is passed in
``KEYS`` except the *old* index keys of a request, which are read from the request hash
(Redis cannot know them before the script runs; all keys share the store prefix, so a
prefix with a hash tag such as ``{mutator}`` keeps them in one cluster slot).

Request hash fields: ``document`` (JSON), ``revision`` (decimal), ``member`` (the request's
index member ``"<created µs, 18 digits>|<request id>"``) and ``indexes`` (the index keys
holding ``member``, one per line; keys never contain whitespace).

Replies: ``{1, ...}`` on success; ``{0, what, position, exists, actual}`` when a check fails,
where ``what`` is ``"request"`` (missing when ``exists`` is 0, else revision ``actual``) or
``"state"`` (version ``actual``, or absent when ``exists`` is 0).
"""

from __future__ import annotations

__all__ = ["APPEND_DECISIONS", "COMMIT", "CREATE_REQUEST", "PUT_STATE", "REPLACE_REQUEST"]

_PRELUDE = r"""
local ki, ai = 0, 0
local function key() ki = ki + 1; return KEYS[ki] end
local function arg() ai = ai + 1; return ARGV[ai] end

local function read_decisions()
  local n = tonumber(arg())
  local out = {}
  for i = 1, n do
    out[i] = {category_key = key(), document = arg(), stamp = arg(), record = arg()}
  end
  return out
end

local function read_request()
  local w = {key = key(), log_key = key(), expected = arg(), revision = arg(),
             document = arg(), member = arg()}
  local n = tonumber(arg())
  w.indexes = {}
  for i = 1, n do w.indexes[i] = key() end
  return w
end

local function read_state()
  return {key = key(), produced_key = key(), has_expected = arg(), expected = arg(),
          version = arg(), document = arg(), request_id = arg()}
end

-- nil when the stored revision is w.expected, else a failure reply
local function check_request(w, position)
  local current = redis.call('HGET', w.key, 'revision')
  if not current then return {0, 'request', position, 0, ''} end
  if current ~= w.expected then return {0, 'request', position, 1, current} end
  return nil
end

local function check_state(s)
  local current = redis.call('HGET', s.key, 'version')
  if s.has_expected == '1' then
    if current ~= s.expected then
      if current then return {0, 'state', 0, 1, current} end
      return {0, 'state', 0, 0, ''}
    end
  elseif current then
    return {0, 'state', 0, 1, current}
  end
  return nil
end

local function write_request(w)
  local old = redis.call('HMGET', w.key, 'member', 'indexes')
  if old[1] and old[2] then
    for index_key in string.gmatch(old[2], '[^\n]+') do
      redis.call('ZREM', index_key, old[1])
    end
  end
  redis.call('HSET', w.key, 'document', w.document, 'revision', w.revision,
             'member', w.member, 'indexes', table.concat(w.indexes, '\n'))
  for _, index_key in ipairs(w.indexes) do
    redis.call('ZADD', index_key, 0, w.member)
  end
end

local function write_decisions(log_key, decisions, seq_key, recent_key)
  for _, d in ipairs(decisions) do
    redis.call('RPUSH', log_key, d.document)
    local seq = tostring(redis.call('INCR', seq_key))
    local member = d.stamp .. '|' .. string.rep('0', 16 - #seq) .. seq .. '|' .. d.record
    redis.call('ZADD', recent_key, 0, member)
    redis.call('ZADD', d.category_key, 0, member)
  end
end

local function write_state(s)
  if s.request_id ~= '' then
    redis.call('HSET', s.key, 'document', s.document, 'version', s.version,
               'request_id', s.request_id)
    redis.call('HSET', s.produced_key, s.request_id, s.version)
  else
    redis.call('HSET', s.key, 'document', s.document, 'version', s.version)
    redis.call('HDEL', s.key, 'request_id')
  end
end
"""

CREATE_REQUEST = (
    _PRELUDE
    + r"""
-- KEYS: request, decision log (unused), index keys...
-- ARGV: expected (unused), revision, document, member, index count
local w = read_request()
if redis.call('EXISTS', w.key) == 1 then return {0, 'exists', 1, 1, ''} end
write_request(w)
return {1}
"""
)
"""Create a request unless its hash exists, adding it to its index sets."""

REPLACE_REQUEST = (
    _PRELUDE
    + r"""
local w = read_request()
local failed = check_request(w, 1)
if failed then return failed end
write_request(w)
return {1}
"""
)
"""Replace a request at the expected revision, moving it between index sets."""

PUT_STATE = (
    _PRELUDE
    + r"""
-- KEYS: state, produced; ARGV: has_expected, expected, version, document, request_id
local s = read_state()
local failed = check_state(s)
if failed then return failed end
write_state(s)
return {1}
"""
)
"""Write a state at the expected version (or create it) and record the producing request."""

APPEND_DECISIONS = (
    _PRELUDE
    + r"""
-- KEYS: sequence, recent, decision log, then one category key per decision
-- ARGV: decision count, then (document, stamp, record) per decision
local seq_key, recent_key, log_key = key(), key(), key()
write_decisions(log_key, read_decisions(), seq_key, recent_key)
return {1}
"""
)
"""Append decisions to a request's log and to the recent-decision indexes."""

COMMIT = (
    _PRELUDE
    + r"""
-- KEYS: sequence, recent, then per request (request, log, indexes..., category keys...),
--       then (state, produced) when there is a state, then one history key per entry.
-- ARGV: request count, per request (expected, revision, document, member, index count,
--       decision count, (document, stamp, record) per decision), has_state, state fields,
--       history count, history documents.
local seq_key, recent_key = key(), key()
local writes = {}
local n = tonumber(arg())
for i = 1, n do
  local w = read_request()
  w.decisions = read_decisions()
  writes[i] = w
end
local state = nil
if arg() == '1' then state = read_state() end
local history = {}
local h = tonumber(arg())
for i = 1, h do history[i] = {key = key(), document = arg()} end

for i, w in ipairs(writes) do
  local failed = check_request(w, i)
  if failed then return failed end
end
if state then
  local failed = check_state(state)
  if failed then return failed end
end

if state then write_state(state) end
for _, w in ipairs(writes) do
  write_request(w)
  write_decisions(w.log_key, w.decisions, seq_key, recent_key)
end
for _, entry in ipairs(history) do
  redis.call('RPUSH', entry.key, entry.document)
end
return {1}
"""
)
"""The governed commit: check every revision and the state version, then write it all."""
