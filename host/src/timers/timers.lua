-- The Redis timer backend (host/src/timers/redis.rs), one script so that
-- every operation is atomic and one round trip.
-- KEYS[1] queue: zset id -> due (pending) or lease end (claimed), in ms
-- KEYS[2] data: hash id -> timer JSON; KEYS[3] claimed: set of claimed ids;
-- KEYS[4] counts: hash tenant -> timers pending or claimed.
-- ARGV[1]: the operation; the rest its arguments.
local queue, data, claimed, counts = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op = ARGV[1]

if op == 'add' then
  -- id, tenant, due, json, max per tenant
  local n = tonumber(redis.call('HGET', counts, ARGV[3]) or '0')
  if n >= tonumber(ARGV[6]) then return redis.error_reply('TIMERCOUNT') end
  redis.call('HINCRBY', counts, ARGV[3], 1)
  redis.call('HSET', data, ARGV[2], ARGV[5])
  redis.call('ZADD', queue, ARGV[4], ARGV[2])
  return 1
elseif op == 'cancel' then
  -- id, tenant, hub: only a pending timer of that hub
  local json = redis.call('HGET', data, ARGV[2])
  if not json or redis.call('SISMEMBER', claimed, ARGV[2]) == 1 then return 0 end
  local timer = cjson.decode(json)
  if timer.tenant ~= ARGV[3] or timer.hub ~= ARGV[4] then return 0 end
  redis.call('ZREM', queue, ARGV[2])
  redis.call('HDEL', data, ARGV[2])
  redis.call('HINCRBY', counts, timer.tenant, -1)
  return 1
elseif op == 'claim' then
  -- now, lease ms, max: due pending timers and claims whose lease ended
  local now, lease = tonumber(ARGV[2]), tonumber(ARGV[3])
  local ids = redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
  local out = {}
  for _, id in ipairs(ids) do
    local json = redis.call('HGET', data, id)
    if json then
      redis.call('ZADD', queue, now + lease, id)
      redis.call('SADD', claimed, id)
      out[#out + 1] = json
    else
      redis.call('ZREM', queue, id)
    end
  end
  return out
elseif op == 'renew' then
  -- now, lease ms, ids...: only claims still held
  local deadline = tonumber(ARGV[2]) + tonumber(ARGV[3])
  for i = 4, #ARGV do
    if redis.call('SISMEMBER', claimed, ARGV[i]) == 1 then
      redis.call('ZADD', queue, 'XX', deadline, ARGV[i])
    end
  end
  return 1
elseif op == 'done' then
  -- id, tenant
  if redis.call('HDEL', data, ARGV[2]) == 1 then
    redis.call('HINCRBY', counts, ARGV[3], -1)
  end
  redis.call('ZREM', queue, ARGV[2])
  redis.call('SREM', claimed, ARGV[2])
  return 1
elseif op == 'count' then
  return tonumber(redis.call('HGET', counts, ARGV[2]) or '0')
end
return redis.error_reply('TIMERBADOP')
