-- ex_auth.lua: API-key authentication and a per-key rate limit in front of
-- the "api" tenant's upstreams.
--
-- Keys come from the environment, read once when the script loads:
--   KEYSTONE_SCRIPT_API_KEYS="key-one:alice,key-two:bob"
-- A request must send "X-API-Key: <key>". A valid key is removed from the
-- request and replaced by "X-Client-Id: <name>" for the upstream; an
-- unknown key gets 401. Each key may make 100 requests per minute,
-- counted in keystone.store so every VM of the script shares the count.

local keys = {}
for key, name in (keystone.Env("KEYSTONE_SCRIPT_API_KEYS") or ""):gmatch("([^,:]+):([^,]+)") do
  keys[key] = name
end

local LIMIT, WINDOW = 100, 60

local function authenticate(next)
  return function(w, req)
    local client = keys[req:Header():Get("X-API-Key")]
    if client == nil then
      w:Header():Set("WWW-Authenticate", 'ApiKey realm="keystone"')
      w:JSON(401, { error = "invalid or missing X-API-Key" })
      return
    end
    req:Header():Del("X-API-Key")
    req:Header():Set("X-Client-Id", client)
    req.Context.client = client
    next(w, req)
  end
end

local function rate_limit(next)
  return function(w, req)
    local window = math.floor(os.time() / WINDOW)
    local used = keystone.store.Incr("rate:" .. req.Context.client .. ":" .. window, 1, WINDOW)
    w:Header():Set("X-RateLimit-Limit", tostring(LIMIT))
    w:Header():Set("X-RateLimit-Remaining", tostring(math.max(LIMIT - used, 0)))
    if used > LIMIT then
      w:Header():Set("Retry-After", tostring(WINDOW - os.time() % WINDOW))
      w:JSON(429, { error = "rate limit exceeded" })
      return
    end
    next(w, req)
  end
end

local r = chi.NewRouter()
r:Use(authenticate, rate_limit)
r:Handle("/*", keystone.Proxy("api"))
return r
