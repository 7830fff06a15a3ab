-- auth.lua: a bearer-token gate in front of the "api" tenant's upstreams.
--
-- Used by the "secure-api" tenant of the example configs. A request without
-- "Authorization: Bearer <token>" is answered 401 here, in Lua; one with a
-- token is proxied, unchanged, to the upstreams of the tenant named "api".
-- Checking the token's signature is the upstream's job; this gate only keeps
-- anonymous traffic off it.

local r = chi.NewRouter()

-- Middleware, chi style: it receives the next handler and returns a handler.
r:Use(function(next)
  return function(w, req)
    local auth = req:Header():Get("Authorization")
    if auth == "" or auth:sub(1, 7) ~= "Bearer " or #auth <= 7 then
      w:Header():Set("WWW-Authenticate", 'Bearer realm="keystone"')
      w:Header():Set("Content-Type", "application/json")
      w:WriteHeader(401)
      w:Write('{"error":"missing bearer token"}')
      return
    end
    next(w, req)
  end
end)

-- Everything that passes the gate goes to the "api" tenant's upstreams.
r:Handle("/*", keystone.Proxy("api"))

return r
