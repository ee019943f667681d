"""The Lua script of the Redis backend: every write is one all-or-nothing script call.

Redis runs a script atomically (no other client's command interleaves) but does not roll
back: a command that fails halfway leaves the earlier writes in place. So :data:`COMMIT`
works in three phases and writes nothing until the first two have passed:

1. **types** — every key it will touch (the ones in ``KEYS`` and the old index keys read
   from the request hashes) must be missing or of the expected type, and the counters and
   request hashes must hold well-formed values;
2. **preconditions** — request absent (create) or at the expected revision, state at the
   expected version, the request not yet the producer of a state version, and which of
   the sent decisions are new (a logged ``(request, sequence)`` is skipped);
3. **writes** — only commands that cannot fail on the checked keys.

The script reads its arguments with two cursors, ``key()`` over ``KEYS`` and ``arg()`` over
``ARGV``, in the order :mod:`mutator_governance.stores._redis` pushes them:

``KEYS``: decision counter, recent-decisions set, then per request section its request hash
(or an unused placeholder for a log-only section), decision log and index keys, then one
category key per decision; the state and produced hashes when there is a state; one list
key per appended entry.

``ARGV``: section count; per section: mode (``create``, ``update`` or ``log``), expected
revision, new revision, document, index member, index key count, decision count and per
decision (sequence, document, stamp, record); ``1`` and the state fields (has_expected,
expected, version, document, request id) or ``0``; entry count and one document per entry.

Replies: ``{1}`` on success; otherwise ``{0, what, a, b, c}``:

- ``request`` position exists actual — position (1-based) missing (exists 0) or at revision
  ``actual``; ``exists`` position — a created request exists;
- ``state`` 0 exists actual — the state's version is ``actual`` (or it is absent);
- ``produced`` 0 1 version — the request already produced ``version`` of the state;
- ``type`` key actual expected — a key holds the wrong type;
- ``data`` key field problem — a stored value is malformed.
"""

from __future__ import annotations

__all__ = ["COMMIT"]

COMMIT = r"""
local ki, ai = 0, 0
local function key() ki = ki + 1; return KEYS[ki] end
local function arg() ai = ai + 1; return ARGV[ai] end

-- phase 1 helpers: expected types ----------------------------------------------------
local expected_types = {}
local function want(k, kind)
  local prior = expected_types[k]
  if prior and prior ~= kind then
    error('mutator: key ' .. k .. ' used as ' .. prior .. ' and ' .. kind)
  end
  expected_types[k] = kind
  return k
end

local seq_key = want(key(), 'string')
local recent_key = want(key(), 'zset')

local sections = {}
local n = tonumber(arg())
for i = 1, n do
  local w = {mode = arg(), expected = arg(), revision = arg(), document = arg(),
             member = arg()}
  if w.mode == 'log' then
    w.key = key()
    w.log_key = want(key(), 'hash')
  else
    w.key = want(key(), 'hash')
    w.log_key = want(key(), 'hash')
  end
  local count = tonumber(arg())
  w.indexes = {}
  for j = 1, count do w.indexes[j] = want(key(), 'zset') end
  local d = tonumber(arg())
  w.decisions = {}
  for j = 1, d do
    w.decisions[j] = {category_key = want(key(), 'zset'), seq = arg(), document = arg(),
                      stamp = arg(), record = arg()}
  end
  sections[i] = w
end

local state = nil
if arg() == '1' then
  state = {key = want(key(), 'hash'), produced_key = want(key(), 'hash'),
           has_expected = arg(), expected = arg(), version = arg(), document = arg(),
           request_id = arg()}
end

local entries = {}
local e = tonumber(arg())
for i = 1, e do entries[i] = {key = want(key(), 'list'), document = arg()} end

-- phase 1: types and well-formed stored values ------------------------------------------
for i, w in ipairs(sections) do
  if w.mode ~= 'log' then
    local found = redis.call('TYPE', w.key)['ok']
    if found == 'hash' then
      local old = redis.call('HMGET', w.key, 'revision', 'member', 'indexes')
      w.exists = true
      w.current = old[1]
      if not old[1] or not string.match(old[1], '^%d+$') then
        return {0, 'data', w.key, 'revision', 'missing or not a decimal counter'}
      end
      if not old[2] or not old[3] then
        return {0, 'data', w.key, 'indexes', 'missing index membership'}
      end
      w.old_member = old[2]
      w.old_indexes = {}
      for index_key in string.gmatch(old[3], '[^\n]+') do
        table.insert(w.old_indexes, want(index_key, 'zset'))
      end
    elseif found == 'none' then
      w.exists = false
    else
      return {0, 'type', w.key, found, 'hash'}
    end
  end
end
for k, kind in pairs(expected_types) do
  local found = redis.call('TYPE', k)['ok']
  if found ~= kind and found ~= 'none' then return {0, 'type', k, found, kind} end
end
local counter = redis.call('GET', seq_key)
if counter and not string.match(counter, '^%d+$') then
  return {0, 'data', seq_key, '', 'decision counter is not a decimal counter'}
end
local current_version = nil
if state then
  current_version = redis.call('HGET', state.key, 'version')
  if current_version and not string.match(current_version, '^%d+$') then
    return {0, 'data', state.key, 'version', 'not a decimal counter'}
  end
end

-- phase 2: preconditions -----------------------------------------------------------------
for i, w in ipairs(sections) do
  if w.mode == 'create' then
    if w.exists then return {0, 'exists', i, 1, ''} end
  elseif w.mode == 'update' then
    if not w.exists then return {0, 'request', i, 0, ''} end
    if w.current ~= w.expected then return {0, 'request', i, 1, w.current} end
  end
end
if state then
  if state.has_expected == '1' then
    if current_version ~= state.expected then
      if current_version then return {0, 'state', 0, 1, current_version} end
      return {0, 'state', 0, 0, ''}
    end
  elseif current_version then
    return {0, 'state', 0, 1, current_version}
  end
  if state.request_id ~= '' then
    local produced = redis.call('HGET', state.produced_key, state.request_id)
    if produced then return {0, 'produced', 0, 1, produced} end
  end
end
for _, w in ipairs(sections) do
  local seen = {}
  w.fresh = {}
  for _, d in ipairs(w.decisions) do
    if not seen[d.seq] then
      seen[d.seq] = true
      if redis.call('HEXISTS', w.log_key, d.seq) == 0 then table.insert(w.fresh, d) end
    end
  end
end

-- phase 3: writes (none of these can fail on the keys checked above) -------------------
if state then
  if state.request_id ~= '' then
    redis.call('HSET', state.key, 'document', state.document, 'version', state.version,
               'request_id', state.request_id)
    redis.call('HSET', state.produced_key, state.request_id, state.version)
  else
    redis.call('HSET', state.key, 'document', state.document, 'version', state.version)
    redis.call('HDEL', state.key, 'request_id')
  end
end
for _, w in ipairs(sections) do
  if w.mode ~= 'log' then
    if w.old_indexes then
      for _, index_key in ipairs(w.old_indexes) do
        redis.call('ZREM', index_key, w.old_member)
      end
    end
    redis.call('HSET', w.key, 'document', w.document, 'revision', w.revision,
               'member', w.member, 'indexes', table.concat(w.indexes, '\n'))
    for _, index_key in ipairs(w.indexes) do
      redis.call('ZADD', index_key, 0, w.member)
    end
  end
  for _, d in ipairs(w.fresh) do
    redis.call('HSET', w.log_key, d.seq, d.document)
    local seq = tostring(redis.call('INCR', seq_key))
    local member = d.stamp .. '|' .. string.rep('0', 16 - #seq) .. seq .. '|' .. d.record
    redis.call('ZADD', recent_key, 0, member)
    redis.call('ZADD', d.category_key, 0, member)
  end
end
for _, entry in ipairs(entries) do
  redis.call('RPUSH', entry.key, entry.document)
end
return {1}
"""
"""One governance write: type checks, then preconditions, then every write."""
