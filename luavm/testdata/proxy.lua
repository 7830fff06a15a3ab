-- Middleware around keystone.Proxy: requests shaped on the way in,
-- responses transformed on the way out, and requests ended early.
local r = chi.NewRouter()

r:Use(function(next)
  return function(w, req)
    req:Header():Set("X-From-Gateway", "1")
    w:Header():Set("X-Served-By", "keystone")
    w:Header():Add("X-Multi", "1")
    w:Header():Add("X-Multi", "2")
    w:Header():Set("X-Upstream", "overridden by the upstream")
    w:Header():Add("Set-Cookie", "gw=1; Path=/")
    next(w, req)
  end
end)

local function require_token(next)
  return function(w, req)
    if req:Header():Get("Authorization") ~= "Bearer secret" then
      w:JSON(401, { error = "unauthorized" })
      return
    end
    next(w, req)
  end
end

local function transform(next)
  return function(w, req)
    next(w, req)
    local upstream = json.decode(w:Body())
    w:Header():Set("X-Upstream-Status", tostring(w:Status()))
    w:Header():Del("X-Upstream")
    w:WriteHeader(202)
    w:SetBody("seen " .. upstream.path .. " by " .. upstream.upstream)
  end
end

r:With(require_token):Handle("/private/*", keystone.Proxy("api"))
r:With(transform):Get("/transform/*", keystone.Proxy("api2"))
r:Get("/rewrite/{rest}", function(w, req)
  req:SetPath("/v2/" .. req:URLParam("rest"))
  keystone.Proxy("api")(w, req)
end)
r:Handle("/*", keystone.Proxy("api"))
return r
