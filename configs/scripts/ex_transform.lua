-- ex_transform.lua: request and response transforms around the "api"
-- tenant's upstreams.
--
-- On the way in: the client's cookies never reach the upstream, and the
-- upstream learns the original path. On the way out: the upstream's Server
-- header is dropped, security headers are added, and /profile answers are
-- wrapped in an envelope.

local r = chi.NewRouter()

r:Use(function(next)
  return function(w, req)
    req:Header():Del("Cookie")
    req:Header():Set("X-Original-Path", req.Path)
    next(w, req)
    -- Runs after the upstream answered: status, headers and body are
    -- the upstream's, and ours to change.
    local h = w:Header()
    h:Del("Server")
    h:Set("X-Content-Type-Options", "nosniff")
    h:Set("Referrer-Policy", "no-referrer")
    h:Set("Strict-Transport-Security", "max-age=31536000")
  end
end)

-- Wrap the upstream's JSON as {"data": ..., "status": ...}.
local function envelope(next)
  return function(w, req)
    next(w, req)
    local data, err = json.decode(w:Body())
    if data == nil then
      keystone.Log("warn", "upstream sent invalid JSON", { path = req.Path, error = err })
      return
    end
    w:JSON(w:Status(), { data = data, status = w:Status() })
  end
end

r:With(envelope):Get("/profile", keystone.Proxy("api"))
r:Handle("/*", keystone.Proxy("api"))
return r
