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

An update moves a request only between the index sets that change: a set that holds the
request's member before and after (its state, actor, type, ``index:all`` ...) is neither
written nor type-checked.

The script reads its arguments with two cursors, ``key()`` over ``KEYS`` and ``arg()`` over
``ARGV``, in the order :mod:`mutator_governance.stores._redis` pushes them:

``KEYS``: decision counter, recent-decisions set, the two ready sets (approved, pending
revalidation), the reservation hash, the segment hash, the expiry set, then per request
section its request hash (or an unused placeholder for a log-only section), decision log,
decision-member hash, index keys and updated-index keys, then one category key per
decision; the state and produced hashes when there is a state; one list key per appended
entry; the state hash to read back, when asked.

``ARGV``: the ready channel, the schema version, section count; per section: mode
(``create``, ``update`` or ``log``), expected revision, new revision, document, index
member, key segment, expiry member (``"<deadline stamp>|<id>"``, empty when nothing of the
request expires), index key count, updated member, updated key count, decision count,
the request id as JSON and per decision (sequence, its JSON, stamp: the script wraps the
JSON into the log document and the record of the recent sets, so it is sent once);
``1`` and the state fields (has_expected, expected, version, document, request id) or
``0``; entry count and one document per entry (empty: the previous entry's document again,
e.g. one audit entry in the global and the per-state list); ``1`` to read a state hash
back after the writes (its key is type-checked with the others) or ``0``.

Beside its writes the script keeps the worker's view in step: a request that leaves both
ready sets loses its reservation, each written request's key segment is recorded (the
other scripts find request keys through it), its expiry member moves in the expiry set
(the request hash's ``dmember`` field names the one it holds, so a write that leaves it
unchanged does not touch the set), and when any written request is ready it publishes on
the ready channel (one message per commit).

Replies: ``{1}`` on success (``{1, document, version, request_id}`` of the state read back,
nil where missing, when one was asked for); otherwise ``{0, what, a, b, c}``:

- ``request`` position exists actual — position (1-based) missing (exists 0) or at revision
  ``actual``; ``exists`` position — a created request exists;
- ``state`` 0 exists actual — the state's version is ``actual`` (or it is absent);
- ``produced`` 0 1 version — the request already produced ``version`` of the state;
- ``type`` key actual expected — a key holds the wrong type;
- ``data`` key field problem — a stored value is malformed.
"""

from __future__ import annotations

__all__ = [
    "COMMIT",
    "DUE_FIX",
    "PURGE",
    "RESERVE",
    "UNRESERVE",
    "UPGRADE_DUE",
    "UPGRADE_REQUEST",
]

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
local ready_keys = {}
ready_keys[want(key(), 'zset')] = true
ready_keys[want(key(), 'zset')] = true
local reserved_key = want(key(), 'hash')
local segments_key = want(key(), 'hash')
local due_key = want(key(), 'zset')
local channel = arg()
local schema = arg()

local function split(text)
  local out = {}
  if text then
    for part in string.gmatch(text, '[^\n]+') do table.insert(out, part) end
  end
  return out
end
-- The index entries a request write changes: an entry already in a set (same key, same
-- member) is left alone, so only these keys are type-checked and written.
local function changes(old_keys, old_member, new_keys, new_member)
  local kept = {}
  if old_member == new_member then
    for _, k in ipairs(old_keys) do kept[k] = 1 end
  end
  local add, drop = {}, {}
  for _, k in ipairs(new_keys) do
    if kept[k] then kept[k] = 2 else table.insert(add, want(k, 'zset')) end
  end
  for _, k in ipairs(old_keys) do
    if kept[k] ~= 2 then table.insert(drop, want(k, 'zset')) end
  end
  return add, drop
end
local function any_ready(list)
  for _, k in ipairs(list) do if ready_keys[k] then return true end end
  return false
end

local sections = {}
local n = tonumber(arg())
for i = 1, n do
  local w = {mode = arg(), expected = arg(), revision = arg(), document = arg(),
             member = arg(), segment = arg(), due = arg()}
  if w.mode == 'log' then
    w.key = key()
    w.log_key = want(key(), 'hash')
  else
    w.key = want(key(), 'hash')
    w.log_key = want(key(), 'hash')
  end
  w.members_key = want(key(), 'hash')
  local count = tonumber(arg())
  w.indexes = {}
  for j = 1, count do w.indexes[j] = key() end
  w.umember = arg()
  count = tonumber(arg())
  w.uindexes = {}
  for j = 1, count do w.uindexes[j] = key() end
  local d = tonumber(arg())
  local owner = arg()
  w.decisions = {}
  for j = 1, d do
    -- each decision's JSON is sent once: its log document and its record wrap it here
    local seq, encoded, stamp = arg(), arg(), arg()
    w.decisions[j] = {category_key = want(key(), 'zset'), seq = seq, stamp = stamp,
                      document = '{"schema":' .. schema .. ',"decision":' .. encoded .. '}',
                      record = '{"schema":' .. schema .. ',"record":{"request_id":' .. owner
                               .. ',"decision":' .. encoded .. '}}'}
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
for i = 1, e do
  local document = arg()
  if document == '' then document = entries[i - 1].document end  -- the previous one again
  entries[i] = {key = want(key(), 'list'), document = document}
end

local read_key = nil
if arg() == '1' then read_key = want(key(), 'hash') end

-- phase 1: types and well-formed stored values ------------------------------------------
local checked = {}
for i, w in ipairs(sections) do
  if w.mode ~= 'log' then
    local found = redis.call('TYPE', w.key)['ok']
    checked[w.key] = true
    if found == 'hash' then
      local old = redis.call('HMGET', w.key, 'revision', 'member', 'indexes', 'umember',
                             'uindexes', 'dmember')
      w.exists = true
      w.current = old[1]
      if not old[1] or not string.match(old[1], '^%d+$') then
        return {0, 'data', w.key, 'revision', 'missing or not a decimal counter'}
      end
      if not old[2] or not old[3] then
        return {0, 'data', w.key, 'indexes', 'missing index membership'}
      end
      w.old_member, w.old_umember = old[2], old[4]
      w.old_indexes = split(old[3])
      w.add, w.drop = changes(w.old_indexes, old[2], w.indexes, w.member)
      w.uadd, w.udrop = changes(old[4] and split(old[5]) or {}, old[4], w.uindexes, w.umember)
      w.old_due = old[6] or ''
    elseif found == 'none' then
      w.exists = false
      w.add, w.drop = changes({}, nil, w.indexes, w.member)
      w.uadd, w.udrop = changes({}, nil, w.uindexes, w.umember)
      w.old_due = ''
    else
      return {0, 'type', w.key, found, 'hash'}
    end
  end
end
for k, kind in pairs(expected_types) do
  if not checked[k] then
    local found = redis.call('TYPE', k)['ok']
    if found ~= kind and found ~= 'none' then return {0, 'type', k, found, kind} end
  end
end
-- INCR must not fail in phase 3: no leading zeros, and far from the int64 limit.
local counter = redis.call('GET', seq_key)
if counter and counter ~= '0' and not (string.match(counter, '^[1-9]%d*$') and #counter <= 15) then
  return {0, 'data', seq_key, '', 'decision counter is not a decimal counter below 10^15'}
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
local signal = false
for _, w in ipairs(sections) do
  if w.mode ~= 'log' then
    local request_id = string.sub(w.member, 20)
    for _, index_key in ipairs(w.drop) do redis.call('ZREM', index_key, w.old_member) end
    for _, index_key in ipairs(w.udrop) do redis.call('ZREM', index_key, w.old_umember) end
    if w.old_indexes and any_ready(w.old_indexes) and not any_ready(w.indexes) then
      redis.call('HDEL', reserved_key, request_id)
    end
    if w.old_due ~= w.due and w.old_due ~= '' then redis.call('ZREM', due_key, w.old_due) end
    redis.call('HSET', w.key, 'document', w.document, 'revision', w.revision,
               'member', w.member, 'indexes', table.concat(w.indexes, '\n'),
               'umember', w.umember, 'uindexes', table.concat(w.uindexes, '\n'),
               'dmember', w.due)
    if w.old_due ~= w.due and w.due ~= '' then redis.call('ZADD', due_key, 0, w.due) end
    for _, index_key in ipairs(w.add) do redis.call('ZADD', index_key, 0, w.member) end
    for _, index_key in ipairs(w.uadd) do redis.call('ZADD', index_key, 0, w.umember) end
    redis.call('HSET', segments_key, request_id, w.segment)
    if any_ready(w.indexes) then signal = true end
  end
  for _, d in ipairs(w.fresh) do
    redis.call('HSET', w.log_key, d.seq, d.document)
    local seq = tostring(redis.call('INCR', seq_key))
    local member = d.stamp .. '|' .. string.rep('0', 16 - #seq) .. seq .. '|' .. d.record
    redis.call('ZADD', recent_key, 0, member)
    redis.call('ZADD', d.category_key, 0, member)
    redis.call('HSET', w.members_key, member, d.category_key)
  end
end
for _, entry in ipairs(entries) do
  redis.call('RPUSH', entry.key, entry.document)
end
if signal then redis.call('PUBLISH', channel, '1') end
if read_key then
  local row = redis.call('HMGET', read_key, 'document', 'version', 'request_id')
  return {1, row[1], row[2], row[3]}
end
return {1}
"""
"""One governance write: type checks, then preconditions, then every write."""

RESERVE = r"""
local approved, revalidation, reserved, quarantine, segments = KEYS[1], KEYS[2], KEYS[3],
  KEYS[4], KEYS[5]
local now, expiry, limit, both, prefix = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1',
  ARGV[5]
local holder = expiry .. '|' .. ARGV[6]
local batch = math.min(limit + 16, 256)
local reads = 0

local function stream(k)
  return {key = k, buf = {}, i = 1, bound = '-', done = false}
end
local function peek(s)
  if s.i > #s.buf then
    if s.done then return nil end
    s.buf = redis.call('ZRANGEBYLEX', s.key, s.bound, '+', 'LIMIT', 0, batch)
    reads = reads + 1
    s.i = 1
    if #s.buf < batch then s.done = true end
    if #s.buf == 0 then return nil end
    s.bound = '(' .. s.buf[#s.buf]
  end
  return s.buf[s.i]
end

local streams = {stream(approved)}
if both then table.insert(streams, stream(revalidation)) end
local out = {0}
local taken = 0
while taken < limit do
  local best, from = nil, nil
  for _, s in ipairs(streams) do
    local m = peek(s)
    if m and (not best or m < best) then best, from = m, s end
  end
  if not best then break end
  from.i = from.i + 1
  local request_id = string.sub(best, 20)
  local held = redis.call('HGET', reserved, request_id)
  reads = reads + 2
  if (not held or string.sub(held, 1, #now) <= now)
      and redis.call('HEXISTS', quarantine, request_id) == 0 then
    local segment = redis.call('HGET', segments, request_id)
    local document = false
    if segment then
      document = redis.call('HGET', prefix .. ':request:' .. segment, 'document') or false
    end
    reads = reads + 2
    redis.call('HSET', reserved, request_id, holder)
    table.insert(out, request_id)
    table.insert(out, document)
    taken = taken + 1
  end
end
out[1] = reads
return out
"""
"""Reserve up to ``limit`` ready requests: ``{reads, id, document, id, document, ...}``.

Walks the approved set (merged with the revalidation set when asked) from its oldest
member, skips ids reserved past ``now`` and quarantined ids, records the reservations
(``<until stamp>|<owner>``; a value written before owners were recorded is a bare stamp,
and the comparison reads only the stamp) and returns each document (nil when the request
has none). ``reads`` counts the commands that
read keys, so tests can check the cost does not grow with the store.
"""

UNRESERVE = r"""
local reserved, owner = KEYS[1], ARGV[1]
local cleared = 0
for i = 2, #ARGV do
  local held = redis.call('HGET', reserved, ARGV[i])
  if held then
    local bar = string.find(held, '|', 1, true)
    if bar and string.sub(held, bar + 1) == owner then
      redis.call('HDEL', reserved, ARGV[i])
      cleared = cleared + 1
    end
  end
end
return cleared
"""
"""Clear the reservations ``owner`` (ARGV[1]) holds on the ids that follow; return how
many. A reservation held by someone else, or without a recorded owner, is left alone."""

PURGE = r"""
local reserved, quarantine, segments, recent, due = KEYS[1], KEYS[2], KEYS[3], KEYS[4],
  KEYS[5]
local before, limit, prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local sources = {}
for i = 6, #KEYS do
  table.insert(sources, {key = KEYS[i], buf = {}, i = 1, bound = '-', done = false})
end
local high = '(' .. before
local batch = math.min(limit + 16, 512)

local function peek(s)
  if s.i > #s.buf then
    if s.done then return nil end
    s.buf = redis.call('ZRANGEBYLEX', s.key, s.bound, high, 'LIMIT', 0, batch)
    s.i = 1
    if #s.buf < batch then s.done = true end
    if #s.buf == 0 then return nil end
    s.bound = '(' .. s.buf[#s.buf]
  end
  return s.buf[s.i]
end
local function split(text)
  local out = {}
  if text then
    for part in string.gmatch(text, '[^\n]+') do table.insert(out, part) end
  end
  return out
end

local deleted, decisions = {}, 0
while #deleted < limit do
  local best, from = nil, nil
  for _, s in ipairs(sources) do
    local m = peek(s)
    if m and (not best or m < best) then best, from = m, s end
  end
  if not best then break end
  from.i = from.i + 1
  local request_id = string.sub(best, 20)
  local segment = redis.call('HGET', segments, request_id)
  local row = nil
  if segment and redis.call('EXISTS', prefix .. ':index:compensates:' .. segment) == 0 then
    row = redis.pcall('HMGET', prefix .. ':request:' .. segment, 'member', 'indexes',
                      'umember', 'uindexes', 'dmember')
    if row.err then row = nil end
  end
  if row then
    local request_key = prefix .. ':request:' .. segment
    if row[1] then
      for _, k in ipairs(split(row[2])) do redis.pcall('ZREM', k, row[1]) end
    end
    if row[3] then
      for _, k in ipairs(split(row[4])) do redis.pcall('ZREM', k, row[3]) end
    end
    if row[5] and row[5] ~= '' then redis.pcall('ZREM', due, row[5]) end
    redis.pcall('ZREM', from.key, best)
    local log_key = prefix .. ':decision-log:' .. segment
    local logged = redis.pcall('HLEN', log_key)
    if type(logged) == 'number' then decisions = decisions + logged end
    local members_key = prefix .. ':decision-members:' .. segment
    local pairs_ = redis.pcall('HGETALL', members_key)
    if type(pairs_) ~= 'table' or pairs_.err then pairs_ = {} end
    for j = 1, #pairs_, 2 do
      redis.pcall('ZREM', recent, pairs_[j])
      redis.pcall('ZREM', pairs_[j + 1], pairs_[j])
    end
    redis.call('DEL', request_key, log_key, members_key)
    redis.pcall('HDEL', reserved, request_id)
    redis.pcall('HDEL', quarantine, request_id)
    redis.pcall('HDEL', segments, request_id)
    table.insert(deleted, request_id)
  end
end
return {decisions, deleted}
"""
"""Delete up to ``limit`` purgeable requests, oldest ``updated_at`` first: ``{decisions, ids}``.

``KEYS``: reservation, quarantine and segment hashes, the recent-decisions set, the expiry
set, then the updated-at set of each purged status. A request whose id has live
compensations (a non-empty ``index:compensates:<id>``) is kept. Each deleted request leaves
every index (the ones its hash lists, and its expiry member if it holds one), its decision
log with its recent-set members, its reservation, quarantine entry and segment. Deletions
use ``pcall``: a wrong-type key is left as it is rather than stopping the purge halfway
through a request.
"""

UPGRADE_REQUEST = r"""
local fields = redis.call('HMGET', KEYS[1], 'revision', 'uindexes')
if fields[1] ~= ARGV[1] or fields[2] then return 0 end
local old = redis.call('HMGET', KEYS[1], 'member', 'indexes')
if old[1] and old[2] then
  for part in string.gmatch(old[2], '[^\n]+') do redis.call('ZREM', part, old[1]) end
end
local n = tonumber(ARGV[4])
local indexes = {}
for i = 1, n do
  indexes[i] = ARGV[4 + i]
  redis.call('ZADD', ARGV[4 + i], 0, ARGV[2])
end
local m = tonumber(ARGV[5 + n])
local uindexes = {}
for i = 1, m do
  uindexes[i] = ARGV[5 + n + i]
  redis.call('ZADD', ARGV[5 + n + i], 0, ARGV[3])
end
redis.call('HSET', KEYS[1], 'member', ARGV[2], 'indexes', table.concat(indexes, '\n'),
           'umember', ARGV[3], 'uindexes', table.concat(uindexes, '\n'))
redis.call('HSET', KEYS[2], ARGV[6 + n + m], ARGV[7 + n + m])
return 1
"""
"""Give one schema-2 request hash its schema-3 indexes, unless a commit got there first.

``KEYS``: the request hash, the segment hash. ``ARGV``: the revision read, the member, the
updated member, the index count and keys, the updated-index count and keys, the request id
and its key segment. A hash already holding ``uindexes`` (written by a schema-3 commit) or
at another revision is left alone.
"""

DUE_FIX = r"""
local found = redis.call('HMGET', KEYS[1], 'revision', 'dmember')
if (found[1] or '') ~= ARGV[1] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[2])
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[2], 0, ARGV[3]) end
if found[1] then redis.call('HSET', KEYS[1], 'dmember', ARGV[3]) end
return 1
"""
"""Replace a stale expiry member by the right one, unless the request changed meanwhile.

``KEYS``: the request hash, the expiry set. ``ARGV``: the revision read (empty when the
hash was missing), the stale member, the member the request's document calls for (empty:
none). Replies 0, writing nothing, when the hash is now at another revision (or appeared
or went): the commit that changed it moved its member itself.
"""

UPGRADE_DUE = r"""
local added = 0
for i = 2, #KEYS do
  local revision, member = ARGV[2 * i - 3], ARGV[2 * i - 2]
  local row = redis.pcall('HMGET', KEYS[i], 'revision', 'dmember')
  if not row.err and row[1] == revision and not row[2] then
    redis.call('ZADD', KEYS[1], 0, member)
    redis.call('HSET', KEYS[i], 'dmember', member)
    added = added + 1
  end
end
return added
"""
"""Enter schema-3 pending requests in the expiry set (the schema-4 upgrade), in one call.

``KEYS``: the expiry set, then each request hash. ``ARGV``: per request, the revision read
and its expiry member. A hash at another revision or already holding ``dmember`` (written
by a schema-4 commit) is left alone; so is a key that is not a hash. Replies how many were
entered.
"""
