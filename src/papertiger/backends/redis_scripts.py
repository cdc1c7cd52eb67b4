"""The Redis backend's Lua scripts: every step that must be atomic runs as one script.

Each script touches the keys of one partition only (they share a hash tag,
see :mod:`.redis_layout`), so it runs whole on one Redis Cluster node.
Keys the script derives from ``ARGV[1]`` (the partition's base name, for
index sets) carry the same tag.

Replies are arrays whose first item says what happened: ``OK``, or
``EXISTS``/``NOTFOUND``/``TWICE``/``CONFLICT`` (the Python side turns them
into the store's errors), or ``REG`` + a generation: the partition is not in
the registry yet.  A write into an unregistered partition changes nothing
and answers ``REG gen``; the caller adds the partition to the registry, then
repeats the write with ``gen``, which succeeds only if no ``clear`` removed
the partition meanwhile (a clear deletes ``gen``).  So a record is only ever
written into a partition the registry lists, and ``clear`` on another node
can always find it.

Entries (``B:e``) are msgpack arrays built with Redis's ``cmsgpack``; the
packed records themselves are never decoded here.
"""

from __future__ import annotations

__all__ = [
    "CLEAR_PARTITION",
    "DELETE",
    "FIND",
    "ONCE_ABANDON",
    "ONCE_CLAIM",
    "ONCE_DONE",
    "ONCE_FORGET",
    "ONCE_RENEW",
    "PAGE",
    "PATCH",
    "PUT",
    "PUT_MANY",
]

# Shared Lua helpers, prepended to the write scripts.
_HELPERS = r"""
local function registered(m, token, reg)
  if redis.call('HGET', m, 'reg') == '1' then return nil end
  local gen = redis.call('HGET', m, 'gen')
  if not gen then
    -- a new generation: whatever the caller registered before belongs to an older one
    redis.call('HSET', m, 'gen', token)
    return {'REG', token}
  end
  if reg ~= gen then return {'REG', gen} end
  redis.call('HSET', m, 'reg', '1')
  return nil
end

local function unindex(base, o, old)
  local ent = cmsgpack.unpack(old)
  local om = ent[1]
  redis.call('ZREM', o, om)
  for i = 2, #ent do redis.call('ZREM', base .. ':i:' .. ent[i], om) end
  return om
end

local function put_one(base, r, e, o, m, id, c17, packed, sfx, old)
  local member
  if old then
    local om = unindex(base, o, old)
    member = c17 .. string.sub(om, 18, 33) .. id
  else
    local ord = redis.call('HINCRBY', m, 'ord', 1)
    member = c17 .. string.format('%016x', ord) .. id
  end
  redis.call('ZADD', o, 0, member)
  local ent = {member}
  for i = 1, #sfx do
    redis.call('ZADD', base .. ':i:' .. sfx[i], 0, member)
    ent[i + 1] = sfx[i]
  end
  redis.call('HSET', r, id, packed)
  redis.call('HSET', e, id, cmsgpack.pack(ent))
end
"""

#: KEYS r e o m; ARGV base token reg mode id created17 packed suffix...
PUT = (
    _HELPERS
    + r"""
local r, e, o, m = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local base, mode, id, c17, packed = ARGV[1], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local old = redis.call('HGET', e, id)
if mode == 'insert' and old then return {'EXISTS'} end
if mode == 'update' and not old then return {'NOTFOUND'} end
local need = registered(m, ARGV[2], ARGV[3])
if need then return need end
local sfx = {}
for i = 8, #ARGV do sfx[#sfx + 1] = ARGV[i] end
put_one(base, r, e, o, m, id, c17, packed, sfx, old)
return {'OK'}
"""
)

#: KEYS r e o m [stage]; ARGV base token reg [blob]: records as msgpack
#: arrays of ``[id, created17, packed, [suffix...]]``, in ARGV[4] or in the stage list.
PUT_MANY = (
    _HELPERS
    + r"""
local r, e, o, m = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local base = ARGV[1]
local chunks
if KEYS[5] then chunks = redis.call('LRANGE', KEYS[5], 0, -1) else chunks = {ARGV[4]} end
local batch = {}
for _, blob in ipairs(chunks) do
  for _, rec in ipairs(cmsgpack.unpack(blob)) do batch[#batch + 1] = rec end
end
local seen = {}
for i, rec in ipairs(batch) do
  local id = rec[1]
  if seen[id] then return {'TWICE', i - 1, id} end
  seen[id] = true
  if redis.call('HEXISTS', r, id) == 1 then return {'EXISTS', i - 1, id} end
end
if #batch == 0 then return {'OK'} end
local need = registered(m, ARGV[2], ARGV[3])
if need then return need end
for _, rec in ipairs(batch) do
  put_one(base, r, e, o, m, rec[1], rec[2], rec[3], rec[4], false)
end
if KEYS[5] then redis.call('DEL', KEYS[5]) end
return {'OK'}
"""
)

#: KEYS r e o m; ARGV base id expected new_created17 new_packed suffix...
#: Replaces the record only if it is still ``expected`` (compare and set).
PATCH = (
    _HELPERS
    + r"""
local r, e, o, m = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local base, id = ARGV[1], ARGV[2]
local current = redis.call('HGET', r, id)
if not current then return {'NOTFOUND'} end
if current ~= ARGV[3] then return {'CONFLICT'} end
local sfx = {}
for i = 6, #ARGV do sfx[#sfx + 1] = ARGV[i] end
local old = redis.call('HGET', e, id)
put_one(base, r, e, o, m, id, ARGV[4], ARGV[5], sfx, old)
return {'OK'}
"""
)

#: KEYS r e o; ARGV base id
DELETE = (
    _HELPERS
    + r"""
local r, e, o = KEYS[1], KEYS[2], KEYS[3]
local old = redis.call('HGET', e, ARGV[2])
if not old then return {'NOTFOUND'} end
unindex(ARGV[1], o, old)
redis.call('HDEL', r, ARGV[2])
redis.call('HDEL', e, ARGV[2])
return {'OK'}
"""
)

#: KEYS r e o m; ARGV base.  Removes every key of the partition.
CLEAR_PARTITION = r"""
local r, e, o, m = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local base = ARGV[1]
local gone = {}
for _, ent in ipairs(redis.call('HVALS', e)) do
  local t = cmsgpack.unpack(ent)
  for i = 2, #t do
    local key = base .. ':i:' .. t[i]
    if not gone[key] then
      gone[key] = true
      redis.call('DEL', key)
    end
  end
end
return redis.call('DEL', r, e, o, m)
"""

# Fetch packed records by id, in chunks (Lua's unpack has a stack limit).
_FETCH = r"""
local function fetch(r, ids, out)
  local n = #ids
  local i = 1
  while i <= n do
    local j = math.min(i + 999, n)
    local chunk = {}
    for k = i, j do chunk[#chunk + 1] = ids[k] end
    local got = redis.call('HMGET', r, unpack(chunk))
    for k = 1, #got do out[#out + 1] = got[k] end
    i = j + 1
  end
  return out
end
"""

#: KEYS r e o filter-index...; ARGV limit kind(''|'sa'|'eb') cursor lo17 hi17
#: Reply: ``{'OK', has_more, packed...}`` or ``{'NOTFOUND'}`` (the cursor).
PAGE = (
    _FETCH
    + r"""
local r, e, o = KEYS[1], KEYS[2], KEYS[3]
local limit = tonumber(ARGV[1])
local kind, lo, hi = ARGV[2], ARGV[4], ARGV[5]
local seq, seqi = o, 0
if #KEYS > 3 then
  local best
  for i = 4, #KEYS do
    local n = redis.call('ZCARD', KEYS[i])
    if not best or n < best then best, seqi = n, i end
  end
  seq = KEYS[seqi]
end
local function matches(member, skip)
  for i = 4, #KEYS do
    if i ~= skip and not redis.call('ZSCORE', KEYS[i], member) then return false end
  end
  return true
end
local min = (lo ~= '') and ('[' .. lo) or '-'
local max = (hi ~= '') and ('(' .. hi) or '+'
if kind ~= '' then
  local ent = redis.call('HGET', e, ARGV[3])
  if not ent then return {'NOTFOUND'} end
  local cur = cmsgpack.unpack(ent)[1]
  local c = string.sub(cur, 1, 17)
  if (lo ~= '' and c < lo) or (hi ~= '' and c >= hi) or not matches(cur, 0) then
    return {'NOTFOUND'}
  end
  if kind == 'sa' then max = '(' .. cur else min = '(' .. cur end
end
local rev = kind ~= 'eb'
local want = limit + 1
local found
if #KEYS <= 4 then
  if rev then
    found = redis.call('ZREVRANGEBYLEX', seq, max, min, 'LIMIT', 0, want)
  else
    found = redis.call('ZRANGEBYLEX', seq, min, max, 'LIMIT', 0, want)
  end
else
  found = {}
  local step = math.max(2 * want, 32)
  while #found < want do
    local got
    if rev then
      got = redis.call('ZREVRANGEBYLEX', seq, max, min, 'LIMIT', 0, step)
    else
      got = redis.call('ZRANGEBYLEX', seq, min, max, 'LIMIT', 0, step)
    end
    for _, member in ipairs(got) do
      if matches(member, seqi) then
        found[#found + 1] = member
        if #found == want then break end
      end
    end
    if #got < step then break end
    if rev then max = '(' .. got[#got] else min = '(' .. got[#got] end
  end
end
local n = math.min(#found, limit)
local ids = {}
for i = 1, n do
  local k = rev and i or (n + 1 - i)
  ids[i] = string.sub(found[k], 34)
end
return fetch(r, ids, {'OK', (#found > limit) and 1 or 0})
"""
)

#: KEYS r sorted-set; newest first: every packed record the set lists.
FIND = (
    _FETCH
    + r"""
local ids = {}
for i, member in ipairs(redis.call('ZREVRANGE', KEYS[2], 0, -1)) do
  ids[i] = string.sub(member, 34)
end
return fetch(KEYS[1], ids, {})
"""
)

# -- once -------------------------------------------------------------------------------
# KEYS values keys lease

#: ARGV key token lease_ms -> {'done', packed} | {'run'} | {'wait', ms left}
ONCE_CLAIM = r"""
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then return {'done', v} end
if redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[3]) then return {'run'} end
return {'wait', redis.call('PTTL', KEYS[3])}
"""

#: ARGV token lease_ms -> 1 when the caller still holds the lease
ONCE_RENEW = r"""
if redis.call('GET', KEYS[3]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
  return 1
end
return 0
"""

#: ARGV key token packed -> the stored result (the first one stored wins)
ONCE_DONE = r"""
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('DEL', KEYS[3]) end
return redis.call('HGET', KEYS[1], ARGV[1])
"""

#: ARGV token: give the lease back (the factory raised)
ONCE_ABANDON = r"""
if redis.call('GET', KEYS[3]) == ARGV[1] then return redis.call('DEL', KEYS[3]) end
return 0
"""

#: ARGV key
ONCE_FORGET = r"""
redis.call('HDEL', KEYS[1], ARGV[1])
return redis.call('ZREM', KEYS[2], ARGV[1])
"""
