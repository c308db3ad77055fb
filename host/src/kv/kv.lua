-- Every operation of the Redis state backend (host/src/kv/redis.rs), one
-- script so that each is atomic and one round trip.
-- KEYS[1]: the hub's base key, KEYS[2]: the tenant's usage hash.
-- ARGV[1]: the operation; the rest are its arguments (see redis.rs).
-- Keys of the hub (all under one hash tag, the tenant):
--   base:v  hash key -> value        base:x  zset key -> expiry (unix ms)
--   base:k  zset of every key (score 0, for listing by prefix)
--   base:l:KEY  list                 base:lb hash key -> bytes of its list
-- Errors are raised with a KV* code the host maps to its error.
local base, usage = KEYS[1], KEYS[2]
local op = ARGV[1]
local V, X, K, LB = base .. ':v', base .. ':x', base .. ':k', base .. ':lb'
local function L(k) return base .. ':l:' .. k end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local function account(keys, bytes)
  if keys ~= 0 then redis.call('HINCRBY', usage, 'keys', keys) end
  if bytes ~= 0 then redis.call('HINCRBY', usage, 'bytes', bytes) end
end

-- Room for keys more keys and bytes more bytes? ARGV[maxat], ARGV[maxat+1].
local function charge(keys, bytes, maxat)
  local u = redis.call('HMGET', usage, 'keys', 'bytes')
  local uk, ub = tonumber(u[1]) or 0, tonumber(u[2]) or 0
  if keys > 0 and uk + keys > tonumber(ARGV[maxat]) then error({err = 'KVKEYS'}) end
  if bytes > 0 and ub + bytes > tonumber(ARGV[maxat + 1]) then error({err = 'KVBYTES'}) end
  account(keys, bytes)
end

local function unindex(k)
  if redis.call('HEXISTS', V, k) == 0 and redis.call('EXISTS', L(k)) == 0 then
    redis.call('ZREM', K, k)
  end
end

local function drop_value(k)
  local len = redis.call('HSTRLEN', V, k)
  if redis.call('HDEL', V, k) == 1 then
    account(-1, -(len + #k))
    redis.call('ZREM', X, k)
    unindex(k)
    return true
  end
  return false
end

local function drop_list(k)
  if redis.call('EXISTS', L(k)) == 0 then return false end
  local bytes = tonumber(redis.call('HGET', LB, k)) or 0
  redis.call('DEL', L(k))
  redis.call('HDEL', LB, k)
  account(-1, -(bytes + #k))
  unindex(k)
  return true
end

-- Drop k's value if it has expired.
local function live(k)
  local at = redis.call('ZSCORE', X, k)
  if at and tonumber(at) <= now then drop_value(k) end
end

-- Set k to v (expiring at `expires` unless false), charging the change.
local function put(k, v, expires, maxat)
  local old = redis.call('HEXISTS', V, k) == 1
  if old then
    charge(0, #v - redis.call('HSTRLEN', V, k), maxat)
  else
    charge(1, #k + #v, maxat)
  end
  redis.call('HSET', V, k, v)
  redis.call('ZADD', K, 0, k)
  if expires then redis.call('ZADD', X, expires, k) else redis.call('ZREM', X, k) end
end

-- Indexes start..stop of a list of n items, Redis's way; nil when empty.
local function span(n, start, stop)
  if start < 0 then start = n + start end
  if stop < 0 then stop = n + stop end
  if start < 0 then start = 0 end
  if stop > n - 1 then stop = n - 1 end
  if n == 0 or start > stop then return nil end
  return start, stop
end

-- A few expired values of the hub, so they stop counting soon.
for _, k in ipairs(redis.call('ZRANGEBYSCORE', X, '-inf', now, 'LIMIT', 0, 16)) do
  drop_value(k)
end

if op == 'get' then
  live(ARGV[2])
  return redis.call('HGET', V, ARGV[2])
elseif op == 'set' then
  -- key, value, ttl ms (0: none), max keys, max bytes
  local k, ttl = ARGV[2], tonumber(ARGV[4])
  live(k)
  put(k, ARGV[3], ttl > 0 and (now + ttl), 5)
  return 1
elseif op == 'delete' then
  local k = ARGV[2]
  live(k)
  local value = drop_value(k)
  local list = drop_list(k)
  return (value or list) and 1 or 0
elseif op == 'incr' then
  -- key, delta, max keys, max bytes; the new value as text (exact, where a
  -- Lua number would round past 2^53)
  local k = ARGV[2]
  live(k)
  local old = redis.call('HGET', V, k)
  local result = redis.pcall('HINCRBY', V, k, ARGV[3])
  if type(result) == 'table' and result.err then
    if string.find(result.err, 'overflow') then error({err = 'KVOVERFLOW'}) end
    error({err = 'KVNOTINTEGER'})
  end
  local new = redis.call('HGET', V, k)
  local ok, failure
  if old then
    ok, failure = pcall(charge, 0, #new - #old, 4)
  else
    ok, failure = pcall(charge, 1, #k + #new, 4)
  end
  if not ok then
    if old then redis.call('HSET', V, k, old) else redis.call('HDEL', V, k) end
    error(failure)
  end
  redis.call('ZADD', K, 0, k)
  return new
elseif op == 'cas' then
  -- key, has expected (1/0), expected, value, max keys, max bytes
  local k = ARGV[2]
  live(k)
  local current = redis.call('HGET', V, k)
  if ARGV[3] == '1' then
    if current ~= ARGV[4] then return 0 end
  elseif current then
    return 0
  end
  put(k, ARGV[5], false, 6)
  return 1
elseif op == 'keys' then
  -- prefix, after ('' with flag 0: none), has after, limit
  local prefix, after, limit = ARGV[2], ARGV[3], tonumber(ARGV[5])
  local from = '[' .. prefix
  if ARGV[4] == '1' and after >= prefix then from = '(' .. after end
  local to = '+'
  if prefix ~= '' then to = '(' .. prefix .. '\255' end
  local found = {}
  -- Expired keys are dropped as they are met; read on until `limit` live
  -- ones or the end, a bounded number of rounds.
  for _ = 1, 4 do
    local batch = redis.call('ZRANGEBYLEX', K, from, to, 'LIMIT', 0, limit - #found)
    for _, k in ipairs(batch) do
      live(k)
      if redis.call('HEXISTS', V, k) == 1 or redis.call('EXISTS', L(k)) == 1 then
        found[#found + 1] = k
      end
      from = '(' .. k
    end
    if #found >= limit or #batch < limit then break end
  end
  return found
elseif op == 'push' then
  -- key, value, keep, max keys, max bytes
  local k, v, keep = ARGV[2], ARGV[3], tonumber(ARGV[4])
  local n = redis.call('LLEN', L(k))
  local dropped = 0
  local over = n + 1 - keep
  if over > 0 then
    for _, item in ipairs(redis.call('LRANGE', L(k), 0, over - 1)) do dropped = dropped + #item end
  end
  if n > 0 then
    charge(0, #v - dropped, 5)
  else
    charge(1, #k + #v, 5)
  end
  redis.call('RPUSH', L(k), v)
  redis.call('LTRIM', L(k), -keep, -1)
  redis.call('HINCRBY', LB, k, #v - dropped)
  redis.call('ZADD', K, 0, k)
  return redis.call('LLEN', L(k))
elseif op == 'range' then
  -- key, start, stop, limit
  local k = ARGV[2]
  local start, stop = span(redis.call('LLEN', L(k)), tonumber(ARGV[3]), tonumber(ARGV[4]))
  if not start then return {} end
  if stop - start + 1 > tonumber(ARGV[5]) then error({err = 'KVREAD ' .. (stop - start + 1)}) end
  return redis.call('LRANGE', L(k), start, stop)
elseif op == 'trim' then
  -- key, start, stop
  local k = ARGV[2]
  local n = redis.call('LLEN', L(k))
  if n == 0 then return 1 end
  local start, stop = span(n, tonumber(ARGV[3]), tonumber(ARGV[4]))
  if not start then
    drop_list(k)
    return 1
  end
  redis.call('LTRIM', L(k), start, stop)
  local bytes = 0
  for _, item in ipairs(redis.call('LRANGE', L(k), 0, -1)) do bytes = bytes + #item end
  local before = tonumber(redis.call('HGET', LB, k)) or 0
  redis.call('HSET', LB, k, bytes)
  account(0, bytes - before)
  return 1
elseif op == 'delete-hub' then
  for _, k in ipairs(redis.call('ZRANGE', K, 0, -1)) do
    drop_value(k)
    drop_list(k)
  end
  redis.call('DEL', V, X, K, LB)
  return 1
elseif op == 'usage' then
  local u = redis.call('HMGET', usage, 'keys', 'bytes')
  return {tonumber(u[1]) or 0, tonumber(u[2]) or 0}
end
error({err = 'KVBADOP'})
